"""The broker core: the exchange registry and everything that moves messages.

:class:`Broker` owns the namespace (exchanges and queues share it), routes publishes
through the exchanges' matchers, dispatches ready messages to consumers round-robin,
and keeps the books of deliveries, acknowledgements, redelivery, expiry and
dead-lettering.  It is synchronous plain Python: it never touches a socket and reads
time only from the injected clock, so every timing rule is testable with
``twisted.internet.task.Clock`` (or any object with ``seconds`` and ``callLater``).

Methods raise :mod:`mbroker.errors` exceptions; the connection turns them into
``-ERR`` lines.  Nothing on the per-message path logs, validates or allocates more
than one object per queue copy and one per manual delivery.

All timers (message ttl, ack-timeout, NACK delay, PULL wait) are made here, through
``clock.callLater``, and each is cancelled when what it guards goes away.
"""

from __future__ import annotations

import itertools
import resource
from collections.abc import Callable, Iterable, Sequence
from typing import Union

from mbroker import errors
from mbroker.config import DEFAULT_MANUAL_PREFETCH, Config
from mbroker.core import records as rec
from mbroker.core import report
from mbroker.core.engine import Pulled, QueueEngine
from mbroker.core.journal import Journal
from mbroker.core.model import (
    Clock,
    Consumer,
    Delivery,
    DeliveryTarget,
    Exchange,
    Message,
    PullWaiter,
    Queue,
    Session,
)
from mbroker.core.routing import make_matcher
from mbroker.wire.frames import ExchangeInfo, QueueInfo, QueueOptions, TagRanges

Obj = Union[Exchange, Queue]
__all__ = ["Broker", "Obj", "Pulled"]


