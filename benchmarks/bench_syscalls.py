"""System calls per message, one at a time: mbroker beside the bare forwarder.

The same one-at-a-time exchange as ``bench_latency.py`` (publish one 128-byte message,
wait for it on the subscriber, read the ``+OK``), while ``strace -c -f`` counts the
server's system calls.  It explains the latency gap that CPU time alone does not: every
call is a trip into the kernel.  ``strace`` slows the calls it traces, so only their
counts are printed.  Needs ``strace`` (Debian: ``apt-get install strace``).  Usage::

    python benchmarks/bench_syscalls.py [--messages 3000] [--quick]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_latency  # noqa: E402
from brokerproc import BrokerProcess  # noqa: E402
from forwarder import ForwarderProcess  # noqa: E402
from rawclient import base_parser, print_table  # noqa: E402


def counts(report: str) -> dict[str, int]:
    """``strace -c`` output -> calls per syscall name."""
    out: dict[str, int] = {}
    for line in report.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            out[parts[-1]] = int(parts[3])
    return out


def traced(server: BrokerProcess, pair: object, messages: int) -> dict[str, int]:
    bench_latency.one_at_a_time(pair, 0, 200)  # type: ignore[arg-type]
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-p", str(server.proc.pid), "-o", out.name],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # strace attaches
        bench_latency.one_at_a_time(pair, messages, 0)  # type: ignore[arg-type]
        tracer.terminate()
        tracer.wait()
        return counts(out.read())


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--messages", type=int, default=3000)
    args = ap.parse_args()
    if shutil.which("strace") is None:
        print("bench_syscalls.py: not run, strace is not installed (apt-get install strace)")
        return
    messages = 300 if args.quick else args.messages
    results = {}
    with BrokerProcess("--memory") as broker:
        pair = bench_latency.Pair(broker, 128)
        results["mbroker"] = traced(broker, pair, messages)
        pair.close()
    with ForwarderProcess() as fwd:
        fpair = bench_latency.ForwarderPair(fwd, 128)
        results["forwarder"] = traced(fwd, fpair, messages)
        fpair.close()
    names = ["recvfrom", "sendto", "epoll_ctl", "epoll_wait"]
    rows = []
    for server, calls in results.items():
        others = sum(v for k, v in calls.items() if k not in names)
        per = [calls.get(k, 0) / messages for k in names]
        rows.append([server, messages, *per, others / messages, sum(calls.values()) / messages])
    print_table(
        "system calls per message, one at a time (strace -c -f on the server)",
        ["server", "messages", *names, "other", "total"],
        rows,
    )


if __name__ == "__main__":
    main()
