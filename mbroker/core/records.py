"""What the broker tells its store, and what a store gives back when it opens.

The broker core accumulates these records while it works and hands them to
:meth:`mbroker.store.interfaces.IStore.write` once per batch.  They are plain frozen
values with no Twisted import, so the synchronous domain layer may build them.

Rules the broker follows (the stores rely on them):

- ``MessageStored.msg_id`` values are unique and strictly increasing in the
  order the records are written.  A message that moves to another queue
  (dead-lettering) is stored again under a *new* id; a requeue stores nothing.
- One ``MessageStored`` per published message, listing every durable queue it
  went to (or one ``MessagesStored`` for a run of them, which is the same thing:
  its ids count up from ``first_id`` and it is written as one frame each).  A
  message listed for a queue that is not declared is ignored for that queue.
- ``MessagesRemoved`` lists the ids that left one queue (ack, drop, expiry,
  purge, dead-letter-out).  ``QueueDeleted`` implies that all the queue's
  messages and bindings are gone; ``ExchangeDeleted`` implies its bindings are.
- Declaring a queue or exchange that exists replaces its options or kind and
  keeps its messages.
- ``IdRemembered`` names a declared durable exchange or queue (one that is not is
  ignored); deleting the object forgets its ids, redeclaring it keeps them.  A store
  may forget an id once its ``expires_at`` has passed, and must keep it until then.
"""

from __future__ import annotations

from typing import Optional, Union

import attrs

from mbroker.wire.frames import Props, QueueOptions

#: One recovered message: ``(msg_id, source, key, payload, expires_at, props)``.
#: A plain tuple (not a class) because a million of them are built on recovery.
StoredMessage = tuple[int, str, str, bytes, Optional[float], Optional[Props]]


@attrs.frozen
class ExchangeDeclared:
    name: str
    kind: str
    #: its CREATE's ``dedup-window`` (ms); None: the server's default
    dedup_window: int | None = None


@attrs.frozen
class ExchangeDeleted:
    name: str


@attrs.frozen
class QueueDeclared:
    name: str
    options: QueueOptions


@attrs.frozen
class QueueDeleted:
    name: str


@attrs.frozen
class Bound:
    queue: str
    exchange: str
    key: str


@attrs.frozen
class Unbound:
    queue: str
    exchange: str
    key: str


@attrs.frozen
class MessageStored:
    """A published message, once for all the durable queues it went to.

    ``expires_at`` is wall-clock time (``time.time()`` epoch seconds) or None.
    """

    msg_id: int
    queues: tuple[str, ...]
    source: str
    key: str
    payload: bytes
    expires_at: float | None = None
    #: headers, id, priority and a delayed copy's wall-clock due time (section 7)
    props: Props | None = None


@attrs.frozen
class MessagesStored:
    """Messages published together (a run of PUBLISH with one name and key) into the
    same durable queues, with ids ``first_id``, ``first_id + 1``, …: the same as one
    :class:`MessageStored` per payload, and written as exactly those frames, but one
    object for the broker to make and one for the store to take."""

    first_id: int
    queues: tuple[str, ...]
    source: str
    key: str
    payloads: tuple[bytes, ...] | list[bytes]
    #: the headers every message of the run carries (section 7), if any
    props: Props | None = None

    def messages(self) -> list[MessageStored]:
        return [
            MessageStored(
                self.first_id + i, self.queues, self.source, self.key, p, None, self.props
            )
            for i, p in enumerate(self.payloads)
        ]


@attrs.frozen
class IdRemembered:
    """A PUBLISH with ``id=`` named the durable exchange or queue ``name`` at ``at`` and
    reached ``reached`` queues: a retry of it until ``expires_at`` is a duplicate
    (contract section 7).  Both times are wall-clock, like ``MessageStored.expires_at``;
    ``at`` lets a store forget the ids that expired by then.  Written in the batch of
    the message it names, so the PUBLISH's ``+OK`` waits for it.  ``bound`` is the
    most ids the broker keeps for one object (0: no bound): a store need not keep
    more of them than that, the newest."""

    name: str
    id: str
    at: float
    expires_at: float
    reached: int
    bound: int = 0


