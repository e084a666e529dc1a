"""CREATE+DELETE pairs per second through a real broker.

Each pair is ``CREATE <name> <kind>`` then ``DELETE <name>`` on one connection.

* ``pipelined``: chunks of 1000 pre-encoded pairs written back to back; the replies
  (two ``+OK`` per pair) are counted by a reader thread with one ``bytes.count`` per read.
* ``one at a time``: send CREATE, wait for its reply, send DELETE, wait: a round trip
  per command, so the figure is latency-bound.

Kinds: queue, fanout and topic exchanges on a ``--memory`` broker, and a durable queue
on a broker with a private ``--data-dir`` and ``--fsync always`` (each CREATE and DELETE
of a durable object is journalled before its reply).  Usage::

    python benchmarks/bench_admin.py [--seconds S] [--quick]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402
from rawclient import (  # noqa: E402
    Reader,
    base_parser,
    connect,
    load_note,
    print_table,
    read_until,
    run_flow,
)

PAIRS_PER_CHUNK = 1000

KINDS: list[tuple[str, bytes, bool]] = [
    ("queue", b"queue", False),
    ("fanout exchange", b"fanout", False),
    ("topic exchange", b"topic", False),
    ("durable queue (fsync=always)", b"queue durable", True),
]


Result = tuple[int, float, float, float]  # pairs, seconds, broker CPU s, broker CPU wait s


def pipelined(broker: BrokerProcess, kind: bytes, seconds: float) -> Result:
    """Pairs pipelined in chunks."""
    s = connect(broker.host, broker.port)
    chunk = b"".join(
        b"CREATE a%d %s\r\nDELETE a%d\r\n" % (i, kind, i) for i in range(PAIRS_PER_CHUNK)
    )
    r = run_flow(
        s,
        [chunk],
        [],
        Reader(b"+OK"),
        seconds=seconds,
        max_messages=2_000_000,
        per_chunk=2 * PAIRS_PER_CHUNK,
        cpu=broker.cpu_seconds,
        cpu_wait=broker.cpu_wait_seconds,
        idle=5.0,
    )
    s.close()
    if r.confirmed != r.published:
        raise RuntimeError(f"{r.published - r.confirmed} of {r.published} commands failed")
    return r.confirmed // 2, r.publish_seconds, r.broker_cpu, r.broker_wait


def one_at_a_time(broker: BrokerProcess, kind: bytes, seconds: float) -> Result:
    s = connect(broker.host, broker.port)
    create, delete = b"CREATE one %s\r\n" % kind, b"DELETE one\r\n"
    pairs = 0
    cpu0 = broker.cpu_seconds()
    wait0 = broker.cpu_wait_seconds()
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end and pairs < 1_000_000:
        s.sendall(create)
        a = read_until(s, b"\r\n")
        s.sendall(delete)
        b = read_until(s, b"\r\n")
        if not (a.startswith(b"+OK") and b.startswith(b"+OK")):
            raise RuntimeError(f"CREATE -> {a!r}, DELETE -> {b!r}")
        pairs += 1
    elapsed = time.perf_counter() - t0
    cpu = broker.cpu_seconds() - cpu0
    wait = broker.cpu_wait_seconds() - wait0
    s.close()
    return pairs, elapsed, cpu, wait


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=4.0, help="per case (default 4)")
    args = ap.parse_args()
    seconds = 0.4 if args.quick else args.seconds
    print(f"# {load_note()}", flush=True)
    rows: list[list[object]] = []
    memory = BrokerProcess("--memory")
    durable = BrokerProcess("--fsync", "always")
    try:
        for label, kind, is_durable in KINDS:
            broker = durable if is_durable else memory
            for mode, run in (("pipelined", pipelined), ("one at a time", one_at_a_time)):
                pairs, elapsed, cpu, wait = run(broker, kind, seconds)
                rows.append(
                    [
                        label,
                        mode,
                        pairs,
                        pairs / elapsed,
                        100 * cpu / elapsed,
                        100 * wait / elapsed,
                        1e6 * cpu / pairs if pairs else float("nan"),
                    ]
                )
    finally:
        memory.stop()
        durable.stop()
    print_table(
        "CREATE+DELETE pairs per second (one connection)",
        ["kind", "mode", "pairs", "pairs/s", "broker CPU %", "CPU wait %", "CPU us/pair"],
        rows,
    )


if __name__ == "__main__":
    main()
