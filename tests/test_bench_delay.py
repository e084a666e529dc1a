"""Smoke test of ``benchmarks/bench_delay.py --quick``: it runs, holds its delayed
messages with one clock call, and releases every one of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_delay.py"


def test_quick_run() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("20,000 messages of 16 bytes"), out
    assert "1 clock call pending" in out and "0 clock calls left" in out, out