@attrs.frozen
class MessagesRemoved:
    """Messages that left one queue; the broker batches them per queue per batch."""

    queue: str
    msg_ids: tuple[int, ...]


Record = Union[
    ExchangeDeclared,
    ExchangeDeleted,
    QueueDeclared,
    QueueDeleted,
    Bound,
    Unbound,
    MessageStored,
    MessagesStored,
    MessagesRemoved,
    IdRemembered,
]


@attrs.frozen
class RecoveryWarning:
    """Something recovery repaired or skipped, with where it was found.

    ``kind`` is one of ``torn-tail`` (a partial write at the end of the last
    segment, truncated), ``corrupt`` (bytes that do not form a valid record,
    skipped), ``salvaged`` (a damaged batch of messages whose ``messages`` intact
    ones were kept; a ``corrupt`` warning follows for each one lost), ``bad-header``
    (a segment file whose header is damaged),
    ``redeclared`` (``queue`` had messages or bindings but its declaration was
    lost, most likely in the damage at ``file``/``offset``: it was declared
    again, durable with default options, with its ``messages``),
    ``redeclared-exchange`` (``exchange`` still had ``bindings`` but its
    declaration was lost: it was declared again, durable, of the kind
    ``exchange_kind`` its binding keys show).
    """

    kind: str
    file: str
    offset: int
    length: int
    queue: str = ""
    messages: int = 0
    exchange: str = ""
    exchange_kind: str = ""
    bindings: int = 0

    def __str__(self) -> str:
        if self.kind == "redeclared-exchange":
            return (
                f"exchange {self.exchange!r} lost its declaration (damage at "
                f"{self.file}:{self.offset}, {self.length} bytes): its {self.bindings} "
                f"bindings are kept on durable {self.exchange_kind} exchange "
                f"{self.exchange!r}, declared again with the kind its binding keys show"
            )
        if self.kind == "redeclared":
            return (
                f"queue {self.queue!r} lost its declaration (damage at "
                f"{self.file}:{self.offset}, {self.length} bytes): its {self.messages} "
                f"messages are kept in durable queue {self.queue!r}, declared again "
                "with default options"
            )
        if self.kind == "salvaged":
            return (
                f"damaged batch of messages at {self.file}:{self.offset} ({self.length} "
                f"bytes): its {self.messages} intact messages kept"
            )
        what = {
            "torn-tail": "torn tail truncated",
            "corrupt": "corrupt record skipped",
            "bad-header": "damaged segment header",
        }.get(self.kind, self.kind)
        return f"{what} at {self.file}:{self.offset} ({self.length} bytes)"


@attrs.define
class Recovered:
    """The durable state a store found when it opened.

    ``queues`` keeps declaration order.  ``messages`` maps every recovered
    queue (possibly with an empty list) to its live messages in ``msg_id``
    order.  ``next_msg_id`` is greater than every id the store ever saw, so
    the broker continues from it.  ``warnings`` says what recovery repaired.
    """

    exchanges: dict[str, str] = attrs.Factory(dict)
    queues: dict[str, QueueOptions] = attrs.Factory(dict)
    bindings: list[tuple[str, str, str]] = attrs.Factory(list)
    messages: dict[str, list[StoredMessage]] = attrs.Factory(dict)
    next_msg_id: int = 1
    warnings: list[RecoveryWarning] = attrs.Factory(list)
    #: exchanges whose CREATE gave ``dedup-window``: name -> ms
    dedup_windows: dict[str, int] = attrs.Factory(dict)
    #: remembered PUBLISH ids of durable objects: name -> id -> (expires_at, reached),
    #: in the order they were remembered (some may have expired since)
    ids: dict[str, dict[str, tuple[float, int]]] = attrs.Factory(dict)

    def message_count(self) -> int:
        return sum(len(msgs) for msgs in self.messages.values())


__all__ = [
    "Bound",
    "ExchangeDeclared",
    "ExchangeDeleted",
    "IdRemembered",
    "MessageStored",
    "MessagesRemoved",
    "MessagesStored",
    "QueueDeclared",
    "QueueDeleted",
    "Record",
    "Recovered",
    "RecoveryWarning",
    "StoredMessage",
    "Unbound",
]
