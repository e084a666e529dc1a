"""Confirmed durable publishes per second: 1, 4 and 16 publishers, each with a window.

The broker runs with a private ``--data-dir`` on local disk and ``--fsync always``: a
``PUBLISH`` into the durable queue is answered ``+OK 1`` only once the message is on
disk and fsync'd (publishes that arrive together share one fsync).  Every publisher
keeps ``--window`` messages in flight: it starts with that many and sends one more per
``+OK``.  One thread drives all the publisher sockets through a selector; replies are
counted with one ``bytes.count`` per read and answered with pre-encoded frames, so the
client is cheap.  Each case uses a fresh broker and an empty data directory.

``--consumer acking`` (the performance target's setting) adds one consumer on the queue
(``ack=manual``) that acknowledges everything it gets with one ``ACK a-b`` per read:
the broker then also stores every removal, and the reply to each ACK waits for that
too; ``none`` leaves the messages in the queue.  Both are run by default.

Columns: confirmed publishes per second, the mean time to a confirmation (Little's
law: messages in flight / rate), the broker's CPU use, how long it was ready to run
but waited for a CPU (other work on the machine), its CPU seconds per million
confirmed publishes, and the size of the data directory at the end.  Usage::

    python benchmarks/bench_durable.py [--publishers 1,4,16] [--window 64] [--seconds S]
                                       [--fsync always[,interval,never]]
                                       [--consumer acking,none] [--quick]
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


class Acker:
    """One consumer on the durable queue (``ack=manual``) that acknowledges, with one
    ``ACK a-b`` per read, every message it received.  Tags run 1, 2, 3 … on its
    connection, so counting the ``MSG`` frames is enough to name them."""

    def __init__(self, broker: BrokerProcess, prefetch: int) -> None:
        self.sock = connect(broker.host, broker.port)
        reply = command(self.sock, b"SUBSCRIBE dq ack=manual prefetch=%d" % prefetch)
        assert reply.startswith(b"+OK"), reply
        self.received = 0
        self.acked = 0
        self.tail = b""

    def on_read(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("broker closed the consumer connection")
        data = self.tail + chunk
        self.tail = data[-3:]
        n = data.count(b"MSG ")
        if n:
            self.sock.sendall(b"ACK %d-%d\r\n" % (self.received + 1, self.received + n))
            self.received += n
        if b"-ERR" in data:
            raise RuntimeError(f"the consumer got an error: {data[-200:]!r}")


def run_case(
    broker: BrokerProcess, publishers: int, window: int, seconds: float, size: int, consumer: bool
) -> tuple[int, float, float, float, int]:
    """(confirmed, seconds, broker CPU s, broker CPU wait s, acked) for *publishers* x
    *window*, with or without a consumer acknowledging the messages."""
    admin = connect(broker.host, broker.port)
    command(admin, b"CREATE dq queue durable")
    acker = Acker(broker, 4 * publishers * window) if consumer else None
    frame = mbroker_publish(b"dq", size)
    frames = [frame * n for n in range(window + 1)]  # pre-encoded refills
    sel = selectors.DefaultSelector()
    if acker is not None:
        sel.register(acker.sock, selectors.EVENT_READ)
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
            if acker is not None and ready is acker.sock:
                acker.on_read()
                continue
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
    acked = 0
    if acker is not None:
        acked = acker.received
        acker.sock.close()
    for s in socks:
        sel.unregister(s)
        s.close()
    sel.close()
    admin.close()
    return confirmed, t_last - t0, cpu, wait, acked


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--publishers", default="1,4,16")
    ap.add_argument("--window", type=int, default=64, help="messages in flight per publisher")
    ap.add_argument("--seconds", type=float, default=5.0, help="per case (default 5)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--fsync", default="always", help="comma-separated fsync policies")
    ap.add_argument(
        "--consumer",
        default="acking,none",
        help="comma-separated: acking (a consumer acks every message), none",
    )
    args = ap.parse_args()
    seconds = 0.5 if args.quick else args.seconds
    print(f"# {load_note()}", flush=True)
    rows: list[list[object]] = []
    cases = [
        (policy, consumer, int(publishers))
        for policy in args.fsync.split(",")
        for consumer in args.consumer.split(",")
        for publishers in args.publishers.split(",")
    ]
    for policy, consumer, publishers in cases:
        if consumer not in ("acking", "none"):
            ap.error(f"--consumer: acking or none, not {consumer!r}")
        with tempfile.TemporaryDirectory(prefix="mbroker-durable-", dir="/var/tmp") as d:
            with BrokerProcess("--fsync", policy, data_dir=d) as broker:
                confirmed, elapsed, cpu, wait, acked = run_case(
                    broker, publishers, args.window, seconds, args.size, consumer == "acking"
                )
                rate = confirmed / elapsed
                rows.append(
                    [
                        policy,
                        consumer,
                        publishers,
                        args.window,
                        confirmed,
                        rate,
                        1e3 * publishers * args.window / rate,
                        100 * cpu / elapsed,
                        100 * wait / elapsed,
                        cpu / (confirmed / 1e6),
                        acked,
                        dir_bytes(d) / (1 << 20),
                    ]
                )
    print_table(
        f"confirmed durable publishes, {args.size}-byte payloads, one durable queue, "
        "data dir on local disk (/var/tmp)",
        [
            "fsync",
            "consumer",
            "publishers",
            "window",
            "confirmed",
            "confirmed/s",
            "mean confirm ms",
            "broker CPU %",
            "CPU wait %",
            "CPU s/M msgs",
            "acked",
            "data dir MiB",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
