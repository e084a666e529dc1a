"""Publish -> deliver throughput through a real broker, 1 publisher -> N subscribers.

The client is kept cheap so that the broker is what is measured: the publisher sends
pre-encoded, pipelined ``PUBLISH`` frames in large writes and counts ``+OK`` replies
with one ``bytes.count`` per read; each subscriber counts ``MSG`` frames the same way
(the payload is all ``x`` so it never contains the marker).

Usage::

    python benchmarks/bench_pubsub.py [--messages N] [--size BYTES] [--subscribers 1,4]

Prints one row per case: delivered messages/s, broker CPU seconds per million
messages, and the broker's RSS at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402


def connect(host: str, port: int) -> socket.socket:
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    f.readline()  # HELLO
    return s


def command(s: socket.socket, line: bytes) -> bytes:
    s.sendall(line + b"\r\n")
    buf = b""
    while not buf.endswith(b"\r\n"):
        buf += s.recv(4096)
    return buf


def count_until(
    s: socket.socket, marker: bytes, total: int, done: threading.Event, got: list[int]
) -> None:
    """Count ``marker`` in the stream until ``total`` were seen."""
    n = 0
    tail = b""
    keep = len(marker) - 1
    while n < total:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data = tail + chunk
        n += data.count(marker)
        tail = data[-keep:]
    got.append(n)
    done.set()


def run_case(broker: BrokerProcess, subscribers: int, messages: int, size: int) -> dict[str, float]:
    host, port = broker.host, broker.port
    admin = connect(host, port)
    name = b"bench%d" % subscribers
    kind = b"queue" if subscribers == 1 else b"fanout"
    assert command(admin, b"CREATE " + name + b" " + kind).startswith(b"+OK")
    subs = []
    for _ in range(subscribers):
        s = connect(host, port)
        s.sendall(b"SUBSCRIBE " + name + b"\r\n")
        subs.append(s)
    # wait for the +OK sid of each subscription before publishing
    for s in subs:
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(4096)
    pub = connect(host, port)
    frame = b"PUBLISH %s %d\r\n%s\r\n" % (name, size, b"x" * size)
    batch = frame * 1000
    events, counts = [], []
    for s in subs:
        ev = threading.Event()
        got: list[int] = []
        threading.Thread(
            target=count_until, args=(s, b"MSG ", messages, ev, got), daemon=True
        ).start()
        events.append(ev)
        counts.append(got)
    acks_done = threading.Event()
    acks: list[int] = []
    threading.Thread(
        target=count_until, args=(pub, b"+OK", messages, acks_done, acks), daemon=True
    ).start()
    cpu0 = broker.cpu_seconds()
    t0 = time.perf_counter()
    for _ in range(messages // 1000):
        pub.sendall(batch)
    for ev in events:
        ev.wait(300)
    elapsed = time.perf_counter() - t0
    acks_done.wait(60)
    cpu = broker.cpu_seconds() - cpu0
    delivered = sum(c[0] if c else 0 for c in counts)
    for s in [*subs, pub, admin]:
        s.close()
    return {
        "subscribers": subscribers,
        "published": messages,
        "delivered": delivered,
        "seconds": elapsed,
        "delivered_per_s": delivered / elapsed,
        "cpu_s_per_million": cpu / (delivered / 1e6) if delivered else float("nan"),
        "rss_mib": broker.rss_bytes() / (1 << 20),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--subscribers", default="1,4")
    args = ap.parse_args()
    messages = max(1000, args.messages // 1000 * 1000)
    rows = []
    with BrokerProcess() as broker:
        for n in [int(x) for x in args.subscribers.split(",")]:
            rows.append(run_case(broker, n, messages, args.size))
    print(f"publish -> deliver, {args.size}-byte payloads, one pipelining publisher")
    print(
        f"{'subs':>5} {'published':>10} {'delivered':>10} {'seconds':>8} {'deliv/s':>10} "
        f"{'cpu s/M':>8} {'rss MiB':>8}"
    )
    for r in rows:
        print(
            f"{r['subscribers']:>5} {r['published']:>10} {r['delivered']:>10} {r['seconds']:>8.2f} "
            f"{r['delivered_per_s']:>10,.0f} {r['cpu_s_per_million']:>8.2f} {r['rss_mib']:>8.1f}"
        )


if __name__ == "__main__":
    main()
