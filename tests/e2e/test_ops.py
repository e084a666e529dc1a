"""``twistd -n mbroker --config FILE`` and ``--log-format json``, run as operators run them."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.scripts.twistd import ServerOptions

from tests.helpers.broker import START_TIMEOUT, BrokerProcess, twistd_command
from tests.helpers.twistd import assert_one_line_failure, run_twistd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "contrib" / "mbroker.toml"
UNIT = ROOT / "contrib" / "mbroker.service"

_TEXT_LISTENING = re.compile(rb"mbroker listening on 127\.0\.0\.1:(\d+)\s*$")
_JSON_LISTENING = re.compile(rb'"address": "127\.0\.0\.1:(\d+)"')


def start(
    tmp_path: Path,
    *args: str,
    twistd_args: tuple[str, ...] = (),
    listening: re.Pattern[bytes] = _TEXT_LISTENING,
) -> BrokerProcess:
    """``twistd -n mbroker ARGS`` (no --listen or --data-dir of its own), once it listens."""
    command = [
        *twistd_command(),
        "--nodaemon",
        "--logfile=-",
        "--pidfile=",
        *twistd_args,
        "mbroker",
        *args,
    ]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    broker = BrokerProcess(process, None)
    try:
        match = broker.wait_for_line(listening, START_TIMEOUT)
    except BaseException:
        broker.stop()
        raise
    broker.host, broker.port = "127.0.0.1", int(match.group(1))
    return broker


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, for a UNIX socket (at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mbops"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def greeting_over_unix(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
        return data


# ------------------------------------------------------------------- --config FILE


def test_the_broker_listens_where_the_file_says(tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "mb.sock"
    config = write(
        tmp_path / "mbroker.toml",
        f'listen = ["tcp:0:interface=127.0.0.1", "unix:{sock}"]\n'
        f'data-dir = "{tmp_path / "state"}"\n'
        'http = ["tcp:0:interface=127.0.0.1"]\n'
        "max-payload = 4096\n",
    )
    broker = start(tmp_path, "--config", str(config))
    try:
        broker.wait_for_line(re.compile(re.escape(f"mbroker listening on {sock}").encode()), 10)
        [http] = filter(
            None, map(re.compile(rb"HTTP listening on [0-9.]+:(\d+)").search, broker.lines)
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{int(http.group(1))}/healthz") as reply:
            assert reply.status == 200
        assert b"max-payload=4096" in greeting_over_unix(sock).split()
        with broker.connect() as client:
            assert b"max-payload=4096" in client.hello.split()
            assert client.request("PING") == ([], b"+PONG")
        assert (tmp_path / "state").is_dir()  # the file's data directory
        assert not (tmp_path / "mbroker-data").exists()
    finally:
        assert broker.stop() < 0  # ended by its SIGTERM, cleanly


def test_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "mbroker.toml",
        'listen = ["tcp:1:interface=127.0.0.1"]\nmax-payload = 4096\nmemory = true\n',
    )
    broker = start(
        tmp_path,
        "--max-payload=8192",
        "--config",
        str(config),
        "--listen",
        "tcp:0:interface=127.0.0.1",
    )
    try:
        with broker.connect() as client:
            assert b"max-payload=8192" in client.hello.split()
    finally:
        broker.stop()
    assert "cannot listen" not in broker.output()  # the file's port 1 was never tried


def unit_file() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text(encoding="utf-8"))
    return unit


def exec_start_args() -> list[str]:
    """The arguments of twistd in contrib/mbroker.service, with the example config."""
    program, *args = shlex.split(unit_file()["Service"]["ExecStart"])
    assert program.endswith("/twistd")
    config = args.index("--config") + 1
    assert args[config] == "/etc/mbroker/mbroker.toml"
    args[config] = str(EXAMPLE)
    return args


def test_the_systemd_unit() -> None:
    service = unit_file()["Service"]
    assert service["Type"] == "simple"
    assert service["User"] == "mbroker" and service["Restart"] == "on-failure"
    assert int(service["LimitNOFILE"]) >= 10_000 + 1024  # --max-connections and files
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "mbroker"  # /var/lib/mbroker, the example's data-dir
    assert 'data-dir = "/var/lib/mbroker"' in EXAMPLE.read_text(encoding="utf-8")
    args = exec_start_args()
    assert args[:3] == ["-n", "--pidfile=", "mbroker"]
    twistd = ServerOptions()
    twistd.parseOptions(args)  # what twistd makes of them
    assert twistd["nodaemon"] and twistd.subCommand == "mbroker"
    assert twistd.subOptions.config_problem is None


def test_the_units_command_starts_a_broker_with_the_example_file(tmp_path: Path) -> None:
    # the unit's twistd command and contrib/mbroker.toml as shipped, with a place this
    # test may listen and write in
    args = exec_start_args()
    assert args[:3] == ["-n", "--pidfile=", "mbroker"]  # as start() runs twistd
    broker = start(
        tmp_path,
        *args[3:],
        "--listen=tcp:0:interface=127.0.0.1",
        "--http=tcp:0:interface=127.0.0.1",
        f"--data-dir={tmp_path / 'data'}",
    )
    try:
        with broker.connect() as client:
            assert client.request("PING") == ([], b"+PONG")
    finally:
        broker.stop()
    assert (tmp_path / "data").is_dir()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max-paylod = 10\n", "unknown key 'max-paylod'"),
        ("max-payload = 0\n", "max-payload: --max-payload must be a positive integer, not '0'"),
        ('listen = "tcp:0:interface=127.0.0.1"\nfsync = "sometimes"\n', "fsync: --fsync must"),
        ("listen = [\n", "is not valid TOML"),
    ],
)
def test_a_bad_file_fails_start_up_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    config = write(tmp_path / "mbroker.toml", text)
    result = run_twistd(tmp_path, "--config", str(config), f"--data-dir={tmp_path / 'd'}")
    line = assert_one_line_failure(result, str(config), expected)
    assert "mbroker listening on" not in result.stdout
    assert not (tmp_path / "d").exists(), line  # nothing was opened


def test_a_missing_file_fails_start_up_in_one_line(tmp_path: Path) -> None:
    result = run_twistd(tmp_path, "--config", str(tmp_path / "nope.toml"))
    assert_one_line_failure(result, "cannot read config file", "No such file or directory")


# ----------------------------------------------------------------- --log-format json

STABLE = ("time", "level", "namespace", "message")


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line of ``output`` as JSON, each with the stable fields (or the test fails)."""
    records = []
    for line in output.splitlines():
        record = json.loads(line)  # every line, no exception
        assert isinstance(record, dict), line
        assert list(record)[:4] == list(STABLE), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), line
        records.append(record)
    assert records
    return records


