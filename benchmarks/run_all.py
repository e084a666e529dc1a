"""Run every ``benchmarks/bench_*.py`` and print their tables, one after another.

Each script runs in its own process with this interpreter, its output streamed as it
comes; with ``--quick`` each that has a ``--quick`` option gets it.  A script that fails
or runs past ``--timeout`` is reported and the others still run; the exit status is 1
if any failed.  Usage::

    python benchmarks/run_all.py [--quick] [--only admin,publish] [--skip peers]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rawclient import machine, print_table  # noqa: E402

#: Run first, in this order; any other bench_*.py follows, alphabetically.
ORDER = [
    "admin",
    "publish",
    "pubsub",
    "latency",
    "durable",
    "idle",
    "peers",
    "routing",
    "client",
    "store",
]


def scripts() -> list[Path]:
    found = {p.stem.removeprefix("bench_"): p for p in HERE.glob("bench_*.py")}
    ordered = [found.pop(name) for name in ORDER if name in found]
    return ordered + [found[name] for name in sorted(found)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick where a script has it")
    ap.add_argument("--only", default="", help="comma-separated names (admin, publish, …)")
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per script")
    args = ap.parse_args()
    only = {x for x in args.only.split(",") if x}
    skip = {x for x in args.skip.split(",") if x}
    print(f"# {machine()}")
    print(f"# {date.today().isoformat()}; {sys.executable} benchmarks/run_all.py")
    print(flush=True)
    summary: list[list[object]] = []
    for path in scripts():
        name = path.stem.removeprefix("bench_")
        if (only and name not in only) or name in skip:
            continue
        cmd = [sys.executable, str(path)]
        if args.quick and "--quick" in path.read_text():
            cmd.append("--quick")
        print(f"## {path.name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        try:
            rc = subprocess.run(cmd, cwd=HERE.parent, timeout=args.timeout).returncode
            status = "ok" if rc == 0 else f"exit {rc}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {args.timeout:g} s"
        summary.append([path.name, status, time.monotonic() - t0])
        print(flush=True)
    print_table("benchmark scripts", ["script", "status", "seconds"], summary)
    sys.stdout.flush()
    if any(row[1] != "ok" for row in summary):
        sys.exit(1)


if __name__ == "__main__":
    main()
