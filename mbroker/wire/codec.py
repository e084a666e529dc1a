"""The sans-IO codec of protocol v1 (``PROTOCOL.md``): bytes in, frames out, and back.

Nothing here touches a socket, a reactor or a clock.  :class:`CommandDecoder` is the
broker's side (bytes -> commands), :class:`ReplyDecoder` the client's (bytes -> server
frames); ``encode_command``, ``encode_frame`` and the hot-path helpers ``status``,
``error_line`` and ``msg_header`` go the other way.

Framing, shared by both decoders in :class:`_Framer`:

* ``feed`` walks its chunk with one bounded ``find(b"\\n", pos, pos + max_line + 2)`` per
  line from a moving offset: 80,000 pipelined lines in one chunk cost 80,000 finds and
  slices, never a re-scan or re-slice of the whole buffer.  Only an unfinished line is
  kept between calls, in a ``bytearray`` never longer than ``max_line + 1`` bytes (the
  ``+ 1`` being a CR that may come before the LF).  One CR right before the LF is dropped.
* A PUBLISH line is parsed once per connection: its meaning is remembered by the whole
  line (``PUBLISH q k 128``), and a later identical line whose payload is in the same
  read costs one dict look-up.  Consecutive such commands become one
  :class:`~mbroker.wire.frames.PublishRun` item (a pipelining publisher's stream), which the
  broker routes once and answers with one reply per payload.
* Payload bytes are never scanned: they are kept as slices of the chunks they arrive in
  (the chunk itself when it is all payload) and joined once, so a payload fed a byte at a
  time is still linear.  CRLF or LF must follow it, else ``BAD_FRAME``.

The commands are described by one table, ``_SPECS`` (positional arguments, options and
flags, each with its parser and writer); decoding, encoding and the usage text in error
messages all come from it.  PUBLISH, the hot path, is parsed by hand in the common cases.

Decisions where the contract leaves room:

* Tokens are separated by runs of spaces and tabs, and by nothing else (the contract): a
  VT, FF, NUL, a CR that is not right before the LF or any other byte is part of its
  token, and so refused wherever such a token is.  ``_split`` does it with one
  ``bytes.split()`` and one ``translate`` that finds no VT, FF or CR in a usual line;
  only a line that holds one is split again, by space and tab alone.
* Only PUBLISH carries a payload.  Its size is its last token when that is all ASCII
  digits (``bytes.isdigit``: no sign, no other digits, nothing else inside), so
  ``PUBLISH q 123`` is a 123-byte payload with the empty key.  A size over
  ``max_payload`` (or of more than 18 digits) is ``TOO_BIG``, fatal; so is an inline
  payload over ``max_payload``.  A PUBLISH with a size always consumes its payload and
  line end before its refusal (``BAD_ARGS``) is emitted - or ``BAD_FRAME`` instead of it
  when the line end is missing.  The inline ``:`` is special for PUBLISH only.
* A ``key=value`` token is an option, a listed bare word a flag; positional arguments come
  first (a bare word after an option is refused).  Keywords, kinds, option and flag
  names are case-insensitive; values are not.  A flag may also be written ``flag=1``
  (set) or ``flag=0`` (the same as leaving it out); any other value, an option without
  one, and a repeated option or flag are ``BAD_ARGS``.
* ``_SPECS`` also holds each command's help text; HELP's replies are made from it once,
  at import (``help_reply``), so the list of commands and their usage cannot drift from
  what the decoder accepts.  Every HELP data line starts with its command's name (as a
  STAT line starts with STAT), so that ``ReplyDecoder`` reads it without knowing what
  was asked.  PONG (the answer to a pushed PING) is a command that gets no reply.
* Numbers are 1-18 ASCII digits (leading zeros allowed).  ``ttl``, ``wait`` and ``delay``
  may be 0; ``ack-timeout`` must be at least 1 and needs ``ack=manual``.
* AUTH takes exactly two tokens of any bytes but space and tab, decoded as UTF-8 with
  ``surrogateescape`` (as is all human text, both ways).  ``status`` and ``error_line``
  turn a CR or LF in their text into a space: no text can break the framing.
* ``encode_command`` raises ``BadArgs`` for a name, key, pattern or AUTH token that the
  broker would refuse or that would break the framing (no command injection).
* ``ReplyDecoder`` raises ``BadFrame`` on anything a v1 broker does not send (an over-long
  line or payload too); frames decoded before it in the same ``feed`` are lost with the
  connection.  It skips empty lines and tolerates ``key=value`` tokens it does not know:
  HELLO keeps them in ``extra``, MSG in ``attrs``; EXCHANGE and QUEUE ignore them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, Optional, TypeVar, Union

from mbroker.config import DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD, KEY_MAX, NAME_MAX
from mbroker.errors import BadArgs, BadCommand, BadFrame, BrokerError, LineTooLong, TooBig
from mbroker.wire import frames
from mbroker.wire.frames import Command, ServerFrame, TagRanges

MAX_TAGS = 1000
_MAX_DIGITS = 18
_WS = b" \t"  # what separates tokens, and nothing else does
#: what bytes.split() splits on besides space and tab (LF never occurs inside a line)
_ODD_WS = b"\r\x0b\x0c"
_SEP = re.compile(b"[ \t]+")
_WORD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_NAME_CHARS = _WORD + b"."
_PATTERN_CHARS = _NAME_CHARS + b"*#"
_CRLF = b"\r\n"

# ------------------------------------------------------------------ names and keys


def _name_ok(b: bytes) -> bool:
    return 0 < len(b) <= NAME_MAX and not b.translate(None, _NAME_CHARS)


def _key_ok(b: bytes, chars: bytes = _NAME_CHARS) -> bool:
    return not b or (
        len(b) <= KEY_MAX
        and b != b"-"
        and not b.translate(None, chars)
        and b[0] != 46  # "."
        and b[-1] != 46
        and b".." not in b
    )


def _pattern_ok(b: bytes) -> bool:
    if not _key_ok(b, _PATTERN_CHARS):
        return False
    if b"*" in b or b"#" in b:  # a wildcard is a whole word
        return all(w in (b"*", b"#") or not w.translate(None, _WORD) for w in b.split(b"."))
    return True


def valid_name(s: str) -> bool:
    """A name: 1-255 characters of ``A-Z a-z 0-9 _ - .``"""
    return s.isascii() and _name_ok(s.encode("ascii"))


def valid_key(s: str) -> bool:
    """A routing key: 0-255 bytes, words of ``A-Z a-z 0-9 _ -`` joined by dots; not ``-``."""
    return s.isascii() and _key_ok(s.encode("ascii"))


def valid_pattern(s: str) -> bool:
    """A binding pattern: a routing key whose words may also be ``*`` or ``#``."""
    return s.isascii() and _pattern_ok(s.encode("ascii"))


