"""The protocol's vocabulary: one frozen value class per command and per reply.

Commands travel client -> broker, replies and pushes broker -> client.  The codec in
:mod:`mbroker.wire` turns bytes into these objects and back; the broker and the client
both speak in them.  Names, routing keys and patterns are ``str`` (ASCII by the
contract); payloads are ``bytes`` and are never copied or scanned.

These classes carry no validators: the codec checks syntax once, on the way in.
"""

from __future__ import annotations

from typing import Literal, Union

import attrs

Kind = Literal["queue", "direct", "fanout", "topic"]
EXCHANGE_KINDS: frozenset[str] = frozenset({"direct", "fanout", "topic"})
KINDS: frozenset[str] = EXCHANGE_KINDS | {"queue"}
Overflow = Literal["drop-head", "reject"]

#: A tag list: ``(first, last)`` pairs; a single tag ``t`` is ``(t, t)``.
TagRanges = tuple[tuple[int, int], ...]


@attrs.frozen
class QueueOptions:
    """The options of CREATE.  For an exchange only ``durable`` may be set."""

    durable: bool = False
    max_length: int | None = None
    max_bytes: int | None = None
    overflow: Overflow = "drop-head"
    ttl: int | None = None  # milliseconds
    dead_letter: str | None = None
    max_deliver: int | None = None
    exclusive: bool = False
    #: deleted when its last SUBSCRIBE consumer goes (section 7, queue lifetime)
    auto_delete: bool = False
    #: deleted once unused for this many milliseconds (section 7, queue lifetime)
    expires: int | None = None
    #: how long (ms) ids named by PUBLISH are remembered (section 7); exchanges take it too
    dedup_window: int | None = None


DEFAULT_OPTIONS = QueueOptions()


# --------------------------------------------------------------------- commands


@attrs.frozen
class Create:
    name: str
    kind: Kind = "topic"
    options: QueueOptions = DEFAULT_OPTIONS


@attrs.frozen
class Delete:
    name: str
    if_empty: bool = False
    if_unused: bool = False


@attrs.frozen
class Bind:
    queue: str
    exchange: str
    key: str = ""


@attrs.frozen
class Unbind:
    queue: str
    exchange: str
    key: str = ""


#: a message header: its name, and its value as raw bytes
Header = tuple[str, bytes]
#: bytes a header value writes as themselves: 0x21-0x7E but ``%``
_PLAIN = bytes(b for b in range(0x21, 0x7F) if b != 0x25)
_ESCAPE = [b"%%%02X" % b if b not in _PLAIN else bytes((b,)) for b in range(256)]


def percent_encode(value: bytes) -> bytes:
    """A header value as written in a token: ``%XX`` (upper case) for ``%``, space, tab,
    CR, LF and every byte outside 0x21-0x7E; every other byte as itself."""
    if not value.translate(None, _PLAIN):
        return value
    esc = _ESCAPE
    return b"".join([esc[c] for c in value])


@attrs.frozen
class Props:
    """What a PUBLISH says of its message beyond name, key, ttl and payload (contract
    section 7); read by :mod:`mbroker.wire.props`.  A message with none has no Props.

    ``due`` is set only by the broker on a stored delayed copy: its wall-clock due
    time (epoch seconds), kept across a restart."""

    headers: tuple[Header, ...] = ()
    id: str | None = None
    priority: int = 0
    delay: int | None = None  # milliseconds; the PUBLISH's, not the message's
    due: float | None = None
    #: the MSG attributes these properties add, each with a space before it, made once
    tail: bytes = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        parts = []
        if self.id is not None:
            parts.append(b" id=" + self.id.encode("ascii"))
        if self.priority:
            parts.append(b" priority=%d" % self.priority)
        for name, value in self.headers:
            parts.append(b" h." + name.encode("ascii") + b"=" + percent_encode(value))
        object.__setattr__(self, "tail", b"".join(parts))


@attrs.frozen
class Publish:
    """PUBLISH; ``props`` holds section 7's headers, id, priority and delay, if any."""

    name: str
    key: str
    payload: bytes
    ttl: int | None = None  # milliseconds
    props: Props | None = None


