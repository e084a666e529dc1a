"""Message properties (contract section 7): headers, id, priority and delay, read from
PUBLISH options and written back as MSG attributes.

* A header is an option ``h.NAME=VALUE``: NAME is 1-128 bytes of ``A-Z a-z 0-9 _ - .``
  (case-sensitive; the ``h.`` prefix, like every option name, is not), VALUE any bytes,
  percent-encoded.  :func:`percent_decode` reads ``%XX`` in either case and refuses a
  ``%`` without two hex digits; :func:`percent_encode` escapes ``%``, space, tab, CR, LF
  and every byte outside 0x21-0x7E as ``%XX`` in upper case, and nothing else.
* At most :data:`MAX_HEADERS` headers and :data:`MAX_HEADER_TEXT` bytes of header text
  (the ``h.NAME=VALUE`` tokens as written, escapes included) per message, else
  ``LIMIT``; the same NAME twice is ``BAD_ARGS``.
* ``id=ID`` (1-255 bytes of 0x21-0x7E), ``priority=N`` (0-9), ``delay=MS`` (0 to a year).

A :class:`Props` is made once per distinct PUBLISH head (the decoder caches it), and
carries its MSG attributes pre-encoded in :attr:`Props.tail`, so a delivery adds one
bytes object to its MSG line.  A message that has none of these has no ``Props`` at all
(``None``), and pays nothing.

The store keeps a message's properties as the same text (:func:`stored_text`, read back
by :func:`from_stored`), with the wall-clock due time of a delayed message in front.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping

import attrs

from mbroker.errors import BadArgs, Limit
from mbroker.wire.frames import Header, Props, percent_encode
from mbroker.wire.tokens import parse_int, show, split_tokens

__all__ = [
    "Header",
    "Props",
    "percent_encode",
    "percent_decode",
    "parse_props",
    "is_prop",
    "make_props",
]

MAX_HEADERS = 64
#: bytes of header text per message: the ``h.NAME=VALUE`` tokens as written
MAX_HEADER_TEXT = 8192
MAX_HEADER_NAME = 128
MAX_ID = 255
MAX_PRIORITY = 9
#: the longest delay, one year in milliseconds
MAX_DELAY = 31_536_000_000

_NAME_OK = re.compile(rb"[A-Za-z0-9_.\-]{1,128}\Z")
_ID_OK = re.compile(rb"[\x21-\x7e]{1,255}\Z")
_HEX = b"0123456789abcdefABCDEF"


def percent_decode(token: bytes, what: str = "header value") -> bytes:
    """The bytes a percent-encoded ``token`` stands for; ``BAD_ARGS`` for a bad ``%``."""
    if b"%" not in token:
        return token
    parts = token.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
            raise BadArgs(f"bad % escape in {what} (% must be followed by two hex digits)")
        out.append(bytes((int(part[:2], 16),)))
        out.append(part[2:])
    return b"".join(out)


_PROP_KEYS = (b"id", b"priority", b"delay")


def is_prop(token: bytes) -> bool:
    """Whether a PUBLISH option token is one of this module's."""
    key = token.partition(b"=")[0].lower()
    return key.startswith(b"h.") or key in _PROP_KEYS


def parse_props(tokens: list[bytes]) -> Props:
    """The :class:`Props` of PUBLISH option tokens that :func:`is_prop` picked out."""
    headers: list[Header] = []
    seen: set[str] = set()
    text = 0
    msg_id: str | None = None
    priority: int | None = None
    delay: int | None = None
    for tok in tokens:
        key, eq, value = tok.partition(b"=")
        low = key.lower()
        if low.startswith(b"h."):
            name = key[2:]
            if not eq:
                raise BadArgs(f"header {show(tok)} needs =VALUE")
            if not _NAME_OK.match(name):
                raise BadArgs(
                    f"bad header name {show(name)}: 1-{MAX_HEADER_NAME} bytes of A-Z a-z 0-9 _ - ."
                )
            sname = name.decode("ascii")
            if sname in seen:
                raise BadArgs(f"duplicate header {show(name)}")
            seen.add(sname)
            text += len(tok)
            headers.append((sname, percent_decode(value)))
            continue
        if not eq:
            raise BadArgs(f"option {show(key)} needs a value")
        if low == b"id":
            if msg_id is not None:
                raise BadArgs("duplicate option 'id'")
            if not _ID_OK.match(value):
                raise BadArgs(f"id must be 1-{MAX_ID} bytes of 0x21-0x7E")
            msg_id = value.decode("ascii")
        elif low == b"priority":
            if priority is not None:
                raise BadArgs("duplicate option 'priority'")
            priority = parse_int(value, "priority")
            if priority > MAX_PRIORITY:
                raise BadArgs(f"priority must be 0-{MAX_PRIORITY}, not {priority}")
        else:
            if delay is not None:
                raise BadArgs("duplicate option 'delay'")
            delay = parse_int(value, "delay")
            if delay > MAX_DELAY:
                raise BadArgs(f"delay must be at most {MAX_DELAY} ms (a year)")
    if len(headers) > MAX_HEADERS:
        raise Limit(f"more than {MAX_HEADERS} headers")
    if text > MAX_HEADER_TEXT:
        raise Limit(f"header text over {MAX_HEADER_TEXT} bytes")
    return Props(tuple(headers), msg_id, priority or 0, delay)


