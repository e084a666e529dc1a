"""A million delayed messages: what holding them costs, and what releasing them costs.

In one process, without sockets: the real ``BrokerFactory`` and ``BrokerProtocol`` on a
transport that only counts bytes, on a ``task.Clock``, fed pipelined
``PUBLISH d delay=MS <size>`` frames 400 per read (as a pipelining publisher sends
them; every one is parsed, routed and held).  Then:

1. **publish**: CPU seconds to publish them all delayed, and the memory they take
   (resident memory growth, and with ``--tracemalloc`` the bytes Python allocated,
   per message);
2. **held**: the clock runs to half the delay: how many clock calls are pending (one,
   whatever the number of messages) and the CPU that costs (nothing fires);
3. **release**: the clock runs to the due time: CPU seconds until every message is
   ready in its queue (released 10,000 per reactor turn), then the same for a PULL
   of them all (delivery is not what is measured here, only to check none was lost).

For comparison it also publishes the same number of messages with no delay (ready at
once) and reports their memory.  Usage::

    python benchmarks/bench_delay.py [--messages 1000000] [--size 16] [--delay 60000]
                                      [--tracemalloc] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Iterable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from mbroker.config import Config  # noqa: E402
from mbroker.core.broker import Broker  # noqa: E402
from mbroker.core.reports import current_rss  # noqa: E402
from mbroker.server.factory import BrokerFactory  # noqa: E402
from mbroker.server.protocol import BrokerProtocol  # noqa: E402
from mbroker.server.service import GC_THRESHOLD  # noqa: E402

PER_READ = 400


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


def publish(messages: int, size: int, delay: int | None, trace: bool) -> dict[str, float]:
    """Publish ``messages`` (delayed by ``delay`` ms, or not) into a fresh broker and
    measure; with a delay, run the clock through it too."""
    gc.collect()
    clock = Clock()
    broker = Broker(clock, Config())
    factory = BrokerFactory(broker, Config(), clock)
    pub = connect(factory)
    pub.dataReceived(b"CREATE d queue\r\n")
    option = b" delay=%d" % delay if delay is not None else b""
    # distinct payloads (a real publisher's are), made before the clock starts
    payloads = [b"%0*d" % (size, i) for i in range(messages)]
    chunks = []
    for start in range(0, messages, PER_READ):
        chunks.append(
            b"".join(
                b"PUBLISH d%s %d\r\n%s\r\n" % (option, size, p)
                for p in payloads[start : start + PER_READ]
            )
        )
    del payloads
    gc.collect()
    out: dict[str, float] = {}
    rss0 = current_rss()
    if trace:
        tracemalloc.start()
        traced0 = tracemalloc.get_traced_memory()[0]
    t0 = time.process_time()
    for chunk in chunks:
        pub.dataReceived(chunk)
    out["publish_s"] = time.process_time() - t0
    if trace:
        out["traced_per_msg"] = (tracemalloc.get_traced_memory()[0] - traced0) / messages
        tracemalloc.stop()
    del chunks
    gc.collect()
    out["rss_per_msg"] = (current_rss() - rss0) / messages
    stats = dict(broker.stats("d"))
    if delay is None:
        assert stats["messages"] == str(messages), stats
        return out
    assert stats["delayed"] == str(messages) and stats["messages"] == "0", stats
    out["rss_held_mib"] = current_rss() / 2**20
    # held: half the delay goes by; one clock call is pending and nothing fires
    t0 = time.process_time()
    clock.advance(delay / 2000.0)
    out["held_s"] = time.process_time() - t0
    out["clock_calls"] = len(clock.getDelayedCalls())
    # release: the rest of the delay
    t0 = time.process_time()
    clock.advance(delay / 2000.0)
    out["release_s"] = time.process_time() - t0
    stats = dict(broker.stats("d"))
    assert stats["messages"] == str(messages) and stats["delayed"] == "0", stats
    out["clock_calls_after"] = len(clock.getDelayedCalls())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--delay", type=int, default=60_000, help="ms")
    ap.add_argument("--tracemalloc", action="store_true", help="also count Python's bytes")
    ap.add_argument("--quick", action="store_true", help="20,000 messages, a smoke test")
    args = ap.parse_args()
    if args.quick:
        args.messages = 20_000
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])  # as the service does
    n = args.messages
    delayed = publish(n, args.size, args.delay, False)
    ready = publish(n, args.size, None, False)
    print(f"{n:,} messages of {args.size} bytes, one queue, delay={args.delay} ms")
    print(
        f"  publish delayed   {delayed['publish_s']:7.2f} s CPU  "
        f"({delayed['publish_s'] / n * 1e6:.2f} µs/msg)  "
        f"RSS +{delayed['rss_per_msg']:.0f} B/msg  (process {delayed['rss_held_mib']:.0f} MiB)"
    )
    print(
        f"  publish ready     {ready['publish_s']:7.2f} s CPU  "
        f"({ready['publish_s'] / n * 1e6:.2f} µs/msg)  RSS +{ready['rss_per_msg']:.0f} B/msg"
    )
    print(
        f"  held              {delayed['held_s'] * 1e3:7.2f} ms CPU for half the delay, "
        f"{delayed['clock_calls']:.0f} clock call pending"
    )
    print(
        f"  release           {delayed['release_s']:7.2f} s CPU  "
        f"({delayed['release_s'] / n * 1e6:.2f} µs/msg), "
        f"{delayed['clock_calls_after']:.0f} clock calls left"
    )
    if args.tracemalloc:
        traced = publish(n, args.size, args.delay, True)
        plain = publish(n, args.size, None, True)
        print(
            f"  tracemalloc       delayed {traced['traced_per_msg']:.0f} B/msg, "
            f"ready {plain['traced_per_msg']:.0f} B/msg"
        )


if __name__ == "__main__":
    main()
