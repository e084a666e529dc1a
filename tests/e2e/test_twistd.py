"""``twistd mbroker`` as users run it: options, start-up, shutdown, start-up failures."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.helpers.broker import BrokerProcess, start_broker, twistd_command


def run_twistd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*twistd_command(), "--nodaemon", "--logfile=-", "--pidfile=", "mbroker", *args],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_the_options(tmp_path: Path) -> None:
    result = run_twistd(tmp_path, "--help")
    assert result.returncode == 0, result.stderr
    for option in (
        "--listen=",
        "--data-dir=",
        "--max-payload=",
        "--max-line=",
        "--private-max-length=",
        "--private-max-bytes=",
    ):
        assert option in result.stdout


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_a_bad_limit_is_a_usage_error(tmp_path: Path, value: str) -> None:
    result = run_twistd(tmp_path, "--max-payload", value)
    assert result.returncode != 0
    assert "--max-payload must be a positive integer" in result.stdout + result.stderr


def test_greeting_ping_quit(broker_process: BrokerProcess) -> None:
    with broker_process.connect() as client:
        words = client.hello.split()
        assert words[:2] == [b"HELLO", b"mbroker"]
        assert b"proto=1" in words
        assert client.request("PING") == ([], b"+PONG")
        assert client.request("QUIT") == ([], b"+OK bye")
        assert client.expect_closed()


def test_max_payload_reaches_the_greeting(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, "--max-payload", "4096")
    try:
        with broker.connect() as client:
            assert b"max-payload=4096" in client.hello.split()
    finally:
        broker.stop()


def test_sigterm_stops_cleanly(broker_process: BrokerProcess) -> None:
    # twistd shuts down, then ends itself with the signal it got, as a process should.
    assert broker_process.kill(signal.SIGTERM) == -signal.SIGTERM
    assert any(b"Server Shut Down." in line for line in broker_process.lines)
    assert not any(b"Traceback" in line for line in broker_process.lines)


def test_a_busy_port_fails_start_up(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_twistd(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert result.returncode != 0
    assert "mbroker cannot listen" in result.stdout + result.stderr


def test_a_bad_endpoint_fails_start_up(tmp_path: Path) -> None:
    result = run_twistd(tmp_path, "--listen", "nonsense:1")
    assert result.returncode != 0
    assert "mbroker cannot listen on nonsense:1" in result.stdout + result.stderr