def make_props(
    headers: Mapping[str, bytes | str] | None = None,
    msg_id: str | None = None,
    priority: int | None = None,
    delay: int | None = None,
) -> Props:
    """The :class:`Props` a client asks for (a ``str`` header value is sent as UTF-8),
    checked as the broker would check its PUBLISH: ``BAD_ARGS`` or ``LIMIT``."""
    items: list[Header] = []
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _NAME_OK.match(name.encode("utf-8", "replace")):
            raise BadArgs(
                f"bad header name {name!r}: 1-{MAX_HEADER_NAME} bytes of A-Z a-z 0-9 _ - ."
            )
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif not isinstance(value, bytes):
            raise BadArgs(f"header {name!r}: the value must be bytes or str")
        items.append((name, value))
    if msg_id is not None and (
        not isinstance(msg_id, str) or not _ID_OK.match(msg_id.encode("utf-8", "replace"))
    ):
        raise BadArgs(f"id must be 1-{MAX_ID} bytes of 0x21-0x7E, not {msg_id!r}")
    for what, number, most in (("priority", priority, MAX_PRIORITY), ("delay", delay, MAX_DELAY)):
        if number is not None and (type(number) is not int or not 0 <= number <= most):
            raise BadArgs(f"{what} must be a whole number from 0 to {most}, not {number!r}")
    props = Props(tuple(items), msg_id, priority or 0, delay)
    check_props(props)
    return props


def check_props(props: Props) -> None:
    """Raise what the broker would for ``props`` on a PUBLISH (a client's check before
    it writes): ``BAD_ARGS`` or ``LIMIT``."""
    tail = props.tail
    if props.delay is not None:
        tail = b" delay=%d" % props.delay + tail
    if tail:
        parse_props(tail.split(b" ")[1:])


def with_due(props: Props | None, due: float) -> Props:
    """``props`` (or none) with the wall-clock due time of a delayed copy."""
    if props is None:
        return Props(due=due)
    return attrs.evolve(props, due=due)


def stored_text(props: Props) -> bytes:
    """How the store keeps ``props``: ``[due=<epoch ms>]`` and the MSG attributes."""
    tail = props.tail
    if props.due is not None:
        tail = b" due=%d" % round(props.due * 1000) + tail
    return tail[1:] if tail else b""


def from_stored(text: bytes) -> Props | None:
    """:func:`stored_text` read back (None when there is nothing)."""
    tokens = split_tokens(text)
    if not tokens:
        return None
    due = None
    if tokens[0].startswith(b"due="):
        due = parse_int(tokens[0][4:], "due") / 1000
        tokens = tokens[1:]
    props = parse_props(tokens)
    return props if due is None else attrs.evolve(props, due=due)


def header_text(headers: Iterable[Header]) -> tuple[dict[str, str], dict[str, str]]:
    """Header values for a JSON output: as text where they are UTF-8 (first dict), in
    base64 where they are not (second), each keeping the published order."""
    text: dict[str, str] = {}
    raw: dict[str, str] = {}
    for name, value in headers:
        try:
            text[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raw[name] = base64.b64encode(value).decode("ascii")
    return text, raw


def msg_attrs(attrs_: tuple[tuple[str, str], ...]) -> tuple[dict[str, bytes], str | None, int]:
    """A received MSG's headers, id and priority out of its extra attributes (as
    :class:`~mbroker.wire.frames.Msg` keeps them, text with ``surrogateescape``)."""
    headers: dict[str, bytes] = {}
    msg_id = None
    priority = 0
    for name, value in attrs_:
        if name.startswith("h."):
            raw = value.encode("utf-8", "surrogateescape")
            headers[name[2:]] = percent_decode(raw)
        elif name == "id":
            msg_id = value
        elif name == "priority" and value.isdigit() and len(value) == 1:
            priority = int(value)
    return headers, msg_id, priority
