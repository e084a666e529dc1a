"""The broker's own CPU per message, in one process, without sockets: and where it goes.

The real ``BrokerFactory`` and ``BrokerProtocol`` on transports that only count bytes,
driven by calling ``dataReceived`` with pre-encoded frames, on a ``task.Clock``; the
durable case runs the real ``LogStore`` on a temporary directory with its jobs run
inline (``SyncExecutor``) and ``fsync=never``, so that only the broker's Python is
timed.  The cyclic GC is tuned as the service tunes it.  Each case is run ``--repeat``
times and the best is printed (this machine is noisy).  With ``--profile CASE`` the
case runs once more under cProfile and the top of the profile is printed (cProfile
slows every call down, about 3×: read the shares, not the times).

Cases: one PUBLISH per read (what a one-at-a-time client costs); runs of 400 pipelined
PUBLISH per read into a queue with one subscriber and into a fanout with 4; and 16
publishers with 64 in flight each into a durable queue whose consumer acks every
message with one ``ACK a-b`` per turn.  Usage::

    python benchmarks/bench_inprocess.py [--repeat 5] [--profile single|queue|fanout4|durable]
"""

from __future__ import annotations

import cProfile
import gc
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rawclient import base_parser, print_table  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from mbroker.config import Config  # noqa: E402
from mbroker.core.broker import Broker  # noqa: E402
from mbroker.server.factory import BrokerFactory  # noqa: E402
from mbroker.server.protocol import BrokerProtocol  # noqa: E402
from mbroker.server.service import GC_THRESHOLD  # noqa: E402
from mbroker.store.bridge import journal_for  # noqa: E402
from mbroker.store.executor import SyncExecutor  # noqa: E402
from mbroker.store.logstore import LogStore  # noqa: E402

FRAME = b"PUBLISH b 128\r\n" + b"x" * 128 + b"\r\n"


class Counting:
    """A transport that keeps nothing: it counts what it is given."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)

    def writeSequence(self, seq: Iterable[bytes]) -> None:
        for data in seq:
            self.bytes += len(data)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def loseConnection(self) -> None:
        pass

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 1)


def connect(factory: BrokerFactory) -> BrokerProtocol:
    p = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert isinstance(p, BrokerProtocol)
    p.makeConnection(Counting())  # type: ignore[arg-type]
    return p


Case = Callable[[], tuple[Callable[[], None], int]]  # -> (run it, messages it moves)


def pubsub(kind: bytes, subscribers: int, per_read: int, reads: int) -> Case:
    def make() -> tuple[Callable[[], None], int]:
        clock = Clock()
        factory = BrokerFactory(Broker(clock, Config()), Config(), clock)
        pub = connect(factory)
        pub.dataReceived(b"CREATE b %s\r\n" % kind)
        for _ in range(subscribers):
            connect(factory).dataReceived(b"SUBSCRIBE b\r\n")
        chunk = FRAME * per_read

        def run() -> None:
            for _ in range(reads):
                pub.dataReceived(chunk)

        return run, per_read * reads

    return make


def durable(publishers: int = 16, window: int = 64, turns: int = 150) -> Case:
    def make() -> tuple[Callable[[], None], int]:
        clock = Clock()
        directory = tempfile.mkdtemp(prefix="mbroker-inprocess-", dir="/var/tmp")
        store = LogStore(clock, directory, fsync="never", executor=SyncExecutor())
        recovered: list[object] = []
        store.open().addCallback(recovered.append)
        broker = Broker(clock, Config(), journal_for(store, clock))
        broker.restore(recovered[0])  # type: ignore[arg-type]
        factory = BrokerFactory(broker, Config(), clock)
        pubs = [connect(factory) for _ in range(publishers)]
        pubs[0].dataReceived(b"CREATE b queue durable\r\n")
        consumer = connect(factory)
        consumer.dataReceived(b"SUBSCRIBE b ack=manual prefetch=100000\r\n")
        clock.advance(0)
        chunk = FRAME * window
        per_turn = publishers * window

        def run() -> None:
            tag = 0
            for _ in range(turns):
                for p in pubs:
                    p.dataReceived(chunk)
                consumer.dataReceived(b"ACK %d-%d\r\n" % (tag + 1, tag + per_turn))
                tag += per_turn
                clock.advance(0)  # the journal's commit

        return run, per_turn * turns

    return make


CASES: dict[str, tuple[str, Case]] = {
    "single": ("one PUBLISH per read, queue -> 1 subscriber", pubsub(b"queue", 1, 1, 50_000)),
    "queue": ("runs of 400 per read, queue -> 1 subscriber", pubsub(b"queue", 1, 400, 500)),
    "fanout4": ("runs of 400 per read, fanout -> 4", pubsub(b"fanout", 4, 400, 250)),
    "durable": ("durable, 16 x 64 in flight, acking consumer", durable()),
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
        f"broker CPU per message in-process, best of {repeat}, {sys.implementation.name}",
        ["case", "what", "us/msg", "msgs/s"],
        rows,
    )
    if args.profile:
        run, _ = CASES[args.profile][1]()
        profile = cProfile.Profile()
        profile.runcall(run)
        print(f"\ncProfile of {args.profile!r}, by own time (times inflated by cProfile):")
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
