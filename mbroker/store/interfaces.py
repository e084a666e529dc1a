"""The store's interface: :class:`IStore`, what the broker needs of a persistence backend.

:class:`IStore` is how the broker persists durable exchanges, queues, bindings
and messages.  Two providers: :class:`mbroker.store.memory.MemoryStore` (the
reference, for tests) and :class:`mbroker.store.logstore.LogStore` (the embedded
default, append-only segment files).  One contract test suite runs against both.

The broker core is synchronous.  Its :class:`~mbroker.core.journal.Journal`
accumulates records (the types in :mod:`mbroker.core.records`)
during a reactor turn, and :mod:`mbroker.store.bridge` calls :meth:`IStore.write`
once per turn; every record of the batch shares that one Deferred.  The broker
answers the commands whose effect must be durable (``+OK`` to a PUBLISH that
reached a durable queue, to an ACK on one) only when that Deferred fires.

Every method returns a Deferred, even in the memory store, except
:meth:`IStore.stats` and the :attr:`IStore.available` attribute, which are
synchronous.  A store is used from the reactor thread only.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from mbroker.core.records import Record, Recovered


class IStore(Interface):
    """Durable storage for the broker's durable objects and messages."""

    available = Attribute(
        """True while the store takes writes (open, not closing, disk writable).

        Cheap to read on every command: the broker answers ``-ERR UNAVAILABLE``
        at once instead of queueing a write that would fail."""
    )

    def open() -> Deferred[Recovered]:
        """Open the store and replay what it holds.

        Fires with the :class:`Recovered` state (repairs it made are in
        ``Recovered.warnings`` and logged).  The broker continues message ids
        from ``Recovered.next_msg_id``.  Call it once, before any write; it
        errbacks with :class:`mbroker.errors.Unavailable` when the store cannot
        be opened at all.
        """

    def write(records: Sequence[Record]) -> Deferred[None]:
        """Store ``records``, in order, after every record written before.

        Fires with None once all of them are stored as the store's fsync
        policy says (by default: on disk, fsync'd); many calls made close
        together share one disk flush.  Errbacks with
        :class:`mbroker.errors.Unavailable` when the store cannot take writes
        (disk full, I/O error, not open, closed); then none of ``records`` is
        confirmed and the broker must not act as if they were stored.  An
        empty sequence fires once everything written before it is stored.
        A record the store cannot represent (a name over 65535 bytes, a NUL
        in a queue name) errbacks with ``ValueError``: a bug in the caller.
        """

    def close() -> Deferred[None]:
        """Flush what was written, fsync, and close the files.

        Writes already accepted are completed first; later writes errback with
        Unavailable.  Used on graceful stop.
        """

    def stats() -> dict[str, int]:
        """Counters for STATS, returned at once (not a Deferred).

        Keys every store provides: ``messages`` (live messages),
        ``available`` (1 while the store takes writes, else 0), ``writes``
        (write calls), ``records``.  Stores add their own (the log store:
        ``segments``, ``disk_bytes``, ``fsyncs``, ``groups``...).
        """
