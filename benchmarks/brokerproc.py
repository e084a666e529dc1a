"""Start a real ``twistd -n mbroker`` for a benchmark and find its port.

Shared by the benchmark scripts; the broker runs as users run it.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

_LISTENING = re.compile(rb"mbroker listening on ([0-9.]+):(\d+)")


def twistd_command() -> list[str]:
    """``twistd`` of this interpreter: the script beside it, else the same code inline."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def broker_environment(path: tuple[str, ...] = ()) -> dict[str, str]:
    """This environment; with ``MBROKER_SRC=<dir>``, that tree's ``mbroker`` runs instead.

    ``MBROKER_SRC`` names a directory holding ``mbroker/`` and ``twisted/plugins/`` (a
    copy of another checkout, say), put first on the broker's ``PYTHONPATH``: the same
    benchmark can then compare two versions of the broker.  ``path`` goes before it.
    """
    env = dict(os.environ)
    src = env.get("MBROKER_SRC")
    first = [*path, src] if src else list(path)
    if first:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (*first, env.get("PYTHONPATH")) if p)
    return env


def set_affinity(tid: int, cpus: set[int] | None) -> None:
    """Pin thread *tid* (0: this one) to *cpus* (``None``: every CPU).

    ``os.sched_setaffinity`` where there is one; PyPy 3.9 has none, so ``taskset``."""
    allowed = cpus if cpus is not None else set(range(os.cpu_count() or 1))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(tid, allowed)
    else:
        cpu_list = ",".join(str(c) for c in sorted(allowed))
        subprocess.run(
            ["taskset", "-p", "-c", cpu_list, str(tid or os.getpid())],
            check=True,
            stdout=subprocess.DEVNULL,
        )


class BrokerProcess:
    #: the line that says the server listens, and on which host and port
    listening = _LISTENING
    name = "broker"

    def __init__(
        self, *extra: str, data_dir: str | None = None, path: tuple[str, ...] = ()
    ) -> None:
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mbroker-bench-")
            data_dir = self._tmp.name
        self.proc = subprocess.Popen(
            [
                *twistd_command(),
                "--pidfile",
                "",
                "-n",
                "--logfile",
                "-",
                "mbroker",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--data-dir",
                data_dir,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=broker_environment(path),
        )
        self.host, self.port = self._wait_for_port(deadline=time.monotonic() + 30)

    def _wait_for_port(self, deadline: float) -> tuple[str, int]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                m = self.listening.search(buf)
                if m:
                    return m.group(1).decode(), int(m.group(2))
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n" + buf.decode(errors="replace"))

    def cpu_seconds(self) -> float:
        """User + system CPU the broker process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def cpu_wait_seconds(self) -> float:
        """Seconds the broker's threads were runnable but waited for a CPU (schedstat)."""
        total = 0
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
        return total / 1e9

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def peak_rss_bytes(self) -> int:
        """The broker's peak resident set size so far (``VmHWM``)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return 0

    def pin(self, cpus: set[int] | None) -> None:
        """Pin every thread of the broker to *cpus* (``None``: every CPU), like ``taskset``."""
        for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
            set_affinity(int(tid), cpus)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
