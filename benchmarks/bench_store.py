"""The log store on the real disk: confirmed writes/s, confirm latency, recovery.

Usage::

    python benchmarks/bench_store.py [--seconds 3] [--messages 1000000] [--dir DIR]

Prints a table:

- confirmed writes/s with 1, 4 and 16 concurrent writers, each keeping one
  128-byte message in flight (``fsync="always"``, a temporary directory on the
  real disk), with the fsyncs per confirmed write that group commit achieved;
- median and p99 confirm latency with one message in flight;
- recovery: ``--messages`` live 128-byte messages are written (in batches of
  10,000), the store is closed, and a fresh process opens it: how long
  ``open()`` takes, and how much RSS the recovered state (the ``Recovered``
  the broker gets plus the store's ledger) adds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet.defer import Deferred, gatherResults  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from mbroker.core.records import MessageStored, QueueDeclared  # noqa: E402
from mbroker.store.logstore import LogStore  # noqa: E402
from mbroker.wire.frames import QueueOptions  # noqa: E402

PAYLOAD = b"x" * 128


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def concurrent_writers(
    reactor: Any, directory: str, writers: int, seconds: float
) -> dict[str, float]:
    store = LogStore(reactor, directory)
    await store.open()
    await store.write([QueueDeclared("q", QueueOptions(durable=True))])
    next_id = iter(range(1, 1 << 62))
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    fsyncs = store.stats()["fsyncs"]

    async def writer() -> int:
        count = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await store.write([MessageStored(next(next_id), ("q",), "ex", "k", PAYLOAD)])
            latencies.append(time.perf_counter() - start)
            count += 1
        return count

    began = time.perf_counter()
    counts = await gatherResults([Deferred.fromCoroutine(writer()) for _ in range(writers)])
    elapsed = time.perf_counter() - began
    fsyncs = store.stats()["fsyncs"] - fsyncs
    await store.close()
    latencies.sort()
    total = sum(counts)
    return {
        "writes_per_s": total / elapsed,
        "fsyncs_per_write": fsyncs / total,
        "median_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def fill(reactor: Any, directory: str, messages: int) -> float:
    store = LogStore(reactor, directory)
    await store.open()
    await store.write([QueueDeclared("q", QueueOptions(durable=True))])
    began = time.perf_counter()
    batch = 10_000
    for start in range(1, messages + 1, batch):
        records = [
            MessageStored(i, ("q",), "ex", "k", PAYLOAD)
            for i in range(start, min(start + batch, messages + 1))
        ]
        await store.write(records)
    elapsed = time.perf_counter() - began
    await store.close()
    return elapsed


async def recover(reactor: Any, directory: str) -> None:
    """In a fresh process: open the store, print what it cost as JSON."""
    import gc

    gc.collect()
    before = rss_bytes()
    store = LogStore(reactor, directory)
    began = time.perf_counter()
    recovered = await store.open()
    elapsed = time.perf_counter() - began
    gc.collect()
    after = rss_bytes()
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "messages": recovered.message_count(),
                "rss_added": after - before,
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "disk_bytes": store.stats()["disk_bytes"],
            }
        )
    )
    await store.close()


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="where to put the data (default: a temp dir)")
    parser.add_argument("--recover", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.recover:
        await recover(reactor, args.recover)
        return
    base = tempfile.mkdtemp(prefix="mbroker-bench-store-", dir=args.dir)
    try:
        print(f"data in {base}, fsync=always, 128-byte messages")
        print(f"{'case':<44}{'result':>34}")
        for writers in (1, 4, 16):
            directory = os.path.join(base, f"w{writers}")
            r = await concurrent_writers(reactor, directory, writers, args.seconds)
            print(
                f"{f'{writers} writer(s), one message in flight each':<44}"
                f"{r['writes_per_s']:>12,.0f} writes/s {r['fsyncs_per_write']:>6.3f} fsync/write"
            )
            if writers == 1:
                latency = r
        print(
            f"{'confirm latency, one message in flight':<44}"
            f"{'median ' + format(latency['median_ms'], '.3f'):>20} ms"
            f"   p99 {latency['p99_ms']:.3f} ms"
        )
        directory = os.path.join(base, "recovery")
        fill_s = await fill(reactor, directory, args.messages)
        print(f"{f'write {args.messages:,} messages (10k per batch)':<44}{fill_s:>12.2f} s")
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--recover", directory],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        case = f"recover {r['messages']:,} live messages"
        print(f"{case:<44}{r['seconds']:>12.2f} s  ({r['disk_bytes'] / 1e6:.0f} MB on disk)")
        per_message = r["rss_added"] / max(r["messages"], 1)
        print(
            f"{'RSS added by the recovered state':<44}{r['rss_added'] / 1e6:>12.0f} MB"
            f"  ({per_message:.0f} B/message; peak RSS {r['peak_rss'] / 1e6:.0f} MB)"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
