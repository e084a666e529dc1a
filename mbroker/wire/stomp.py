"""The sans-IO STOMP codec (STOMP 1.0, 1.1 and 1.2): bytes to frames and frames to bytes.

Nothing here touches a socket, a reactor or a clock; the STOMP listener feeds it what it
reads and writes what it returns.  :class:`StompDecoder` turns a byte stream into
:class:`Frame` and :data:`HEARTBEAT` items, :func:`encode` turns a frame into bytes, and
:func:`parse_heartbeat`, :func:`negotiate_heartbeat` and :func:`negotiate_version` are the
arithmetic of CONNECT / CONNECTED.  Those values, the limits and the error class live in
:mod:`mbroker.wire.stomp_frames` and are re-exported here: the STOMP listener imports this
module only.

A frame is ``COMMAND EOL (name ":" value EOL)* EOL body NUL``, then any number of EOLs.

Decoding
--------
* The decoder has three states.  *Idle*: EOLs between frames (heart-beats, and the EOLs
  a sender may put after a NUL) are skipped with one regex match per run and reported as
  one :data:`HEARTBEAT` item, so that the server can note liveness; they are never frames.
  *Head*: the command and header lines end at the first empty line, found with one
  bounded regex search for ``LF [CR] LF`` that resumes where the last one stopped (less
  the two bytes a terminator split across reads may have left behind); the head is then
  decoded and split into lines once, and its lines are measured one by one only when the
  whole head is longer than one line may be.  *Body*: with a ``content-length`` header
  its bytes are counted, never scanned, and a NUL must follow them; without one, the
  first NUL ends the body, found by one ``find`` per read that also resumes where the
  last one stopped.
  A head of at most ``HEAD_CACHE_BYTES`` is remembered, parsed (at most
  ``HEAD_CACHE_SIZE`` of them per decoder, forgotten all at once when full or when the
  version changes): a client that repeats a head (the same SEND again) costs one dict
  look-up per frame, and its frames share one header tuple and one header index.
  Whole frames with a remembered head and a ``content-length`` (what a client that
  repeats its SEND writes) are taken without the state machine: one ``find`` of LF LF
  and one look-up each, until a frame that is not so, which goes the general way; a
  frame that a read cut is finished the general way, and what follows it in the read
  is taken so again.
  So every byte is looked at a bounded number of times, however the stream is split:
  a 1 MiB body fed a byte at a time is linear.
* Limits (constructor keywords; defaults in :mod:`~mbroker.wire.stomp_frames`): a line
  of ``max_line`` bytes (8 KiB) is ``LINE_TOO_LONG``, a head of more than
  ``max_header_bytes`` (64 KiB) or ``max_headers`` (100) headers, or a body of more than
  ``max_body`` (1 MiB, the native max-payload) is ``TOO_BIG``.  Sizes are checked as soon
  as the bytes that break them arrive (a ``content-length`` over the limit on sight), so
  nothing is buffered past a limit; the header count once the head is complete.
* Only an unfinished frame is kept between reads, from its first byte, in one
  ``bytearray`` (a read that ends on a frame boundary keeps nothing).  What is kept is
  bounded by the limits: ``max_header_bytes`` (+2) for a head, ``max_body`` (+1) for a
  body.
* EOL is LF or CRLF in every version: 1.2 allows both; 1.0 and 1.1 say LF, but a CR right
  before an LF is accepted as part of the EOL (so a 1.0/1.1 header value cannot end in a
  CR; :func:`encode` refuses to write one).
* Header names and values are UTF-8, decoded with ``surrogateescape``: any bytes come
  through unchanged and are written back as they came.  The first ``:`` of a line ends
  the name (a later ``:`` belongs to the value, as RabbitMQ and most servers read it);
  a line without a ``:`` or with an empty name is malformed.  Values are not trimmed.
  Repeated headers are all kept, in order; :meth:`Frame.header` returns the first, which
  is the one that counts (STOMP 1.2), ``content-length`` included.
* Escapes (1.1: ``\\n \\c \\\\``; 1.2 also ``\\r``) are undone in names and values; any
  other backslash sequence, a lone trailing backslash included, is a fatal error.  1.0
  has no escapes: a backslash is a backslash.  CONNECT, STOMP and CONNECTED frames are
  never unescaped (the spec says so of CONNECT and CONNECTED; STOMP is CONNECT by
  another name, and all three are sent before a version is agreed).
* The version is ``decoder.version``: "1.0" until the first CONNECT or STOMP frame, whose
  ``accept-version`` sets it to the highest version both sides support (the server's
  :func:`negotiate_version` gives the same answer and may also set it), so that frames
  pipelined right behind the CONNECT in the same read are decoded right.  A client's
  decoder takes the ``version`` of the first CONNECTED frame instead.
* Commands are case-sensitive.  A decoder knows the client's commands (the server's
  side, by default) or the server's (``commands=SERVER_COMMANDS``, a client's side).
* Errors are never raised out of :meth:`StompDecoder.feed`: the frames decoded before
  the error in the same read are returned first, then the :class:`StompError` as the
  last item; every STOMP framing error is fatal (the server sends ERROR and closes), and
  a decoder that has failed returns ``[]`` from then on.

Encoding
--------
:func:`encode` writes LF line ends, escapes per version (none for 1.0 nor for
CONNECT/STOMP/CONNECTED) and writes ``content-length`` itself: it drops any the frame
carries and adds the true one to every frame with a body, so a frame it writes is always
framed right.  What a version cannot carry (a LF in a 1.0 value, a ``:`` in a 1.0 name, a
value ending in CR before 1.2, an empty name, a lone surrogate that ``surrogateescape``
did not make) raises ``ValueError`` rather than go out garbled.  :func:`heartbeat` is
the one-byte heart-beat, :func:`receipt` a RECEIPT written without building a frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Callable

from mbroker.errors import BadCommand, LineTooLong, TooBig
from mbroker.wire.stomp_frames import (
    ALL_COMMANDS,
    CLIENT_COMMANDS,
    HEARTBEAT,
    MAX_BODY,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    SERVER_COMMANDS,
    SUPPORTED_VERSIONS,
    UNESCAPED_COMMANDS,
    Frame,
    Headers,
    HeartBeat,
    Item,
    StompError,
    index_headers,
    negotiate_heartbeat,
    negotiate_version,
    parse_accept_version,
    parse_heartbeat,
)

__all__ = [
    "ALL_COMMANDS",
    "CLIENT_COMMANDS",
    "HEARTBEAT",
    "HEARTBEAT_BYTES",
    "MAX_BODY",
    "MAX_HEADER_BYTES",
    "MAX_HEADERS",
    "MAX_LINE",
    "SERVER_COMMANDS",
    "SUPPORTED_VERSIONS",
    "UNESCAPED_COMMANDS",
    "Frame",
    "HeartBeat",
    "Item",
    "StompDecoder",
    "StompError",
    "encode",
    "encode_headers",
    "heartbeat",
    "negotiate_heartbeat",
    "negotiate_version",
    "parse_accept_version",
    "parse_heartbeat",
    "receipt",
]

_MAX_DIGITS = 18


def _show(raw: bytes) -> str:
    """Bytes quoted for an error message: printable, one line, at most 40 bytes."""
    return "'{}{}'".format(repr(raw[:40])[2:-1], "..." if len(raw) > 40 else "")


# ------------------------------------------------------------------ escaping

_ESCAPE_RE = re.compile(r"\\(.?)", re.DOTALL)
_UNESCAPE_11 = {"n": "\n", "c": ":", "\\": "\\"}
_UNESCAPE_12 = {**_UNESCAPE_11, "r": "\r"}
_ESCAPE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c"})
_ESCAPE_12 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r"})


def _unescaper(table: dict[str, str], version: str) -> Callable[[str], str]:
    def one(m: re.Match[str]) -> str:
        try:
            return table[m.group(1)]
        except KeyError:
            raise StompError(
                f"undefined escape sequence {m.group(0)!r} in a header (STOMP {version})"
            ) from None

    def unescape(s: str) -> str:
        return _ESCAPE_RE.sub(one, s) if "\\" in s else s

    return unescape


_UNESCAPERS: dict[str, Callable[[str], str] | None] = {
    "1.0": None,
    "1.1": _unescaper(_UNESCAPE_11, "1.1"),
    "1.2": _unescaper(_UNESCAPE_12, "1.2"),
}


def _raw_name(s: str) -> str:
    if not s:
        raise ValueError("a header name cannot be empty")
    if ":" in s or "\n" in s:
        raise ValueError(f"header name {s!r} cannot be written without escapes")
    return s


def _raw_value(s: str) -> str:
    if "\n" in s or s.endswith("\r"):
        raise ValueError(f"header value {s!r} cannot be written without escapes")
    return s


def _name_11(s: str) -> str:
    if not s:
        raise ValueError("a header name cannot be empty")
    return s.translate(_ESCAPE_11) if ("\\" in s or "\n" in s or ":" in s) else s


def _value_11(s: str) -> str:
    if s.endswith("\r"):
        raise ValueError(f"header value {s!r}: STOMP 1.1 cannot end a value with CR")
    return s.translate(_ESCAPE_11) if ("\\" in s or "\n" in s or ":" in s) else s


def _name_12(s: str) -> str:
    if not s:
        raise ValueError("a header name cannot be empty")
    return _value_12(s)


def _value_12(s: str) -> str:
    if "\\" in s or "\n" in s or ":" in s or "\r" in s:
        return s.translate(_ESCAPE_12)
    return s


_Escape = Callable[[str], str]
_ESCAPERS: dict[str, tuple[_Escape, _Escape]] = {
    "1.0": (_raw_name, _raw_value),
    "1.1": (_name_11, _value_11),
    "1.2": (_name_12, _value_12),
}

# ------------------------------------------------------------------ encoding

#: The heart-beat a side sends when it has nothing else to say.
HEARTBEAT_BYTES = b"\n"


def heartbeat() -> bytes:
    """The bytes of one heart-beat: a single EOL."""
    return HEARTBEAT_BYTES


def encode_headers(headers: Iterable[tuple[str, str]], version: str) -> bytes:
    """``name:value`` lines (each ending in LF) to add to a MESSAGE head, escaped for
    ``version``; a header that ``version`` cannot carry (STOMP 1.0: a name with ``:``
    or a value with LF) is left out."""
    esc_name, esc_value = _ESCAPERS[version]
    lines = []
    for name, value in headers:
        try:
            lines.append(f"{esc_name(name)}:{esc_value(value)}\n")
        except ValueError:
            continue
    return "".join(lines).encode("utf-8", "surrogateescape")


def encode(frame: Frame, version: str = "1.2", *, content_length: bool = True) -> bytes:
    """The bytes of ``frame`` for a connection speaking ``version``.

    ``content-length`` is always computed here (any in ``frame.headers`` is dropped) and
    written for every frame with a body; ``content_length=False`` leaves it out where the
    spec allows, i.e. unless the body holds a NUL or the frame is a MESSAGE or an ERROR.
    Raises ``ValueError`` for an unknown command or version, or a header the version cannot
    carry.
    """
    command = frame.command
    if command not in ALL_COMMANDS:
        raise ValueError(f"unknown STOMP command {command!r}")
    try:
        esc_name, esc_value = _ESCAPERS[version]
    except KeyError:
        raise ValueError(f"unknown STOMP version {version!r}") from None
    if command in UNESCAPED_COMMANDS:
        esc_name, esc_value = _raw_name, _raw_value
    lines = [command]
    for name, value in frame.headers:
        if name != "content-length":
            lines.append(f"{esc_name(name)}:{esc_value(value)}")
    body = frame.body
    if body and (content_length or command == "MESSAGE" or command == "ERROR" or b"\0" in body):
        lines.append(f"content-length:{len(body)}")
    lines.append("\n")
    return "\n".join(lines).encode("utf-8", "surrogateescape") + body + b"\0"


_PLAIN_VALUE = re.compile(r"[^\\\n:\r]*")


def receipt(receipt_id: str, version: str = "1.2") -> bytes:
    """The bytes of ``RECEIPT`` with ``receipt-id:<receipt_id>``: what :func:`encode`
    writes for it, without building a frame when the id needs no escape."""
    if _PLAIN_VALUE.fullmatch(receipt_id) is not None:
        return b"RECEIPT\nreceipt-id:%s\n\n\x00" % receipt_id.encode("utf-8", "surrogateescape")
    return encode(Frame("RECEIPT", (("receipt-id", receipt_id),)), version)


# ------------------------------------------------------------------ decoding

_EOLS = re.compile(rb"(?:\r?\n)+")
_EOL_BYTES = (10, 13)
#: heads of at most this many bytes are remembered, at most this many per decoder (a
#: client repeats the same head: a repeat is not parsed again)
HEAD_CACHE_BYTES = 512
HEAD_CACHE_SIZE = 32
_Parsed = tuple[str, Headers, int, dict[str, str]]
_HEAD_END = re.compile(rb"\n\r?\n")
_IDLE, _HEAD, _BODY = 0, 1, 2


class StompDecoder:
    """Bytes in any split to :class:`Frame`, :data:`HEARTBEAT` and :class:`StompError` items.

    See the module docstring for the rules; the limits are the constructor's keywords.
    """

    def __init__(
        self,
        *,
        version: str = "1.0",
        commands: Iterable[str] = CLIENT_COMMANDS,
        versions: Iterable[str] = SUPPORTED_VERSIONS,
        max_line: int = MAX_LINE,
        max_header_bytes: int = MAX_HEADER_BYTES,
        max_headers: int = MAX_HEADERS,
        max_body: int = MAX_BODY,
    ) -> None:
        self.versions = tuple(versions)
        self.version = version
        self._commands = frozenset(commands)
        self.max_line = max_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_body = max_body
        #: the fatal error, once there has been one; later feeds return ``[]``
        self.error: StompError | None = None
        self._negotiated = False
        self._buf = bytearray()  # the unfinished frame, from its first byte
        self._state = _IDLE
        self._scan = 0  # where the next search (head end, or NUL) starts
        self._line = 0  # head: where its last unfinished line starts
        #: the head being read: command, headers, content-length (-1: NUL-terminated),
        #: the headers by name
        self._parsed: _Parsed = ("", (), -1, {})

    @property
    def version(self) -> str:
        """The STOMP version whose escaping rules apply to the frames still to come."""
        return self._version

    @version.setter
    def version(self, value: str) -> None:
        if value not in _UNESCAPERS:
            raise ValueError(f"unknown STOMP version {value!r}")
        self._version = value
        self._unescape = _UNESCAPERS[value]
        #: heads seen lately, by their bytes, parsed (for this version's escapes)
        self._heads: dict[bytes, _Parsed] = {}

    def feed(self, data: bytes) -> list[Item]:
        """Decode what ``data`` completes; keep what it leaves unfinished."""
        out: list[Item] = []
        if self.error is not None or not data:
            return out
        if self._state != _IDLE or self._buf:
            # A frame the last read cut: finish it the general way; what follows it
            # is read as if it had come alone.
            if not self._decode(data, out, True):
                return out
            data = bytes(self._buf)
            self._buf = bytearray()
        if type(data) is bytes:
            # The common read: whole frames whose heads were seen before, with a
            # content-length (a client repeating its SEND).  Taken here one after the
            # other, a dict look-up each; the first frame that is not so (a new head, a
            # frame cut by the read, a bad NUL, a CONNECT to negotiate) goes the general
            # way below, which decodes it the same.  (A remembered head never holds a
            # terminator, so the first LF LF after it is where the general search ends
            # it too.)
            heads = self._heads
            negotiated = self._negotiated
            pos, end = 0, len(data)
            while True:
                if data[pos] in _EOL_BYTES:
                    m = _EOLS.match(data, pos)
                    if m is None:
                        break
                    pos = m.end()
                    out.append(HEARTBEAT)
                    if pos == end:
                        return out
                head_end = data.find(b"\n\n", pos)
                parsed = heads.get(data[pos:head_end]) if head_end > 0 else None
                if (
                    parsed is None
                    or parsed[2] < 0
                    or (not negotiated and parsed[0] in UNESCAPED_COMMANDS)
                ):
                    break
                stop = head_end + 2 + parsed[2]
                if stop >= end or data[stop] != 0:
                    break
                out.append(Frame(parsed[0], parsed[1], data[head_end + 2 : stop], parsed[3]))
                pos = stop + 1
                if pos == end:
                    return out
            if pos:
                data = data[pos:]
        self._decode(data, out, False)
        return out

    def _decode(self, data: bytes, out: list[Item], once: bool) -> bool:
        """The general way: decode ``data`` after what is kept, into ``out``; keep
        what is left unfinished.  With ``once``, stop after the first frame that ends
        (the one a read cut), keeping what follows it; True if that left bytes."""
        stopped = False
        buf: bytes | bytearray
        if self._buf:
            self._buf += data
            buf = self._buf
        else:
            buf = data
        end = len(buf)
        pos = 0
        state = self._state
        try:
            while pos < end:
                if state == _IDLE:
                    if buf[pos] in _EOL_BYTES:
                        m = _EOLS.match(buf, pos)
                        if m is not None:
                            pos = m.end()
                            out.append(HEARTBEAT)
                            if pos == end:
                                break
                        if buf[pos] == 13 and pos + 1 == end:
                            break  # a CR that may be the start of a CRLF
                    state = _HEAD
                    self._scan = self._line = pos
                if state == _HEAD:
                    limit = pos + self.max_header_bytes + 2
                    m = _HEAD_END.search(buf, self._scan, limit)
                    if m is None:
                        self._head_unfinished(buf, pos, end, limit)
                        break
                    head_end = m.start()
                    body = m.end()
                    del m
                    if head_end + 1 - pos > self.max_header_bytes:
                        raise self._head_too_big()
                    head = bytes(buf[pos:head_end])
                    parsed = self._heads.get(head)
                    if parsed is None:
                        parsed = self._parse_head(head)
                        if len(head) <= HEAD_CACHE_BYTES:
                            if len(self._heads) >= HEAD_CACHE_SIZE:
                                self._heads.clear()
                            self._heads[head] = parsed
                    self._parsed = parsed
                    pos = self._scan = body
                    state = _BODY
                # state == _BODY
                command, headers, length, index = self._parsed
                if length >= 0:
                    stop = pos + length
                    if stop >= end:
                        break
                    if buf[stop] != 0:
                        raise StompError(
                            f"no NUL after the {length}-byte body that content-length"
                            f" announced ({command} frame)"
                        )
                else:
                    stop = buf.find(b"\0", self._scan, pos + self.max_body + 1)
                    if stop < 0:
                        if end - pos > self.max_body:
                            raise self._body_too_big()
                        self._scan = end
                        break
                frame = Frame(command, headers, bytes(buf[pos:stop]), index)
                out.append(frame)
                pos = stop + 1
                state = _IDLE
                if not self._negotiated and command in UNESCAPED_COMMANDS:
                    self._negotiate(frame)
                if once and pos < end:
                    stopped = True
                    break
        except StompError as e:
            out.append(e)
            self.error = e
            self._buf = bytearray()
            return False
        self._state = state
        if buf is self._buf:
            if pos:
                del self._buf[:pos]
        elif pos < end:
            self._buf = bytearray(memoryview(buf)[pos:])
        self._scan -= pos
        self._line -= pos
        return stopped

    def _head_unfinished(self, buf: bytes | bytearray, pos: int, end: int, limit: int) -> None:
        """Check the limits on a head whose end has not come yet; note how far we looked."""
        if end >= limit:
            raise self._head_too_big()
        nl = buf.rfind(b"\n", self._scan, end)
        if nl >= 0:
            self._line = nl + 1
        if end - self._line > self.max_line + 1:  # + 1: the CR of a CRLF
            raise StompError(
                f"header line longer than {self.max_line} bytes", code=LineTooLong.code
            )
        self._scan = max(pos, end - 2)  # a terminator may have begun in the last 2 bytes

    def _head_too_big(self) -> StompError:
        return StompError(
            f"frame headers longer than {self.max_header_bytes} bytes", code=TooBig.code
        )

    def _body_too_big(self) -> StompError:
        return StompError(f"frame body larger than {self.max_body} bytes", code=TooBig.code)

    def _parse_head(self, head: bytes) -> _Parsed:
        """The command, headers, body length and header index of the head's lines."""
        max_line = self.max_line
        if len(head) > max_line:  # then one line may be too long: measure each, in bytes
            for raw in head.split(b"\n"):
                if len(raw) - raw.endswith(b"\r") > max_line:
                    raise StompError(f"line longer than {max_line} bytes", code=LineTooLong.code)
        text = head.decode("utf-8", "surrogateescape")
        if "\r" in text:  # a CR right before an LF belongs to the EOL
            text = text.replace("\r\n", "\n")
            if text.endswith("\r"):
                text = text[:-1]
        lines = text.split("\n")
        command = lines[0]
        if command not in self._commands:
            raw = command.encode("utf-8", "surrogateescape")
            raise StompError(f"unknown command {_show(raw)}", code=BadCommand.code)
        if len(lines) - 1 > self.max_headers:
            raise StompError(
                f"more than {self.max_headers} headers in a {command} frame", code=TooBig.code
            )
        unescape = self._unescape
        if command in UNESCAPED_COMMANDS or "\\" not in text:
            unescape = None
        headers = []
        length = -1
        for i in range(1, len(lines)):
            name, colon, value = lines[i].partition(":")
            if not name or not colon:
                raw = lines[i].encode("utf-8", "surrogateescape")
                what = "no ':'" if not colon else "an empty name"
                raise StompError(f"malformed header line {_show(raw)}: {what}")
            if unescape is not None:
                name = unescape(name)
                value = unescape(value)
            if name == "content-length" and length < 0:
                length = self._content_length(value)
            headers.append((name, value))
        header_tuple = tuple(headers)
        return (command, header_tuple, length, index_headers(header_tuple))

    def _content_length(self, value: str) -> int:
        if not (value.isascii() and value.isdigit()):
            raise StompError(f"bad content-length {value[:40]!r}: not a whole number")
        if len(value) > _MAX_DIGITS or int(value) > self.max_body:
            raise self._body_too_big()
        return int(value)

    def _negotiate(self, frame: Frame) -> None:
        """After the first CONNECT/STOMP (or CONNECTED), switch to the agreed version."""
        self._negotiated = True
        if frame.command == "CONNECTED":
            agreed: str | None = frame.header("version", "1.0")
            if agreed not in self.versions:
                agreed = None
        else:
            agreed = negotiate_version(frame.header("accept-version"), self.versions)
        if agreed is not None:
            self.version = agreed
