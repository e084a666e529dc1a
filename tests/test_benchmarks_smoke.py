"""Smoke test of the benchmark scripts: each runs its ``--quick`` pass against a real
``twistd mbroker`` and prints its table.  Peers are never run here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, title",
    [
        ("bench_admin.py", "CREATE+DELETE pairs per second"),
        ("bench_publish.py", "publish throughput"),
        ("bench_forwarder.py", "publish -> deliver 1->1, bare forwarder and mbroker"),
        ("bench_inprocess.py", "broker CPU per message in-process"),
        ("bench_dedup.py", "publish throughput with ids"),
        ("bench_headers.py", "broker CPU per message with 4 headers of 32 bytes"),
        ("bench_stomp.py", "STOMP SEND -> MESSAGE 1->1 throughput"),
        ("bench_stomp_inprocess.py", "STOMP broker CPU per message in-process"),
        ("bench_cluster.py", "cluster mode beside the single broker"),
    ],
)
def test_quick_run_prints_a_table(script: str, title: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    header, rule, *rows = lines[start + 1 :]
    assert set(rule) <= {"-", " "} and "-" in rule
    rows = [r for r in rows if r.strip()]
    assert len(rows) >= 4, done.stdout
    for row in rows:  # every row has a positive rate in it
        assert any(cell.replace(",", "").replace(".", "").isdigit() for cell in row.split())
