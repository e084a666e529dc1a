"""What the ``mbroker`` command prints: messages, tables and a progress bar."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from mbroker.client.messages import Message

__all__ = ["PROGRESS_BYTES", "PROGRESS_MESSAGES", "Progress", "message_text", "table"]

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
    """The payload as text, or (``as_json``) a JSON object with the routing details."""
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
