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

import resource
from collections.abc import Callable, Iterable, Sequence

from mbroker import errors
from mbroker.config import DEFAULT_MANUAL_PREFETCH, Config
from mbroker.frames import ExchangeInfo, QueueInfo, QueueOptions, TagRanges
from mbroker.model import (
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
from mbroker.routing import make_matcher

Obj = Exchange | Queue
Pulled = list[tuple[int, Message]]

#: how deep a cascade of dead-lettering (a drop that dead-letters into a full queue
#: that drops and dead-letters …) may go before messages are simply dropped
MAX_DEAD_LETTER_DEPTH = 4


class Broker:
    def __init__(self, clock: Clock, config: Config | None = None) -> None:
        self.clock = clock
        self.config = config if config is not None else Config()
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
        dropped = len(q.ready) + len(q.delayed) + q.unacked
        q.ready.clear()
        q.ready_bytes = 0
        for timer in q.delayed:
            if timer.active():
                timer.cancel()
        q.delayed.clear()
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
            return True
        return False

    def unbind(self, queue: str, exchange: str, key: str = "") -> None:
        q, ex = self._binding_pair(queue, exchange, key)
        if not ex.matcher.remove(key, q):
            raise errors.NotFound(f"{queue} is not bound to {exchange} with {key or '(empty key)'}")
        if not ex.matcher.count_for(q):
            q.bound_to.pop(ex.name, None)

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
        n = len(q.ready) + len(q.delayed)
        q.ready.clear()
        q.ready_bytes = 0
        for timer in q.delayed:
            if timer.active():
                timer.cancel()
        q.delayed.clear()
        q.expiry_ordered = True
        q.last_expiry = 0.0
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

    def _expiry(self, q: Queue, ttl: int | None) -> float:
        qttl = q.options.ttl
        ms = ttl if qttl is None else (qttl if ttl is None else min(ttl, qttl))
        return self.clock.seconds() + ms / 1000.0  # type: ignore[operator]

    def _enqueue(self, q: Queue, m: Message) -> bool:
        """Put ``m`` at the tail of ``q`` and dispatch; False if refused (reject)."""
        o = q.options
        limited = o.max_length is not None or o.max_bytes is not None
        if (
            limited
            and o.overflow == "reject"
            and (
                (o.max_length is not None and len(q.ready) >= o.max_length)
                or (o.max_bytes is not None and q.ready_bytes + len(m.payload) > o.max_bytes)
            )
        ):
            q.rejected += 1
            return False
        q.published += 1
        q.ready.append(m)
        q.ready_bytes += len(m.payload)
        if m.expires_at is not None:
            if m.expires_at < q.last_expiry:
                q.expiry_ordered = False
            q.last_expiry = m.expires_at
            self._schedule_expiry(q, m.expires_at)
        self._dispatch(q)
        if limited:
            self._enforce_limits(q)
        return True

    def _enforce_limits(self, q: Queue) -> None:
        o = q.options
        max_len = o.max_length
        max_bytes = o.max_bytes
        ready = q.ready
        dropped = 0
        while ready and (
            (max_len is not None and len(ready) > max_len)
            or (max_bytes is not None and q.ready_bytes > max_bytes)
        ):
            m = ready.popleft()
            q.ready_bytes -= len(m.payload)
            q.dropped += 1
            dropped += 1
            self._dead_letter(q, m, "maxlen")
        if dropped and q.private and self.config.slow_consumer_disconnect:
            for c in list(q.consumers):
                if not c.session.closed:
                    c.session.target.slow(c.sid)

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, q: Queue) -> None:
        """Hand ready messages to pull waiters, then to consumers with room."""
        ready = q.ready
        if not ready:
            return
        if q.waiters:
            self._serve_waiters(q)
        consumers = q.consumers
        n = len(consumers)
        if not n:
            return
        now: float | None = None
        while ready:
            i = q.rr
            for _ in range(n):
                if i >= n:
                    i = 0
                c = consumers[i]
                i += 1
                if (
                    c.active
                    and c.session.writable
                    and (c.prefetch == 0 or c.in_flight < c.prefetch)
                ):
                    break
            else:
                return
            q.rr = i
            m = ready.popleft()
            q.ready_bytes -= len(m.payload)
            if m.expires_at is not None:
                if now is None:
                    now = self.clock.seconds()
                if m.expires_at <= now:
                    q.expired += 1
                    self._dead_letter(q, m, "expired")
                    continue
            self._deliver(q, c, m)

    def _deliver(self, q: Queue, c: Consumer, m: Message) -> None:
        s = c.session
        tag = s.next_tag
        s.next_tag = tag + 1
        m.deliveries += 1
        q.delivered += 1
        c.delivered += 1
        self.delivered += 1
        if c.manual:
            d = Delivery(tag, m, q, c, c.ack_timeout)
            s.outstanding[tag] = d
            c.in_flight += 1
            q.unacked += 1
            if c.ack_timeout is not None:
                d.timer = self.clock.callLater(c.ack_timeout, self._ack_timed_out, s, d)
        else:
            q.acked += 1
            self.acked += 1
        s.target.push(c.sid, tag, m)

    def _take_ready(
        self, s: Session, q: Queue, count: int, manual: bool, timeout: float | None
    ) -> Pulled:
        """Take up to ``count`` live messages from the head of ``q`` for a PULL."""
        out: Pulled = []
        ready = q.ready
        now = self.clock.seconds()
        while ready and len(out) < count:
            m = ready.popleft()
            q.ready_bytes -= len(m.payload)
            if m.expires_at is not None and m.expires_at <= now:
                q.expired += 1
                self._dead_letter(q, m, "expired")
                continue
            tag = s.next_tag
            s.next_tag = tag + 1
            m.deliveries += 1
            q.delivered += 1
            self.delivered += 1
            if manual:
                d = Delivery(tag, m, q, None, timeout)
                s.outstanding[tag] = d
                q.unacked += 1
                if timeout is not None:
                    d.timer = self.clock.callLater(timeout, self._ack_timed_out, s, d)
            else:
                q.acked += 1
                self.acked += 1
            out.append((tag, m))
        return out

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

    def _serve_waiters(self, q: Queue) -> None:
        while q.waiters and q.ready:
            w = q.waiters.popleft()
            out = self._take_ready(w.session, q, w.max, w.manual, w.ack_timeout)
            if not out:  # all expired
                q.waiters.appendleft(w)
                return
            self._finish_wait(w, out)

    def _finish_wait(self, w: PullWaiter, out: Pulled) -> None:
        if w.timer is not None and w.timer.active():
            w.timer.cancel()
        if w in w.session.waiters:
            w.session.waiters.remove(w)
        w.on_done(out)

    def _wait_timed_out(self, w: PullWaiter) -> None:
        try:
            w.queue.waiters.remove(w)
        except ValueError:
            return
        self._finish_wait(w, [])

    # ---------------------------------------------------------------------- acks

    def ack(self, s: Session, tags: TagRanges) -> int:
        """ACK: the number handled.  Tags that name no outstanding delivery raise
        NotFound, after the others were handled."""
        found, missing = self._take(s, tags)
        touched: dict[Queue, None] = {}
        for d in found:
            self._release(d)
            q = d.queue
            q.acked += 1
            touched[q] = None
        self.acked += len(found)
        for q in touched:
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

    def _release(self, d: Delivery) -> None:
        """A delivery ends (acked, nacked, returned): free its consumer's room."""
        if d.timer is not None and d.timer.active():
            d.timer.cancel()
        d.queue.unacked -= 1
        c = d.consumer
        if c is not None:
            c.in_flight -= 1

    def _return(self, deliveries: list[Delivery]) -> None:
        """Put delivered messages back at the head of their queues, in tag order."""
        by_queue: dict[Queue, list[Message]] = {}
        for d in deliveries:
            self._release(d)
            if not d.queue.deleted:
                by_queue.setdefault(d.queue, []).append(d.message)
        for q, msgs in by_queue.items():
            self._requeue(q, msgs)
            self._dispatch(q)

    def _requeue(self, q: Queue, msgs: list[Message]) -> None:
        max_deliver = q.options.max_deliver
        for m in reversed(msgs):
            if max_deliver is not None and m.deliveries >= max_deliver:
                self._dead_letter(q, m, "delivery-limit")
                continue
            q.ready.appendleft(m)
            q.ready_bytes += len(m.payload)
            q.redelivered += 1
            if m.expires_at is not None:
                q.expiry_ordered = False
                self._schedule_expiry(q, m.expires_at)

    def _undelay(self, q: Queue, m: Message) -> None:
        for timer, dm in list(q.delayed.items()):
            if dm is m:
                del q.delayed[timer]
                break
        if not q.deleted:
            self._requeue(q, [m])
            self._dispatch(q)

    def _ack_timed_out(self, s: Session, d: Delivery) -> None:
        if s.outstanding.get(d.tag) is not d:
            return
        del s.outstanding[d.tag]
        d.timer = None
        self._return([d])

    # ------------------------------------------------------- expiry, dead letters

    def _schedule_expiry(self, q: Queue, when: float) -> None:
        t = q.expiry_timer
        if t is not None and t.active():
            if q.expiry_at <= when:
                return
            t.cancel()
        q.expiry_at = when
        delay = when - self.clock.seconds()
        q.expiry_timer = self.clock.callLater(delay if delay > 0 else 0, self._sweep, q)

    def _sweep(self, q: Queue) -> None:
        """Dead-letter the expired ready messages of ``q`` and re-arm its timer."""
        q.expiry_timer = None
        if q.deleted:
            return
        now = self.clock.seconds()
        ready = q.ready
        if q.expiry_ordered:
            while ready:
                e = ready[0].expires_at
                if e is None or e > now:
                    break
                self._expire(q, ready.popleft())
            if not ready:
                q.last_expiry = 0.0
                return
            head = ready[0].expires_at
            if head is not None:
                self._schedule_expiry(q, head)
                return
        keep = []
        next_at: float | None = None
        last = 0.0
        ordered = True
        for m in ready:
            e = m.expires_at
            if e is not None and e <= now:
                self._expire(q, m)
                continue
            keep.append(m)
            if e is not None:
                if e < last:
                    ordered = False
                last = e
                if next_at is None or e < next_at:
                    next_at = e
        ready.clear()
        ready.extend(keep)
        q.expiry_ordered = ordered
        q.last_expiry = last
        if next_at is not None:
            self._schedule_expiry(q, next_at)

    def _expire(self, q: Queue, m: Message) -> None:
        q.ready_bytes -= len(m.payload)
        q.expired += 1
        self._dead_letter(q, m, "expired")

    def _dead_letter(self, q: Queue, m: Message, reason: str) -> None:
        """Send ``m`` to ``q``'s dead-letter target with its reason, or drop it."""
        dl = q.options.dead_letter
        if dl is None or self._dl_depth >= MAX_DEAD_LETTER_DEPTH:
            return
        target = self._objects.get(dl)
        if target is None:
            return
        targets: Sequence[Queue]
        if isinstance(target, Queue):
            targets = (target,)
        else:
            targets = target.matcher.match(m.key)
        # A cycle of automatic dead-lettering (expiry, overflow) would carry a message
        # round for ever: a copy never goes back to a queue on its path.  A consumer's
        # decision (rejected, delivery-limit) starts a new path.
        if reason == "rejected" or reason == "delivery-limit":
            path: tuple[str, ...] = ()
        else:
            path = (*m.dl_path, q.name)
            targets = [t for t in targets if t.name not in path]
        q.dead_lettered += 1
        self._dl_depth += 1
        try:
            for t in targets:
                copy = Message(m.source, m.key, m.route, m.payload)
                copy.reason = reason
                copy.dl_path = path
                if t.options.ttl is not None:
                    copy.expires_at = self._expiry(t, None)
                self._enqueue(t, copy)
        finally:
            self._dl_depth -= 1

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
        if name is None:
            rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            queues = sum(1 for o in self._objects.values() if isinstance(o, Queue))
            pairs: list[tuple[str, object]] = [
                ("uptime", int(self.clock.seconds() - self.started)),
                ("connections", self.connections),
                ("connections_total", self.connections_total),
                ("exchanges", len(self._objects) - queues),
                ("queues", queues),
                ("published", self.published),
                ("delivered", self.delivered),
                ("acked", self.acked),
                ("memory_peak_rss", rss_kib * 1024),
            ]
        else:
            obj = self.get(name)
            if isinstance(obj, Queue):
                pairs = [
                    ("type", "queue"),
                    ("durable", int(obj.durable)),
                    ("messages", obj.messages),
                    ("bytes", obj.ready_bytes),
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


def _handled(found: list[Delivery], missing: str) -> int:
    if missing:
        raise errors.NotFound(missing)
    return len(found)


def _tag_of(d: Delivery) -> int:
    return d.tag
