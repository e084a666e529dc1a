"""The reference store: everything in memory, nothing survives the process.

:class:`MemoryStore` gives every record its meaning in the plainest way
(:class:`mbroker.store.state.StoreState`); the contract tests hold the log
store to the same results.  It is also the store the broker's own tests use:
closing it and opening it again plays a restart, and :attr:`available`
set to False makes every write errback with ``Unavailable``, to test how the
broker answers when its disk is full.

Every method returns a Deferred that has already fired: the memory store is
always synchronous, never sometimes.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from mbroker import errors
from mbroker.core.records import Record, Recovered
from mbroker.store.interfaces import IStore
from mbroker.store.state import StoreState


@implementer(IStore)
class MemoryStore:
    """Records applied to an in-memory :class:`StoreState`.

    ``opened`` counts the calls to :meth:`open`; ``written`` keeps every
    batch written, in order (tests look at what the broker stored).
    """

    def __init__(self) -> None:
        self.state = StoreState()
        self._switch = True
        self.opened = 0
        self.written: list[tuple[Record, ...]] = []
        self._open = False
        self._writes = 0
        self._records = 0

    @property
    def available(self) -> bool:
        """Open and not switched off; set it False to play a full disk in tests."""
        return self._open and self._switch

    @available.setter
    def available(self, value: bool) -> None:
        self._switch = value

    def open(self) -> Deferred[Recovered]:
        if self._open:
            return fail(errors.Unavailable("the store is already open"))
        self._open = True
        self.opened += 1
        return succeed(self.state.recovered())

    def write(self, records: Sequence[Record]) -> Deferred[None]:
        if not self._open:
            return fail(errors.Unavailable("the store is not open"))
        if not self._switch:
            return fail(errors.Unavailable("the store is not available (test switch)"))
        batch = tuple(records)
        self.state.apply_all(batch)
        self.written.append(batch)
        self._writes += 1
        self._records += len(batch)
        return succeed(None)

    def close(self) -> Deferred[None]:
        self._open = False
        return succeed(None)

    def stats(self) -> dict[str, int]:
        return {
            "available": int(self.available),
            "messages": len({i for msgs in self.state.messages.values() for i in msgs}),
            "writes": self._writes,
            "records": self._records,
        }