class Broker(QueueEngine):
    """The broker core.  ``journal`` is set when a store keeps durable state."""

    def __init__(
        self, clock: Clock, config: Config | None = None, journal: Journal | None = None
    ) -> None:
        self.clock = clock
        self.config = config if config is not None else Config()
        self.journal = journal
        self._objects: dict[str, Obj] = {}
        self._sessions: dict[int, Session] = {}
        self._next_session = 1
        self._dl_depth = 0
        self.started = clock.seconds()
        # server counters
        self.connections_total = 0
        self.published = 0
        self.delivered = 0
        self.acked = 0

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
        s.waiters.clear()
        for c in list(s.consumers.values()):
            self._drop_consumer(c)
        s.consumers.clear()
        deliveries = sorted(s.outstanding.values(), key=_tag_of)
        s.outstanding.clear()
        self._return(deliveries)
        for q in list(s.exclusive):
            if not q.deleted:
                self._delete_queue(q)
        s.exclusive.clear()

    def end_waits(self, s: Session) -> None:
        """End the session's waiting PULLs at once, with nothing: its client will send
        no more (a half-close) and may be gone, so they must take no message."""
        for w in list(s.waiters):
            try:
                w.queue.waiters.remove(w)
            except ValueError:
                continue
            self._finish_wait(w, [])

    def set_writable(self, s: Session, writable: bool) -> None:
        """Flow control: the session's transport paused (False) or drained (True)."""
        s.writable = writable
        if writable and not s.closed:
            for c in list(s.consumers.values()):
                self._dispatch(c.queue)

    @property
    def connections(self) -> int:
        return len(self._sessions)

    # ----------------------------------------------------------------- namespace

    def get(self, name: str) -> Obj:
        obj = self._objects.get(name)
        if obj is None:
            raise errors.NotFound(name)
        return obj

    def queue(self, name: str) -> Queue:
        obj = self.get(name)
        if not isinstance(obj, Queue):
            raise errors.WrongKind(f"{name} is an exchange, not a queue")
        return obj

    def exchange(self, name: str) -> Exchange:
        obj = self.get(name)
        if not isinstance(obj, Exchange):
            raise errors.WrongKind(f"{name} is a queue, not an exchange")
        return obj

    def create(self, s: Session | None, name: str, kind: str, options: QueueOptions) -> bool:
        """CREATE: True when made, False when it existed alike; raises Exists."""
        existing = self._objects.get(name)
        if existing is not None:
            if isinstance(existing, Queue):
                same = kind == "queue" and existing.options == options
            else:
                same = kind == existing.kind and options.durable == existing.durable
            if same:
                return False
            raise errors.Exists(f"{name} exists with another kind or other options")
        if options.durable and self.journal is not None and not self.journal.available:
            raise errors.Unavailable("the store cannot take writes")
        if kind == "queue":
            if options.exclusive and options.durable:
                raise errors.BadArgs("an exclusive queue cannot be durable")
            q = Queue(name, options)
            if options.exclusive and s is not None:
                q.owner = s
                s.exclusive.append(q)
            self._objects[name] = q
        else:
            self._objects[name] = Exchange(name, kind, make_matcher(kind), options.durable)
        if options.durable and self.journal is not None:
            if kind == "queue":
                self.journal.add(rec.QueueDeclared(name, options))
            else:
                self.journal.add(rec.ExchangeDeclared(name, kind))
        return True

    def delete(self, name: str, if_empty: bool = False, if_unused: bool = False) -> int:
        """DELETE: returns the number of messages dropped (ready and unacked)."""
        obj = self.get(name)
        if isinstance(obj, Queue):
            if if_empty and (obj.messages or obj.unacked):
                raise errors.NotEmpty(f"{name} holds {obj.messages + obj.unacked} messages")
            if if_unused and obj.consumers:
                raise errors.InUse(f"{name} has {len(obj.consumers)} consumers")
            return self._delete_queue(obj)
        if if_unused and len(obj.matcher):
            raise errors.InUse(f"{name} has {len(obj.matcher)} bindings")
        self._delete_exchange(obj)
        return 0

    def _delete_queue(self, q: Queue) -> int:
        q.deleted = True
        if self._objects.get(q.name) is q:
            del self._objects[q.name]
        if q.options.durable and self.journal is not None:
            self.journal.add(rec.QueueDeleted(q.name))
        dropped = self._drop_ready(q) + q.unacked
        if q.expiry_timer is not None and q.expiry_timer.active():
            q.expiry_timer.cancel()
        for ex in q.bound_to.values():
            ex.matcher.remove_target(q)
        q.bound_to.clear()
        for c in list(q.consumers):
            s = c.session
            s.consumers.pop(c.sid, None)
            if not s.closed:
                s.target.cancelled(c.sid, "deleted")
        q.consumers.clear()
        while q.waiters:
            w = q.waiters.popleft()
            self._finish_wait(w, [])
        if q.owner is not None and q in q.owner.exclusive:
            q.owner.exclusive.remove(q)
        # deliveries still out are now void: their tags ack nothing (see _take)
        return dropped

    def _delete_exchange(self, ex: Exchange) -> None:
        ex.deleted = True
        del self._objects[ex.name]
        if ex.durable and self.journal is not None:
            self.journal.add(rec.ExchangeDeleted(ex.name))
        for q in list({q: None for _, q in ex.matcher.bindings()}):
            ex.matcher.remove_target(q)
            q.bound_to.pop(ex.name, None)
            if q.private and not q.deleted:
                # a subscription to this exchange can never receive again: end it
                self._delete_queue(q)

    def bind(self, queue: str, exchange: str, key: str = "") -> bool:
        q, ex = self._binding_pair(queue, exchange, key)
        if ex.matcher.add(key, q):
            q.bound_to[ex.name] = ex
            if q.options.durable and ex.durable and self.journal is not None:
                self.journal.add(rec.Bound(queue, exchange, key))
            return True
        return False

    def unbind(self, queue: str, exchange: str, key: str = "") -> None:
        q, ex = self._binding_pair(queue, exchange, key)
        if not ex.matcher.remove(key, q):
            raise errors.NotFound(f"{queue} is not bound to {exchange} with {key or '(empty key)'}")
        if not ex.matcher.count_for(q):
            q.bound_to.pop(ex.name, None)
        if q.options.durable and ex.durable and self.journal is not None:
            self.journal.add(rec.Unbound(queue, exchange, key))

    def _binding_pair(self, queue: str, exchange: str, key: str) -> tuple[Queue, Exchange]:
        q = self.get(queue)
        ex = self.get(exchange)
        if not isinstance(q, Queue):
            raise errors.WrongKind(f"{queue} is not a queue")
        if not isinstance(ex, Exchange):
            raise errors.WrongKind(f"{exchange} is not an exchange")
        if ex.kind == "direct" and ("*" in key or "#" in key):
            raise errors.BadArgs("a direct exchange binds keys, not patterns")
        return q, ex

    def purge(self, name: str) -> int:
        q = self.queue(name)
        if q.options.durable and self.journal is not None:
            ids = [m.msg_id for m in (*q.ready, *q.delayed.values()) if m.msg_id]
            if ids:
                self.journal.removed_many(q.name, ids)
        n = self._drop_ready(q)
        q.expiry_ordered = True
        q.last_expiry = 0.0
        return n

    def _drop_ready(self, q: Queue) -> int:
        """Forget the queue's ready and delayed messages (their timers too): how many."""
        n = len(q.ready) + len(q.delayed)
        q.ready.clear()
        q.ready_bytes = 0
        for timer in q.delayed:
            if timer.active():
                timer.cancel()
        q.delayed.clear()
        return n

    # ------------------------------------------------------------------- publish

    def publish(self, name: str, key: str, payload: bytes, ttl: int | None = None) -> int:
        """PUBLISH: route and enqueue; returns the number of queues reached."""
        obj = self._objects.get(name)
        if obj is None:
            raise errors.NotFound(name)
        self.published += 1
        targets: Sequence[Queue]
        if isinstance(obj, Queue):
            targets = (obj,)
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
            expires = None
            if ttl is not None or q.options.ttl is not None:
                expires = self._expiry(q, ttl)
            if not self._enqueue(q, Message(name, key, route, payload, expires)):
                rejected = q
        if rejected is not None:
            raise errors.Overflow(f"{rejected.name} is full")
        return len(targets)

    def publish_many(
        self, name: str, key: str, payloads: list[bytes], ttl: int | None = None
    ) -> tuple[int, dict[int, errors.BrokerError]]:
        """A run of PUBLISH with one name, key and ttl: :meth:`publish` for each payload,
        in order, but routed once, and put in each queue at once and dispatched once
        (when no target has a ttl, reject overflow or durability).

        Returns the number of queues each message reached, and the refusals by index
        (``OVERFLOW``, ``UNAVAILABLE``); raises ``NOT_FOUND`` for them all."""
        obj = self._objects.get(name)
        if obj is None:
            raise errors.NotFound(name)
        targets: Sequence[Queue] = (obj,) if isinstance(obj, Queue) else obj.matcher.match(key)
        if ttl is not None or not all(_takes_runs(q) for q in targets):
            return self._publish_each(name, key, payloads, ttl)
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
            journal.add(rec.MessagesStored(first_id, names, name, key, payloads))
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
            if not q.ready and len(q.consumers) == 1 and not (first_id and q.options.durable):
                # Straight through: an empty queue whose one consumer (ack=auto) can
                # take everything gets the run without a message object or a queue.
                c = q.consumers[0]
                s = c.session
                if not c.manual and c.active and s.writable:
                    tag = s.next_tag
                    s.next_tag = tag + n
                    q.published += n
                    q.delivered += n
                    q.acked += n
                    c.delivered += n
                    self.delivered += n
                    self.acked += n
                    s.target.push_run(c.sid, tag, route, payloads)
                    continue
            if first_id and q.options.durable:
                q.ready.extend(
                    [
                        Message(name, key, route, p, None, first_id + i)
                        for i, p in enumerate(payloads)
                    ]
                )
            else:
                q.ready.extend([Message(name, key, route, p) for p in payloads])
            q.published += n
            q.ready_bytes += size
            self._dispatch(q)
            o = q.options
            if o.max_length is not None or o.max_bytes is not None:
                self._enforce_limits(q)
        return len(targets), {}

    def _publish_each(
        self, name: str, key: str, payloads: list[bytes], ttl: int | None
    ) -> tuple[int, dict[int, errors.BrokerError]]:
        reached = 0
        refused: dict[int, errors.BrokerError] = {}
        for i, payload in enumerate(payloads):
            try:
                reached = self.publish(name, key, payload, ttl)
            except errors.BrokerError as e:
                refused[i] = e
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
        expiries: list[float | None] = []
        for q in targets:
            expires = None
            if ttl is not None or q.options.ttl is not None:
                expires = self._expiry(q, ttl)
            if q.options.durable:
                expiries.append(expires)
            copies.append((q, Message(name, key, route, payload, expires)))
        # Durable queues with different ttls share one record: it keeps the longest
        # life, and each queue re-applies its own ttl when the broker restarts.
        expiry = None if not expiries or None in expiries else max(expiries)  # type: ignore[type-var]
        self._store(copies, name, key, payload, expiry)
        rejected: Queue | None = None
        for q, m in copies:
            if not self._enqueue(q, m):
                rejected = q
        if rejected is not None:
            raise errors.Overflow(f"{rejected.name} is full")
        return len(targets)

    def restore(self, recovered: rec.Recovered) -> None:
        """Rebuild the durable objects and messages a store recovered at start-up."""
        for name, kind in recovered.exchanges.items():
            self._objects[name] = Exchange(name, kind, make_matcher(kind), True)
        for name, options in recovered.queues.items():
            self._objects[name] = Queue(name, options)
        for queue, exchange, key in recovered.bindings:
            q, ex = self._objects.get(queue), self._objects.get(exchange)
            if isinstance(q, Queue) and isinstance(ex, Exchange):
                ex.matcher.add(key, q)
                q.bound_to[exchange] = ex
        now = self.clock.seconds()
        routes: dict[tuple[str, str], bytes] = {}
        for queue, messages in recovered.messages.items():
            q = self._objects.get(queue)
            if not isinstance(q, Queue):
                continue
            qttl = q.options.ttl
            for msg_id, source, key, payload, expires, _headers in messages:
                if qttl is not None:
                    limit = now + qttl / 1000.0
                    expires = limit if expires is None or expires > limit else expires
                route = routes.get((source, key))
                if route is None:
                    route = routes[(source, key)] = f"{source} {key or '-'}".encode()
                m = Message(source, key, route, payload, expires, msg_id)
                q.ready.append(m)
                q.ready_bytes += len(payload)
                if expires is not None:
                    if expires < q.last_expiry:
                        q.expiry_ordered = False
                    q.last_expiry = expires
                    self._schedule_expiry(q, expires)
        if self.journal is not None:
            self.journal.next_id = max(self.journal.next_id, recovered.next_msg_id)

    # ----------------------------------------------------------------- consumers

    def subscribe(
        self,
        s: Session,
        name: str,
        pattern: str | None = None,
        prefetch: int | None = None,
        manual: bool = False,
        ack_timeout: int | None = None,
    ) -> Consumer:
        """SUBSCRIBE.  The consumer starts inactive: call :meth:`activate` once its
        ``+OK <sid>`` is on the wire, so that no MSG precedes it."""
        obj = self.get(name)
        if len(s.consumers) >= self.config.max_subscriptions:
            raise errors.Limit(
                f"at most {self.config.max_subscriptions} subscriptions per connection"
            )
        if prefetch is None:
            prefetch = DEFAULT_MANUAL_PREFETCH if manual else 0
        sid = s.next_sid
        if isinstance(obj, Queue):
            if pattern is not None:
                raise errors.BadArgs("a pattern is only for a subscription to an exchange")
            q = obj
            private = False
        else:
            if obj.kind == "topic":
                key = "#" if pattern is None else pattern
            elif obj.kind == "direct":
                key = pattern or ""
            else:
                key = ""
            qname = f"mbroker.sub.{s.id}.{sid}"
            options = QueueOptions(
                max_length=self.config.private_max_length,
                max_bytes=self.config.private_max_bytes,
                exclusive=True,
            )
            q, ex = Queue(qname, options, owner=s, private=True), obj
            self._binding_pair_check(ex, key)
            self._objects[qname] = q
            s.exclusive.append(q)
            ex.matcher.add(key, q)
            q.bound_to[ex.name] = ex
            private = True
        s.next_sid = sid + 1
        timeout = ack_timeout / 1000.0 if ack_timeout is not None else None
        c = Consumer(s, sid, q, manual, prefetch, timeout, private=private)
        q.consumers.append(c)
        s.consumers[sid] = c
        return c

    def _binding_pair_check(self, ex: Exchange, key: str) -> None:
        if ex.kind == "direct" and ("*" in key or "#" in key):
            raise errors.BadArgs("a direct exchange binds keys, not patterns")

    def activate(self, c: Consumer) -> None:
        if c.session.consumers.get(c.sid) is c:
            c.active = True
            self._dispatch(c.queue)

    def unsubscribe(self, s: Session, sid: int) -> None:
        c = s.consumers.pop(sid, None)
        if c is None:
            raise errors.NotFound(f"no subscription {sid}")
        self._drop_consumer(c)
        mine = [d for d in s.outstanding.values() if d.consumer is c]
        for d in mine:
            del s.outstanding[d.tag]
        self._return(mine)

    def _drop_consumer(self, c: Consumer) -> None:
        q = c.queue
        c.active = False
        try:
            i = q.consumers.index(c)
        except ValueError:
            return
        del q.consumers[i]
        if q.rr > i:
            q.rr -= 1
        if c.private and not q.deleted:
            self._delete_queue(q)

    # ---------------------------------------------------------------------- pull

    def pull(
        self,
        s: Session,
        name: str,
        max: int = 1,
        wait: int | None = None,
        manual: bool = False,
        ack_timeout: int | None = None,
        on_done: Callable[[Pulled], None] | None = None,
    ) -> Pulled | None:
        """PULL: the deliveries now, or None when waiting (``on_done`` fires later)."""
        q = self.queue(name)
        timeout = ack_timeout / 1000.0 if ack_timeout is not None else None
        out = self._take_ready(s, q, max, manual, timeout)
        if out or not wait or on_done is None:
            return out
        w = PullWaiter(s, q, max, manual, timeout, on_done)
        w.timer = self.clock.callLater(wait / 1000.0, self._wait_timed_out, w)
        q.waiters.append(w)
        s.waiters.append(w)
        return None

    # ---------------------------------------------------------------------- acks

    def ack(self, s: Session, tags: TagRanges) -> int:
        """ACK: the number handled.  Tags that name no outstanding delivery raise
        NotFound, after the others were handled."""
        found, missing = self._take(s, tags)
        touched: dict[Queue, list[int]] = {}  # queue -> store ids of what left it
        last: Queue | None = None
        ids: list[int] = []
        for d in found:  # (what _release does, inlined: once per acknowledged message)
            timer = d.timer
            if timer is not None and timer.active():
                timer.cancel()
            q = d.queue
            q.unacked -= 1
            q.acked += 1
            c = d.consumer
            if c is not None:
                c.in_flight -= 1
            if q is not last:
                last = q
                ids = touched.setdefault(q, [])
            if d.message.msg_id:
                ids.append(d.message.msg_id)
        self.acked += len(found)
        for q, ids in touched.items():
            if ids:
                self.journal.removed_many(q.name, ids)  # type: ignore[union-attr]
            self._dispatch(q)
        return _handled(found, missing)

    def nack(
        self, s: Session, tags: TagRanges, requeue: bool = True, delay: int | None = None
    ) -> int:
        found, missing = self._take(s, tags)
        if requeue and delay:
            for d in found:
                self._release(d)
                q = d.queue
                timer = self.clock.callLater(delay / 1000.0, self._undelay, q, d.message)
                q.delayed[timer] = d.message
                self._dispatch(q)
        elif requeue:
            # in delivery order, however the tags were listed
            self._return(sorted(found, key=_tag_of))
        else:
            for d in found:
                self._release(d)
                self._dead_letter(d.queue, d.message, "rejected")
                self._dispatch(d.queue)
        return _handled(found, missing)

    def touch(self, s: Session, tags: TagRanges) -> int:
        found, missing = self._take(s, tags, remove=False)
        for d in found:
            if d.timer is not None and d.timer.active() and d.timeout is not None:
                d.timer.reset(d.timeout)
        return _handled(found, missing)

    def _take(self, s: Session, tags: TagRanges, remove: bool = True) -> tuple[list[Delivery], str]:
        """The outstanding deliveries named by ``tags`` (taken out of the session
        unless ``remove`` is False), and the tags among ``tags`` that named none.

        A range costs the smaller of its width and the number outstanding."""
        outstanding = s.outstanding
        found: list[Delivery] = []
        missing: list[str] = []
        for lo, hi in tags:
            if hi - lo < len(outstanding):
                candidates: Iterable[int] = range(lo, hi + 1)
            else:
                candidates = sorted(t for t in outstanding if lo <= t <= hi)
            n = 0
            for t in candidates:
                d = outstanding.get(t)
                if d is None:
                    continue
                if d.queue.deleted:  # void: its queue is gone
                    del outstanding[t]
                    continue
                if remove:
                    del outstanding[t]
                found.append(d)
                n += 1
            if not n:
                missing.append(str(lo) if lo == hi else f"{lo}-{hi}")
        return found, ",".join(missing)

    # ------------------------------------------------------- expiry, dead letters

    # ------------------------------------------------------------------ reports

    def list_objects(self) -> list[ExchangeInfo | QueueInfo]:
        out: list[ExchangeInfo | QueueInfo] = []
        for obj in self._objects.values():
            if isinstance(obj, Queue):
                out.append(
                    QueueInfo(obj.name, obj.messages, obj.unacked, len(obj.consumers), obj.durable)
                )
            else:
                out.append(ExchangeInfo(obj.name, obj.kind, obj.durable, len(obj.matcher)))
        return out

    def stats(self, name: str | None = None) -> list[tuple[str, str]]:
        """STATS: the server's counters, or one object's, as ``(key, value)`` pairs.

        Units are in the names where there is one beyond a count (``uptime_s``;
        ``memory_*`` and ``bytes`` are bytes).  A queue's ``bytes`` counts the same
        messages as its ``messages``: ready ones and those a NACK delayed."""
        if name is None:
            rss = current_rss()
            # (the kernel's high-water mark counts pages a little differently from
            # statm: the peak is never reported below the memory now)
            peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss)
            queues = sum(1 for o in self._objects.values() if isinstance(o, Queue))
            pairs: list[tuple[str, object]] = [
                ("uptime_s", int(self.clock.seconds() - self.started)),
                ("connections", self.connections),
                ("connections_total", self.connections_total),
                ("exchanges", len(self._objects) - queues),
                ("queues", queues),
                ("published", self.published),
                ("delivered", self.delivered),
                ("acked", self.acked),
                ("memory_rss", rss),
                ("memory_peak_rss", peak),
            ]
        else:
            obj = self.get(name)
            if isinstance(obj, Queue):
                pairs = [
                    ("type", "queue"),
                    ("durable", int(obj.durable)),
                    ("messages", obj.messages),
                    (
                        "bytes",
                        obj.ready_bytes + sum([len(m.payload) for m in obj.delayed.values()]),
                    ),
                    ("unacked", obj.unacked),
                    ("consumers", len(obj.consumers)),
                    ("published", obj.published),
                    ("delivered", obj.delivered),
                    ("acked", obj.acked),
                    ("redelivered", obj.redelivered),
                    ("expired", obj.expired),
                    ("dropped", obj.dropped),
                    ("rejected", obj.rejected),
                    ("dead_lettered", obj.dead_lettered),
                ]
            else:
                pairs = [
                    ("type", obj.kind),
                    ("durable", int(obj.durable)),
                    ("bindings", len(obj.matcher)),
                    ("published", obj.published),
                    ("routed", obj.routed),
                    ("unroutable", obj.unroutable),
                ]
        return [(k, str(v)) for k, v in pairs]

    def queue_reports(self, name: str | None = None) -> list[report.QueueReport]:
        """Every queue's options, depth, consumers and counters, or only the queue
        ``name`` (NOT_FOUND, WRONG_KIND): for monitoring (the HTTP API, /metrics)."""
        objs = self._objects.values() if name is None else (self.queue(name),)
        return [report.queue_report(o) for o in objs if isinstance(o, Queue)]

    def exchange_reports(self, name: str | None = None) -> list[report.ExchangeReport]:
        """Every exchange and its counters, or only the exchange ``name``."""
        objs = self._objects.values() if name is None else (self.exchange(name),)
        return [report.exchange_report(o) for o in objs if isinstance(o, Exchange)]

    def peek(self, name: str, count: int) -> list[report.MessageReport]:
        """The first ``count`` ready messages of the queue ``name``, left where they are
        (nothing is delivered, no counter moves): for inspection (the HTTP API)."""
        q = self.queue(name)
        return [report.message_report(m) for m in itertools.islice(q.ready, count)]

    def binding_reports(self) -> list[report.BindingReport]:
        """Every binding, exchange by exchange."""
        return report.binding_reports(o for o in self._objects.values() if isinstance(o, Exchange))


def _handled(found: list[Delivery], missing: str) -> int:
    if missing:
        raise errors.NotFound(missing)
    return len(found)


def _tag_of(d: Delivery) -> int:
    return d.tag


def current_rss() -> int:
    """Resident memory now, in bytes (Linux ``/proc``; 0 where it is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


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
