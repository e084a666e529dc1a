"""Publish -> deliver latency through a real broker: p50, p99, p99.9.

One publisher connection and one subscriber connection (``SUBSCRIBE`` on a queue,
``ack=auto``), 128-byte payloads, on a ``--memory`` broker.

* ``one at a time``: publish, wait for the ``MSG``, publish the next: the latency of an
  idle broker.
* ``paced 10,000/s``: message *i* is due at ``t0 + i / rate``; one thread sends what is
  due and, in between, waits in ``select`` on both sockets (timer slack set to 1 ns so
  the waits end on time).  A message's latency runs from its *due* time, not its send
  time, so a stall of the client or the broker counts in full for every message it
  delays (no coordinated omission); ``send lag`` is how late the client itself sent.

Each is run three ways: unpinned; broker and client pinned to the same CPU
(``os.sched_setaffinity``, what ``taskset`` does: they take turns on one core); and
pinned to different CPUs.  The first messages of each run are a warm-up and are not
counted.  Usage::

    python benchmarks/bench_latency.py [--messages N] [--rate R] [--seconds S] [--quick]
"""

from __future__ import annotations

import math
import os
import select
import sys
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
    read_until,
    tight_timers,
)

MARKER = b"MSG "


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class Pair:
    """A publisher and a subscriber on queue ``lat``."""

    def __init__(self, broker: BrokerProcess, size: int) -> None:
        self.admin = connect(broker.host, broker.port)
        command(self.admin, b"CREATE lat queue")
        self.sub = connect(broker.host, broker.port)
        command(self.sub, b"SUBSCRIBE lat")
        self.pub = connect(broker.host, broker.port)
        self.frame = mbroker_publish(b"lat", size)
        self.tail = b""

    def count(self, chunk: bytes) -> int:
        data = self.tail + chunk
        self.tail = data[-3:]
        return data.count(MARKER)

    def close(self) -> None:
        for s in (self.pub, self.sub, self.admin):
            s.close()


def one_at_a_time(pair: Pair, messages: int, warmup: int) -> tuple[list[float], list[float]]:
    latencies: list[float] = []
    for i in range(warmup + messages):
        t = time.perf_counter()
        pair.pub.sendall(pair.frame)
        while True:
            chunk = pair.sub.recv(65536)
            if not chunk:
                raise ConnectionError("broker closed the subscriber")
            if pair.count(chunk):
                break
        if i >= warmup:
            latencies.append(time.perf_counter() - t)
        read_until(pair.pub, b"\r\n")  # its +OK 1, outside the timed part
    return latencies, []


def paced(
    pair: Pair, rate: float, seconds: float, warmup_seconds: float
) -> tuple[list[float], list[float]]:
    """(latencies from the due time, send lags) of the messages after the warm-up."""
    total = int((seconds + warmup_seconds) * rate)
    skip = int(warmup_seconds * rate)
    due = [0.0] * total
    arrived = [0.0] * total
    lag = [0.0] * total
    sent = received = 0
    sub, pub = pair.sub, pair.pub
    frame = pair.frame
    t0 = time.perf_counter() + 0.01
    for i in range(total):
        due[i] = t0 + i / rate
    deadline = t0 + seconds + warmup_seconds + 30
    while received < total:
        now = time.perf_counter()
        if now > deadline:
            raise TimeoutError(f"{received} of {total} delivered")
        if sent < total and now >= due[sent]:
            n = min(total, int((now - t0) * rate) + 1) - sent
            pub.sendall(frame * n)
            after = time.perf_counter()
            for i in range(sent, sent + n):
                lag[i] = after - due[i]
            sent += n
        wait = max(0.0, due[sent] - time.perf_counter()) if sent < total else 1.0
        readable, _, _ = select.select([sub, pub], [], [], wait)
        for s in readable:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("broker closed a connection")
            if s is sub:
                got = pair.count(chunk)
                t = time.perf_counter()
                for i in range(received, min(total, received + got)):
                    arrived[i] = t
                received += got
    lat = [arrived[i] - due[i] for i in range(skip, total)]
    return lat, lag[skip:]


def pin_self(cpus: set[int] | None) -> None:
    os.sched_setaffinity(0, cpus if cpus is not None else set(range(os.cpu_count() or 1)))


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--messages", type=int, default=20_000, help="one at a time (20,000)")
    ap.add_argument("--rate", type=float, default=10_000.0, help="paced rate (10,000/s)")
    ap.add_argument("--seconds", type=float, default=5.0, help="paced run length (5 s)")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    messages, seconds = (1000, 0.3) if args.quick else (args.messages, args.seconds)
    warmup, warmup_seconds = (100, 0.1) if args.quick else (1000, 0.5)
    tight_timers()
    ncpu = os.cpu_count() or 1
    placements: list[tuple[str, set[int] | None, set[int] | None]] = [
        ("unpinned", None, None),
        ("same CPU (0)", {0}, {0}),
    ]
    if ncpu > 1:
        placements.append(("broker CPU 1, client CPU 0", {1}, {0}))
    print(f"# {load_note()}", flush=True)
    rows: list[list[object]] = []
    for placement, broker_cpus, client_cpus in placements:
        with BrokerProcess("--memory") as broker:
            broker.pin(broker_cpus)
            pin_self(client_cpus)
            pair = Pair(broker, args.size)
            try:
                runs = [
                    ("one at a time", *one_at_a_time(pair, messages, warmup)),
                    (
                        f"paced {args.rate:,.0f}/s",
                        *paced(pair, args.rate, seconds, warmup_seconds),
                    ),
                ]
            finally:
                pair.close()
                pin_self(None)
        for mode, lat, lag in runs:
            lat.sort()
            lag.sort()
            us = [1e6 * percentile(lat, q) for q in (0.5, 0.99, 0.999)]
            rows.append(
                [
                    mode,
                    placement,
                    len(lat),
                    *us,
                    1e6 * lat[-1],
                    1e6 * percentile(lag, 0.99) if lag else float("nan"),
                ]
            )
    print_table(
        f"publish -> deliver latency, {args.size}-byte payloads, microseconds",
        ["mode", "placement", "messages", "p50", "p99", "p99.9", "max", "send lag p99"],
        rows,
    )


if __name__ == "__main__":
    main()
