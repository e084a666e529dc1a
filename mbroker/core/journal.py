"""The broker's side of durability: collect records, commit them once per turn.

The broker core appends a record whenever durable state changes (a declaration, a
message stored in a durable queue, a message leaving one).  The first record of a
reactor turn schedules one :meth:`Journal.commit` for the end of that turn
(``callLater(0)``), so every record of the turn, from every connection, goes to the
store in one write and shares one fsync.  Replies that must wait for the disk (a
PUBLISH that reached a durable queue, an ACK of a durable message, …) register a
callback with :meth:`Journal.on_commit`; the callback gets ``None`` once the
records are stored, or the :class:`~mbroker.errors.BrokerError` that stopped them.

A commit with nothing to write (a callback registered after the turn's commit ran, or
a :meth:`Journal.barrier`) answers its callbacks once the last write in flight is
answered: the store answers writes in order, so "stored" is never said too early.

Removals are gathered per queue and written as one ``MessagesRemoved`` per queue per
commit, after the turn's other records: a removal always names a message stored
earlier in the log or earlier in the same batch.

No Twisted here: the store is reached through an injected ``writer`` function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from mbroker import errors
from mbroker.core.model import Clock
from mbroker.core.records import MessagesRemoved, Record

Done = Callable[[Optional[errors.BrokerError]], None]
#: ``writer(records, done)``: store the records, then call ``done(None)`` or
#: ``done(error)``; never calls ``done`` before returning… or may: both work.
Writer = Callable[[list[Record], Done], None]


class Journal:
    def __init__(self, clock: Clock, writer: Writer, available: Callable[[], bool]) -> None:
        self._clock = clock
        self._writer = writer
        self._available = available
        self._records: list[Record] = []
        self._removed: dict[str, list[int]] = {}
        self._callbacks: list[Done] = []
        self._scheduled = False
        #: the callbacks of the last commit handed to the store and not yet answered
        self._inflight: list[Done] | None = None
        #: counts every change; a command that moved it must wait for the commit
        self.changes = 0
        #: the next message id (the store's ``next_msg_id`` after recovery)
        self.next_id = 1
        #: commits in flight
        self.pending = 0

    @property
    def available(self) -> bool:
        """Whether the store takes writes now (False after ENOSPC, EIO, …)."""
        return self._available()

    def new_id(self) -> int:
        msg_id = self.next_id
        self.next_id = msg_id + 1
        return msg_id

    def add(self, record: Record) -> None:
        self._records.append(record)
        self._changed()

    def removed(self, queue: str, msg_id: int) -> None:
        ids = self._removed.get(queue)
        if ids is None:
            self._removed[queue] = [msg_id]
        else:
            ids.append(msg_id)
        self._changed()

    def removed_many(self, queue: str, msg_ids: list[int]) -> None:
        ids = self._removed.get(queue)
        if ids is None:
            self._removed[queue] = list(msg_ids)
        else:
            ids += msg_ids
        self.changes += len(msg_ids)
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self.commit)

    def _changed(self) -> None:
        self.changes += 1
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self.commit)

    def barrier(self) -> None:
        """The command being answered says that something recorded earlier is stored
        (a duplicate PUBLISH id): its reply waits for the records collected and the
        writes in flight, as if it had changed something itself."""
        if self.pending or self._records or self._removed:
            self._changed()

    def on_commit(self, callback: Done) -> None:
        """Call ``callback`` when the records collected so far are stored."""
        self._callbacks.append(callback)
        if not self._scheduled:  # nothing pending: the turn's commit already ran
            self._scheduled = True
            self._clock.callLater(0, self.commit)

    def commit(self) -> None:
        """Hand everything collected to the store in one write."""
        self._scheduled = False
        records, self._records = self._records, []
        removed, self._removed = self._removed, {}
        callbacks, self._callbacks = self._callbacks, []
        for queue, ids in removed.items():
            records.append(MessagesRemoved(queue, tuple(ids)))
        if not records:
            if self._inflight is not None:
                # (the store answers writes in order: these wait behind the last one)
                self._inflight.extend(callbacks)
                return
            for cb in callbacks:
                cb(None)
            return
        self.pending += 1
        self._inflight = callbacks

        def done(err: errors.BrokerError | None) -> None:
            self.pending -= 1
            if self._inflight is callbacks:
                self._inflight = None
            for cb in callbacks:
                cb(err)

        self._writer(records, done)
