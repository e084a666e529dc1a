"""The broker's CPU per message with message properties: 4 headers of 32 bytes, beside
the same message with none, in one process, without sockets.

As ``bench_inprocess.py`` (whose harness this reuses: the real ``BrokerFactory`` and
``BrokerProtocol`` on byte-counting transports, on a ``task.Clock``, the service's GC
tuning, best of ``--repeat``): each case publishes 128-byte payloads and delivers them
to subscribers, once with no properties and once with ``h.k1=…`` to ``h.k4=…`` (32-byte
values, 8 of them escaped) on every PUBLISH, which every MSG then carries.  Usage::

    python benchmarks/bench_headers.py [--repeat 5]
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_inprocess import Case, connect  # noqa: E402
from rawclient import base_parser, print_table  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from mbroker.config import Config  # noqa: E402
from mbroker.core.broker import Broker  # noqa: E402
from mbroker.server.factory import BrokerFactory  # noqa: E402
from mbroker.server.service import GC_THRESHOLD  # noqa: E402

PAYLOAD = b"x" * 128
#: 4 headers of 32 bytes each (24 plain bytes and 8 spaces, written %20)
VALUE = b"%20".join([b"abc"] * 8) + b"%20"
HEADERS = b" ".join(b"h.k%d=" % i + VALUE for i in range(1, 5))


def frame(props: bytes) -> bytes:
    head = b"PUBLISH b " + (props + b" " if props else b"")
    return head + b"%d\r\n" % len(PAYLOAD) + PAYLOAD + b"\r\n"


def pubsub(kind: bytes, subscribers: int, per_read: int, reads: int, props: bytes) -> Case:
    def make() -> tuple[Callable[[], None], int]:
        clock = Clock()
        factory = BrokerFactory(Broker(clock, Config()), Config(), clock)
        pub = connect(factory)
        pub.dataReceived(b"CREATE b %s\r\n" % kind)
        subs = [connect(factory) for _ in range(subscribers)]
        for s in subs:
            s.dataReceived(b"SUBSCRIBE b\r\n")
        chunk = frame(props) * per_read

        def run() -> None:
            for _ in range(reads):
                pub.dataReceived(chunk)

        return run, per_read * reads

    return make


SHAPES = [
    ("single", "one PUBLISH per read, queue -> 1", b"queue", 1, 1, 30_000),
    ("queue", "runs of 400 per read, queue -> 1", b"queue", 1, 400, 300),
    ("fanout4", "runs of 400 per read, fanout -> 4", b"fanout", 4, 400, 150),
    ("topic4", "runs of 400 per read, topic # -> 4", b"topic", 4, 400, 150),
]


def best(make: Case, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        run, messages = make()
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) / messages)
    return min(times)


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    repeat = 1 if args.quick else args.repeat
    scale = 10 if args.quick else 1
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    rows = []
    for name, title, kind, subs, per_read, reads in SHAPES:
        reads = max(1, reads // scale)
        plain = best(pubsub(kind, subs, per_read, reads, b""), repeat)
        headed = best(pubsub(kind, subs, per_read, reads, HEADERS), repeat)
        rows.append([name, title, 1e6 * plain, 1e6 * headed, 1e6 * (headed - plain)])
    print_table(
        f"broker CPU per message with 4 headers of 32 bytes, best of {repeat}, "
        f"{sys.implementation.name}",
        ["case", "what", "none us/msg", "4 headers us/msg", "extra us"],
        rows,
    )


if __name__ == "__main__":
    main()
