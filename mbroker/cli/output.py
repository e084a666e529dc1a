"""What the ``mbroker`` command prints: messages, tables and a progress bar, and
:class:`Output`, which knows when a message it printed has been read."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import stat
import struct
import sys
import termios
import time
from collections import deque
from collections.abc import Sequence
from typing import IO, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from mbroker.client.messages import Message
from mbroker.wire.frames import ExchangeInfo, QueueInfo
from mbroker.wire.props import header_text

__all__ = [
    "PROGRESS_BYTES",
    "PROGRESS_MESSAGES",
    "Output",
    "Progress",
    "message_text",
    "objects_json",
    "objects_table",
    "complain",
    "say",
    "table",
]

#: Inputs of more messages than this (or a file this big) get a progress bar.
PROGRESS_MESSAGES = 1000
PROGRESS_BYTES = 1 << 20


class Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second.

    Shown when ``enabled`` is True, or when it is None (the default) and stderr is a
    terminal and the input is large (``PROGRESS_MESSAGES`` messages, or a file of
    ``PROGRESS_BYTES``).  ``total_bytes`` (a file's size) gives a percentage.
    """

    def __init__(
        self, total_bytes: int | None, enabled: bool | None, stream: IO[str] | None = None
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total_bytes
        self.forced = enabled
        self.shown = False
        self.start = time.monotonic()
        self._last = 0.0

    def _wanted(self, count: int, done: int) -> bool:
        if self.forced is not None:
            return self.forced
        if not self.stream.isatty():
            return False
        return count >= PROGRESS_MESSAGES or (self.total or 0) >= PROGRESS_BYTES

    def update(self, count: int, done: int, final: bool = False) -> None:
        """``count`` messages of ``done`` bytes sent so far."""
        now = time.monotonic()
        if not final and now - self._last < 0.1:
            return
        self._last = now
        if not self._wanted(count, done):
            return
        self.shown = True
        rate = count / max(now - self.start, 1e-6)
        if self.total:
            fraction = min(done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            line = f"[{bar:<30}] {fraction:4.0%} {count:,} messages {rate:,.0f}/s"
        else:
            line = f"{count:,} messages {rate:,.0f}/s"
        self.stream.write("\r" + line)
        self.stream.flush()

    def finish(self, count: int, done: int) -> None:
        """Draw the last state and end the line."""
        if self.total is not None and done >= self.total:
            done = self.total
        self.update(count, done, final=True)
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def message_text(message: Message, as_json: bool) -> str:
    """The payload as text, or (``as_json``) a JSON object with the routing details and
    the message's properties: ``id``, ``priority`` (when not 0), ``headers`` (values
    that are UTF-8, as text) and ``headers_base64`` (the others, in base64), as the
    payload is ``payload`` or ``payload_base64``."""
    if not as_json:
        return message.text
    record: dict[str, Any] = {
        "source": message.source,
        "routing_key": message.routing_key,
        "redelivered": message.redelivered,
    }
    try:
        record["payload"] = message.payload.decode("utf-8")
    except UnicodeDecodeError:
        record["payload_base64"] = base64.b64encode(message.payload).decode("ascii")
    if message.reason is not None:
        record["reason"] = message.reason
    if message.id is not None:
        record["id"] = message.id
    if message.priority:
        record["priority"] = message.priority
    if message.headers:
        text, raw = header_text(message.headers.items())
        if text:
            record["headers"] = text
        if raw:
            record["headers_base64"] = raw
    return json.dumps(record, ensure_ascii=False)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns (the first three left-aligned, the others right)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if i >= 3 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def objects_json(rows: Sequence[ExchangeInfo | QueueInfo]) -> str:
    """``mbroker list --json``: one JSON object per exchange or queue."""
    out: list[dict[str, object]] = []
    for r in rows:
        if isinstance(r, ExchangeInfo):
            out.append({"name": r.name, "type": r.kind, "durable": r.durable,
                        "bindings": r.bindings})  # fmt: skip
        else:
            out.append({"name": r.name, "type": "queue", "durable": r.durable,
                        "messages": r.messages, "unacked": r.unacked,
                        "consumers": r.consumers})  # fmt: skip
    return json.dumps(out, indent=2)


def objects_table(rows: Sequence[ExchangeInfo | QueueInfo]) -> str:
    """``mbroker list``: a table of the exchanges and queues (a line says there are none)."""
    grid: list[tuple[str, ...]] = [
        ("NAME", "TYPE", "DURABLE", "MESSAGES", "UNACKED", "CONSUMERS", "BINDINGS")
    ]
    for r in rows:
        if isinstance(r, QueueInfo):
            grid.append(
                (r.name, "queue", _yes(r.durable), str(r.messages), str(r.unacked),
                 str(r.consumers), "-")
            )  # fmt: skip
        else:
            grid.append((r.name, r.kind, _yes(r.durable), "-", "-", "-", str(r.bindings)))
    return table(grid) + ("" if rows else "\n(no exchanges or queues)")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


#: How many reactor turns :class:`Output` checks a pipe at once before it backs off,
#: and the longest pause between two checks (seconds).
_SPIN_TURNS = 50
_LONGEST_PAUSE = 0.05


class Output:
    """The messages the CLI prints, and whether they reached their reader.

    :meth:`show` fires True once a line is written and flushed; on a pipe, only once
    the program reading the pipe has read it, so that ``mbroker pull q | head -2``
    acknowledges only what ``head`` took.  (A pipe cannot say when it is empty:
    the reader's progress is polled, at once and then less and less often.)  On a
    pipe the lines go out one at a time, each after the previous one was read.  Once
    the reader is gone (a broken pipe), every :meth:`show` fires False, and standard
    output goes to ``/dev/null`` so that nothing complains about it at exit.
    """

    def __init__(self, reactor: IReactorTime, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self._reactor = reactor
        self._fd: int | None
        try:
            self._fd = self.stream.fileno()
            self.pipe = stat.S_ISFIFO(os.fstat(self._fd).st_mode)
        except (OSError, ValueError, AttributeError):
            self._fd, self.pipe = None, False
        #: True once the reader is gone
        self.closed = False
        self._pending: deque[tuple[str, Deferred[bool]]] = deque()
        self._current: Deferred[bool] | None = None
        self._turns = 0

    def write(self, line: str) -> bool:
        """Write and flush ``line`` (a newline is added); False when the reader is gone."""
        if self.closed:
            return False
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except BrokenPipeError:
            self._gone()
            return False
        return True

    def show(self, line: str) -> Deferred[bool]:
        """Fires True once ``line`` was written, flushed and (on a pipe) read."""
        if not self.pipe:
            return succeed(self.write(line))
        d: Deferred[bool] = Deferred()
        self._pending.append((line, d))
        if self._current is None:
            self._next()
        return d

    def _next(self) -> None:
        while self._pending:
            line, d = self._pending.popleft()
            if not self.write(line):
                d.callback(False)
                continue
            self._current, self._turns = d, 0
            self._reactor.callLater(0, self._check)
            return

    def _check(self) -> None:
        if self._current is None:  # settled by last_look()
            return
        if not self._settle():
            self._turns += 1
            pause = 0.0
            if self._turns > _SPIN_TURNS:
                pause = min(0.0005 * 2 ** min(self._turns - _SPIN_TURNS, 10), _LONGEST_PAUSE)
            self._reactor.callLater(pause, self._check)

    def last_look(self) -> None:
        """Before the program ends: settle the line waiting to be read, if it was."""
        if self._current is not None:
            self._settle()

    def _settle(self) -> bool:
        """Fire the line in wait if it was read or cannot be; False when still unread."""
        d = self._current
        assert d is not None and self._fd is not None
        if _unread(self._fd) == 0:
            read = True
        elif _no_reader(self._fd):
            self._gone()
            read = False
        else:
            return False
        self._current = None
        d.callback(read)
        if self._current is None:
            self._next()
        return True

    def _gone(self) -> None:
        self.closed = True
        if self._fd is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._fd)
            os.close(devnull)


def _unread(fd: int) -> int:
    """Bytes written to the pipe ``fd`` and not read yet."""
    result: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return result


def _no_reader(fd: int) -> bool:
    """True when nobody holds the read end of the pipe ``fd`` any more."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def say(text: str) -> None:
    """A line of the command's result, on stdout."""
    sys.stdout.write(text + "\n")


def complain(text: str) -> None:
    """A line about a problem (``mbroker: …``), on stderr, at once."""
    sys.stderr.write(f"mbroker: {text}\n")
    sys.stderr.flush()