@pytest.mark.parametrize("how", ["option", "file", "twistd-logger"])
def test_json_logs_from_start_to_stop(tmp_path: Path, how: str) -> None:
    args: tuple[str, ...] = ("--memory", "--listen=tcp:0:interface=127.0.0.1")
    twistd_args: tuple[str, ...] = ()
    if how == "option":
        args += ("--log-format", "json")
    elif how == "file":
        args += ("--config", str(write(tmp_path / "m.toml", 'log-format = "json"\n')))
    else:
        twistd_args = ("--logger", "mbroker.server.logformat.json_logger")
    broker = start(tmp_path, *args, twistd_args=twistd_args, listening=_JSON_LISTENING)
    try:
        with broker.connect() as client:
            assert client.request("PING") == ([], b"+PONG")
    finally:
        broker.stop()
    records = json_lines(broker.output())
    [listening] = [r for r in records if r["message"].startswith("mbroker listening on")]
    assert listening["level"] == "info"
    assert listening["namespace"].startswith("mbroker.server.service")
    assert listening["address"] == f"127.0.0.1:{broker.port}"
    assert listening["endpoint"] == "tcp:0:interface=127.0.0.1"
    assert any(r["level"] == "warn" and "--users" in r["message"] for r in records)
    assert records[-1]["message"] == "Server Shut Down."


def one_json_failure(result: subprocess.CompletedProcess[str], *expected: str) -> dict[str, Any]:
    """twistd exited 1 and said why in one JSON object, every line being JSON."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == ""
    records = json_lines(result.stdout)
    failures = [r for r in records if r["level"] in ("critical", "error")]
    assert len(failures) == 1, result.stdout
    [failure] = failures
    assert failure["message"].startswith("mbroker cannot start: ")
    for text in expected:
        assert text in failure["message"], failure
    assert "traceback" not in failure
    return failure


def test_json_a_bad_file_is_one_object(tmp_path: Path) -> None:
    config = write(tmp_path / "m.toml", 'log-format = "json"\nmax-line = -1\n')
    result = run_twistd(tmp_path, "--config", str(config))
    failure = one_json_failure(result, str(config), "max-line: --max-line must be")
    assert failure["level"] == "critical"


def test_json_a_busy_port_is_one_object(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_twistd(
            tmp_path, "--log-format=json", "--memory", f"--listen=tcp:{port}:interface=127.0.0.1"
        )
    one_json_failure(result, f"cannot listen on tcp:{port}", "Address already in use")
