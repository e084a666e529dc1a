"""mbroker's CPU per STOMP message in one process, without sockets: and where it goes.

The real ``StompFactory`` and ``StompProtocol`` on transports that only count bytes
(``bench_inprocess.py``'s), driven by calling ``dataReceived`` with pre-encoded STOMP 1.2
frames on a ``task.Clock``: a publisher connection and a subscriber connection, 100-byte
bodies with ``content-length``.  The cyclic GC is tuned as the service tunes it.  Each
case is run ``--repeat`` times and the best is printed.  With ``--profile CASE`` the case
runs once more under cProfile and the top of the profile is printed (cProfile inflates
every call: read the shares, not the times).

Cases: one SEND per read into ``/queue/`` (a one-at-a-time client); runs of 400 SENDs
per read into ``/queue/`` with an ``ack:auto`` subscriber, the same with an
``ack:client-individual`` subscriber that sends one ``ACK`` frame per message (all of
one read's ACKs in one read back, pre-encoded), and into ``/topic/``.  ``ceiling`` is
not a client's case: ``Broker.publish_many`` called directly, 400 bodies at a time, into
the queue of a STOMP ``ack:auto`` subscriber (what a run of SENDs with one head costs,
less decoding them: the STOMP side publishes such runs so, as the native side does).  For comparison
the same run of 400 as native ``PUBLISH`` frames into a queue (``bench_inprocess.py``'s
``queue`` case).  Usage::

    python benchmarks/bench_stomp_inprocess.py [--repeat 5] [--profile CASE]
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_inprocess import Counting, pubsub  # noqa: E402
from rawclient import base_parser, print_table  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from mbroker.config import Config  # noqa: E402
from mbroker.core.broker import Broker  # noqa: E402
from mbroker.server.service import GC_THRESHOLD  # noqa: E402
from mbroker.server.stomp import StompFactory, StompProtocol  # noqa: E402

SIZE = 100
CONNECT = b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\n\n\x00"

Case = Callable[[], tuple[Callable[[], None], int]]  # -> (run it, messages it moves)


def connect(factory: StompFactory, clock: Clock) -> tuple[StompProtocol, Counting]:
    p = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(p, StompProtocol)
    transport = Counting()
    p.makeConnection(transport)  # type: ignore[arg-type]
    p.dataReceived(CONNECT)
    clock.advance(0)
    return p, transport


def send(destination: bytes) -> bytes:
    return b"SEND\ndestination:%s\ncontent-length:%d\n\n%s\x00" % (
        destination,
        SIZE,
        b"x" * SIZE,
    )


def stomp(kind: bytes, ack: bytes, per_read: int, reads: int) -> Case:
    def make() -> tuple[Callable[[], None], int]:
        clock = Clock()
        config = Config()
        factory = StompFactory(Broker(clock, config), config, clock, check_in_thread=False)
        factory.declare_exchanges()
        dest = kind + b"bench"
        sub, out = connect(factory, clock)
        sub.dataReceived(
            b"SUBSCRIBE\nid:0\ndestination:%s\nack:%s\nprefetch-count:100000\nreceipt:s\n\n\x00"
            % (dest, ack)
        )
        clock.advance(0)
        pub, _ = connect(factory, clock)
        pub.dataReceived(send(dest))  # (makes the queue; the first message goes now)
        clock.advance(0)
        chunk = send(dest) * per_read
        acks: list[bytes] = []
        if ack == b"client-individual":
            sub.dataReceived(b"ACK\nid:%d-1\n\n\x00" % _sid(sub))
            acks = [
                b"".join(
                    b"ACK\nid:%d-%d\n\n\x00" % (_sid(sub), 2 + r * per_read + i)
                    for i in range(per_read)
                )
                for r in range(reads)
            ]
        before = out.bytes

        def run() -> None:
            if acks:
                for a in acks:
                    pub.dataReceived(chunk)
                    clock.advance(0)
                    sub.dataReceived(a)
            else:
                for _ in range(reads):
                    pub.dataReceived(chunk)
                    clock.advance(0)
            assert out.bytes - before >= per_read * reads * SIZE, "not delivered"

        return run, per_read * reads

    return make


def run_ceiling(per_read: int, reads: int) -> Case:
    """Not a client's case: ``Broker.publish_many`` (what the native ``PublishRun``
    calls) straight into ``/queue/bench`` with a STOMP ``ack:auto`` subscriber, once per
    400 bodies: what a run of SENDs with one head costs (the STOMP side publishes them
    so, as the native side does), less decoding the SENDs."""

    def make() -> tuple[Callable[[], None], int]:
        clock = Clock()
        config = Config()
        factory = StompFactory(Broker(clock, config), config, clock, check_in_thread=False)
        sub, out = connect(factory, clock)
        sub.dataReceived(b"SUBSCRIBE\nid:0\ndestination:/queue/bench\nack:auto\nreceipt:s\n\n\x00")
        clock.advance(0)
        payloads = [b"x" * SIZE] * per_read
        broker = factory.broker

        def run() -> None:
            for _ in range(reads):
                broker.publish_many("bench", "", payloads)
                sub._flush()  # (what the end of a read does)
            assert out.bytes >= per_read * reads * SIZE, "not delivered"

        return run, per_read * reads

    return make


def _sid(sub: StompProtocol) -> int:
    return next(iter(sub._by_sid))  # (the one subscription's id in its message ids)


CASES: dict[str, tuple[str, Case]] = {
    "single": ("one SEND per read, /queue/ ack:auto", stomp(b"/queue/", b"auto", 1, 50_000)),
    "queue": ("runs of 400 SEND per read, /queue/ ack:auto", stomp(b"/queue/", b"auto", 400, 500)),
    "individual": (
        "runs of 400, /queue/ ack:client-individual, ACK each",
        stomp(b"/queue/", b"client-individual", 400, 500),
    ),
    "topic": ("runs of 400 SEND per read, /topic/ ack:auto", stomp(b"/topic/", b"auto", 400, 500)),
    "ceiling": (
        "publish_many per 400 into /queue/ -> STOMP ack:auto (no decoding)",
        run_ceiling(400, 500),
    ),
    "native": ("runs of 400 native PUBLISH per read, queue", pubsub(b"queue", 1, 400, 500)),
}


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
    ap.add_argument("--profile", choices=sorted(CASES), help="print this case's cProfile")
    ap.add_argument("--top", type=int, default=25, help="profile lines (default 25)")
    args = ap.parse_args()
    repeat = 1 if args.quick else args.repeat
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    rows = []
    for name, (title, make) in CASES.items():
        per = best(make, repeat)
        rows.append([name, title, 1e6 * per, 1 / per])
    print_table(
        f"STOMP broker CPU per message in-process, best of {repeat}, {sys.implementation.name}",
        ["case", "what", "us/msg", "msgs/s"],
        rows,
    )
    if args.profile:
        run, _ = CASES[args.profile][1]()
        profile = cProfile.Profile()
        profile.runcall(run)
        print(f"\ncProfile of {args.profile!r}, by own time (times inflated by cProfile):")
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
