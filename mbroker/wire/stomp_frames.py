"""The STOMP vocabulary: frames, errors, limits, and the arithmetic of CONNECT / CONNECTED.

:class:`Frame` is what :mod:`mbroker.wire.stomp` decodes and encodes (headers keep the
wire's order and repeats; the first of a repeated header is the one that counts);
:data:`HEARTBEAT` is what it reports for the EOLs between frames; :class:`StompError` is a
protocol error, meant to become an ERROR frame.  :func:`negotiate_version` picks the
version from ``accept-version``, :func:`parse_heartbeat` and :func:`negotiate_heartbeat`
turn the two ``heart-beat`` headers into how often each side writes and expects to read.
No I/O and no Twisted here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Union

import attrs

from mbroker.config import DEFAULT_MAX_PAYLOAD, KiB
from mbroker.errors import BadArgs, BadFrame

# ------------------------------------------------------------------ vocabulary

#: The versions this codec speaks, oldest first.
SUPPORTED_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2")

CLIENT_COMMANDS: frozenset[str] = frozenset(
    {
        "CONNECT",
        "STOMP",
        "SEND",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "ACK",
        "NACK",
        "BEGIN",
        "COMMIT",
        "ABORT",
        "DISCONNECT",
    }
)
SERVER_COMMANDS: frozenset[str] = frozenset({"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"})
ALL_COMMANDS: frozenset[str] = CLIENT_COMMANDS | SERVER_COMMANDS
#: Frames whose headers are never escaped.
UNESCAPED_COMMANDS: frozenset[str] = frozenset({"CONNECT", "STOMP", "CONNECTED"})

#: Default limits: one header line (without its EOL), the whole head (command and header
#: lines with their EOLs, not the empty line), the number of headers, and the body.
MAX_LINE = 8 * KiB
MAX_HEADER_BYTES = 64 * KiB
MAX_HEADERS = 100
MAX_BODY = DEFAULT_MAX_PAYLOAD

_MAX_DIGITS = 18


class StompError(Exception):
    """A protocol error: ``message`` is meant for the ``message`` header of an ERROR frame.

    ``code`` is the native protocol's name for the same kind of fault (``BAD_FRAME``,
    ``LINE_TOO_LONG``, ``TOO_BIG``, ``BAD_COMMAND``, ``BAD_ARGS``); ``fatal`` says the
    connection must close after the ERROR frame (every framing error is fatal).
    """

    def __init__(self, message: str, *, code: str = BadFrame.code, fatal: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.fatal = fatal

    def __repr__(self) -> str:
        return f"StompError({self.message!r}, code={self.code!r}, fatal={self.fatal!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StompError) and (self.message, self.code, self.fatal) == (
            other.message,
            other.code,
            other.fatal,
        )

    def __hash__(self) -> int:
        return hash((self.message, self.code, self.fatal))


Headers = tuple[tuple[str, str], ...]


@attrs.frozen
class Frame:
    """One STOMP frame.  ``headers`` keeps the wire's order and repeats.

    ``index`` (not part of equality) is ``headers`` by name, the first of repeated ones:
    the decoder gives every frame one, shared by the frames of the same head and never
    changed, so that :meth:`header` is one dict look-up; a frame made without one scans
    ``headers``.
    """

    command: str
    headers: Headers = ()
    body: bytes = b""
    index: Mapping[str, str] | None = attrs.field(default=None, eq=False, repr=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first header called ``name`` (the one that counts), else ``default``."""
        index = self.index
        if index is not None:
            return index.get(name, default)
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_map(self) -> dict[str, str]:
        """All headers as a dict; of repeated ones, the first."""
        return index_headers(self.headers)


def index_headers(headers: Headers) -> dict[str, str]:
    """``headers`` as a dict; of repeated ones, the first (the one that counts)."""
    found: dict[str, str] = {}
    for key, value in headers:
        if key not in found:
            found[key] = value
    return found


@attrs.frozen
class HeartBeat:
    """One or more EOLs between frames: the peer is alive."""


HEARTBEAT = HeartBeat()
Item = Union[Frame, HeartBeat, StompError]


# ------------------------------------------------------------------ negotiation


def _version_key(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def parse_accept_version(value: str | None) -> tuple[str, ...]:
    """The versions an ``accept-version`` header lists; none at all means "1.0" only."""
    if value is None:
        return ("1.0",)
    return tuple(v for v in (p.strip() for p in value.split(",")) if v)


def negotiate_version(
    accept_version: str | None, supported: Iterable[str] = SUPPORTED_VERSIONS
) -> str | None:
    """The highest version both the client (``accept-version``) and we support, or None.

    None means no common version: the server answers ERROR (with a ``version`` header
    listing what it supports) and closes.
    """
    offered = set(parse_accept_version(accept_version))
    common = [v for v in supported if v in offered]
    return max(common, key=_version_key) if common else None


def parse_heartbeat(value: str | None) -> tuple[int, int]:
    """``heart-beat: x,y`` as two ints of milliseconds; no header at all is ``(0, 0)``.

    Blanks around each number are tolerated; anything else is a fatal ``BAD_ARGS`` error.
    """
    if value is None:
        return (0, 0)
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(
        p.isascii() and p.isdigit() and len(p) <= _MAX_DIGITS for p in parts
    ):
        raise StompError(
            f"bad heart-beat header {value[:40]!r}: two whole numbers of milliseconds, 'x,y'",
            code=BadArgs.code,
        )
    return (int(parts[0]), int(parts[1]))


def negotiate_heartbeat(client: tuple[int, int], server: tuple[int, int]) -> tuple[int, int]:
    """``(send_every_ms, expect_every_ms)`` for the server, 0 meaning never.

    ``client`` is the CONNECT's ``heart-beat`` ``(cx, cy)``, ``server`` the CONNECTED's
    ``(sx, sy)``.  The server sends every ``max(sx, cy)`` ms unless ``sx`` or ``cy`` is 0,
    and may expect something every ``max(cx, sy)`` ms unless ``cx`` or ``sy`` is 0 (it should
    allow some slack before it gives up).  A client gets its own pair by swapping the
    arguments.
    """
    cx, cy = client
    sx, sy = server
    send = 0 if sx == 0 or cy == 0 else max(sx, cy)
    expect = 0 if cx == 0 or sy == 0 else max(cx, sy)
    return (send, expect)