@attrs.frozen
class PublishRun:
    """Consecutive PUBLISH commands with one name, key and ttl, as a pipelining
    publisher sends them.  The decoder gives such a run as one item, so that the broker
    parses, checks and routes it once; each payload still gets its own reply, in order.
    ``payloads`` holds at least two (one is a :class:`Publish`) and is not changed once
    the decoder has returned the item."""

    name: str
    key: str
    payloads: list[bytes]
    ttl: int | None = None  # milliseconds
    props: Props | None = None


@attrs.frozen
class Subscribe:
    name: str
    pattern: str | None = None
    prefetch: int | None = None  # None: the contract's default for the ack mode
    manual: bool = False  # ack=manual
    ack_timeout: int | None = None  # milliseconds


@attrs.frozen
class Unsubscribe:
    sid: int


@attrs.frozen
class Pull:
    queue: str
    max: int = 1
    wait: int | None = None  # milliseconds
    manual: bool = False
    ack_timeout: int | None = None


@attrs.frozen
class Ack:
    tags: TagRanges


@attrs.frozen
class Nack:
    tags: TagRanges
    requeue: bool = True
    delay: int | None = None  # milliseconds


@attrs.frozen
class Touch:
    tags: TagRanges


@attrs.frozen
class Purge:
    queue: str


@attrs.frozen
class Ping:
    pass


@attrs.frozen
class Pong:
    """The answer to a ``PING`` the server pushed (contract section 7): it gets no reply."""


@attrs.frozen
class Heartbeat:
    """``HEARTBEAT <MS>`` (contract section 7): 0 stops, 1000 to 3,600,000 starts."""

    ms: int


@attrs.frozen
class Quit:
    pass


@attrs.frozen
class Help:
    """``HELP [command]``; ``command`` is a command's name in upper case."""

    command: str | None = None


@attrs.frozen
class Auth:
    user: str
    password: str


@attrs.frozen
class List:
    pass


@attrs.frozen
class Stats:
    name: str | None = None


Command = Union[
    Create,
    Delete,
    Bind,
    Unbind,
    Publish,
    PublishRun,
    Subscribe,
    Unsubscribe,
    Pull,
    Ack,
    Nack,
    Touch,
    Purge,
    Ping,
    Pong,
    Heartbeat,
    Quit,
    Help,
    Auth,
    List,
    Stats,
]


# ------------------------------------------------------ replies and pushed frames


@attrs.frozen
class Hello:
    """The greeting: ``HELLO mbroker <version> proto=1 auth=… max-payload=… …``."""

    version: str
    proto: int = 1
    auth_required: bool = False
    max_payload: int = 1024 * 1024
    extra: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Ok:
    """A success status line; ``text`` is what follows the ``+`` (``OK 3``, ``PONG``)."""

    text: str


@attrs.frozen
class Error:
    """``-ERR <code> <text>``."""

    code: str
    text: str = ""


@attrs.frozen
class Msg:
    """A delivery: pushed for a subscription, or a PULL data line (sid 0)."""

    sid: int
    tag: int
    source: str
    key: str
    payload: bytes
    redelivered: int = 0
    reason: str | None = None
    #: attributes this version does not know, kept in order for forward compatibility
    attrs: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Cancel:
    """``CANCEL <sid> <reason>``: the broker ended a subscription."""

    sid: int
    reason: str


@attrs.frozen
class ExchangeInfo:
    """A LIST data line: ``EXCHANGE <name> <type> durable=0|1 bindings=N``."""

    name: str
    kind: str
    durable: bool
    bindings: int


@attrs.frozen
class QueueInfo:
    """A LIST data line: ``QUEUE <name> messages=N unacked=N consumers=N durable=0|1``."""

    name: str
    messages: int
    unacked: int
    consumers: int
    durable: bool


@attrs.frozen
class Stat:
    """A STATS data line: ``STAT <key> <value>``."""

    key: str
    value: str


@attrs.frozen
class HelpLine:
    """A HELP data line: ``<COMMAND> <text>`` (a usage line, or what the command does)."""

    command: str
    text: str


@attrs.frozen
class PingPush:
    """A ``PING`` line the server pushed (heartbeats): answered with ``PONG``, no reply."""


ServerFrame = Union[
    Hello, Ok, Error, Msg, Cancel, ExchangeInfo, QueueInfo, Stat, HelpLine, PingPush
]
