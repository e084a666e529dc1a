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
counted.

In the same run, and placed the same way, the bare Twisted line forwarder
(``benchmarks/forwarder.py``, the ceiling of the design) is measured one at a time too:
send one line of 128 ``x`` plus ``\\n``, wait for it on the subscriber connection,
repeat.  The two one-at-a-time runs alternate in ``--blocks`` blocks (each block after
a few uncounted messages), so both see the same load of a busy machine; ``fwd p50`` …
are the forwarder's figures and ``p50/fwd``, ``p99/fwd`` mbroker's divided by them.
Usage::

    python benchmarks/bench_latency.py [--messages N] [--rate R] [--seconds S] [--blocks B]
        [--quick]
"""

from __future__ import annotations

import math
import os
import select
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess, set_affinity  # noqa: E402
from forwarder import ForwarderProcess  # noqa: E402
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

    def after(self) -> None:
        read_until(self.pub, b"\r\n")  # the +OK of a publish, outside the timed part

    def close(self) -> None:
        for s in (self.pub, self.sub, self.admin):
            s.close()


class ForwarderPair:
    """A publisher and the subscriber on the bare forwarder; no replies."""

    def __init__(self, fwd: ForwarderProcess, size: int) -> None:
        self.sub, self.pub = fwd.subscribed_pair()
        self.frame = b"x" * size + b"\n"

    def count(self, chunk: bytes) -> int:
        return chunk.count(b"\n")

    def after(self) -> None:
        pass

    def close(self) -> None:
        for s in (self.pub, self.sub):
            s.close()


def one_at_a_time(
    pair: Pair | ForwarderPair, messages: int, warmup: int
) -> tuple[list[float], list[float]]:
    latencies: list[float] = []
    for i in range(warmup + messages):
        t = time.perf_counter()
        pair.pub.sendall(pair.frame)
        while True:
            chunk = pair.sub.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the subscriber")
            if pair.count(chunk):
                break
        if i >= warmup:
            latencies.append(time.perf_counter() - t)
        pair.after()
    return latencies, []


def alternating(
    pairs: list[Pair | ForwarderPair], messages: int, warmup: int, blocks: int
) -> list[list[float]]:
    """One at a time on each pair, in *blocks* alternating blocks: the latencies of each.

    Each pair first gets *warmup* uncounted messages, and each block a few more: the
    first messages after the other server ran find colder caches.
    """
    blocks = max(1, min(blocks, messages))
    rewarm = min(20, warmup)
    out: list[list[float]] = [[] for _ in pairs]
    for pair in pairs:
        one_at_a_time(pair, 0, warmup)
    for b in range(blocks):
        n = messages * (b + 1) // blocks - messages * b // blocks
        for pair, lat in zip(pairs, out):
            lat.extend(one_at_a_time(pair, n, rewarm)[0])
    return out


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
    set_affinity(0, cpus)  # (this client is one thread)


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--messages", type=int, default=20_000, help="one at a time (20,000)")
    ap.add_argument("--rate", type=float, default=10_000.0, help="paced rate (10,000/s)")
    ap.add_argument("--seconds", type=float, default=5.0, help="paced run length (5 s)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument(
        "--blocks", type=int, default=10, help="alternating blocks, mbroker and forwarder (10)"
    )
    args = ap.parse_args()
    messages, seconds = (1000, 0.3) if args.quick else (args.messages, args.seconds)
    warmup, warmup_seconds = (100, 0.1) if args.quick else (1000, 0.5)
    blocks = 2 if args.quick else args.blocks
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
    nan = float("nan")
    for placement, broker_cpus, client_cpus in placements:
        with BrokerProcess("--memory") as broker, ForwarderProcess() as fwd:
            broker.pin(broker_cpus)
            fwd.pin(broker_cpus)
            pin_self(client_cpus)
            pair = Pair(broker, args.size)
            fpair = ForwarderPair(fwd, args.size)
            try:
                lat, fwd_lat = alternating([pair, fpair], messages, warmup, blocks)
                runs = [
                    ("one at a time", lat, [], fwd_lat),
                    (
                        f"paced {args.rate:,.0f}/s",
                        *paced(pair, args.rate, seconds, warmup_seconds),
                        [],
                    ),
                ]
            finally:
                pair.close()
                fpair.close()
                pin_self(None)
        for mode, lat, lag, flat in runs:
            lat.sort()
            lag.sort()
            flat.sort()
            qs = (0.5, 0.99, 0.999)
            us = [1e6 * percentile(lat, q) for q in qs]
            fwd_us = [1e6 * percentile(flat, q) for q in qs]
            rows.append(
                [
                    mode,
                    placement,
                    len(lat),
                    *us,
                    1e6 * lat[-1],
                    1e6 * percentile(lag, 0.99) if lag else nan,
                    *fwd_us,
                    us[0] / fwd_us[0] if flat else nan,
                    us[1] / fwd_us[1] if flat else nan,
                ]
            )
    print_table(
        f"publish -> deliver latency, {args.size}-byte payloads, microseconds; "
        "fwd: the bare forwarder one at a time, same placement, same run",
        [
            "mode",
            "placement",
            "messages",
            "p50",
            "p99",
            "p99.9",
            "max",
            "send lag p99",
            "fwd p50",
            "fwd p99",
            "fwd p99.9",
            "p50/fwd",
            "p99/fwd",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
