"""``twistd mbroker`` as users run it: options, start-up, shutdown, start-up failures."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.twistd import assert_one_line_failure, run_twistd


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


@pytest.mark.parametrize("store", ["--memory", "--data-dir=data"])
def test_a_busy_port_fails_start_up_in_one_line(tmp_path: Path, store: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_twistd(
            tmp_path,
            store,
            "--listen=tcp:0:interface=127.0.0.1",  # opens, then is closed again
            f"--listen=tcp:{port}:interface=127.0.0.1",
        )
    assert_one_line_failure(
        result, f"cannot listen on tcp:{port}:interface=127.0.0.1", "Address already in use"
    )
    assert "mbroker listening on" not in result.stdout  # nobody is told to connect


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("nonsense:1", "Unknown endpoint type: 'nonsense'"),
        ("tcp:notaport", "bad endpoint description"),
        ("ssl:5556:privateKey=missing.pem", "No such file or directory"),
    ],
)
def test_a_bad_endpoint_fails_start_up_in_one_line(
    tmp_path: Path, endpoint: str, reason: str
) -> None:
    result = run_twistd(tmp_path, "--memory", "--listen", endpoint)
    assert_one_line_failure(result, f"cannot listen on {endpoint}", reason)


def test_a_data_directory_held_by_another_broker_fails_start_up_in_one_line(
    tmp_path: Path,
) -> None:
    first = start_broker(tmp_path)
    try:
        result = run_twistd(
            tmp_path, "--listen=tcp:0:interface=127.0.0.1", f"--data-dir={first.data_dir}"
        )
    finally:
        first.stop()
    assert_one_line_failure(result, "in use by another broker", f"(process {first.process.pid})")


#: Makes ``import OpenSSL`` fail, as it does where the tls extra is not installed.
NO_OPENSSL = """
import sys


class _NoOpenSSL:
    def find_spec(self, name, path=None, target=None):
        if name == "OpenSSL" or name.startswith("OpenSSL."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoOpenSSL())
"""


def test_tls_without_the_tls_extra_says_what_to_install(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_OPENSSL)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    result = run_twistd(
        tmp_path,
        "--memory",
        "--listen=ssl:0:privateKey=key.pem:certKey=cert.pem:interface=127.0.0.1",
        env=env,
    )
    assert_one_line_failure(result, "No module named 'OpenSSL'", "pip install '.[tls]'")


def test_start_up_says_nothing_about_factories(broker_process: BrokerProcess) -> None:
    output = broker_process.output()
    assert "mbroker listening on" in output
    assert "Starting factory" not in output
    assert " at 0x" not in output


#: How long 300 connects may take to be greeted before the test fails.  With the
#: listen backlog too small, the kernel drops SYNs and clients retry after 1 s, 3 s…:
#: the test still passes then, but the time it prints shows the stall.
BURST_DEADLINE = 30.0


def test_a_burst_of_connections_is_greeted(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, memory_only=True)
    sockets: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    try:
        started = time.monotonic()
        for _ in range(300):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(broker.address)
            sockets.append(sock)
            selector.register(sock, selectors.EVENT_READ)
        greeted = 0
        deadline = started + BURST_DEADLINE
        while greeted < len(sockets) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(deadline - time.monotonic(), 0)):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                assert ready.recv(4096).startswith(b"HELLO mbroker ")
                selector.unregister(ready)
                greeted += 1
        elapsed = time.monotonic() - started
        print(f"300 simultaneous connects greeted in {elapsed:.3f} s")
        assert greeted == len(sockets), f"{greeted} of 300 greeted in {elapsed:.1f} s"
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
        broker.stop()
