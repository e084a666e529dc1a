"""Tokens and the values they carry: how a line splits, and what a name, key, pattern,
number or tag list may be, read from bytes and written back (docs/protocol.rst: "Lines,
tokens and options", "Names, keys and patterns").

* Tokens are separated by runs of spaces and tabs, and by nothing else (the contract): a
  VT, FF, NUL, a CR that is not right before the LF or any other byte is part of its
  token, and so refused wherever such a token is.  :func:`split_tokens` does it with one
  ``bytes.split()`` and one ``translate`` that finds no VT, FF or CR in a usual line;
  only a line that holds one is split again, by space and tab alone.
* Numbers are 1-18 ASCII digits (leading zeros allowed).
* Human text is UTF-8 with ``surrogateescape``, both ways.
* The writers (``write_*``) refuse with ``BadArgs`` what the broker would refuse or what
  would break the framing (no command injection).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mbroker.config import KEY_MAX, NAME_MAX
from mbroker.errors import BadArgs
from mbroker.wire.frames import TagRanges

MAX_TAGS = 1000
MAX_DIGITS = 18
WS = b" \t"  # what separates tokens, and nothing else does
#: what bytes.split() splits on besides space and tab (LF never occurs inside a line)
_ODD_WS = b"\r\x0b\x0c"
_SEP = re.compile(b"[ \t]+")
_WORD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_NAME_CHARS = _WORD + b"."
_PATTERN_CHARS = _NAME_CHARS + b"*#"
CRLF = b"\r\n"

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


def split_tokens(line: bytes) -> list[bytes]:
    """The tokens of a line: split at runs of spaces and tabs, and at nothing else."""
    if len(line.translate(None, _ODD_WS)) == len(line):
        return line.split()  # (the usual line: the one split pass)
    return [tok for tok in _SEP.split(line) if tok]


def cut_tokens(line: bytes, n: int) -> list[bytes]:
    """``line.split(None, n)``, but splitting at spaces and tabs only."""
    rest = line.lstrip(WS)
    return _SEP.split(rest, n) if rest else []


def show(tok: bytes) -> str:
    """A token quoted for an error text: printable, and at most 40 bytes of it."""
    return "'{}{}'".format(repr(tok[:40])[2:-1], "..." if len(tok) > 40 else "")


def decode_text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def encode_text(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------ argument types


def parse_int(tok: bytes, what: str, least: int = 0) -> int:
    if not tok.isdigit() or len(tok) > MAX_DIGITS:
        raise BadArgs(f"{what} must be a whole number of 1-18 digits, not {show(tok)}")
    value = int(tok)
    if value < least:
        raise BadArgs(f"{what} must be at least {least}")
    return value


#: HEARTBEAT's interval: 0 (off) or this range of milliseconds (contract section 7)
HEARTBEAT_MIN, HEARTBEAT_MAX = 1000, 3_600_000


def parse_heartbeat(tok: bytes, what: str) -> int:
    """HEARTBEAT's ``MS``: 0, or 1000 to 3,600,000."""
    value = parse_int(tok, what)
    if value and not HEARTBEAT_MIN <= value <= HEARTBEAT_MAX:
        raise BadArgs(f"{what} must be 0 or {HEARTBEAT_MIN} to {HEARTBEAT_MAX}, not {value}")
    return value


def parse_name(tok: bytes, what: str = "name") -> str:
    if not _name_ok(tok):
        raise BadArgs(f"bad {what} {show(tok)}: 1-255 characters of A-Z a-z 0-9 _ - .")
    return tok.decode("ascii")


def parse_key(tok: bytes, what: str = "routing key") -> str:
    if not _key_ok(tok):
        raise BadArgs(f"bad {what} {show(tok)}: words of A-Z a-z 0-9 _ - joined by dots")
    return tok.decode("ascii")


def parse_pattern(tok: bytes, what: str) -> str:
    if not _pattern_ok(tok):
        raise BadArgs(f"bad {what} {show(tok)}: words of A-Z a-z 0-9 _ -, or * or #, and dots")
    return tok.decode("ascii")


def parse_tags(tok: bytes, what: str = "tags") -> TagRanges:
    items = tok.split(b",")
    if len(items) > MAX_TAGS:
        raise BadArgs(f"at most {MAX_TAGS} tags or ranges per command")
    tags = []
    for item in items:
        a, dash, b = item.partition(b"-")
        if not dash:
            b = a
        if not (a.isdigit() and b.isdigit() and len(a) <= MAX_DIGITS >= len(b)):
            raise BadArgs(f"bad tag {show(item)}: tags are positive integers or ranges a-b")
        first, last = int(a), int(b)
        if first < 1 or last < first:
            raise BadArgs(f"bad tag {show(item)}: tags are positive, with a <= b in a range a-b")
        tags.append((first, last))
    return tuple(tags)


def _checker(ok: Callable[[str], bool], what: str) -> Callable[[str], bytes]:
    """A writer that refuses what the broker would refuse (or what would break a line)."""

    def write(value: str) -> bytes:
        if not value or not ok(value):
            raise BadArgs(f"bad {what} {value!r}")
        return value.encode("ascii")

    return write


def write_tags(tags: TagRanges) -> bytes:
    if not tags:
        raise BadArgs("no tags")
    return b",".join(b"%d" % a if a == b else b"%d-%d" % (a, b) for a, b in tags)


def parse_token(tok: bytes, what: str) -> str:
    return decode_text(tok)


def write_token(value: str) -> bytes:
    data = encode_text(value)
    if not data or data.translate(None, b" \t\r\n") != data:
        raise BadArgs("AUTH user and password must be single tokens without white space")
    return data


write_name = _checker(valid_name, "name")
write_key = _checker(valid_key, "routing key")
write_pattern = _checker(valid_pattern, "key or pattern")
