"""The broker core: the object the front doors talk to, composed of collaborators.

:class:`Broker` owns the sessions (one per connection) and the server's counters, and
composes the objects that do the work, each with one job:

- :class:`~mbroker.core.namespace.Namespace`: exchanges and queues by name; CREATE,
  DELETE, BIND, UNBIND, PURGE;
- :class:`~mbroker.core.publishing.Publisher`: PUBLISH and its runs, routed through
  the exchanges' matchers, with :class:`~mbroker.core.dedup.Dedup` remembering ids;
- :class:`~mbroker.core.dispatch.Dispatcher`: what happens in a queue: dispatch to
  consumers and waiters, redelivery, expiry, dead letters, the delivery counters;
- :class:`~mbroker.core.consuming.Consumption`: SUBSCRIBE, PULL, ACK, NACK, TOUCH;
- :class:`~mbroker.core.reports.Reports`: LIST and STATS.

Their public methods are bound onto the broker in ``__init__`` (``broker.publish`` *is*
the publisher's method), so a command costs no extra call.  It is all synchronous plain
Python: it never touches a socket and reads time only from the injected clock, so every
timing rule is testable with ``twisted.internet.task.Clock``.  The per-message
timers that may number in the millions (PUBLISH ``delay=MS``, NACK ``delay=MS``) are
entries of one :class:`~mbroker.core.timers.Timers` heap with one clock call; the
others (message ttl sweeps, one per queue; ack-timeouts; PULL waits; queue idle
timers) are made through ``clock.callLater``, and each is cancelled when what it
guards goes away.

Methods raise :mod:`mbroker.errors` exceptions; the connection turns them into
``-ERR`` lines.  Nothing on the per-message path logs, validates or allocates more
than one object per queue copy and one per manual delivery.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from mbroker.config import Config
from mbroker.core import records as rec
from mbroker.core.consuming import Consumption, tag_order
from mbroker.core.dedup import Dedup
from mbroker.core.dispatch import DeadLetterSink, Dispatcher
from mbroker.core.journal import Journal
from mbroker.core.model import (
    Clock,
    DeliveryTarget,
    Obj,
    PublishResult,
    Pulled,
    Queue,
    QueuedMessage,
    Session,
)
from mbroker.core.namespace import Namespace
from mbroker.core.publishing import Publisher
from mbroker.core.reports import Reports
from mbroker.core.scheduling import Scheduler
from mbroker.core.timers import Timers
from mbroker.wire.frames import Props

__all__ = ["Broker", "Obj", "Pulled"]


class Broker:
    """The broker core.  ``journal`` is set when a store keeps durable state."""

    def __init__(
        self,
        clock: Clock,
        config: Config | None = None,
        journal: Journal | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``wall`` is the wall clock a durable delayed message's due time is kept in
        (the store's records outlive the clock of one run)."""
        self.clock = clock
        self.config = config = config if config is not None else Config()
        self.journal = journal
        self.started = clock.seconds()
        self.connections_total = 0
        self._sessions: dict[int, Session] = {}
        self._next_session = 1

        #: the one timer structure for delayed messages and NACK delays
        self.timers = timers = Timers(clock)
        self._namespace = namespace = Namespace(journal, clock, timers)
        self._dispatcher = dispatcher = Dispatcher(clock, config, journal, namespace.find, timers)
        self._scheduler = scheduler = Scheduler(dispatcher, journal, wall)
        self._dedup = dedup = Dedup(clock, config, journal)
        self._publishing = publishing = Publisher(journal, namespace, dispatcher, dedup, scheduler)
        self._consumption = consumption = Consumption(clock, config, journal, namespace, dispatcher)
        reports = Reports(self, namespace, dedup)

        # the namespace
        self.find = namespace.find
        self.get = namespace.get
        self.queue = namespace.queue
        self.exchange = namespace.exchange
        self.create = namespace.create
        self.delete = namespace.delete
        self.bind = namespace.bind
        self.unbind = namespace.unbind
        self.purge = namespace.purge
        # publishing
        self.publish = publishing.publish
        self.publish_many = publishing.publish_many
        self.publish_props: Callable[[str, str, bytes, int | None, Props], PublishResult] = (
            publishing.publish_props
        )
        # consuming
        self.subscribe = consumption.subscribe
        self.activate = consumption.activate
        self.unsubscribe = consumption.unsubscribe
        self.pull = consumption.pull
        self.ack = consumption.ack
        self.nack = consumption.nack
        self.touch = consumption.touch
        # reports
        self.list_objects = reports.list_objects
        self.stats = reports.stats
        self.queue_reports = reports.queue_reports
        self.queue_totals = reports.queue_totals
        self.exchange_reports = reports.exchange_reports
        self.binding_reports = reports.binding_reports
        self.peek = reports.peek

    # ------------------------------------------------------------------ counters

    @property
    def connections(self) -> int:
        return len(self._sessions)

    @property
    def published(self) -> int:
        return self._publishing.published

    @property
    def delivered(self) -> int:
        return self._dispatcher.delivered

    @property
    def acked(self) -> int:
        return self._dispatcher.acked

    # ------------------------------------------------------------------ sessions

    def open_session(self, target: DeliveryTarget) -> Session:
        s = Session(self._next_session, target)
        self._next_session += 1
        self._sessions[s.id] = s
        self.connections_total += 1
        return s

    def close_session(self, s: Session) -> None:
        """The connection is gone: end its subscriptions and waits, requeue what it
        had not acknowledged (marked redelivered), delete its exclusive queues."""
        if s.closed:
            return
        s.closed = True
        s.writable = False
        self._sessions.pop(s.id, None)
        for w in s.waiters:
            if w.timer is not None and w.timer.active():
                w.timer.cancel()
            try:
                w.queue.waiters.remove(w)
            except ValueError:
                pass
            if w.queue.idle_timer is not None:
                self._namespace.used(w.queue)
        s.waiters.clear()
        for c in list(s.consumers.values()):
            self._consumption.drop_consumer(c)
        s.consumers.clear()
        deliveries = sorted(s.outstanding.values(), key=tag_order)
        s.outstanding.clear()
        self._dispatcher.return_deliveries(deliveries)
        for q in list(s.exclusive):
            if not q.deleted:
                self._namespace.delete_queue(q)
        s.exclusive.clear()

    def end_waits(self, s: Session) -> None:
        """End the session's waiting PULLs at once, with nothing: its client will send
        no more (a half-close) and may be gone, so they must take no message."""
        for w in list(s.waiters):
            try:
                w.queue.waiters.remove(w)
            except ValueError:
                continue
            w.finish([])

    def set_writable(self, s: Session, writable: bool) -> None:
        """Flow control: the session's transport paused (False) or drained (True)."""
        s.writable = writable
        if writable and not s.closed:
            for c in list(s.consumers.values()):
                self._dispatcher.dispatch(c.queue)

    # ------------------------------------------------------- queues kept elsewhere

    def feed(
        self,
        q: Queue,
        messages: list[rec.StoredMessage],
        marks: list[tuple[int, str | None, tuple[str, ...]]],
        at_once: Collection[int] = (),
    ) -> None:
        """Messages of ``q`` that are kept elsewhere (a cluster node's shared queue in
        Redis) arrive: append them to its ready messages (each with its store id, and
        in ``marks`` how many times it was delivered before, its dead-letter reason and
        dead-letter path) and hand them to consumers and waiters.  Those whose store
        ids are in ``at_once`` have ttl=0 and are still fresh: each goes to a consumer
        or waiter that takes it now or expires now, as a ttl=0 PUBLISH does."""
        self._scheduler.restore(q, messages)
        marked = {
            messages[i][0]: mark for i, mark in enumerate(marks) if mark[0] or mark[1] or mark[2]
        }
        if marked:  # (a queue with priorities keeps them in its own order: by id)
            for m in q.ready:
                mark = marked.get(m.msg_id)
                if mark is not None:
                    m.deliveries, m.reason, m.dl_path = mark
        if at_once:
            self._dispatcher.dispatch_now(q, [m for m in q.ready if m.msg_id in at_once])
        else:
            self._dispatcher.dispatch(q)

    def divert_dead_letters(self, sink: DeadLetterSink) -> None:
        """Send dead letters to ``sink`` instead of the local queues (a cluster node
        sends those bound for shared queues to Redis)."""
        self._dispatcher.dead_letter_sink = sink

    def share_lifetimes(
        self, shares: Callable[[Queue], bool], left: Callable[[Queue], None]
    ) -> None:
        """A cluster node judges the lifetime (``auto-delete``, ``expires``) of the
        queues ``shares`` names across nodes: the core deletes none of them itself and
        calls ``left`` when a SUBSCRIBE consumer leaves one."""
        self._namespace.shares_lifetime = shares
        self._namespace.consumer_left = left

    def withdraw(self, q: Queue) -> list[QueuedMessage]:
        """Take every ready message out of ``q`` (nothing is recorded): a cluster node
        gives them back to the shared queue when it has no consumer left for them."""
        out = list(q.ready)
        q.ready.clear()
        q.ready_bytes = 0
        return out

    def enqueue(
        self, q: Queue, source: str, key: str, payload: bytes, props: Props | None = None
    ) -> bool:
        """Put one copy of a message published to ``source`` into ``q`` alone, as if
        routed there (a cluster node's transient pub/sub); False when ``q`` refused it."""
        route = f"{source} {key or '-'}".encode()
        expires = self._dispatcher.expiry(q, None) if q.options.ttl is not None else None
        m = QueuedMessage(source, key, route, payload, expires, 0, props)
        if q.options.ttl == 0:
            return self._dispatcher.enqueue_now(q, m)
        return self._dispatcher.enqueue(q, m)

    # ------------------------------------------------------------------- restore

    def unawaited(self) -> None:
        """The publish just made (a STOMP SEND without a receipt) will have no reply
        waiting for the store's answer.  Nothing to forget here; a cluster node forgets
        the verdicts Redis will give on its copies, so that no later reply hears them."""

    def restore(self, recovered: rec.Recovered) -> None:
        """Rebuild the durable objects and messages a store recovered at start-up."""
        self._namespace.restore(recovered)
        for name, messages in recovered.messages.items():
            q = self._namespace.find(name)
            if isinstance(q, Queue):
                self._scheduler.restore(q, messages)
        self._dedup.restore(recovered, self._namespace.find)
        if self.journal is not None:
            self.journal.next_id = max(self.journal.next_id, recovered.next_msg_id)
