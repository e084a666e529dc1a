"""Message properties across STOMP (contract section 7): a SEND's own headers become
the message's headers, id and priority, and a MESSAGE frame carries them back, as
RabbitMQ's STOMP plugin carries AMQP properties and headers.

On SEND:

* the frame's own headers are not carried: ``destination``, ``receipt``,
  ``transaction``, ``content-length``, ``expiration`` (the ttl), ``message-id`` and the
  others a server writes (:data:`NOT_CARRIED`);
* ``priority`` (0-9) is the message's priority, ``amqp-message-id`` its id (what
  RabbitMQ calls the AMQP ``message-id``; dedup windows apply to it);
* every other header (``content-type``, ``correlation-id``, ``reply-to``, ``x-...``,
  any name) is a message header, its value as UTF-8 (a ``reply-to`` naming a
  ``/temp-queue/`` is rewritten to the ``/reply-queue/`` of the queue behind it).  A
  name outside the native protocol's ``A-Z a-z 0-9 _ - .`` is carried as ``_.`` and
  the hex of its UTF-8 bytes (``my:key`` as ``_.6d793a6b6579``), so at most 63 bytes
  of it; the first of repeated headers counts, as in STOMP.

A MESSAGE then has ``amqp-message-id``, ``priority`` (when not 0) and the headers, names
mapped back, values decoded as UTF-8 (bytes that are not are replaced by U+FFFD); a
native header whose name a MESSAGE writes itself (``destination``, ``priority``, ...)
is left out.  A SEND with none of these keeps the plain publish path.
"""

from __future__ import annotations

import re

from mbroker.wire.frames import Props
from mbroker.wire.props import make_props
from mbroker.wire.stomp import Frame, StompError, encode_headers

__all__ = ["NOT_CARRIED", "message_headers", "send_props"]

#: SEND headers that belong to the frame (or that a MESSAGE writes), not to the message
NOT_CARRIED = frozenset(
    {
        "destination",
        "receipt",
        "transaction",
        "content-length",
        "expiration",
        "message-id",
        "subscription",
        "ack",
        "redelivered",
        "persistent",
    }
)
#: names a MESSAGE never takes from the message's headers
_WRITTEN = NOT_CARRIED | {"priority", "amqp-message-id"}
_NATIVE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}\Z")
_MAPPED = "_."


def send_props(f: Frame, temp_queue: str | None = None) -> Props | None:
    """The properties a SEND gives its message; None (at once) when it has none.

    ``temp_queue``: the queue a ``reply-to:/temp-queue/...`` stands for, which the
    message's ``reply-to`` then names as ``/reply-queue/<queue>`` (as RabbitMQ does), a
    destination any other connection can send to."""
    for name, _ in f.headers:
        if name not in NOT_CARRIED:
            break
    else:
        return None
    headers: dict[str, bytes] = {}
    seen: set[str] = set()
    msg_id = priority = None
    for name, value in f.headers:
        if name in NOT_CARRIED or name in seen:
            continue
        seen.add(name)
        if name == "priority":
            if not (value.isascii() and value.isdigit() and len(value) == 1):
                raise StompError(f"bad priority {value[:40]!r}: 0 to 9")
            priority = int(value)
        elif name == "amqp-message-id":
            msg_id = value
        else:
            if not _NATIVE_NAME.match(name) or name.startswith(_MAPPED):
                mapped = _MAPPED + name.encode("utf-8", "surrogateescape").hex()
                if len(mapped) > 128:
                    raise StompError(f"header name {name[:40]!r} too long to carry (63 bytes)")
                name = mapped
            if name == "reply-to" and temp_queue is not None:
                value = f"/reply-queue/{temp_queue}"
            headers[name] = value.encode("utf-8", "surrogateescape")
    return make_props(headers, msg_id, priority)  # (BAD_ARGS, LIMIT: an ERROR frame)


def message_headers(props: Props, version: str) -> bytes:
    """The MESSAGE header lines for a message's properties (escaped for ``version``)."""
    out: list[tuple[str, str]] = []
    if props.id is not None:
        out.append(("amqp-message-id", props.id))
    if props.priority:
        out.append(("priority", str(props.priority)))
    for name, value in props.headers:
        if name.startswith(_MAPPED):
            try:
                name = bytes.fromhex(name[2:]).decode("utf-8", "surrogateescape")
            except ValueError:
                pass
        if name in _WRITTEN or not name:
            continue
        out.append((name, value.decode("utf-8", "replace")))
    return encode_headers(out, version)
