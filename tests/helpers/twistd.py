"""Run twistd mbroker to its end and check how start-up failed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.broker import twistd_command


def run_twistd(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*twistd_command(), "--nodaemon", "--logfile=-", "--pidfile=", "mbroker", *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """twistd exited 1 and said why in one critical line, with no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "#critical]" in line or "#error]" in line]
    assert len(errors) == 1, output
    [line] = errors
    assert "mbroker cannot start: " in line, output
    for text in expected:
        assert text in line, output
    return line
