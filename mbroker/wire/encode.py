"""Every byte the protocol writes: status and error lines, the greeting, MSG heads and
runs of them, PUBLISH heads, HELP's replies, and any frame or command as bytes.

``status`` and ``error_line`` turn a CR or LF in their text into a space: no text can
break the framing.  ``encode_command`` raises ``BadArgs`` for a name, key, pattern or
AUTH token that the broker would refuse.  The hot paths (a delivery, a publish) have
their own encoders that append to a caller's output list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from mbroker.errors import BrokerError
from mbroker.wire import frames
from mbroker.wire.frames import Command, Props, ServerFrame
from mbroker.wire.grammar import SPECS, VERBS, help_lines
from mbroker.wire.props import check_props
from mbroker.wire.tokens import CRLF, encode_text, write_key, write_name, write_token

# ------------------------------------------------------------------ lines


def _safe(text: str) -> bytes:
    """Human text for one line: UTF-8, with any CR or LF turned into a space."""
    data = encode_text(text)
    if b"\n" in data or b"\r" in data:
        data = data.replace(b"\r", b" ").replace(b"\n", b" ")
    return data


def status(text: str) -> bytes:
    """A success line: ``status("OK created") == b"+OK created\\r\\n"``."""
    return b"+" + _safe(text) + CRLF


def _error(code: str, text: str) -> bytes:
    if text:
        return b"-ERR %s %s\r\n" % (_safe(code), _safe(text))
    return b"-ERR %s\r\n" % _safe(code)


def error_line(err: BrokerError) -> bytes:
    """``-ERR <CODE> <text>`` for a refusal."""
    return _error(err.code, err.text)


def route_bytes(source: str, key: str) -> bytes:
    """The ``<source> <key>`` part of a MSG header (``-`` for the empty key), made once."""
    return encode_text(f"{source} {key or '-'}")


#: the MSG line; the payload and a line end follow it
_MSG = b"MSG %d %d %s %d\r\n"
#: a whole MSG frame (line, payload, line end) in one piece
_MSG_WHOLE = _MSG + b"%s\r\n"
#: a payload up to this size is copied into its MSG frame's bytes (one piece to
#: queue instead of three; the transport joins them all before writing anyway)
JOIN_MAX = 1024
#: a PUBLISH payload below this size is copied into the frame's bytes (the client's side)
PUBLISH_JOIN_BELOW = 16 * 1024


def msg_header(
    sid: int,
    tag: int,
    route: bytes,
    size: int,
    redelivered: int = 0,
    reason: bytes | None = None,
    attrs: bytes = b"",
) -> bytes:
    """The MSG line; the caller writes the payload and ``b"\\r\\n"`` after it.

    ``attrs`` are more ``key=value`` tokens, each with a space before it."""
    if not redelivered and reason is None and not attrs:
        return _MSG % (sid, tag, route, size)
    extra = b" redelivered=%d" % redelivered if redelivered else b""
    if reason is not None:
        extra += b" reason=" + reason
    return b"MSG %d %d %s%s%s %d\r\n" % (sid, tag, route, extra, attrs, size)


# ------------------------------------------------------------------ deliveries


class MsgContent(Protocol):
    """What a MSG frame is made of: the broker's queued message provides it."""

    @property
    def payload(self) -> bytes: ...

    @property
    def route(self) -> bytes:
        """``b"<source> <key-or->"`` (see :func:`route_bytes`)."""

    @property
    def deliveries(self) -> int:
        """How many times it was delivered, this time included."""

    @property
    def reason(self) -> str | None:
        """Why it was dead-lettered, if it was."""

    @property
    def props(self) -> Props | None:
        """Its headers, id and priority, if it has any (contract section 7)."""


def delivery_head(sid: int, tag: int, m: MsgContent) -> bytes:
    """The MSG line of a delivery of ``m``, with its redelivery count, reason and
    properties, in the contract's order."""
    reason = m.reason
    props = m.props
    return msg_header(
        sid,
        tag,
        m.route,
        len(m.payload),
        m.deliveries - 1,
        reason.encode() if reason is not None else None,
        props.tail if props is not None else b"",
    )


