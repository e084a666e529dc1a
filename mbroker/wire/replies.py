"""The client's decoder: bytes in, server frames out (``BadFrame`` on garbage).

``ReplyDecoder`` raises ``BadFrame`` on anything a v1 broker does not send (an over-long
line or payload too); frames decoded before it in the same ``feed`` are lost with the
connection.  It skips empty lines and tolerates ``key=value`` tokens it does not know:
HELLO keeps them in ``extra``, MSG in ``attrs``; EXCHANGE and QUEUE ignore them.  A HELP
data line is known by its first token, a command's name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mbroker.config import DEFAULT_MAX_PAYLOAD
from mbroker.errors import BadFrame, BrokerError
from mbroker.wire import frames
from mbroker.wire.framer import Framer
from mbroker.wire.frames import ServerFrame
from mbroker.wire.grammar import SPECS
from mbroker.wire.tokens import MAX_DIGITS, cut_tokens, decode_text, show, split_tokens


def _uint(tok: bytes | None) -> int:
    if tok is None or not tok.isdigit() or len(tok) > MAX_DIGITS:
        raise BadFrame(f"bad or missing number {show(tok or b'')} from the server")
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
                raise BadFrame(f"bad auth {show(value)} in the greeting")
            auth = value == b"required"
        elif key == b"max-payload":
            max_payload = _uint(value)
        else:
            extra.append((decode_text(key), decode_text(value)))
    return frames.Hello(decode_text(tokens[2]), proto, auth, max_payload, tuple(extra))


def _cancel(tokens: list[bytes]) -> frames.Cancel:
    return frames.Cancel(_uint(tokens[1]), decode_text(tokens[2]))


def _exchange(tokens: list[bytes]) -> frames.ExchangeInfo:
    kv = _kv(tokens[3:])
    name, kind = decode_text(tokens[1]), decode_text(tokens[2])
    return frames.ExchangeInfo(name, kind, _flag01(kv.get(b"durable")), _uint(kv.get(b"bindings")))


def _queue(tokens: list[bytes]) -> frames.QueueInfo:
    kv = _kv(tokens[2:])
    messages, unacked = _uint(kv.get(b"messages")), _uint(kv.get(b"unacked"))
    consumers, durable = _uint(kv.get(b"consumers")), _flag01(kv.get(b"durable"))
    return frames.QueueInfo(decode_text(tokens[1]), messages, unacked, consumers, durable)


_REPLIES: dict[bytes, Callable[[list[bytes]], ServerFrame]] = {
    b"HELLO": _hello,
    b"CANCEL": _cancel,
    b"EXCHANGE": _exchange,
    b"QUEUE": _queue,
}


class ReplyDecoder(Framer[ServerFrame]):
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
            out.append(frames.Ok(decode_text(line[1:])))
            return
        if line[:4] == b"-ERR" and line[4:5] in (b"", b" ", b"\t"):
            parts = cut_tokens(line[4:], 1)
            if parts:
                out.append(
                    frames.Error(
                        decode_text(parts[0]), decode_text(parts[1]) if len(parts) > 1 else ""
                    )
                )
                return
        tokens = split_tokens(line)
        if not tokens:
            return
        verb = tokens[0]
        if verb == b"MSG":
            self._msg(tokens)
        elif verb == b"STAT" and len(tokens) > 1:
            parts = cut_tokens(line, 2)
            out.append(
                frames.Stat(decode_text(parts[1]), decode_text(parts[2]) if len(parts) > 2 else "")
            )
        elif verb in _REPLIES:
            try:
                out.append(_REPLIES[verb](tokens))
            except IndexError:
                raise BadFrame(f"short {verb.decode()} line from the server") from None
        elif verb == b"PING" and len(tokens) == 1:  # pushed: a heartbeat (never a reply)
            out.append(frames.PingPush())
        elif verb in SPECS and len(tokens) > 1:  # a HELP data line
            out.append(frames.HelpLine(verb.decode(), decode_text(cut_tokens(line, 1)[1])))
        else:
            raise BadFrame(f"unexpected line from the server: {show(line)}")

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
            "source": decode_text(tokens[3]),
            "key": "" if key == b"-" else decode_text(key),
        }
        attrs = []
        for tok in tokens[5:-1]:
            name, eq, value = tok.partition(b"=")
            if not eq:
                raise BadFrame(f"bad MSG attribute {show(tok)}")
            if name == b"redelivered":
                head["redelivered"] = _uint(value)
            elif name == b"reason":
                head["reason"] = decode_text(value)
            else:
                attrs.append((decode_text(name), decode_text(value)))
        if attrs:
            head["attrs"] = tuple(attrs)
        self._head = head
        self._payload(size)

    def _done(self, payload: bytes, out: list[ServerFrame]) -> None:
        out.append(frames.Msg(payload=payload, **self._head))
