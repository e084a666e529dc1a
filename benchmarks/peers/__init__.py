"""Peer brokers for ``bench_peers.py``: one module each, driven by the same cheap client.

Each module has a :class:`PeerServer` subclass named ``Server`` that starts Debian's
package on a free loopback port with a private temporary directory, and whose
``setup_*`` methods open the connections of one case and hand back a :class:`Setup`
for :func:`rawclient.run_flow`: pre-encoded publish frames, one :class:`Reader` per
subscriber (one scan per read), and the reader of the publisher's replies if the
protocol has any.

Cases: ``pubsub(n)`` (one publisher, n subscribers that each get every message) and
``queue()`` (one publisher, one consumer that acknowledges what it gets), where the
peer has them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rawclient import Reader, Subscriber, connect, read_until, runqueue_wait_seconds

HOST = "127.0.0.1"


class Unavailable(Exception):
    """The peer cannot run here; the message says why."""


@dataclass
class Setup:
    pub: socket.socket
    chunks: list[bytes]  # each BATCH pre-encoded publish frames
    subs: list[Subscriber]
    ack_reader: Reader | None
    fanout: int | None = None  # 1: competing consumers; None: each gets every message
    others: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for s in [self.pub, *(sub.sock for sub in self.subs), *self.others]:
            try:
                s.close()
            except OSError:
                pass


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def debian_version(package: str) -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip() or "?"


class PeerServer:
    """A peer broker process on a loopback port, in a private temporary directory."""

    name = "peer"
    package = ""  # the Debian package
    binary = ""  # must be on PATH (or an absolute path)
    start_timeout = 20.0

    def __init__(self) -> None:
        self.tmp = ""
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: object = None

    # --------------------------------------------------------------- lifecycle

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this peer cannot run here, or None."""
        if not (shutil.which(cls.binary) or os.access(cls.binary, os.X_OK)):
            return f"{cls.binary} not found (apt-get install -y {cls.package})"
        return None

    def version(self) -> str:
        return f"{self.package} {debian_version(self.package)}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Write config files into ``self.tmp`` before the start."""

    def ready(self) -> bool:
        """True once the server answers; by default, once its port accepts."""
        try:
            with socket.create_connection((HOST, self.port), timeout=1):
                return True
        except OSError:
            return False

    def answers(self, probe: bytes, good: Callable[[bytes], bool]) -> bool:
        """Whether the server, sent ``probe`` (maybe nothing) on a new connection,
        answers with a first line (CRLF included) that ``good`` accepts."""
        try:
            s = connect(HOST, self.port, greeting=False, timeout=1)
        except OSError:
            return False
        try:
            if probe:
                s.sendall(probe)
            return good(read_until(s, b"\r\n", timeout=2))
        except OSError:
            return False
        finally:
            s.close()

    def start(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix=f"bench-{self.name}-")
        self.port = free_port()
        self.prepare()
        log = open(os.path.join(self.tmp, "server.log"), "wb")  # noqa: SIM115
        self._log = log
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.tmp,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends all of it
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ready():
                return
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise Unavailable(f"did not start: {tail}")

    def log_tail(self, n: int = 300) -> str:
        try:
            with open(os.path.join(self.tmp, "server.log"), "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-n:].decode(errors="replace").replace("\n", " | ").strip()

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None:
            # children it left in its process group (ours: start_new_session)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = ""

    def __enter__(self) -> PeerServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- measuring

    def pids(self) -> list[int]:
        """The server's processes: the one started and its descendants."""
        if self.proc is None:
            return []
        found = [self.proc.pid]
        i = 0
        while i < len(found):
            try:
                with open(f"/proc/{found[i]}/task/{found[i]}/children") as f:
                    found.extend(int(x) for x in f.read().split())
            except OSError:
                pass
            i += 1
        return found

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
        return total / os.sysconf("SC_CLK_TCK")

    def cpu_wait_seconds(self) -> float:
        return runqueue_wait_seconds(self.pids())

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    # ------------------------------------------------------------------ cases

    def setup_pubsub(self, subscribers: int, size: int) -> Setup:
        raise Unavailable(f"{self.name} has no publish/subscribe")

    def setup_queue(self, size: int) -> Setup:
        raise Unavailable(f"{self.name} has no acknowledged work queue")
