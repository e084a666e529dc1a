"""Persistence for durable exchanges, queues, bindings and messages.

- :mod:`mbroker.core.records` -- the records the broker writes and the
  :class:`~mbroker.core.records.Recovered` state a store opens with (no
  Twisted import: the synchronous domain layer builds records).
- :mod:`mbroker.store.interfaces` -- :class:`IStore`, what every store provides.
- :mod:`mbroker.store.memory` -- :class:`MemoryStore`, the reference.
- :mod:`mbroker.store.logstore` -- :class:`LogStore`, the embedded default: an
  append-only log of segment files with group commit, crash recovery and
  compaction.  Its parts: :mod:`~mbroker.store.codec` (binary framing),
  :mod:`~mbroker.store.files` (the file layer and the ``CrashFS`` test double),
  :mod:`~mbroker.store.executor` (where file I/O runs),
  :mod:`~mbroker.store.replay` (recovery), :mod:`~mbroker.store.ledger`
  (what is live where), :mod:`~mbroker.store.segment` (the writer),
  :mod:`~mbroker.store.compaction` (rewriting mostly-dead segments).
- :mod:`mbroker.store.state` -- what the records mean, as plain state (the
  memory store, and the declarations every store keeps).
- :mod:`mbroker.store.bridge` -- the broker's journal on top of an IStore.

This package's ``__init__`` imports nothing heavy on purpose, so that
``import mbroker.core.records`` stays free of Twisted.
"""
