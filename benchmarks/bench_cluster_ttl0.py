"""ttl=0 across cluster nodes: how soon a consumer on another node has the copy, and
how soon an untaken copy reaches its dead-letter queue.

Starts a local Redis Cluster (3 masters, ``scripts/redis_cluster.py``) and two nodes,
A and B.  A consumer (``ack=auto``) waits on B; one message at a time is published on
A (confirmed: the client waits for its ``+OK``) and read on B, into a plain queue and
into a ``ttl=0`` queue in turn: publish → MSG on B, in milliseconds.  A ttl=0 copy
is delivered only when a node reads it within its grace (``GRACE_MS``, 1 s,
``docs/cluster.rst``), so the second table is how far inside that bound the copies
are.  Then, with no consumer anywhere, a ttl=0 copy is published on A while B waits
in ``PULL <dead-letter queue> wait=…``: seconds until the expired copy arrives there
(the expiry sweep's bound, about 2 s).  The first such copy is not counted: B's read
loop on the ttl=0 queue may still wait in Redis for a moment after its consumer left,
and then reads the copy and expires it at once (right: nobody could take it).  Usage::

    python benchmarks/bench_cluster_ttl0.py [--messages 500] [--expiries 5] [--quick]
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cluster import dev_cluster  # noqa: E402
from brokerproc import BrokerProcess  # noqa: E402
from rawclient import (  # noqa: E402
    base_parser,
    command,
    connect,
    load_note,
    machine,
    print_table,
    read_until,
)

SPREAD = 10.0  # s: a queue made on A is known to B well within this


def known(s: socket.socket, name: bytes) -> bool:
    """Whether LIST on connection ``s`` names queue ``name``."""
    s.sendall(b"LIST\r\n")
    listing = b""
    while not re.search(rb"(^|\n)\+OK \d+\r\n$", listing):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed during LIST")
        listing += chunk
    return b"QUEUE " + name + b" " in listing


def wait_known(s: socket.socket, *names: bytes) -> None:
    deadline = time.monotonic() + SPREAD
    while not all(known(s, n) for n in names):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{names!r} never reached the other node")
        time.sleep(0.05)


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--messages", type=int, default=500, help="per queue")
    ap.add_argument("--expiries", type=int, default=5)
    args = ap.parse_args()
    n, expiries = (50, 2) if args.quick else (args.messages, args.expiries)
    print(f"# {machine()}")
    print(f"# {load_note()}", flush=True)
    dev = dev_cluster().start()
    nodes: list[BrokerProcess] = []
    try:
        for name in ("bench-ttl0-a", "bench-ttl0-b"):
            nodes.append(BrokerProcess("--cluster", dev.url, "--node-name", name))
        a, b = nodes
        sa, sb = connect(a.host, a.port), connect(b.host, b.port)
        command(sa, b"CREATE dead queue")
        command(sa, b"CREATE plain queue")
        command(sa, b"CREATE zero queue ttl=0 dead-letter=dead")
        wait_known(sb, b"dead", b"plain", b"zero")
        command(sb, b"SUBSCRIBE plain")
        command(sb, b"SUBSCRIBE zero")
        times: dict[str, list[float]] = {"plain": [], "zero": []}
        for i in range(n):
            for q in ("plain", "zero"):
                payload = b"%s-%06d" % (q.encode(), i)
                start = time.monotonic()
                command(sa, b"PUBLISH %s :%s" % (q.encode(), payload))
                read_until(sb, payload + b"\r\n")
                times[q].append((time.monotonic() - start) * 1000)
        command(sb, b"UNSUBSCRIBE 1")
        command(sb, b"UNSUBSCRIBE 2")
        sb.sendall(b"STATS zero\r\n")
        stats = read_until(sb, b"+OK\r\n")
        expired = int(re.search(rb"STAT expired (\d+)", stats).group(1))  # type: ignore[union-attr]
        took: list[float] = []
        for i in range(-1, expiries):  # (-1: B's read loop may still wait: not counted)
            start = time.monotonic()
            command(sa, b"PUBLISH zero :untaken-%d" % i)
            sb.sendall(b"PULL dead wait=10000\r\n")
            read_until(sb, b"+OK 1\r\n", timeout=15)
            if i >= 0:
                took.append(time.monotonic() - start)
        sa.close()
        sb.close()
    finally:
        for node in nodes:
            node.stop()
        dev.stop()
    rows: list[list[object]] = []
    for q, label in (("plain", "plain queue"), ("zero", "ttl=0 queue")):
        got = sorted(times[q])
        rows.append(
            [
                label,
                len(got),
                statistics.median(got),
                got[int(len(got) * 0.99) - 1],
                got[-1],
            ]
        )
    print_table(
        "publish on node A (confirmed) -> MSG on node B, one at a time (ms)",
        ["queue", "messages", "p50", "p99", "max"],
        rows,
    )
    print(f"ttl=0 copies expired instead of delivered in the run above: {expired} of {n}")
    print_table(
        "an untaken ttl=0 copy: publish on A -> its dead letter in PULL on B (s)",
        ["copies", "min", "median", "max"],
        [[len(took), min(took), statistics.median(took), max(took)]],
    )


if __name__ == "__main__":
    main()
