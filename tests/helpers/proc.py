"""Run the mbroker command (or any program) as a child process with a deadline."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

reactor: Any = _reactor


ROOT = Path(__file__).resolve().parents[2]


#: Deadline of one program run: generous, for a loaded 2-core machine.
RUN_TIMEOUT = 30.0


def mbroker_command() -> list[str]:
    """The installed ``mbroker`` console script, else what it runs: ``mbroker.cli.main:main``."""
    script = Path(sys.executable).with_name("mbroker")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from mbroker.cli.main import main; sys.exit(main())"]


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Proc(ProcessProtocol):
    """A running program: its output so far, and ``ended`` (fires with the exit code)."""

    def __init__(self, stdin: bytes | None) -> None:
        self.stdin = stdin
        self.out = bytearray()
        self.err = bytearray()
        self.code: int | None = None
        self._ended: list[Deferred[int]] = []
        self._waiters: list[tuple[str, bytes, Deferred[None]]] = []
        self._deadline: Any = None

    @classmethod
    def start(
        cls, argv: Sequence[str], stdin: bytes | None = b"", timeout: float = RUN_TIMEOUT
    ) -> Proc:
        """Spawn ``argv`` (stdin: these bytes then end of file; None: left open)."""
        proc = cls(stdin)
        reactor.spawnProcess(proc, argv[0], list(argv), env=child_env(), path=str(ROOT))
        proc._deadline = reactor.callLater(timeout, proc._kill)
        return proc

    @property
    def process(self) -> IProcessTransport:
        """The running program's transport (write to its stdin, close it)."""
        assert self.transport is not None, "the program has not started"
        return self.transport

    def connectionMade(self) -> None:
        if self.stdin is not None:
            assert self.transport is not None
            self.transport.write(self.stdin)
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._check()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._check()

    def _check(self) -> None:
        for waiter in list(self._waiters):
            stream, text, d = waiter
            if text in (self.out if stream == "out" else self.err):
                self._waiters.remove(waiter)
                d.callback(None)

    def wait_for(self, text: str, stream: str = "out", timeout: float = 15.0) -> Deferred[None]:
        """Fires once ``text`` appeared on ``stream`` ("out" or "err")."""
        d: Deferred[None] = Deferred()
        self._waiters.append((stream, text.encode(), d))
        self._check()
        return d.addTimeout(timeout, reactor).addErrback(self._explain, text)

    def _explain(self, failure: Failure, text: str) -> Failure:
        raise AssertionError(f"never saw {text!r}; out={bytes(self.out)!r} err={bytes(self.err)!r}")

    def signal(self, sig: int) -> None:
        if self.code is None:
            assert self.transport is not None
            self.transport.signalProcess(sig)

    def _kill(self) -> None:
        self.err += b"\n[killed: deadline passed]"
        self.signal(signal.SIGKILL)

    def processEnded(self, reason: Failure) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        value = reason.value
        if isinstance(value, ProcessDone):
            self.code = 0
        elif isinstance(value, ProcessTerminated):
            self.code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        else:
            self.code = -1
        for d in self._ended:
            d.callback(self.code)
        self._ended = []

    def ended(self) -> Deferred[int]:
        """Fires with the exit code once the program ended."""
        if self.code is not None:
            return succeed(self.code)
        d: Deferred[int] = Deferred()
        self._ended.append(d)
        return d

    @property
    def stdout(self) -> str:
        return self.out.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.err.decode("utf-8", "replace")
