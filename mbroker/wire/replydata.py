"""What the success lines (``+OK …``) and data lines of the replies mean, per command.

The reply decoder gives a status line's text as it came (``OK 3``, ``OK created``)
and the data lines before it as frames (``STAT``, ``EXCHANGE``, ``QUEUE``); a
converter here turns that pair into the command's result, the inverse of the
broker's ``+OK`` replies.  Each is a :data:`Finish`: ``(text, data)`` -> result,
where ``data`` is None for a command that collects no data lines.  A converter that
raises ``ValueError``, ``IndexError``, ``TypeError`` or ``AssertionError`` says the
reply does not fit its command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from mbroker.wire.frames import Stat

__all__ = [
    "Finish",
    "Published",
    "ok_count",
    "ok_created",
    "ok_data",
    "ok_none",
    "ok_published",
    "ok_stats",
]

#: Turns a status line's text (``OK 3``) and the data lines before it into a result.
Finish = Callable[[str, Optional[list[Any]]], Any]


def ok_count(text: str, data: list[Any] | None) -> int:
    """``+OK <n>`` -> n (a count, or the sid of a SUBSCRIBE)."""
    return int(text[3:])


class Published(int):
    """What a PUBLISH with properties reached: the number of queues (an ``int``, as for
    any PUBLISH), and ``duplicate``: True when the broker already had its id within
    the dedup window and routed nothing (``+OK <n> duplicate``; n is what the first
    one reached)."""

    duplicate: bool

    def __new__(cls, reached: int, duplicate: bool = False) -> Published:
        self = super().__new__(cls, reached)
        self.duplicate = duplicate
        return self

    def __repr__(self) -> str:
        return f"Published({int(self)}, duplicate={self.duplicate})"

    def __str__(self) -> str:  # printed like the int it is
        return int.__repr__(self)


def ok_published(text: str, data: list[Any] | None) -> Published:
    """``+OK <n>`` or ``+OK <n> duplicate`` -> :class:`Published`."""
    parts = text.split(" ")
    if len(parts) == 3:
        if parts[2] != "duplicate":
            raise ValueError(f"not a PUBLISH reply: {text!r}")
        return Published(int(parts[1]), True)
    return Published(int(parts[1]))


def ok_none(text: str, data: list[Any] | None) -> None:
    """``+OK`` (or anything positive) -> None."""
    return None


def ok_created(text: str, data: list[Any] | None) -> bool:
    """``+OK created`` -> True, ``+OK exists`` -> False."""
    return text == "OK created"


def ok_data(text: str, data: list[Any] | None) -> list[Any]:
    """The data lines that came before the status line."""
    return data if data is not None else []


def ok_stats(text: str, data: list[Any] | None) -> dict[str, int | str]:
    """``STAT <key> <value>`` lines -> ``{key: value}``, all-digit values as ints."""
    out: dict[str, int | str] = {}
    for stat in data or ():
        assert isinstance(stat, Stat)
        value = stat.value
        out[stat.key] = int(value) if value.isdigit() else value
    return out
