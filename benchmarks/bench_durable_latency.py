"""Confirm latency of durable publishes with one message in flight.

One publisher sends ``PUBLISH`` to a durable queue and waits for its ``+OK`` (written
and fsync'd, ``--fsync always``) before the next.  Prints median, p99 and p99.9.

Usage::

    python benchmarks/bench_durable_latency.py [--messages N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while True:
        nl = buf.find(b"\r\n")
        if nl >= 0:
            line = bytes(buf[:nl])
            del buf[: nl + 2]
            return line
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    with BrokerProcess() as broker:  # a fresh data dir, fsync=always
        sock = socket.create_connection((broker.host, broker.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        read_line(sock, buf)  # HELLO
        sock.sendall(b"CREATE lat queue durable\r\n")
        assert read_line(sock, buf).startswith(b"+OK")
        frame = b"PUBLISH lat %d\r\n%s\r\n" % (args.size, b"x" * args.size)
        sock.sendall(b"PURGE lat\r\n")
        read_line(sock, buf)
        times = []
        for _ in range(args.messages):
            t = time.perf_counter()
            sock.sendall(frame)
            reply = read_line(sock, buf)
            times.append(time.perf_counter() - t)
            assert reply == b"+OK 1", reply
        sock.close()
    times.sort()
    n = len(times)

    def pct(p: float) -> float:
        return times[min(n - 1, int(p * n))] * 1e3

    print(f"durable confirm latency, one in flight, {args.size}-byte payloads, fsync=always")
    print(f"{'messages':>9} {'median ms':>10} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}")
    print(f"{n:>9} {pct(0.5):>10.3f} {pct(0.99):>8.3f} {pct(0.999):>9.3f} {times[-1] * 1e3:>8.3f}")


if __name__ == "__main__":
    main()
