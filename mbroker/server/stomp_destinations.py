"""RabbitMQ's STOMP destinations, mapped onto mbroker's exchanges and queues.

Pure functions, no Twisted and no broker: :func:`parse_destination` reads a
``destination`` (or ``reply-to``) header, :func:`message_destination` writes the
``destination`` of a MESSAGE from where the message was published.

=========================  ==================================================
``/queue/NAME``            the queue NAME (a durable queue, made on first use)
``/amq/queue/NAME``        the queue NAME, which must exist (never made)
``/topic/KEY``             the topic exchange ``amq.topic``, routing key KEY
                           (SUBSCRIBE: KEY is a pattern, ``*`` and ``#`` allowed)
``/exchange/NAME[/KEY]``   the exchange NAME, routing key (or pattern) KEY
``/temp-queue/NAME``       a queue private to the connection (``reply-to``)
``/reply-queue/QUEUE``     the queue QUEUE: how a temp queue is named to others
=========================  ==================================================

Names and keys follow the native protocol's rules (names of ``A-Z a-z 0-9 _ - .``,
keys of dot-separated words), so that every STOMP destination is also reachable from
the native protocol; anything else is refused with a clear message.
"""

from __future__ import annotations

import attrs

from mbroker.errors import BadArgs
from mbroker.wire.stomp import StompError
from mbroker.wire.tokens import valid_key, valid_name, valid_pattern

__all__ = [
    "AMQ_EXCHANGES",
    "Destination",
    "TOPIC_EXCHANGE",
    "message_destination",
    "parse_destination",
]

#: The topic exchange behind ``/topic/KEY``.
TOPIC_EXCHANGE = "amq.topic"
#: The exchanges RabbitMQ always has, made when a STOMP listener starts: name -> kind.
AMQ_EXCHANGES: dict[str, str] = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
}

QUEUE, AMQ_QUEUE, TOPIC, EXCHANGE, TEMP_QUEUE, REPLY_QUEUE = (
    "queue",
    "amq-queue",
    "topic",
    "exchange",
    "temp-queue",
    "reply-queue",
)


@attrs.frozen
class Destination:
    """A parsed destination: its ``kind`` (one of the table's), the queue or exchange
    ``name`` (for ``temp-queue`` the client's NAME, not the queue's), and the routing
    ``key`` (``None`` when the destination gives none)."""

    kind: str
    name: str
    key: str | None = None


def _bad(text: str, why: str) -> StompError:
    return StompError(f"bad destination {text[:80]!r}: {why}", code=BadArgs.code)


def _name(text: str, name: str) -> str:
    if not valid_name(name):
        raise _bad(text, "a name is 1-255 characters of A-Z a-z 0-9 _ - .")
    return name


_PREFIXES = (
    ("/queue/", QUEUE),
    ("/amq/queue/", AMQ_QUEUE),
    ("/topic/", TOPIC),
    ("/exchange/", EXCHANGE),
    ("/temp-queue/", TEMP_QUEUE),
    ("/reply-queue/", REPLY_QUEUE),
)


def parse_destination(text: str, *, pattern: bool = False) -> Destination:
    """The :class:`Destination` that ``text`` names; a ``StompError`` if none.

    ``pattern`` allows ``*`` and ``#`` in the key (SUBSCRIBE); SEND gives a key.
    """
    found = [(p, k) for p, k in _PREFIXES if text.startswith(p)]
    if not found:
        raise _bad(
            text,
            "use /queue/NAME, /topic/KEY, /exchange/NAME/KEY, /amq/queue/NAME, "
            "/temp-queue/NAME or /reply-queue/NAME",
        )
    prefix, kind = found[0]
    rest = text[len(prefix) :]
    valid = valid_pattern if pattern else valid_key
    if kind == TOPIC:
        if not rest or not valid(rest):
            raise _bad(text, "a topic is dot-separated words of A-Z a-z 0-9 _ -")
        return Destination(TOPIC, TOPIC_EXCHANGE, rest)
    if kind == EXCHANGE:
        name, slash, key = rest.partition("/")
        if slash and not valid(key):
            raise _bad(text, "a routing key is dot-separated words of A-Z a-z 0-9 _ -")
        return Destination(EXCHANGE, _name(text, name), key if slash else None)
    return Destination(kind, _name(text, rest))


def message_destination(source: str, key: str, source_is_queue: bool) -> str:
    """The ``destination`` header of a MESSAGE published to ``source`` with ``key``."""
    if source_is_queue:
        return f"/queue/{source}"
    if source == TOPIC_EXCHANGE:
        return f"/topic/{key}"
    return f"/exchange/{source}/{key}" if key else f"/exchange/{source}"
