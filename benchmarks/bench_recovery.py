"""Broker start-up with a million live durable messages: time to ready, and memory.

Fills a durable queue through a real ``twistd -n mbroker`` (pipelined, confirmed),
kills it with SIGKILL, starts it again on the same data directory and measures how
long until it listens (it replays the log first) and its RSS then.  Both brokers run
with ``--memory-high-water 0``: past a few million messages the default high-water mark
(1 GiB) would rightly stop reading the publisher.

Payloads are ``--size`` bytes, or with ``--max-size`` of sizes drawn between the two (the
same pseudo-random sizes every run).  Between the two brokers the log's files are read
once by Python, first cold (evicted from the page cache with ``posix_fadvise``, after an
fsync) and then warm, to compare the replay rate with what the disk and the page cache
deliver; with ``--cold`` they are evicted again before the second broker starts.

Usage::

    python benchmarks/bench_recovery.py [--messages N] [--size BYTES] [--max-size BYTES]
        [--cold]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402

NO_HIGH_WATER = ("--memory-high-water", "0")


def fill(broker: BrokerProcess, messages: int, size: int, max_size: int) -> None:
    sock = socket.create_connection((broker.host, broker.port))
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"CREATE big queue durable\r\n")
    assert f.readline().startswith(b"+OK")
    batch = 1000
    sizes = random.Random(11).choices(range(size, max(size, max_size) + 1), k=batch)
    frames = b"".join(b"PUBLISH big %d\r\n%s\r\n" % (n, b"x" * n) for n in sizes)
    sent = confirmed = 0
    while confirmed < messages:
        while sent < messages and sent - confirmed < 20 * batch:
            sock.sendall(frames)
            sent += batch
        for _ in range(batch):
            assert f.readline() == b"+OK 1\r\n"
        confirmed += batch
    sock.close()


def evict(directory: str) -> None:
    """Drop the files of ``directory`` from the page cache (written back first)."""
    for entry in os.scandir(directory):
        if entry.is_file():
            fd = os.open(entry.path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def read_all(directory: str) -> float:
    """Seconds to read every file of ``directory`` whole, as recovery does."""
    t = time.perf_counter()
    for entry in os.scandir(directory):
        if entry.is_file():
            with open(entry.path, "rb") as f:
                f.read()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--max-size", type=int, default=0, help="payload sizes from --size to this")
    ap.add_argument("--cold", action="store_true", help="the second broker reads a cold log")
    args = ap.parse_args()
    messages = max(1000, args.messages // 1000 * 1000)
    with tempfile.TemporaryDirectory(prefix="mbroker-recovery-") as data:
        first = BrokerProcess(*NO_HIGH_WATER, data_dir=data)
        t = time.perf_counter()
        fill(first, messages, args.size, args.max_size)
        fill_s = time.perf_counter() - t
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        first.stop()
        disk = sum(e.stat().st_size for e in os.scandir(data)) / 2**20
        evict(data)
        cold_s = read_all(data)
        warm_s = read_all(data)
        if args.cold:
            evict(data)
        t = time.perf_counter()
        second = BrokerProcess(*NO_HIGH_WATER, data_dir=data)  # returns once it listens
        ready_s = time.perf_counter() - t
        cpu_s = second.cpu_seconds()
        rss = second.rss_bytes()
        second.stop()
    sizes = f"{args.size}-{args.max_size}" if args.max_size > args.size else f"{args.size}"
    print(
        f"recovery of {messages:,} live durable messages of {sizes} bytes, after kill -9, "
        f"{'cold' if args.cold else 'warm'} log"
    )
    print(
        f"{'fill s':>8} {'disk MiB':>9} {'read cold MiB/s':>16} {'warm MiB/s':>11} "
        f"{'ready s':>8} {'CPU s':>6} {'MiB/s':>6} {'RSS MiB':>8} {'B/message':>10}"
    )
    print(
        f"{fill_s:>8.1f} {disk:>9.1f} {disk / cold_s:>16.0f} {disk / warm_s:>11.0f} "
        f"{ready_s:>8.2f} {cpu_s:>6.2f} {disk / ready_s:>6.0f} {rss / 2**20:>8.1f} "
        f"{rss / messages:>10.0f}"
    )


if __name__ == "__main__":
    main()