def append_deliveries(out: list[bytes], sid: int, tag: int, messages: Iterable[MsgContent]) -> int:
    """Append the MSG frames of ``messages``, tagged ``tag``, ``tag + 1``, …, to ``out``;
    returns the bytes of their payloads."""
    append = out.append
    size = 0
    for m in messages:
        payload = m.payload
        n = len(payload)
        size += n
        if m.deliveries != 1 or m.reason is not None or m.props is not None:
            append(delivery_head(sid, tag, m))
            append(payload)
            append(CRLF)
        elif n <= JOIN_MAX:  # one piece: cheaper than three, and joined anyway
            append(_MSG_WHOLE % (sid, tag, m.route, n, payload))
        else:
            append(_MSG % (sid, tag, m.route, n))
            append(payload)
            append(CRLF)
        tag += 1
    return size


def append_run(out: list[bytes], sid: int, tag: int, route: bytes, payloads: list[bytes]) -> int:
    """Append the MSG frames of first deliveries with one route, tagged ``tag``,
    ``tag + 1``, …, to ``out``; returns the bytes of their payloads."""
    # _MSG and _MSG_WHOLE with the sid and route filled in once (a name or key never
    # holds "%": the route can go into the format)
    head = b"MSG %d %%d %s %%d\r\n" % (sid, route)
    whole = head + b"%s\r\n"
    append = out.append
    size = 0
    for payload in payloads:
        n = len(payload)
        size += n
        if n <= JOIN_MAX:
            append(whole % (tag, n, payload))
        else:
            append(head % (tag, n))
            append(payload)
            append(CRLF)
        tag += 1
    return size


def encode_pulled(pulled: Sequence[tuple[int, MsgContent]]) -> bytes:
    """The reply to a PULL: a ``MSG 0 <tag> …`` frame per message, then ``+OK <count>``."""
    parts = []
    for tag, m in pulled:
        parts.append(delivery_head(0, tag, m))
        parts.append(m.payload)
        parts.append(CRLF)
    parts.append(b"+OK %d\r\n" % len(pulled))
    return b"".join(parts)


# ------------------------------------------------------------------ PUBLISH


def publish_head(
    name: str, key: str = "", ttl: int | None = None, props: Props | None = None
) -> bytes:
    """``PUBLISH <name> [<key>] [ttl=MS] [section 7 options] ``: a PUBLISH line up to
    its size, checked.

    Raises ``BadArgs`` for a name, key or property the broker would refuse."""
    head = b"PUBLISH " + write_name(name)
    if key:
        head += b" " + write_key(key)
    if ttl is not None:
        head += b" ttl=%d" % ttl
    if props is not None:
        check_props(props)
        if props.delay is not None:
            head += b" delay=%d" % props.delay
        head += props.tail
    return head + b" "


def published_line(reached: int, duplicate: bool = False) -> bytes:
    """PUBLISH's reply: ``+OK <n>``, or ``+OK <n> duplicate`` (contract section 7)."""
    return b"+OK %d duplicate\r\n" % reached if duplicate else b"+OK %d\r\n" % reached


def append_publish(out: list[bytes], head: bytes, payload: bytes) -> None:
    """Append a PUBLISH of ``payload`` whose line starts with ``head`` (see
    :func:`publish_head`) to ``out``; a large payload is not copied."""
    n = len(payload)
    if n < PUBLISH_JOIN_BELOW:
        out.append(b"%s%d\r\n%s\r\n" % (head, n, payload))
    else:
        out += (b"%s%d\r\n" % (head, n), payload, CRLF)


# ------------------------------------------------------------------ frames


def _kv_bytes(pairs: tuple[tuple[str, str], ...]) -> bytes:
    return b"".join(b" %s=%s" % (encode_text(k), encode_text(v)) for k, v in pairs)


