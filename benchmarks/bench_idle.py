"""An idle broker's memory; idle connections: how many it holds, what each costs.

First, the RSS of a fresh idle broker, installed with and without the ``tls`` extra
(pyOpenSSL and cryptography, which Twisted imports whenever they are installed).
Then: opens N connections to a fresh ``--memory`` broker started with ``--max-connections``
above N (this script raises its own open-file limit, which the broker inherits),
reads each one's ``HELLO``, then holds them all idle.  Reported: the time to open
them, the broker's RSS before and while they are held, the difference per connection,
the broker's CPU use while they sit idle (no per-connection timers should run), the
round trip of a ``PING`` on one more connection while they are held, and the RSS once
they are all closed again.  Connections are opened in small batches so the listen
backlog (50) never overflows.  Usage::

    python benchmarks/bench_idle.py [--connections 1000,10000] [--quick]
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402
from rawclient import (  # noqa: E402
    base_parser,
    connect,
    load_note,
    print_table,
    raise_nofile,
    read_until,
)

BATCH = 40


def settle(broker: BrokerProcess, seconds: float = 1.0) -> int:
    time.sleep(seconds)
    return broker.rss_bytes()


def ping_us(broker: BrokerProcess, rounds: int = 200) -> float:
    """Median PING round trip, in microseconds, on a fresh connection."""
    s = connect(broker.host, broker.port)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        s.sendall(b"PING\r\n")
        read_until(s, b"\r\n")
        times.append(time.perf_counter() - t)
    s.close()
    times.sort()
    return 1e6 * times[len(times) // 2]


def idle_broker(without_tls: bool) -> list[object]:
    """An idle broker's memory, started with or without pyOpenSSL importable.

    Twisted's endpoints module imports pyOpenSSL (and cryptography) whenever it is
    installed, TLS listener or not: ``pip install .`` leaves it out, the ``tls`` extra
    brings it.  ``without_tls`` hides it from the broker with a stand-in package that
    refuses to import, so both installs are measured from one environment."""
    with tempfile.TemporaryDirectory(prefix="mbroker-no-tls-") as shim:
        path: tuple[str, ...] = ()
        if without_tls:
            os.mkdir(os.path.join(shim, "OpenSSL"))
            with open(os.path.join(shim, "OpenSSL", "__init__.py"), "w") as f:
                f.write("raise ImportError('hidden by bench_idle.py')\n")
            path = (shim,)
        with BrokerProcess("--memory", path=path) as broker:
            ping_us(broker, 20)
            rss = settle(broker)
            pid = broker.proc.pid
            with open(f"/proc/{pid}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
    kib = lambda key: int(fields[key].split()[0]) / 1024  # noqa: E731
    return [
        "without pyOpenSSL (pip install .)" if without_tls else "with pyOpenSSL (the tls extra)",
        rss / (1 << 20),
        kib("RssAnon"),
        kib("RssFile"),
    ]


def run_case(n: int) -> list[object]:
    with BrokerProcess("--memory", "--max-connections", str(n + 100)) as broker:
        # a first connection and a PING warm the broker up before the baseline
        ping_us(broker, 20)
        before = settle(broker)
        socks: list[socket.socket] = []
        t0 = time.perf_counter()
        try:
            while len(socks) < n:
                batch = [
                    socket.create_connection((broker.host, broker.port), timeout=30)
                    for _ in range(min(BATCH, n - len(socks)))
                ]
                socks.extend(batch)
                for s in batch:
                    if not read_until(s, b"\r\n", timeout=30).startswith(b"HELLO"):
                        raise RuntimeError("no HELLO")
            opened = time.perf_counter() - t0
            held = settle(broker)
            cpu0 = broker.cpu_seconds()
            time.sleep(2.0)
            idle_cpu = (broker.cpu_seconds() - cpu0) / 2.0
            ping = ping_us(broker)
            peak = broker.peak_rss_bytes()
        finally:
            for s in socks:
                s.close()
        closed = settle(broker, 2.0)
    mib = 1 << 20
    return [
        n,
        opened,
        n / opened,
        before / mib,
        held / mib,
        (held - before) / n / 1024,
        100 * idle_cpu,
        ping,
        peak / mib,
        closed / mib,
    ]


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--connections", default="1000,10000", help="comma-separated counts")
    args = ap.parse_args()
    counts = [200] if args.quick else [int(x) for x in args.connections.split(",")]
    limit = raise_nofile(max(counts) + 1000)
    if limit < max(counts) + 200:
        print(f"open-file limit {limit} is too low; holding fewer connections")
        counts = [min(c, limit - 200) for c in counts]
    print(f"# {load_note()}", flush=True)
    print_table(
        f"an idle broker (--memory, one PING answered), {sys.implementation.name}",
        ["install", "RSS MiB", "anonymous MiB", "file-backed MiB"],
        [idle_broker(False), idle_broker(True)],
    )
    rows = [run_case(n) for n in counts]
    print_table(
        "idle connections held by one broker (--memory)",
        [
            "connections",
            "open s",
            "opens/s",
            "RSS before MiB",
            "RSS held MiB",
            "KiB/conn",
            "idle CPU %",
            "PING us",
            "peak RSS MiB",
            "RSS closed MiB",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
