"""Confirmed durable publishes per second: 1, 4 and 16 publishers, each with a window.

The broker runs with a private ``--data-dir`` on local disk and ``--fsync always``: a
``PUBLISH`` into the durable queue is answered ``+OK 1`` only once the message is on
disk and fsync'd (publishes that arrive together share one fsync).  Every publisher
keeps ``--window`` messages in flight: it starts with that many and sends one more per
``+OK``.  One thread drives all the publisher sockets through a selector; replies are
counted with one ``bytes.count`` per read and answered with pre-encoded frames, so the
client is cheap.  Each case uses a fresh broker and an empty data directory.

Columns: confirmed publishes per second, the mean time to a confirmation (Little's
law: messages in flight / rate), the broker's CPU use, how long it was ready to run
but waited for a CPU (other work on the machine), its CPU seconds per million
confirmed publishes, and the size of the data directory at the end.  Usage::

    python benchmarks/bench_durable.py [--publishers 1,4,16] [--window 64] [--seconds S]
                                       [--fsync always[,interval,never]] [--quick]
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402
from rawclient import (  # noqa: E402
    base_parser,
    command,
    connect,
    load_note,
    mbroker_publish,
    print_table,
)


def dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def run_case(
    broker: BrokerProcess, publishers: int, window: int, seconds: float, size: int
) -> tuple[int, float, float, float]:
    """(confirmed, seconds, broker CPU s, broker CPU wait s) for *publishers* x *window*."""
    admin = connect(broker.host, broker.port)
    command(admin, b"CREATE dq queue durable")
    frame = mbroker_publish(b"dq", size)
    frames = [frame * n for n in range(window + 1)]  # pre-encoded refills
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    tails: dict[socket.socket, bytes] = {}
    for _ in range(publishers):
        s = connect(broker.host, broker.port)  # blocking: select says when recv won't wait
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
        tails[s] = b""
    confirmed = 0
    errors = 0
    in_flight = 0
    cpu0 = broker.cpu_seconds()
    wait0 = broker.cpu_wait_seconds()
    t0 = time.perf_counter()
    end = t0 + seconds
    for s in socks:
        s.sendall(frames[window])
        in_flight += window
    t_last = t0
    sending = True
    hard_end = end + 30
    while in_flight and time.perf_counter() < hard_end:
        if sending and time.perf_counter() >= end:
            sending = False
        for key, _ in sel.select(0.5):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            chunk = ready.recv(1 << 20)
            if not chunk:
                raise ConnectionError("broker closed a publisher connection")
            data = tails[ready] + chunk
            tails[ready] = data[-2:]
            n = data.count(b"+OK")
            errors += data.count(b"-ERR")
            if not n:
                continue
            confirmed += n
            in_flight -= n
            t_last = time.perf_counter()
            if sending:
                ready.sendall(frames[n] if n <= window else frame * n)
                in_flight += n
    cpu = broker.cpu_seconds() - cpu0
    wait = broker.cpu_wait_seconds() - wait0
    if errors:
        raise RuntimeError(f"{errors} publishes were refused")
    for s in socks:
        sel.unregister(s)
        s.close()
    sel.close()
    admin.close()
    return confirmed, t_last - t0, cpu, wait


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--publishers", default="1,4,16")
    ap.add_argument("--window", type=int, default=64, help="messages in flight per publisher")
    ap.add_argument("--seconds", type=float, default=5.0, help="per case (default 5)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--fsync", default="always", help="comma-separated fsync policies")
    args = ap.parse_args()
    seconds = 0.5 if args.quick else args.seconds
    print(f"# {load_note()}", flush=True)
    rows: list[list[object]] = []
    for policy in args.fsync.split(","):
        for publishers in [int(x) for x in args.publishers.split(",")]:
            with tempfile.TemporaryDirectory(prefix="mbroker-durable-", dir="/var/tmp") as d:
                with BrokerProcess("--fsync", policy, data_dir=d) as broker:
                    confirmed, elapsed, cpu, wait = run_case(
                        broker, publishers, args.window, seconds, args.size
                    )
                    rate = confirmed / elapsed
                    rows.append(
                        [
                            policy,
                            publishers,
                            args.window,
                            confirmed,
                            rate,
                            1e3 * publishers * args.window / rate,
                            100 * cpu / elapsed,
                            100 * wait / elapsed,
                            cpu / (confirmed / 1e6),
                            dir_bytes(d) / (1 << 20),
                        ]
                    )
    print_table(
        f"confirmed durable publishes, {args.size}-byte payloads, one durable queue, "
        "data dir on local disk (/var/tmp)",
        [
            "fsync",
            "publishers",
            "window",
            "confirmed",
            "confirmed/s",
            "mean confirm ms",
            "broker CPU %",
            "CPU wait %",
            "CPU s/M msgs",
            "data dir MiB",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