#: the ``PING`` a heartbeat pushes (contract section 7)
PING_LINE = b"PING\r\n"


def hello_line(
    version: str, auth_required: bool, max_payload: int, extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """The greeting the broker sends on connect."""
    return encode_frame(frames.Hello(version, 1, auth_required, max_payload, extra))


def encode_frame(frame: ServerFrame) -> bytes:
    """Any server frame as bytes (the hot paths have the encoders above)."""
    if isinstance(frame, frames.Msg):
        route = route_bytes(frame.source, frame.key)
        reason = None if frame.reason is None else encode_text(frame.reason)
        size = len(frame.payload)
        attrs = _kv_bytes(frame.attrs)
        head = msg_header(frame.sid, frame.tag, route, size, frame.redelivered, reason, attrs)
        return head + frame.payload + CRLF
    if isinstance(frame, frames.Ok):
        return status(frame.text)
    if isinstance(frame, frames.Error):
        return _error(frame.code, frame.text)
    if isinstance(frame, frames.Hello):
        auth = "required" if frame.auth_required else "none"
        hello = f"HELLO mbroker {frame.version} proto={frame.proto} auth={auth} max-payload="
        return encode_text(f"{hello}{frame.max_payload}") + _kv_bytes(frame.extra) + CRLF
    if isinstance(frame, frames.Cancel):
        return encode_text(f"CANCEL {frame.sid} {frame.reason}\r\n")
    if isinstance(frame, frames.ExchangeInfo):
        f = frame
        return encode_text(
            f"EXCHANGE {f.name} {f.kind} durable={f.durable:d} bindings={f.bindings}\r\n"
        )
    if isinstance(frame, frames.QueueInfo):
        q = frame
        counts = f"messages={q.messages} unacked={q.unacked} consumers={q.consumers}"
        return encode_text(f"QUEUE {q.name} {counts} durable={q.durable:d}\r\n")
    if isinstance(frame, frames.Stat):
        value = b" " + _safe(frame.value) if frame.value else b""
        return b"STAT " + encode_text(frame.key) + value + CRLF
    if isinstance(frame, frames.HelpLine):
        return encode_text(frame.command) + b" " + _safe(frame.text) + CRLF
    if isinstance(frame, frames.PingPush):
        return PING_LINE
    raise TypeError(f"not a server frame: {frame!r}")


def encode_command(cmd: Command) -> bytes:
    """A command as a client sends it: PUBLISH in the size form, options only when not default.

    Raises ``BadArgs`` for a name, key, pattern or AUTH token the broker would refuse.
    """
    if isinstance(cmd, (frames.Publish, frames.PublishRun)):
        head = publish_head(cmd.name, cmd.key, cmd.ttl, cmd.props)
        out: list[bytes] = []
        for payload in [cmd.payload] if isinstance(cmd, frames.Publish) else cmd.payloads:
            append_publish(out, head, payload)
        return b"".join(out)
    if isinstance(cmd, frames.Auth):
        return b"AUTH %s %s\r\n" % (write_token(cmd.user), write_token(cmd.password))
    verb = VERBS.get(type(cmd))
    if verb is None:
        raise TypeError(f"not a command: {cmd!r}")
    spec = SPECS[verb]
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
    return b" ".join(parts) + CRLF


# ------------------------------------------------------------------ HELP


def _help_reply(lines: list[tuple[str, str]]) -> bytes:
    return b"".join(encode_frame(frames.HelpLine(c, t)) for c, t in lines) + b"+OK\r\n"


_HELP = _help_reply([(verb.decode(), spec.doc[0]) for verb, spec in SPECS.items()])
_HELP_ONE = {
    verb.decode(): _help_reply([(verb.decode(), text) for text in help_lines(verb, spec)])
    for verb, spec in SPECS.items()
}


def help_reply(command: str | None) -> bytes:
    """The whole reply to HELP (``command`` None) or to ``HELP <command>``, made at import."""
    if command is None:
        return _HELP
    return _HELP_ONE[command]
