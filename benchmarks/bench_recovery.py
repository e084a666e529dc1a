"""Broker start-up with a million live durable messages: time to ready, and memory.

Fills a durable queue through a real ``twistd -n mbroker`` (pipelined, confirmed),
kills it with SIGKILL, starts it again on the same data directory and measures how
long until it listens (it replays the log first) and its RSS then.  Both brokers run
with ``--memory-high-water 0``: past a few million messages the default high-water mark
(1 GiB) would rightly stop reading the publisher.

Usage::

    python benchmarks/bench_recovery.py [--messages N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402

NO_HIGH_WATER = ("--memory-high-water", "0")


def fill(broker: BrokerProcess, messages: int, size: int) -> None:
    sock = socket.create_connection((broker.host, broker.port))
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"CREATE big queue durable\r\n")
    assert f.readline().startswith(b"+OK")
    frame = b"PUBLISH big %d\r\n%s\r\n" % (size, b"x" * size)
    batch = 1000
    sent = confirmed = 0
    while confirmed < messages:
        while sent < messages and sent - confirmed < 20 * batch:
            sock.sendall(frame * batch)
            sent += batch
        for _ in range(batch):
            assert f.readline() == b"+OK 1\r\n"
        confirmed += batch
    sock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    messages = max(1000, args.messages // 1000 * 1000)
    with tempfile.TemporaryDirectory(prefix="mbroker-recovery-") as data:
        first = BrokerProcess(*NO_HIGH_WATER, data_dir=data)
        t = time.perf_counter()
        fill(first, messages, args.size)
        fill_s = time.perf_counter() - t
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        first.stop()
        disk = sum(e.stat().st_size for e in os.scandir(data))
        t = time.perf_counter()
        second = BrokerProcess(*NO_HIGH_WATER, data_dir=data)  # returns once it listens
        ready_s = time.perf_counter() - t
        rss = second.rss_bytes()
        second.stop()
    print(f"recovery of {messages:,} live durable messages of {args.size} bytes, after kill -9")
    print(
        f"{'fill s':>8} {'disk MiB':>9} {'ready s':>8} {'MiB/s':>6} {'RSS MiB':>8} "
        f"{'B/message':>10}"
    )
    print(
        f"{fill_s:>8.1f} {disk / 2**20:>9.1f} {ready_s:>8.2f} {disk / 2**20 / ready_s:>6.0f} "
        f"{rss / 2**20:>8.1f} {rss / messages:>10.0f}"
    )


if __name__ == "__main__":
    main()
