"""The meaning of the records, as plain in-memory state.

:class:`Declarations` (exchanges, queues, bindings) is shared by every store
and by recovery.  :class:`StoreState` adds messages with their payloads; it is
the memory store's whole state and the reference model the tests compare the
log store with.  No Twisted here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from operator import lt

import attrs

from mbroker.core.records import (
    Bound,
    ExchangeDeclared,
    ExchangeDeleted,
    MessagesRemoved,
    MessagesStored,
    MessageStored,
    QueueDeclared,
    QueueDeleted,
    Record,
    Recovered,
    StoredMessage,
    Unbound,
)
from mbroker.wire.frames import QueueOptions

Binding = tuple[str, str, str]


@attrs.define
class Declarations:
    """Durable exchanges, queues and bindings.

    ``floors`` holds, per queue, the smallest message id that can belong to
    its current incarnation (the next message id when it was declared).  A
    snapshot of the log store carries it, so that messages of a deleted and
    re-created queue never come back even when the segment that recorded the
    deletion is gone.
    """

    exchanges: dict[str, str] = attrs.Factory(dict)
    queues: dict[str, QueueOptions] = attrs.Factory(dict)
    floors: dict[str, int] = attrs.Factory(dict)
    bindings: dict[Binding, None] = attrs.Factory(dict)

    def declare_exchange(self, name: str, kind: str) -> None:
        self.exchanges[name] = kind

    def delete_exchange(self, name: str) -> None:
        self.exchanges.pop(name, None)
        self._drop_bindings(lambda b: b[1] == name)

    def declare_queue(self, name: str, options: QueueOptions, floor: int) -> bool:
        """Declare (or redeclare) a queue; True if it is new."""
        new = name not in self.queues
        self.queues[name] = options
        if new:
            self.floors[name] = floor
        return new

    def delete_queue(self, name: str) -> None:
        self.queues.pop(name, None)
        self.floors.pop(name, None)
        self._drop_bindings(lambda b: b[0] == name)

    def bind(self, queue: str, exchange: str, key: str) -> None:
        self.bindings[(queue, exchange, key)] = None

    def unbind(self, queue: str, exchange: str, key: str) -> None:
        self.bindings.pop((queue, exchange, key), None)

    def apply(self, record: Record, next_msg_id: int) -> None:
        """Apply a declaration record (message records are the caller's)."""
        if isinstance(record, QueueDeclared):
            self.declare_queue(record.name, record.options, next_msg_id)
        elif isinstance(record, QueueDeleted):
            self.delete_queue(record.name)
        elif isinstance(record, ExchangeDeclared):
            self.declare_exchange(record.name, record.kind)
        elif isinstance(record, ExchangeDeleted):
            self.delete_exchange(record.name)
        elif isinstance(record, Bound):
            self.bind(record.queue, record.exchange, record.key)
        elif isinstance(record, Unbound):
            self.unbind(record.queue, record.exchange, record.key)

    def copy(self) -> Declarations:
        return Declarations(
            dict(self.exchanges), dict(self.queues), dict(self.floors), dict(self.bindings)
        )

    def _drop_bindings(self, match: Callable[[Binding], bool]) -> None:
        for binding in [b for b in self.bindings if match(b)]:
            del self.bindings[binding]


def stored_message(record: MessageStored) -> StoredMessage:
    return (
        record.msg_id,
        record.source,
        record.key,
        record.payload,
        record.expires_at,
        record.props,
    )


@attrs.define
class StoreState:
    """Declarations plus every live message, with its payload."""

    decls: Declarations = attrs.Factory(Declarations)
    #: queue -> msg_id -> message; only declared queues have an entry
    messages: dict[str, dict[int, StoredMessage]] = attrs.Factory(dict)
    next_msg_id: int = 1

    def apply_all(self, records: Iterable[Record]) -> None:
        for record in records:
            self.apply(record)

    def apply(self, record: Record) -> None:
        if isinstance(record, MessagesStored):
            for message in record.messages():
                self.apply(message)
        elif isinstance(record, MessageStored):
            self.next_msg_id = max(self.next_msg_id, record.msg_id + 1)
            entry: StoredMessage | None = None
            for queue in record.queues:
                msgs = self.messages.get(queue)
                if msgs is not None and record.msg_id not in msgs:
                    if entry is None:
                        entry = stored_message(record)
                    msgs[record.msg_id] = entry
        elif isinstance(record, MessagesRemoved):
            msgs = self.messages.get(record.queue)
            if msgs is not None:
                for msg_id in record.msg_ids:
                    msgs.pop(msg_id, None)
        else:
            if isinstance(record, QueueDeleted):
                self.messages.pop(record.name, None)
            elif isinstance(record, QueueDeclared):
                self.messages.setdefault(record.name, {})
            self.decls.apply(record, self.next_msg_id)

    def message_count(self) -> int:
        return sum(len(msgs) for msgs in self.messages.values())

    def recovered(self) -> Recovered:
        """A fresh :class:`Recovered` (sharing only immutable values)."""
        return Recovered(
            exchanges=dict(self.decls.exchanges),
            queues=dict(self.decls.queues),
            bindings=list(self.decls.bindings),
            messages={
                name: sorted_messages(self.messages.get(name, {})) for name in self.decls.queues
            },
            next_msg_id=self.next_msg_id,
        )


def sorted_messages(msgs: dict[int, StoredMessage]) -> list[StoredMessage]:
    """The values of ``msgs`` in id order (cheap when already in order)."""
    values = list(msgs.values())
    ids = list(msgs)  # (each message's key is its id; compared in C, not in a loop)
    if not all(map(lt, ids, islice(ids, 1, None))):
        values.sort(key=_msg_id)
    return values


def _msg_id(entry: StoredMessage) -> int:
    return entry[0]
