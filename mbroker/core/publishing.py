"""Publishing: route a PUBLISH (or a run of them) and put the copies in their queues.

:class:`Publisher` looks the target up in the namespace, routes through an exchange's
matcher, stamps each copy's expiry, and hands the copies to the
:class:`~mbroker.core.dispatch.Dispatcher`.  With a store, copies bound for durable
queues are recorded in the :class:`~mbroker.core.journal.Journal` (once, whatever the
number of queues) before they are queued.  A run of publishes with one name and key
(``publish_many``) is routed once, and passed straight through to a lone ack=auto
consumer of an empty queue without making a message object.
"""

from __future__ import annotations

from collections.abc import Sequence

from mbroker import errors
from mbroker.core import records as rec
from mbroker.core.dedup import Dedup
from mbroker.core.dispatch import Dispatcher
from mbroker.core.journal import Journal
from mbroker.core.model import Queue, QueuedMessage
from mbroker.core.namespace import Namespace
from mbroker.core.scheduling import Scheduler
from mbroker.wire.frames import Props


class Publisher:
    """PUBLISH and its runs; ``published`` counts the messages published."""

    def __init__(
        self,
        journal: Journal | None,
        namespace: Namespace,
        dispatcher: Dispatcher,
        dedup: Dedup,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.journal = journal
        self._dedup = dedup
        self.published = 0
        # (bound once: these run for every message)
        self._find = namespace.find
        self._used = namespace.used
        self._enqueue = dispatcher.enqueue
        self._expiry = dispatcher.expiry
        self._dispatcher = dispatcher
        self._scheduler = scheduler if scheduler is not None else Scheduler(dispatcher, journal)

    def publish(self, name: str, key: str, payload: bytes, ttl: int | None = None) -> int:
        """PUBLISH: route and enqueue; returns the number of queues reached."""
        obj = self._find(name)
        if obj is None:
            raise errors.NotFound(name)
        self.published += 1
        targets: Sequence[Queue]
        if isinstance(obj, Queue):
            targets = (obj,)
            if obj.idle_timer is not None:
                self._used(obj)
        else:
            obj.published += 1
            targets = obj.matcher.match(key)
            if not targets:
                obj.unroutable += 1
                return 0
            obj.routed += 1
        route = f"{name} {key or '-'}".encode()
        if self.journal is not None:
            for q in targets:  # only a durable target needs the store's path
                if q.options.durable:
                    return self._publish_durable(targets, name, key, route, payload, ttl)
        rejected: Queue | None = None
        for q in targets:
            if ttl is None and q.options.ttl is None:
                if not self._enqueue(q, QueuedMessage(name, key, route, payload)):
                    rejected = q
                continue
            m = QueuedMessage(name, key, route, payload, self._expiry(q, ttl))
            if ttl == 0 or q.options.ttl == 0:
                if not self._dispatcher.enqueue_now(q, m):
                    rejected = q
            elif not self._enqueue(q, m):
                rejected = q
        if rejected is not None:
            raise errors.Overflow(f"{rejected.name} is full")
        return len(targets)

    def publish_props(
        self, name: str, key: str, payload: bytes, ttl: int | None, props: Props
    ) -> tuple[int, bool]:
        """PUBLISH with section 7 properties (headers, id, priority, delay): returns the
        number of queues reached and whether it was a duplicate (then nothing was
        routed, and the number is what the first one reached).

        The hot path (:meth:`publish`) never comes here: a message with no properties
        costs nothing for them."""
        obj = self._find(name)
        if obj is None:
            raise errors.NotFound(name)
        window = None
        if props.id is not None:  # (ids and dedup windows: see mbroker.core.dedup)
            window, first = self._dedup.check(obj, props.id)
            if first is not None:
                if isinstance(obj, Queue) and obj.idle_timer is not None:
                    self._used(obj)  # (a PUBLISH naming it, duplicate or not)
                return first, True
        self.published += 1
        targets: Sequence[Queue]
        if isinstance(obj, Queue):
            targets = (obj,)
            if obj.idle_timer is not None:
                self._used(obj)
        else:
            obj.published += 1
            targets = obj.matcher.match(key)
            if not targets:
                obj.unroutable += 1
                if window is not None:
                    self._dedup.remember(window, props.id, 0)
                return 0, False
            obj.routed += 1
        route = f"{name} {key or '-'}".encode()
        if props.delay:  # held until due, then in as a new message (section 7)
            self._scheduler.publish_delayed(
                targets, name, key, route, payload, ttl, props, props.delay
            )
            if window is not None:
                self._dedup.remember(window, props.id, len(targets))
            return len(targets), False
        copies = [
            (q, QueuedMessage(name, key, route, payload, self._expiry(q, ttl), 0, props))
            for q in targets
        ]
        journal = self.journal
        if journal is not None and any(q.options.durable for q in targets):
            if not journal.available:
                raise errors.Unavailable("the store cannot take writes; nothing was published")
            lives = [m.expires_at for q, m in copies if q.options.durable]
            expiry = None if None in lives else max(lives)  # type: ignore[type-var]
            self._dispatcher.store(copies, name, key, payload, expiry, props)
        rejected: Queue | None = None
        admit = self._dispatcher.admit  # (the priority decides where each copy goes)
        for q, m in copies:
            if not admit(q, m, ttl == 0 or q.options.ttl == 0):
                rejected = q
        if rejected is not None:
            raise errors.Overflow(f"{rejected.name} is full")
        if window is not None:
            self._dedup.remember(window, props.id, len(targets))
        return len(targets), False

    def publish_many(
        self,
        name: str,
        key: str,
        payloads: list[bytes],
        ttl: int | None = None,
        stop_at_refusal: bool = False,
        props: Props | None = None,
    ) -> tuple[int, dict[int, errors.BrokerError]]:
        """A run of PUBLISH with one name, key and ttl: :meth:`publish` for each payload,
        in order, but routed once, and put in each queue at once and dispatched once
        (when no target has a ttl, reject overflow or durability).

        Returns the number of queues each message reached, and the refusals by index
        (``OVERFLOW``, ``UNAVAILABLE``); raises ``NOT_FOUND`` for them all.  With
        ``stop_at_refusal`` the messages after the first refusal are not published (as
        when the publisher stops at its first error: a STOMP connection closes).

        ``props``, when given, carries headers only (no id, delay or priority: each of
        those makes a message its own, see :meth:`publish_props`); every message of
        the run gets them."""
        obj = self._find(name)
        if obj is None:
            raise errors.NotFound(name)
        targets: Sequence[Queue] = (obj,) if isinstance(obj, Queue) else obj.matcher.match(key)
        if isinstance(obj, Queue) and obj.idle_timer is not None:
            self._used(obj)
        if ttl is not None or not all(_takes_runs(q) for q in targets):
            return self._publish_each(name, key, payloads, ttl, stop_at_refusal, props)
        journal = self.journal
        first_id = 0
        if journal is not None and any(q.options.durable for q in targets):
            if not journal.available:
                raise errors.Unavailable("the store cannot take writes; nothing was published")
            # stored before any is queued (ids grow in log order): one record for the
            # run, written as one frame per message
            first_id = journal.next_id
            journal.next_id = first_id + len(payloads)
            names = tuple([q.name for q in targets if q.options.durable])
            journal.add(rec.MessagesStored(first_id, names, name, key, payloads, props))
        n = len(payloads)
        self.published += n
        if not isinstance(obj, Queue):
            obj.published += n
            if not targets:
                obj.unroutable += n
                return 0, {}
            obj.routed += n
        route = f"{name} {key or '-'}".encode()
        size = sum(map(len, payloads))
        for q in targets:
            if (
                not q.ready
                and len(q.consumers) == 1
                and not (first_id and q.options.durable)
                and props is None
            ):
                # Straight through: an empty queue whose one consumer (ack=auto) can
                # take everything gets the run without a message object or a queue.
                c = q.consumers[0]
                s = c.session
                if not c.manual and c.active and s.writable:
                    tag = s.next_tag
                    s.next_tag = tag + n
                    q.published += n
                    self._dispatcher.count_delivered(q, c, n, True)
                    s.target.push_run(c.sid, tag, route, payloads)
                    continue
            if first_id and q.options.durable:
                q.ready.extend(
                    [
                        QueuedMessage(name, key, route, p, None, first_id + i, props)
                        for i, p in enumerate(payloads)
                    ]
                )
            else:
                q.ready.extend(
                    [QueuedMessage(name, key, route, p, None, 0, props) for p in payloads]
                )
            q.published += n
            q.ready_bytes += size
            self._dispatcher.dispatch(q)
            o = q.options
            if o.max_length is not None or o.max_bytes is not None:
                self._dispatcher.enforce_limits(q)
        return len(targets), {}

    def _publish_each(
        self,
        name: str,
        key: str,
        payloads: list[bytes],
        ttl: int | None,
        stop: bool,
        props: Props | None = None,
    ) -> tuple[int, dict[int, errors.BrokerError]]:
        reached = 0
        refused: dict[int, errors.BrokerError] = {}
        for i, payload in enumerate(payloads):
            try:
                if props is None:
                    reached = self.publish(name, key, payload, ttl)
                else:
                    reached = self.publish_props(name, key, payload, ttl, props)[0]
            except errors.BrokerError as e:
                refused[i] = e
                if stop:
                    break
        return reached, refused

    def _publish_durable(
        self,
        targets: Sequence[Queue],
        name: str,
        key: str,
        route: bytes,
        payload: bytes,
        ttl: int | None,
    ) -> int:
        """PUBLISH with a store: copies in durable queues are stored, once."""
        journal = self.journal
        assert journal is not None
        if not journal.available:  # (some target is durable: publish() checked)
            raise errors.Unavailable("the store cannot take writes; nothing was published")
        copies = []
        # Durable queues with different ttls share one record: it keeps the longest
        # life, and each queue re-applies its own ttl when the broker restarts.
        lives: list[float] = []
        endless = False
        at_once: list[Queue] | None = None  # the targets where the copy's ttl is 0
        for q in targets:
            expires = None
            if ttl is not None or q.options.ttl is not None:
                expires = self._expiry(q, ttl)
                if ttl == 0 or q.options.ttl == 0:
                    at_once = [q] if at_once is None else [*at_once, q]
            if q.options.durable:
                if expires is None:
                    endless = True
                else:
                    lives.append(expires)
            copies.append((q, QueuedMessage(name, key, route, payload, expires)))
        expiry = None if endless or not lives else max(lives)
        self._dispatcher.store(copies, name, key, payload, expiry)
        rejected: Queue | None = None
        for q, m in copies:
            if at_once is not None and q in at_once:
                if not self._dispatcher.enqueue_now(q, m):
                    rejected = q
            elif not self._enqueue(q, m):
                rejected = q
        if rejected is not None:
            raise errors.Overflow(f"{rejected.name} is full")
        return len(targets)


def _takes_runs(q: Queue) -> bool:
    """Whether a run of messages may go into ``q`` at once (see ``publish_many``):
    no per-message expiry or refusal, and no PULL waiting (which would take up to its
    ``max`` of the run where one at a time it takes one)."""
    o = q.options
    return (
        not q.waiters
        and o.ttl is None
        and (o.overflow != "reject" or (o.max_length is None and o.max_bytes is None))
    )
