"""Cluster mode beside the single broker: confirmed publishes and 1->1 through 1, 2, 3 nodes.

Starts a local Redis Cluster (3 masters, ``scripts/redis_cluster.py``, no replicas,
no persistence: what is measured is the nodes and the round trips, not Redis's disk),
then for the single broker (``--fsync always`` on local disk, and ``--memory``) and for
1, 2 and 3 cluster nodes runs two cases on a durable queue:

``publish``
    confirmed publishes: ``--publishers`` connections (spread over the nodes), each
    keeping ``--window`` publishes in flight (one more per ``+OK``); nobody consumes;
``1->1``
    one publisher on the first node (windowed, confirmed) and one consumer
    (``ack=manual``, acking each read with one ``ACK a-b``) on the last node: messages
    delivered and acknowledged per second.

Columns: messages per second, the nodes' CPU (all node processes) and Redis's CPU
(all redis-server processes) in microseconds per message, and the Redis commands per
message (``total_commands_processed`` over the masters, before and after).  Usage::

    python benchmarks/bench_cluster.py [--seconds S] [--publishers 4] [--window 64]
                                       [--nodes 1,2,3] [--quick]
"""

from __future__ import annotations

import importlib.util
import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402
from rawclient import (  # noqa: E402
    base_parser,
    command,
    connect,
    load_note,
    machine,
    mbroker_publish,
    print_table,
)

ROOT = Path(__file__).resolve().parent.parent


def dev_cluster() -> Any:
    path = ROOT / "scripts" / "redis_cluster.py"
    spec = importlib.util.spec_from_file_location("redis_cluster_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.DevCluster(masters=3)


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_commands(dev: Any) -> int:
    total = 0
    for host, port in dev.nodes:
        out = subprocess.run(
            ["redis-cli", "-h", host, "-p", str(port), "info", "stats"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        for line in out.splitlines():
            if line.startswith("total_commands_processed:"):
                total += int(line.split(":")[1])
    return total


class Setup:
    """The brokers of one row: a single broker, or N nodes on the Redis Cluster."""

    def __init__(self, brokers: list[BrokerProcess], dev: Any | None) -> None:
        self.brokers = brokers
        self.dev = dev

    def cpu(self) -> tuple[float, float]:
        nodes = sum(b.cpu_seconds() for b in self.brokers)
        redis = sum(proc_cpu(p.pid) for p in self.dev.processes.values()) if self.dev else 0.0
        return nodes, redis

    def commands(self) -> int:
        return redis_commands(self.dev) if self.dev else 0


def run(
    setup: Setup, case: str, seconds: float, publishers: int, window: int, options: str = ""
) -> list[float]:
    """``[messages, rate, node µs/msg, redis µs/msg, redis commands/msg]``."""
    brokers = setup.brokers
    first = brokers[0]
    admin = connect(first.host, first.port)
    command(admin, b"CREATE bq queue durable " + options.encode())
    time.sleep(0.3)  # (the namespace spreads to the other nodes: at most a few ms)
    consumer = None
    if case == "1->1":
        last = brokers[-1]
        consumer = connect(last.host, last.port)
        command(consumer, b"SUBSCRIBE bq ack=manual prefetch=512")
        pubs = [connect(first.host, first.port)]
    else:
        pubs = [
            connect(brokers[i % len(brokers)].host, brokers[i % len(brokers)].port)
            for i in range(publishers)
        ]
    frame = mbroker_publish(b"bq", 128)
    sel = selectors.DefaultSelector()
    for s in pubs:
        sel.register(s, selectors.EVENT_READ, "pub")
    if consumer is not None:
        sel.register(consumer, selectors.EVENT_READ, "sub")
    tails: dict[socket.socket, bytes] = {s: b"" for s in pubs}
    confirmed = received = 0
    in_flight = 0
    cpu0, rcpu0, cmd0 = *setup.cpu(), setup.commands()
    t0 = time.perf_counter()
    end = t0 + seconds
    for s in pubs:
        s.sendall(frame * window)
        in_flight += window
    sending = True
    t_last = t0
    sub_tail = b""
    while time.perf_counter() < end + 30:
        if sending and time.perf_counter() >= end:
            sending = False
        if not sending and not in_flight and (consumer is None or received >= confirmed):
            break
        for key, _ in sel.select(0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("a broker closed a connection")
            if key.data == "sub":
                data = sub_tail + chunk
                sub_tail = data[-3:]
                n = data.count(b"MSG ")
                if n:
                    s.sendall(b"ACK %d-%d\r\n" % (received + 1, received + n))
                    received += n
                    t_last = time.perf_counter()
                continue
            data = tails[s] + chunk
            tails[s] = data[-2:]
            if b"-ERR" in data:
                raise RuntimeError(f"refused: {data[-200:]!r}")
            n = data.count(b"+OK")
            confirmed += n
            in_flight -= n
            if consumer is None:
                t_last = time.perf_counter()
            if sending and n:
                s.sendall(frame * n)
                in_flight += n
    cpu1, rcpu1 = setup.cpu()
    cmds = setup.commands() - cmd0
    messages = received if consumer is not None else confirmed
    elapsed = t_last - t0
    for s in pubs:
        s.close()
    if consumer is not None:
        consumer.close()
    command(admin, b"DELETE bq")
    admin.close()
    per = max(messages, 1)
    return [
        messages,
        messages / elapsed if elapsed else 0.0,
        1e6 * (cpu1 - cpu0) / per,
        1e6 * (rcpu1 - rcpu0) / per,
        cmds / per,
    ]


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument(
        "--queue-options", default="", help="more CREATE options, e.g. 'max-length=9999999'"
    )
    ap.add_argument("--cases", default="publish,1->1")
    ap.add_argument("--no-single", action="store_true", help="cluster nodes only")
    args = ap.parse_args()
    options = args.queue_options
    seconds = 0.5 if args.quick else args.seconds
    print(f"# {machine()}")
    print(f"# {load_note()}", flush=True)
    rows: list[list[object]] = []
    cases = args.cases.split(",")
    singles = (("single --fsync always", ()), ("single --memory", ("--memory",)))
    for label, extra in () if args.no_single else singles:
        with BrokerProcess(*extra) as broker:
            for case in cases:
                rows.append(
                    [
                        label,
                        case,
                        *run(
                            Setup([broker], None),
                            case,
                            seconds,
                            args.publishers,
                            args.window,
                            options,
                        ),
                    ]
                )
    dev = dev_cluster().start()
    try:
        for n in [int(x) for x in args.nodes.split(",")]:
            brokers: list[BrokerProcess] = []
            try:
                for i in range(n):
                    brokers.append(
                        BrokerProcess("--cluster", dev.url, "--node-name", f"bench{n}-{i}")
                    )
                setup = Setup(brokers, dev)
                for case in cases:
                    rows.append(
                        [
                            f"cluster, {n} node(s)",
                            case,
                            *run(setup, case, seconds, args.publishers, args.window, options),
                        ]
                    )
            finally:
                for b in brokers:
                    b.stop()
    finally:
        dev.stop()
    print_table(
        f"cluster mode beside the single broker (durable queue {options}, 128-byte payloads)",
        [
            "setup",
            "case",
            "messages",
            "msg/s",
            "node CPU us/msg",
            "Redis CPU us/msg",
            "Redis cmds/msg",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
