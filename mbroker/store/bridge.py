"""Connect the broker's :class:`~mbroker.core.journal.Journal` to an :class:`IStore`.

The journal is synchronous and Twisted-free; a store speaks Deferreds.  This is the
one place where the two meet: a write's Deferred becomes the journal's ``done``
callback, and any failure becomes :class:`~mbroker.errors.Unavailable` (the only
error a client should see for a store that cannot take writes).
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.core.journal import Done, Journal
from mbroker.core.model import Clock
from mbroker.core.records import Record
from mbroker.errors import BrokerError, Unavailable
from mbroker.store.interfaces import IStore

_log = Logger()


def journal_for(store: IStore, clock: Clock) -> Journal:
    """A journal whose commits go to ``store`` (an opened store)."""

    def write(records: list[Record], done: Done) -> None:
        d = store.write(records)

        def failed(f: Failure) -> None:
            err = f.value if isinstance(f.value, BrokerError) else Unavailable(str(f.value))
            done(err)

        d.addCallbacks(lambda _: done(None), failed)
        d.addErrback(lambda f: _log.failure("answering stored records failed", failure=f))

    def available() -> bool:
        return bool(store.available)

    return Journal(clock, write, available)
