"""Keep the local core's namespace a mirror of the one in Redis.

Every node holds the cluster's exchanges, shared queues and bindings in its own
core (routing is local and costs no round trip).  A change made through a node goes
to Redis through the journal (:mod:`mbroker.cluster.writer`), which then sends one
``SPUBLISH {mb}:ns``; every node listens to that channel and reads the namespace
again (``HGETALL``, ``HGETALL``, ``SMEMBERS``: three commands, whatever changed),
and also does so every :data:`RESYNC` seconds in case a notification was lost (a
pub/sub message is at most once).  So a change made on one node shows on the others
within a few milliseconds, and within :data:`RESYNC` seconds at the latest.

:class:`NamespaceSync` applies the difference with the core's own commands
(CREATE, DELETE, BIND, UNBIND) of the local core, which writes nothing to Redis
(only the node's own commands do, see :mod:`mbroker.cluster.node`).  A state read
while a change of this node's was on its way is not applied (it would undo that
change for a moment); the next read is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker import errors
from mbroker.cluster import keys
from mbroker.cluster.link import RedisLink
from mbroker.cluster.writer import ClusterWriter
from mbroker.core.broker import Broker
from mbroker.core.journal import Journal
from mbroker.core.model import Exchange, Queue
from mbroker.wire.frames import QueueOptions

_log = Logger()

#: seconds between full reads of the namespace (the bound on the spread time)
RESYNC = 2.0


@attrs.frozen
class State:
    """The namespace as Redis holds it."""

    queues: dict[str, QueueOptions]
    #: name -> (kind, durable, dedup window or None)
    exchanges: dict[str, tuple[str, bool, int | None]]
    bindings: frozenset[tuple[str, str, str]]


def read_state(client: Any) -> State:
    """On a read thread: the namespace, in three commands."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.QUEUES)
    pipe.hgetall(keys.EXCHANGES)
    pipe.smembers(keys.BINDINGS)
    queues, exchanges, bindings = pipe.execute()
    return State(
        {k.decode(): keys.decode_options(v) for k, v in queues.items()},
        {k.decode(): _exchange(v) for k, v in exchanges.items()},
        frozenset(keys.split_binding(m) for m in bindings),
    )


@attrs.frozen
class LocalNamespace:
    """The core's own namespace commands (the node's overrides write to Redis)."""

    create: Callable[[Any, str, str, QueueOptions], bool]
    delete: Callable[..., int]
    bind: Callable[[str, str, str], bool]
    unbind: Callable[[str, str, str], None]


class NamespaceSync:
    """Reads the namespace from Redis and applies it to the local core."""

    def __init__(
        self,
        clock: Any,
        link: RedisLink,
        writer: ClusterWriter,
        journal: Journal,
        broker: Broker,
        local: LocalNamespace,
        shared: Callable[[Queue], bool],
    ) -> None:
        self._local = local
        self._clock = clock
        self._link = link
        self._writer = writer
        self._journal = journal
        self._broker = broker
        self._shared = shared
        self._reading = False
        self._again = False
        self._call: LoopingCall | None = None
        #: namespace reads applied
        self.applied = 0

    def start(self) -> Deferred[None]:
        """Read and apply once, then again every RESYNC seconds."""
        d = self.sync()
        call = self._call = LoopingCall(self.sync)
        call.clock = self._clock
        call.start(RESYNC, now=False).addErrback(
            lambda f: _log.failure("the namespace resync stopped", failure=f)
        )
        return d

    def stop(self) -> None:
        if self._call is not None and self._call.running:
            self._call.stop()

    def changed(self) -> None:
        """A node said the namespace changed: read it again (once per change burst)."""
        self.sync()

    def sync(self) -> Deferred[None]:
        if self._reading:
            self._again = True
            return Deferred.fromCoroutine(_nothing())
        self._reading = True
        self._again = False
        writer = self._writer
        clean = writer.ns_done == writer.ns_changes
        mark = writer.ns_changes
        client = self._link.client
        d = self._link.read(lambda: read_state(client))

        def got(state: State) -> None:
            self._reading = False
            self._journal.commit()  # (this turn's own changes go out first)
            if clean and mark == writer.ns_changes:
                self._apply(state)
            else:
                self._again = True

        def failed(f: Failure) -> None:
            self._reading = False
            _log.warn(
                "reading the namespace from Redis failed: {reason}", reason=f.getErrorMessage()
            )

        def again(_: object) -> None:
            if self._again:
                self._again = False
                self._clock.callLater(0.05, self.sync)

        return d.addCallbacks(got, failed).addCallback(again)

    def _apply(self, state: State) -> None:
        self._apply_objects(state)
        self._apply_bindings(state)
        self.applied += 1

    def _apply_objects(self, state: State) -> None:
        broker, local = self._broker, self._local
        for name, options in state.queues.items():
            obj = broker.find(name)
            if isinstance(obj, Queue) and obj.options == options:
                continue
            if obj is not None:
                local.delete(name)
            _attempt(local.create, None, name, "queue", options)
        for name, (kind, durable, window) in state.exchanges.items():
            obj = broker.find(name)
            if isinstance(obj, Exchange) and (obj.kind, obj.durable, obj.dedup_window) == (
                kind,
                durable,
                window,
            ):
                continue
            if obj is not None:
                local.delete(name)
            options = QueueOptions(durable=durable, dedup_window=window)
            _attempt(local.create, None, name, kind, options)
        for row in broker.list_objects():
            name = row.name
            obj = broker.find(name)
            if isinstance(obj, Queue):
                if self._shared(obj) and name not in state.queues:
                    local.delete(name)
            elif isinstance(obj, Exchange) and name not in state.exchanges:
                local.delete(name)

    def _apply_bindings(self, state: State) -> None:
        broker, local = self._broker, self._local
        have: set[tuple[str, str, str]] = set()
        for row in broker.binding_reports():
            q = broker.find(row.queue)
            if isinstance(q, Queue) and self._shared(q):
                have.add((row.queue, row.exchange, row.key))
        for queue, exchange, key in have - state.bindings:
            _attempt(local.unbind, queue, exchange, key)
        for queue, exchange, key in state.bindings - have:
            _attempt(local.bind, queue, exchange, key)


def _attempt(change: Callable[..., object], *args: Any) -> None:
    """Apply one change; one the core refuses (a half-made state in Redis) is skipped."""
    try:
        change(*args)
    except errors.BrokerError as e:
        _log.debug("namespace change skipped: {error}", error=e)


def _exchange(value: bytes) -> tuple[str, bool, int | None]:
    """``kind durable [dedup-window]`` read back."""
    kind, durable, *window = value.decode().split(" ")
    return kind, durable == "1", int(window[0]) if window else None


async def _nothing() -> None:
    return None