def _split(line: bytes) -> list[bytes]:
    """The tokens of a line: split at runs of spaces and tabs, and at nothing else."""
    if len(line.translate(None, _ODD_WS)) == len(line):
        return line.split()  # (the usual line: the one split pass)
    return [tok for tok in _SEP.split(line) if tok]


def _cut(line: bytes, n: int) -> list[bytes]:
    """``line.split(None, n)``, but splitting at spaces and tabs only."""
    rest = line.lstrip(_WS)
    return _SEP.split(rest, n) if rest else []


def _show(tok: bytes) -> str:
    """A token quoted for an error text: printable, and at most 40 bytes of it."""
    return "'{}{}'".format(repr(tok[:40])[2:-1], "..." if len(tok) > 40 else "")


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------ framing

_T = TypeVar("_T")
#: a PUBLISH line's meaning: (name, key, ttl, payload size)
_Head = tuple[str, str, Optional[int], int]


class _Framer(Generic[_T]):
    """Lines and payloads out of a byte stream; subclasses say what a line means."""

    def __init__(self, max_line: int, max_payload: int) -> None:
        self.max_line = max_line
        self.max_payload = max_payload
        #: True after a fatal error; later feeds return ``[]``.
        self.closed = False
        self._buf = bytearray()  # an unfinished line, or the CR after a payload
        self._need = -1  # -1: reading lines; n >= 0: payload bytes still to come
        self._chunks: list[bytes] = []
        #: complete PUBLISH lines already checked -> (name, key, ttl, size); see feed
        self._heads: dict[bytes, _Head] = {}

    def _single(self, head: _Head, payload: bytes) -> _T:
        raise NotImplementedError

    def _run_start(self, out: list[_T], payload: bytes) -> list[bytes]:
        raise NotImplementedError

    def _line(self, line: bytes, out: list[_T]) -> None:
        raise NotImplementedError

    def _done(self, payload: bytes, out: list[_T]) -> None:
        raise NotImplementedError

    def _fail(self, err: BrokerError, out: list[_T]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        self.closed = True
        self._buf.clear()
        self._chunks = []
        self._need = -1

    def _payload(self, size: int) -> None:
        self._need = size
        self._chunks = []

    def _complete(self, out: list[_T]) -> None:
        payload = b"".join(self._chunks)
        self._chunks = []
        self._need = -1
        self._done(payload, out)

    def _too_long(self, out: list[_T]) -> None:
        self._fail(LineTooLong(f"line longer than {self.max_line} bytes"), out)

    def _partial(self, data: bytes, start: int, out: list[_T]) -> None:
        """Keep ``data[start:]``, an unfinished line, unless it is already too long."""
        over = len(self._buf) + len(data) - start - self.max_line
        if over > 1 or (over == 1 and data[-1] != 13):
            self._too_long(out)
        else:
            self._buf += memoryview(data)[start:]

    def feed(self, data: bytes) -> list[_T]:
        out: list[_T] = []
        if self.closed or not data:
            return out
        pos = 0
        buf = self._buf
        max_line = self.max_line
        if buf:
            if self._need == 0:  # the CR after a payload came last time
                buf.clear()
                if data[0] != 10:
                    self._fail(BadFrame("payload not followed by a line end"), out)
                    return out
                pos = 1
                self._complete(out)
            else:  # an unfinished line
                nl = data.find(b"\n", 0, max_line + 2 - len(buf))
                if nl < 0:
                    self._partial(data, 0, out)
                    return out
                buf += memoryview(data)[:nl]
                if buf[-1] == 13:
                    del buf[-1]
                line = bytes(buf)
                buf.clear()
                pos = nl + 1
                if len(line) > max_line:
                    self._too_long(out)
                    return out
                self._line(line, out)
        n = len(data)
        heads = self._heads
        last: _Head | None = None
        last_n = 0
        run: list[bytes] | None = None
        while pos < n and not self.closed:
            need = self._need
            if need > 0:
                if n - pos > need:
                    self._chunks.append(data[pos : pos + need])
                    pos += need
                    self._need = 0
                else:
                    self._chunks.append(data[pos:] if pos else data)
                    self._need = need - (n - pos)
                    break
            elif need == 0:
                c = data[pos]
                if c == 10:
                    pos += 1
                elif c == 13 and pos + 1 == n:
                    buf.append(13)
                    break
                elif c == 13 and data[pos + 1] == 10:
                    pos += 2
                else:
                    self._fail(BadFrame("payload not followed by a line end"), out)
                    break
                self._complete(out)
            else:
                nl = data.find(b"\n", pos, pos + max_line + 2)
                if nl < 0:
                    self._partial(data, pos, out)
                    break
                end = nl - 1 if nl > pos and data[nl - 1] == 13 else nl
                if end - pos > max_line:
                    self._too_long(out)
                    break
                line = data[pos:end]
                head = heads.get(line)
                if head is not None:
                    # Fastest path: a PUBLISH line seen before, its payload and line
                    # end in this read.  A run of them becomes one item.
                    start = nl + 1
                    stop = start + head[3]
                    if stop + 1 < n and data[stop] == 13 and data[stop + 1] == 10:
                        after = stop + 2
                    elif stop < n and data[stop] == 10:
                        after = stop + 1
                    else:
                        after = 0
                    if after:
                        if head is last and len(out) == last_n:
                            if run is None:
                                run = self._run_start(out, data[start:stop])
                            else:
                                run.append(data[start:stop])
                        else:
                            out.append(self._single(head, data[start:stop]))
                            last = head
                            last_n = len(out)
                            run = None
                        pos = after
                        continue
                self._line(line, out)
                pos = nl + 1
                need = self._need
                if need >= 0:
                    # Fast path: the whole payload and its line end are in this read.
                    end = pos + need
                    if end + 1 < n and data[end] == 13 and data[end + 1] == 10:
                        self._need = -1
                        self._done(data[pos:end], out)
                        pos = end + 2
                    elif end < n and data[end] == 10:
                        self._need = -1
                        self._done(data[pos:end], out)
                        pos = end + 1
        return out


# ------------------------------------------------------------------ argument types


def _int(tok: bytes, what: str, least: int = 0) -> int:
    if not tok.isdigit() or len(tok) > _MAX_DIGITS:
        raise BadArgs(f"{what} must be a whole number of 1-18 digits, not {_show(tok)}")
    value = int(tok)
    if value < least:
        raise BadArgs(f"{what} must be at least {least}")
    return value


def _name(tok: bytes, what: str = "name") -> str:
    if not _name_ok(tok):
        raise BadArgs(f"bad {what} {_show(tok)}: 1-255 characters of A-Z a-z 0-9 _ - .")
    return tok.decode("ascii")


def _key(tok: bytes, what: str = "routing key") -> str:
    if not _key_ok(tok):
        raise BadArgs(f"bad {what} {_show(tok)}: words of A-Z a-z 0-9 _ - joined by dots")
    return tok.decode("ascii")


def _pattern(tok: bytes, what: str) -> str:
    if not _pattern_ok(tok):
        raise BadArgs(f"bad {what} {_show(tok)}: words of A-Z a-z 0-9 _ -, or * or #, and dots")
    return tok.decode("ascii")


def _tags(tok: bytes, what: str = "tags") -> TagRanges:
    items = tok.split(b",")
    if len(items) > MAX_TAGS:
        raise BadArgs(f"at most {MAX_TAGS} tags or ranges per command")
    tags = []
    for item in items:
        a, dash, b = item.partition(b"-")
        if not dash:
            b = a
        if not (a.isdigit() and b.isdigit() and len(a) <= _MAX_DIGITS >= len(b)):
            raise BadArgs(f"bad tag {_show(item)}: tags are positive integers or ranges a-b")
        first, last = int(a), int(b)
        if first < 1 or last < first:
            raise BadArgs(f"bad tag {_show(item)}: tags are positive, with a <= b in a range a-b")
        tags.append((first, last))
    return tuple(tags)


def _checker(ok: Callable[[str], bool], what: str) -> Callable[[str], bytes]:
    """A writer that refuses what the broker would refuse (or what would break a line)."""

    def write(value: str) -> bytes:
        if not value or not ok(value):
            raise BadArgs(f"bad {what} {value!r}")
        return value.encode("ascii")

    return write


def _tags_bytes(tags: TagRanges) -> bytes:
    if not tags:
        raise BadArgs("no tags")
    return b",".join(b"%d" % a if a == b else b"%d-%d" % (a, b) for a, b in tags)


class _Field(NamedTuple):
    """One argument: the frame attribute, how to read and write it, usage text, default."""

    attr: str
    parse: Callable[[bytes, str], Any]
    write: Callable[[Any], bytes]
    meta: str
    default: Any = None


def _number(attr: str, least: int = 0, meta: str = "N", default: int | None = None) -> _Field:
    return _Field(attr, lambda tok, what: _int(tok, what, least), b"%d".__mod__, meta, default)


def _choice(attr: str, values: dict[bytes, Any], default: Any, fold: bool = False) -> _Field:
    back = {v: k for k, v in values.items()}
    meta = "|".join(k.decode() for k in values)

    def parse(tok: bytes, what: str) -> Any:
        value = values.get(tok.lower() if fold else tok, parse)
        if value is parse:
            raise BadArgs(f"{what} must be {meta}, not {_show(tok)}")
        return value

    return _Field(attr, parse, back.__getitem__, meta, default)


class _Spec(NamedTuple):
    """A command's grammar: positional arguments (``required`` of them first), options,
    flags; and its help: ``doc`` lines, each a sentence whose subject is the command."""

    cls: Callable[..., Command]
    required: int
    positional: tuple[_Field, ...] = ()
    options: dict[bytes, _Field] = {}
    flags: dict[bytes, str] = {}
    doc: tuple[str, ...] = ()


def _command(tok: bytes, what: str) -> str:
    verb = tok.upper()
    if verb not in _SPECS:
        raise BadArgs(f"unknown command {_show(tok)}; HELP lists them")
    return verb.decode()


def _w_command(value: str) -> bytes:
    if not value.isascii() or value.upper().encode() not in _SPECS:
        raise BadArgs(f"bad command {value!r}")
    return value.encode()


def _token(tok: bytes, what: str) -> str:
    return _text(tok)


def _w_token(value: str) -> bytes:
    data = _enc(value)
    if not data or data.translate(None, b" \t\r\n") != data:
        raise BadArgs("AUTH user and password must be single tokens without white space")
    return data


_w_name = _checker(valid_name, "name")
_w_key = _checker(valid_key, "routing key")
_w_pattern = _checker(valid_pattern, "key or pattern")
_NAME = _Field("name", _name, _w_name, "name")
_QUEUE = _Field("queue", _name, _w_name, "queue")
_TAGS = _Field("tags", _tags, _tags_bytes, "tags")
_ACK = {
    b"ack": _choice("manual", {b"auto": False, b"manual": True}, False),
    b"ack-timeout": _number("ack_timeout", 1, "MS"),
}
_KINDS = {b"queue": "queue", b"direct": "direct", b"fanout": "fanout", b"topic": "topic"}
_OVERFLOWS = {b"drop-head": "drop-head", b"reject": "reject"}
_PUBLISH = _Spec(
    frames.Publish,
    1,
    (_NAME, _Field("key", _key, _w_key, "routing-key", "")),
    {b"ttl": _number("ttl", meta="MS")},
    doc=(
        "sends a message to an exchange or a queue and replies +OK <queues it went to>",
        "in the size form the line ends with the payload's size in bytes; that many bytes "
        "and a line end follow",
        "in the inline form the payload is the text after the first token that begins "
        "with ':', as in PUBLISH news sport :Goal!",
        "ttl=MS: the message expires after MS milliseconds",
    ),
)
_BIND = _Spec(
    frames.Bind,
    2,
    (
        _QUEUE,
        _Field("exchange", _name, _w_name, "exchange"),
        _Field("key", _pattern, _w_pattern, "key-or-pattern", ""),
    ),
    doc=(
        "binds a queue to an exchange with a routing key or a pattern",
        "in a pattern * stands for one word and # for any number of words; the key "
        "defaults to empty",
        "replies +OK; binding twice changes nothing",
    ),
)
#: Every command, in the contract's order: its grammar and its help.
_SPECS: dict[bytes, _Spec] = {
    b"CREATE": _Spec(
        frames.Create,
        1,
        (_NAME, _choice("kind", _KINDS, "topic", fold=True)),
        {
            b"max-length": _number("max_length"),
            b"max-bytes": _number("max_bytes"),
            b"overflow": _choice("overflow", _OVERFLOWS, "drop-head"),
            b"ttl": _number("ttl", meta="MS"),
            b"dead-letter": _Field("dead_letter", _name, _w_name, "NAME"),
            b"max-deliver": _number("max_deliver", 1),
        },
        {b"durable": "durable", b"exclusive": "exclusive"},
        (
            "makes an exchange (direct, fanout, or topic: the default) or a queue",
            "replies +OK created, or +OK exists when it exists with the same kind and "
            "options, else -ERR EXISTS",
            "durable: it survives a restart; exclusive: the queue goes with this "
            "connection; an exchange takes only durable",
            "max-length and max-bytes limit a queue's ready messages; overflow says what a "
            "full queue does with a new one",
            "ttl=MS: how long a message may wait; dead-letter=NAME: where expired, dropped "
            "and rejected messages go",
            "max-deliver=N: a message delivered N times without an ack is dead-lettered",
        ),
    ),
    b"DELETE": _Spec(
        frames.Delete,
        1,
        (_NAME,),
        {},
        {b"if-empty": "if_empty", b"if-unused": "if_unused"},
        (
            "deletes an exchange or a queue and replies +OK <messages dropped>",
            "if-empty: not a queue that holds messages (-ERR NOT_EMPTY); if-unused: not a "
            "queue with consumers or an exchange with bindings (-ERR IN_USE)",
        ),
    ),
    b"BIND": _BIND,
    b"UNBIND": _BIND._replace(
        cls=frames.Unbind,
        doc=(
            "removes a binding that BIND made",
            "replies +OK, or -ERR NOT_FOUND when the queue was not bound so",
        ),
    ),
    b"PUBLISH": _PUBLISH,
    b"SUBSCRIBE": _Spec(
        frames.Subscribe,
        1,
        (_NAME, _Field("pattern", _pattern, _w_pattern, "pattern")),
        {b"prefetch": _number("prefetch"), **_ACK},
        doc=(
            "makes this connection a consumer of a queue or an exchange",
            "on an exchange the server makes a private queue bound with the pattern (default #)",
            "replies +OK <sid>; then deliveries come as MSG <sid> <tag> <source> <key> "
            "<size> and the payload",
            "ack=manual: a delivery waits for ACK or NACK, and ack-timeout=MS gives it back "
            "unless acked in time",
            "prefetch=N: at most N deliveries unacknowledged at a time (0: no limit)",
        ),
    ),
    b"UNSUBSCRIBE": _Spec(
        frames.Unsubscribe,
        1,
        (_number("sid", 1, "sid"),),
        doc=(
            "ends a subscription and replies +OK",
            "its unacknowledged messages go back to their queue",
        ),
    ),
    b"PULL": _Spec(
        frames.Pull,
        1,
        (_QUEUE,),
        {b"max": _number("max", 1, default=1), b"wait": _number("wait", meta="MS"), **_ACK},
        doc=(
            "takes up to max=N messages (default 1) from a queue: MSG 0 frames, then +OK <count>",
            "wait=MS: an empty queue holds the reply up to MS milliseconds for a message",
            "ack=manual: each message waits for ACK or NACK, as with SUBSCRIBE",
        ),
    ),
    b"ACK": _Spec(
        frames.Ack,
        1,
        (_TAGS,),
        doc=(
            "acknowledges deliveries by tag",
            "tags are a comma-separated list of tags and ranges a-b, as in 1,3,5-9",
            "replies +OK <n handled>, or -ERR NOT_FOUND naming the tags not outstanding",
        ),
    ),
    b"NACK": _Spec(
        frames.Nack,
        1,
        (_TAGS,),
        {
            b"requeue": _choice("requeue", {b"1": True, b"0": False}, True),
            b"delay": _number("delay", meta="MS"),
        },
        doc=(
            "gives deliveries back to the head of their queue and replies +OK <n handled>",
            "requeue=0: dead-letters or drops them instead; delay=MS: they come back after "
            "MS milliseconds",
        ),
    ),
    b"TOUCH": _Spec(
        frames.Touch,
        1,
        (_TAGS,),
        doc=(
            "restarts the ack-timeout of deliveries still being worked on",
            "replies +OK <n handled>",
        ),
    ),
    b"PURGE": _Spec(
        frames.Purge,
        1,
        (_QUEUE,),
        doc=(
            "drops a queue's ready messages (not those delivered and unacknowledged)",
            "replies +OK <n dropped>",
        ),
    ),
    b"PING": _Spec(
        frames.Ping,
        0,
        doc=("replies +PONG", "checks that the broker answers; allowed before AUTH"),
    ),
    b"PONG": _Spec(
        frames.Pong,
        0,
        doc=("answers a PING that the server pushed", "gets no reply; allowed before AUTH"),
    ),
    b"QUIT": _Spec(
        frames.Quit,
        0,
        doc=("ends the connection", "replies +OK bye, then the server closes the connection"),
    ),
    b"HELP": _Spec(
        frames.Help,
        0,
        (_Field("command", _command, _w_command, "command"),),
        doc=(
            "lists the commands, or shows how to use one",
            "replies with one line per command, or with the usage of one and what it does, "
            "then +OK; allowed before AUTH",
        ),
    ),
    b"AUTH": _Spec(
        frames.Auth,
        2,
        (
            _Field("user", _token, _w_token, "user"),
            _Field("password", _token, _w_token, "password"),
        ),
        doc=(
            "logs in, where the greeting says auth=required",
            "replies +OK, or -ERR AUTH for a wrong user or password",
        ),
    ),
    b"LIST": _Spec(
        frames.List,
        0,
        doc=(
            "lists the exchanges and queues: an EXCHANGE or QUEUE line each",
            "replies +OK <count> after them",
        ),
    ),
    b"STATS": _Spec(
        frames.Stats,
        0,
        (_NAME,),
        doc=(
            "shows the counters of the server, or of one exchange or queue",
            "replies STAT <key> <value> lines, then +OK",
        ),
    ),
}
_VERBS = {spec.cls: verb for verb, spec in _SPECS.items()}


def _usage_line(verb: bytes, spec: _Spec) -> str:
    words = [verb.decode()]
    for i, f in enumerate(spec.positional):
        words.append(f"<{f.meta}>" if i < spec.required else f"[{f.meta}]")
    words += [f"[{flag.decode()}]" for flag in spec.flags]
    words += [f"[{opt.decode()}={f.meta}]" for opt, f in spec.options.items()]
    if spec is _PUBLISH:
        words.append("<size>|:payload")
    return " ".join(words)


def _usage(verb: bytes, spec: _Spec) -> str:
    return "usage: " + _usage_line(verb, spec)


def _help_lines(verb: bytes, spec: _Spec) -> list[str]:
    """``HELP <verb>``: the usage line, then what the command does (without the verb
    each line starts with; a bare verb would read as a pushed ``PING``)."""
    usage = _usage_line(verb, spec)[len(verb) + 1 :] or "takes no arguments"
    lines = [usage, *spec.doc]
    if spec.flags:
        names = " and ".join(flag.decode() for flag in spec.flags)
        first = next(iter(spec.flags)).decode()
        lines.append(
            f"takes the flags {names}: {first} or {first}=1 sets one, and {first}=0 is the "
            "same as leaving it out"
        )
    return lines


def _help_reply(lines: list[tuple[str, str]]) -> bytes:
    return b"".join(encode_frame(frames.HelpLine(c, t)) for c, t in lines) + b"+OK\r\n"


def help_reply(command: str | None) -> bytes:
    """The whole reply to HELP (``command`` None) or to ``HELP <command>``, made at import."""
    if command is None:
        return _HELP
    return _HELP_ONE[command]


def _kwargs(verb: bytes, spec: _Spec, args: list[bytes]) -> dict[str, Any]:
    """Parse ``args`` by ``spec``: the keyword arguments of its frame class."""
    fields, flags, options = spec.positional, spec.flags, spec.options
    kw: dict[str, Any] = {}
    i, n = 0, len(args)
    while i < n and i < len(fields):
        tok = args[i]
        if b"=" in tok or (i >= spec.required and tok.lower() in flags):
            break
        kw[fields[i].attr] = fields[i].parse(tok, fields[i].meta)
        i += 1
    if i < spec.required:
        raise BadArgs(f"missing arguments; {_usage(verb, spec)}")
    opts: dict[str, Any] = {}
    off: set[str] = set()  # flags written flag=0: as if left out, but not twice
    for tok in args[i:]:
        key, eq, value = tok.partition(b"=")
        name = key.lower()
        if name in flags:
            attr = flags[name]
            if eq and value != b"1":
                if value != b"0":
                    raise BadArgs(f"flag {_show(key)} takes no value but 1 or 0")
                if attr in opts or attr in off:
                    raise BadArgs(f"duplicate option {_show(key)}")
                off.add(attr)
                continue
            parsed = True
        elif name in options:
            if not value:
                raise BadArgs(f"option {_show(key)} needs a value")
            attr = options[name].attr
            parsed = options[name].parse(value, name.decode())
        elif eq:
            raise BadArgs(f"unknown option {_show(key)} for {verb.decode()}")
        else:
            raise BadArgs(f"unexpected argument {_show(tok)}; {_usage(verb, spec)}")
        if attr in opts or attr in off:
            raise BadArgs(f"duplicate option {_show(key)}")
        opts[attr] = parsed
    if opts.get("ack_timeout") is not None and not opts.get("manual"):
        raise BadArgs("ack-timeout needs ack=manual")
    if spec.cls is not frames.Create:
        kw.update(opts)
        return kw
    if kw["name"].startswith("mbroker."):
        raise BadArgs(
            f"reserved name '{kw['name']}': names beginning with 'mbroker.' are the server's"
        )
    kind = kw.get("kind", "topic")
    for attr in opts:
        if kind != "queue" and attr != "durable":
            option = attr.replace("_", "-")
            raise BadArgs(f"'{option}' is for queues; a {kind} exchange takes only 'durable'")
    kw["options"] = frames.QueueOptions(**opts) if opts else frames.DEFAULT_OPTIONS
    return kw


def _publish_args(args: list[bytes]) -> tuple[str, str, int | None]:
    """PUBLISH's arguments but the payload, as ``(name, key, ttl)``."""
    n = len(args)
    if n == 1:
        return _name(args[0]), "", None
    if n == 2 and b"=" not in args[1]:
        return _name(args[0]), _key(args[1]), None
    kw = _kwargs(b"PUBLISH", _PUBLISH, args)
    return kw["name"], kw.get("key", ""), kw.get("ttl")


def _auth(args: list[bytes]) -> frames.Auth:
    if len(args) != 2:
        raise BadArgs(_usage(b"AUTH", _SPECS[b"AUTH"]))
    return frames.Auth(_text(args[0]), _text(args[1]))


_Item = Union[Command, BrokerError]

#: how many distinct PUBLISH heads a connection remembers as already validated
_HEAD_CACHE = 1024
#: the longest PUBLISH line remembered in those caches
_HEAD_MAX = 640


class CommandDecoder(_Framer[_Item]):
    """The broker's side: ``feed(bytes)`` gives one command or refusal per command line.

    A refusal is a :class:`~mbroker.errors.BrokerError` instance in its place in the list.
    A fatal one (``LINE_TOO_LONG``, ``TOO_BIG``, ``BAD_FRAME``) is the last item the
    decoder ever returns: it is ``closed`` from then on and ignores its input.
    """

    def __init__(
        self, max_line: int = DEFAULT_MAX_LINE, max_payload: int = DEFAULT_MAX_PAYLOAD
    ) -> None:
        super().__init__(max_line, max_payload)
        self._pending: tuple[str, str, int | None] | BrokerError = BadArgs()
        #: PUBLISH heads already validated: the line up to its size -> (name, key, ttl)
        self._prefixes: dict[bytes, tuple[str, str, int | None]] = {}

    def _single(self, head: _Head, payload: bytes) -> _Item:
        return frames.Publish(head[0], head[1], payload, head[2])

    def _run_start(self, out: list[_Item], payload: bytes) -> list[bytes]:
        first = out[-1]
        assert isinstance(first, frames.Publish)
        run = [first.payload, payload]
        out[-1] = frames.PublishRun(first.name, first.key, run, first.ttl)
        return run

    def _fail(self, err: BrokerError, out: list[_Item]) -> None:
        out.append(err)
        self._close()

    def _line(self, line: bytes, out: list[_Item]) -> None:
        tokens = _split(line)
        if not tokens:
            return
        verb = tokens[0].upper()
        if verb == b"PUBLISH":
            self._publish(line, tokens, out)
            return
        try:
            if verb == b"AUTH":
                out.append(_auth(tokens[1:]))
            elif verb in _SPECS:
                spec = _SPECS[verb]
                out.append(spec.cls(**_kwargs(verb, spec, tokens[1:])))
            else:
                out.append(BadCommand(f"unknown command {_show(tokens[0])}"))
        except BadArgs as err:
            out.append(err)

    def _publish(self, line: bytes, tokens: list[bytes], out: list[_Item]) -> None:
        if b":" in line:
            colon = line.find(b":")
            while colon > 0 and line[colon - 1] not in _WS:
                colon = line.find(b":", colon + 1)
            if colon > 0:  # the inline form
                payload = line[colon + 1 :]
                if len(payload) > self.max_payload:
                    self._fail(TooBig(f"payload over {self.max_payload} bytes"), out)
                    return
                try:
                    name, key, ttl = _publish_args(_split(line[:colon])[1:])
                except BadArgs as err:
                    out.append(err)
                    return
                out.append(frames.Publish(name, key, payload, ttl))
                return
        size = tokens[-1]
        if len(tokens) < 2 or not size.isdigit():
            out.append(BadArgs(f"PUBLISH needs a size or :payload; {_usage(b'PUBLISH', _PUBLISH)}"))
        elif len(size) > _MAX_DIGITS or int(size) > self.max_payload:
            self._fail(TooBig(f"payload over {self.max_payload} bytes"), out)
        else:
            head = line[: line.rfind(size)]
            # (a valid head is at most ~560 bytes unless padded with white space;
            # only short ones are remembered, so the caches stay small)
            cache = len(line) <= _HEAD_MAX
            args = self._prefixes.get(head)
            if args is None:
                try:
                    args = _publish_args(tokens[1:-1])
                except BadArgs as err:
                    self._pending = err
                    self._payload(int(size))
                    return
                if cache:
                    if len(self._prefixes) >= _HEAD_CACHE:
                        self._prefixes.clear()
                    self._prefixes[head] = args
            nbytes = int(size)
            if cache:
                if len(self._heads) >= _HEAD_CACHE:
                    self._heads.clear()
                self._heads[line] = (args[0], args[1], args[2], nbytes)
            self._pending = args
            self._payload(nbytes)

    def _done(self, payload: bytes, out: list[_Item]) -> None:
        pending = self._pending
        if isinstance(pending, BrokerError):
            out.append(pending)
        else:
            out.append(frames.Publish(pending[0], pending[1], payload, pending[2]))


# ------------------------------------------------------------------ replies


def _uint(tok: bytes | None) -> int:
    if tok is None or not tok.isdigit() or len(tok) > _MAX_DIGITS:
        raise BadFrame(f"bad or missing number {_show(tok or b'')} from the server")
    return int(tok)


def _flag01(tok: bytes | None) -> bool:
    if tok not in (b"0", b"1"):
        raise BadFrame("bad or missing 0|1 value from the server")
    return tok == b"1"


def _kv(tokens: list[bytes]) -> dict[bytes, bytes]:
    pairs = (tok.partition(b"=") for tok in tokens)
    return {key: value for key, eq, value in pairs if eq}


def _hello(tokens: list[bytes]) -> frames.Hello:
    if tokens[1] != b"mbroker":
        raise BadFrame("not an mbroker greeting")
    proto, auth, max_payload = 1, False, DEFAULT_MAX_PAYLOAD
    extra = []
    for key, eq, value in (tok.partition(b"=") for tok in tokens[3:]):
        if not eq:
            continue
        if key == b"proto":
            proto = _uint(value)
        elif key == b"auth":
            if value not in (b"none", b"required"):
                raise BadFrame(f"bad auth {_show(value)} in the greeting")
            auth = value == b"required"
        elif key == b"max-payload":
            max_payload = _uint(value)
        else:
            extra.append((_text(key), _text(value)))
    return frames.Hello(_text(tokens[2]), proto, auth, max_payload, tuple(extra))


def _cancel(tokens: list[bytes]) -> frames.Cancel:
    return frames.Cancel(_uint(tokens[1]), _text(tokens[2]))


def _exchange(tokens: list[bytes]) -> frames.ExchangeInfo:
    kv = _kv(tokens[3:])
    name, kind = _text(tokens[1]), _text(tokens[2])
    return frames.ExchangeInfo(name, kind, _flag01(kv.get(b"durable")), _uint(kv.get(b"bindings")))


def _queue(tokens: list[bytes]) -> frames.QueueInfo:
    kv = _kv(tokens[2:])
    messages, unacked = _uint(kv.get(b"messages")), _uint(kv.get(b"unacked"))
    consumers, durable = _uint(kv.get(b"consumers")), _flag01(kv.get(b"durable"))
    return frames.QueueInfo(_text(tokens[1]), messages, unacked, consumers, durable)


_REPLIES: dict[bytes, Callable[[list[bytes]], ServerFrame]] = {
    b"HELLO": _hello,
    b"CANCEL": _cancel,
    b"EXCHANGE": _exchange,
    b"QUEUE": _queue,
}


class ReplyDecoder(_Framer[ServerFrame]):
    """The client's side: ``feed(bytes)`` gives server frames; raises ``BadFrame`` on garbage."""

    def __init__(self, max_line: int = 64 * 1024, max_payload: int = 64 * 1024 * 1024) -> None:
        super().__init__(max_line, max_payload)
        self._head: dict[str, Any] = {}

    def feed(self, data: bytes) -> list[ServerFrame]:
        try:
            return super().feed(data)
        except BadFrame:
            self._close()
            raise

    def _fail(self, err: BrokerError, out: list[ServerFrame]) -> None:
        raise err if isinstance(err, BadFrame) else BadFrame(err.text)

    def _line(self, line: bytes, out: list[ServerFrame]) -> None:
        if line[:1] == b"+":
            out.append(frames.Ok(_text(line[1:])))
            return
        if line[:4] == b"-ERR" and line[4:5] in (b"", b" ", b"\t"):
            parts = _cut(line[4:], 1)
            if parts:
                out.append(frames.Error(_text(parts[0]), _text(parts[1]) if len(parts) > 1 else ""))
                return
        tokens = _split(line)
        if not tokens:
            return
        verb = tokens[0]
        if verb == b"MSG":
            self._msg(tokens)
        elif verb == b"STAT" and len(tokens) > 1:
            parts = _cut(line, 2)
            out.append(frames.Stat(_text(parts[1]), _text(parts[2]) if len(parts) > 2 else ""))
        elif verb in _REPLIES:
            try:
                out.append(_REPLIES[verb](tokens))
            except IndexError:
                raise BadFrame(f"short {verb.decode()} line from the server") from None
        elif verb in _SPECS and len(tokens) > 1:  # a HELP data line
            out.append(frames.HelpLine(verb.decode(), _text(_cut(line, 1)[1])))
        else:
            raise BadFrame(f"unexpected line from the server: {_show(line)}")

    def _msg(self, tokens: list[bytes]) -> None:
        if len(tokens) < 6:
            raise BadFrame("short MSG line from the server")
        size = _uint(tokens[-1])
        if size > self.max_payload:
            raise BadFrame(f"MSG payload over {self.max_payload} bytes")
        key = tokens[4]
        head: dict[str, Any] = {
            "sid": _uint(tokens[1]),
            "tag": _uint(tokens[2]),
            "source": _text(tokens[3]),
            "key": "" if key == b"-" else _text(key),
        }
        attrs = []
        for tok in tokens[5:-1]:
            name, eq, value = tok.partition(b"=")
            if not eq:
                raise BadFrame(f"bad MSG attribute {_show(tok)}")
            if name == b"redelivered":
                head["redelivered"] = _uint(value)
            elif name == b"reason":
                head["reason"] = _text(value)
            else:
                attrs.append((_text(name), _text(value)))
        if attrs:
            head["attrs"] = tuple(attrs)
        self._head = head
        self._payload(size)

    def _done(self, payload: bytes, out: list[ServerFrame]) -> None:
        out.append(frames.Msg(payload=payload, **self._head))


# ------------------------------------------------------------------ encoders


def _safe(text: str) -> bytes:
    """Human text for one line: UTF-8, with any CR or LF turned into a space."""
    data = _enc(text)
    if b"\n" in data or b"\r" in data:
        data = data.replace(b"\r", b" ").replace(b"\n", b" ")
    return data


def status(text: str) -> bytes:
    """A success line: ``status("OK created") == b"+OK created\\r\\n"``."""
    return b"+" + _safe(text) + _CRLF


def _error(code: str, text: str) -> bytes:
    if text:
        return b"-ERR %s %s\r\n" % (_safe(code), _safe(text))
    return b"-ERR %s\r\n" % _safe(code)


def error_line(err: BrokerError) -> bytes:
    """``-ERR <CODE> <text>`` for a refusal."""
    return _error(err.code, err.text)


def route_bytes(source: str, key: str) -> bytes:
    """The ``<source> <key>`` part of a MSG header (``-`` for the empty key), made once."""
    return _enc(f"{source} {key or '-'}")


def msg_header(
    sid: int, tag: int, route: bytes, size: int, redelivered: int = 0, reason: bytes | None = None
) -> bytes:
    """The MSG line; the caller writes the payload and ``b"\\r\\n"`` after it."""
    if not redelivered and reason is None:
        return b"MSG %d %d %s %d\r\n" % (sid, tag, route, size)
    attrs = b" redelivered=%d" % redelivered if redelivered else b""
    if reason is not None:
        attrs += b" reason=" + reason
    return b"MSG %d %d %s%s %d\r\n" % (sid, tag, route, attrs, size)


def _kv_bytes(pairs: tuple[tuple[str, str], ...]) -> bytes:
    return b"".join(b" %s=%s" % (_enc(k), _enc(v)) for k, v in pairs)


def hello_line(
    version: str, auth_required: bool, max_payload: int, extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """The greeting the broker sends on connect."""
    return encode_frame(frames.Hello(version, 1, auth_required, max_payload, extra))


def encode_frame(frame: ServerFrame) -> bytes:
    """Any server frame as bytes (the broker's hot paths use ``msg_header`` and ``status``)."""
    if isinstance(frame, frames.Msg):
        head = b"MSG %d %d %s" % (frame.sid, frame.tag, route_bytes(frame.source, frame.key))
        if frame.redelivered:
            head += b" redelivered=%d" % frame.redelivered
        if frame.reason is not None:
            head += b" reason=" + _enc(frame.reason)
        size = len(frame.payload)
        return b"%s%s %d\r\n%s\r\n" % (head, _kv_bytes(frame.attrs), size, frame.payload)
    if isinstance(frame, frames.Ok):
        return status(frame.text)
    if isinstance(frame, frames.Error):
        return _error(frame.code, frame.text)
    if isinstance(frame, frames.Hello):
        auth = "required" if frame.auth_required else "none"
        hello = f"HELLO mbroker {frame.version} proto={frame.proto} auth={auth} max-payload="
        return _enc(f"{hello}{frame.max_payload}") + _kv_bytes(frame.extra) + _CRLF
    if isinstance(frame, frames.Cancel):
        return _enc(f"CANCEL {frame.sid} {frame.reason}\r\n")
    if isinstance(frame, frames.ExchangeInfo):
        f = frame
        return _enc(f"EXCHANGE {f.name} {f.kind} durable={f.durable:d} bindings={f.bindings}\r\n")
    if isinstance(frame, frames.QueueInfo):
        q = frame
        counts = f"messages={q.messages} unacked={q.unacked} consumers={q.consumers}"
        return _enc(f"QUEUE {q.name} {counts} durable={q.durable:d}\r\n")
    if isinstance(frame, frames.Stat):
        value = b" " + _safe(frame.value) if frame.value else b""
        return b"STAT " + _enc(frame.key) + value + _CRLF
    if isinstance(frame, frames.HelpLine):
        return _enc(frame.command) + b" " + _safe(frame.text) + _CRLF
    raise TypeError(f"not a server frame: {frame!r}")


def encode_command(cmd: Command) -> bytes:
    """A command as a client sends it: PUBLISH in the size form, options only when not default.

    Raises ``BadArgs`` for a name, key, pattern or AUTH token the broker would refuse.
    """
    if isinstance(cmd, (frames.Publish, frames.PublishRun)):
        head = b"PUBLISH " + _w_name(cmd.name)
        if cmd.key:
            head += b" " + _w_key(cmd.key)
        if cmd.ttl is not None:
            head += b" ttl=%d" % cmd.ttl
        payloads = [cmd.payload] if isinstance(cmd, frames.Publish) else cmd.payloads
        return b"".join([b"%s %d\r\n%s\r\n" % (head, len(p), p) for p in payloads])
    if isinstance(cmd, frames.Auth):
        return b"AUTH %s %s\r\n" % (_w_token(cmd.user), _w_token(cmd.password))
    verb = _VERBS.get(type(cmd))
    if verb is None:
        raise TypeError(f"not a command: {cmd!r}")
    spec = _SPECS[verb]
    parts = [verb]
    for i, f in enumerate(spec.positional):
        value = getattr(cmd, f.attr)
        if i < spec.required or value != f.default:
            parts.append(f.write(value))
    source: object = cmd.options if isinstance(cmd, frames.Create) else cmd
    parts += [flag for flag, attr in spec.flags.items() if getattr(source, attr)]
    for opt, f in spec.options.items():
        value = getattr(source, f.attr)
        if value != f.default:
            parts.append(opt + b"=" + f.write(value))
    return b" ".join(parts) + _CRLF


_HELP = _help_reply([(verb.decode(), spec.doc[0]) for verb, spec in _SPECS.items()])
_HELP_ONE = {
    verb.decode(): _help_reply([(verb.decode(), text) for text in _help_lines(verb, spec)])
    for verb, spec in _SPECS.items()
}
