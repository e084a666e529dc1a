"""Start the real broker as users do, ``twistd -n mbroker``, for end-to-end tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers.lineclient import LineClient

#: How long a broker may take to start listening (a loaded 2-core CI machine is slow).
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0

_LISTENING = re.compile(rb"mbroker listening on (\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)\s*$")
#: (said before _LISTENING: the HTTP listener starts first)
_HTTP_LISTENING = re.compile(rb"mbroker HTTP listening on (\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)\s*$")
_STOMP_LISTENING = re.compile(rb"mbroker STOMP listening on [^ ]*:(\d+)\s*$")
_STOMP_WS_LISTENING = re.compile(rb"mbroker STOMP-WS listening on [^ ]*:(\d+)\s*$")


def twistd_command() -> list[str]:
    """The ``twistd`` of this interpreter: the script next to it, else the same code."""
    script = Path(sys.executable).with_name("twistd")
    if script.is_file():
        return [sys.executable, str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
    ]


class BrokerProcess:
    """A running ``twistd -n mbroker``: its address, process and output so far."""

    def __init__(self, process: subprocess.Popen[bytes], data_dir: Path | None) -> None:
        self.process = process
        self.data_dir = data_dir
        self.host = ""
        self.port = 0
        #: the port of the first ``--http`` endpoint (0: none)
        self.http_port = 0
        #: the port of the first ``--stomp`` listener (0: none)
        self.stomp_port = 0
        #: the port of the first ``--stomp-ws`` listener (0: none)
        self.stomp_ws_port = 0
        #: Every line the broker printed (stdout and stderr), line ends removed.
        self.lines: list[bytes] = []
        self._new_lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        # Reads until EOF so that the broker never blocks on a full pipe.
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                line = line.rstrip(b"\r\n")
                self.lines.append(line)
                self._new_lines.put(line)
        self._new_lines.put(None)

    def wait_for_line(self, pattern: bytes | re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        """Wait for a new output line that matches ``pattern`` (a regex)."""
        regex = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._new_lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise TimeoutError(
                    f"broker printed no line matching {regex.pattern!r} in {timeout}s:\n"
                    + self.output()
                ) from None
            if line is None:
                self._new_lines.put(None)  # keep EOF visible to later waits
                raise RuntimeError(
                    f"broker exited ({self.process.wait()}) before printing "
                    f"{regex.pattern!r}:\n" + self.output()
                )
            match = regex.search(line)
            if match:
                return match

    def output(self) -> str:
        return "\n".join(line.decode("utf-8", "replace") for line in self.lines)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def connect(self, timeout: float = 5.0) -> LineClient:
        """A new :class:`LineClient` connected to this broker (greeting read)."""
        return LineClient(self.host, self.port, timeout=timeout)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the process to end; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self._reader.join(timeout)  # the rest of its output
        return code

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL if it has not ended within ``timeout``.

        twistd exits by the signal it got: a clean stop returns ``-signal.SIGTERM``.
        """
        try:
            return self.kill(signal.SIGTERM, timeout)
        except subprocess.TimeoutExpired:
            return self.kill(signal.SIGKILL, timeout)


def start_broker(
    tmp_path: Path,
    *extra_args: str,
    data_dir: Path | None = None,
    memory_only: bool = False,
    timeout: float = START_TIMEOUT,
) -> BrokerProcess:
    """Start ``twistd -n mbroker`` on a free loopback port and wait until it listens.

    Durable state goes to ``data_dir`` (default ``tmp_path / "data"``, so a second call
    with the same ``tmp_path`` restarts on the same state) unless ``memory_only``.
    ``extra_args`` go after the ``mbroker`` subcommand.
    """
    if data_dir is None:
        data_dir = tmp_path / "data"
    args = ["--listen", "tcp:0:interface=127.0.0.1"]
    args += ["--memory"] if memory_only else ["--data-dir", str(data_dir)]
    command = [
        *twistd_command(),
        "--nodaemon",
        "--logfile=-",
        "--pidfile=",
        "mbroker",
        *args,
        *extra_args,
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    broker = BrokerProcess(process, None if memory_only else data_dir)
    try:
        match = broker.wait_for_line(_LISTENING, timeout)
    except BaseException:
        broker.stop()
        raise
    broker.host = match.group(1).decode("ascii").strip("[]")
    broker.port = int(match.group(2))
    http = [m for m in map(_HTTP_LISTENING.search, broker.lines) if m]
    broker.http_port = int(http[0].group(2)) if http else 0
    for option, pattern, attribute in (
        ("--stomp", _STOMP_LISTENING, "stomp_port"),
        ("--stomp-ws", _STOMP_WS_LISTENING, "stomp_ws_port"),
    ):
        if option not in extra_args:
            continue
        # (its line may have come before the native one)
        seen = [m for m in map(pattern.search, list(broker.lines)) if m]
        try:
            found = seen[0] if seen else broker.wait_for_line(pattern, timeout)
        except BaseException:
            broker.stop()
            raise
        setattr(broker, attribute, int(found.group(1)))
    return broker
