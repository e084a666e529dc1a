"""Delayed delivery (``PUBLISH … delay=MS``) and the restore of durable messages.

A delayed PUBLISH is routed at once (its reply counts the queues it reached), and each
copy is held as one entry of the broker's :class:`~mbroker.core.timers.Timers` heap,
keyed by the millisecond it is due and the order it was published in.  A held copy is
in no queue structure: its queue only counts it (``Queue.scheduled``, shown as
``STAT delayed``), so it is not delivered, not in LIST's ``messages=``, not under
max-length, max-bytes or PURGE; DELETE drops it (the timers skip it) and counts it.
When it is due it goes through :meth:`~mbroker.core.dispatch.Dispatcher.admit` as a
new message would: the queue's overflow rule applies (with ``reject``, the copy is
dead-lettered with ``reason=maxlen``, or dropped), it joins the tail of its priority,
and its ttl starts then (while held, ``QueuedMessage.expires_at`` holds the
message's own ttl in milliseconds, not a time).

A copy for a durable queue is stored at once with its wall-clock due time
(:func:`~mbroker.wire.props.with_due`; the record's ``expires_at`` is the due time
plus the ttl).  :meth:`Scheduler.restore` puts such a copy back in the timers at
``now + (due - wall now)``: a restart, a ``kill -9`` included, keeps its due time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

import attrs

from mbroker import errors
from mbroker.core.dispatch import Dispatcher
from mbroker.core.journal import Journal
from mbroker.core.model import PriorityReady, Queue, QueuedMessage
from mbroker.core.records import StoredMessage
from mbroker.core.timers import Timers
from mbroker.wire.frames import Props
from mbroker.wire.props import with_due

#: routes remembered for sharing (cleared when full)
MAX_ROUTES = 1024


class Scheduler:
    """Holds delayed copies until they are due; rebuilds recovered queues' messages.

    ``wall`` is the wall clock (``time.time``) the store's due times are read in."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        journal: Journal | None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.dispatcher = dispatcher
        self.timers: Timers = dispatcher.timers
        self.journal = journal
        self.wall = wall
        self._due_fn = self._due  # (bound once: one per held copy would cost memory)
        #: one ``route`` bytes object per name and key for held copies (each PUBLISH
        #: makes its own; a million held copies would keep a million of them)
        self._routes: dict[bytes, bytes] = {}

    def publish_delayed(
        self,
        targets: Sequence[Queue],
        name: str,
        key: str,
        route: bytes,
        payload: bytes,
        ttl: int | None,
        props: Props,
        delay: int,
    ) -> None:
        """Hold a copy in each of ``targets``, due ``delay`` ms from now (stored first
        for the durable ones, with its wall-clock due time)."""
        held = None if ttl is None else float(ttl)
        routes = self._routes
        shared = routes.get(route)
        if shared is None:
            if len(routes) >= MAX_ROUTES:
                routes.clear()
            shared = routes[route] = route
        route = shared
        copies = [(q, QueuedMessage(name, key, route, payload, held, 0, props)) for q in targets]
        journal = self.journal
        if journal is not None and any(q.options.durable for q in targets):
            if not journal.available:
                raise errors.Unavailable("the store cannot take writes; nothing was published")
            due = self.wall() + delay / 1000.0
            expires = None if ttl is None else due + ttl / 1000.0
            self.dispatcher.store(
                copies, name, key, payload, expires, with_due(props, due), delayed=True
            )
        due_ms = self.timers.due_in(delay)
        at = self.timers.at
        fn = self._due_fn
        for q, m in copies:
            q.scheduled += 1
            at(due_ms, fn, q, m)

    def _due(self, q: Queue, m: QueuedMessage) -> None:
        """A held copy is due: into its queue as a new message (or refused)."""
        q.scheduled -= 1
        if q.deleted:
            return
        d = self.dispatcher
        own = m.expires_at  # the copy's own ttl (ms) while it was held
        qttl = q.options.ttl
        at_once = own == 0 or qttl == 0
        if own is not None or qttl is not None:
            m.expires_at = d.expiry(q, None if own is None else int(own))
        if not d.admit(q, m, at_once):
            d.dead_letter(q, m, "maxlen")

    def restore(self, q: Queue, messages: list[StoredMessage]) -> None:
        """Put the messages a store recovered for ``q`` back in it, in order; each
        takes the queue's ttl, counted from now, if that is sooner than its own.  A
        delayed copy goes back in the timers, due at its wall-clock due time."""
        d = self.dispatcher
        now = d.clock.seconds()
        wall_now = self.wall()
        qttl = q.options.ttl
        routes: dict[tuple[str, str], bytes] = {}
        undue: dict[bytes, Props] = {}
        for msg_id, source, key, payload, expires, props in messages:
            route = routes.get((source, key))
            if route is None:
                route = routes[(source, key)] = f"{source} {key or '-'}".encode()
            if props is not None:
                if props.due is not None:
                    due = props.due
                    plain = undue.get(props.tail)
                    if plain is None:
                        plain = undue[props.tail] = attrs.evolve(props, due=None)
                    own = None if expires is None else max(0.0, (expires - due) * 1000.0)
                    m = QueuedMessage(source, key, route, payload, own, msg_id, plain)
                    q.scheduled += 1
                    clock_due = now + (due - wall_now)
                    self.timers.at(round(clock_due * 1000.0), self._due_fn, q, m)
                    continue
                if props.priority and type(q.ready) is deque:
                    q.ready = PriorityReady(q.ready)
            if qttl is not None:
                limit = now + qttl / 1000.0
                expires = limit if expires is None or expires > limit else expires
            q.ready.append(QueuedMessage(source, key, route, payload, expires, msg_id, props))
            q.ready_bytes += len(payload)
            if expires is not None:
                if expires < q.last_expiry:
                    q.expiry_ordered = False
                q.last_expiry = expires
                d.schedule_expiry(q, expires)
