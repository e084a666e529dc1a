"""The queue machinery: enqueue, dispatch, delivery, redelivery, expiry, dead letters.

:class:`Dispatcher` moves messages once they are in a queue: it hands ready messages
to pull waiters and to consumers (round-robin, within their prefetch), keeps the
delivery counters, puts returned messages back, and sweeps expired ones to their
dead-letter target.  The hot path (:meth:`Dispatcher.enqueue` -> ``_dispatch_one`` or
``_deliver``) stays a chain of plain method calls with no indirection.

Durability hooks: a message copy in a durable queue carries its store id
(``QueuedMessage.msg_id``); whenever such a copy leaves its queue for good (acked,
auto-acked on delivery, dropped, expired, dead-lettered) the dispatcher tells the
:class:`~mbroker.core.journal.Journal`.  A dead-lettered copy that lands in a durable
queue is stored again under a new id.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from mbroker.config import Config
from mbroker.core.journal import Journal
from mbroker.core.model import (
    Clock,
    Consumer,
    Delivery,
    Obj,
    PriorityReady,
    Pulled,
    PullWaiter,
    Queue,
    QueuedMessage,
    Session,
)
from mbroker.core.records import MessageStored
from mbroker.core.timers import Timers
from mbroker.wire.frames import Props

#: how deep a cascade of dead-lettering (a drop that dead-letters into a full queue
#: that drops and dead-letters …) may go before messages are simply dropped
MAX_DEAD_LETTER_DEPTH = 4

#: ``sink(targets, message, reason, path, depth)``: where dead letters go instead of
#: the local queues, when set (a cluster node: to the queues' streams in Redis), with
#: the copies' :attr:`~mbroker.core.model.QueuedMessage.dl_path` and the depth of the
#: cascade that dead-letters them (0: none)
DeadLetterSink = Callable[[Sequence[Queue], QueuedMessage, str, tuple[str, ...], int], None]


def _no_store(queue: str, msg_id: int) -> None:
    """Without a journal no message has a store id: nothing is ever removed."""
    raise AssertionError(f"a stored message ({msg_id}) in {queue} without a journal")


class Dispatcher:
    """Moves what is in the queues: the consumers' and waiters' side of the broker.

    ``find`` looks a name up in the namespace (for dead-letter targets)."""

    def __init__(
        self,
        clock: Clock,
        config: Config,
        journal: Journal | None,
        find: Callable[[str], Obj | None],
        timers: Timers | None = None,
    ) -> None:
        self.clock = clock
        #: the one timer structure for delayed messages and NACK delays
        self.timers = timers if timers is not None else Timers(clock)
        self.config = config
        self.journal = journal
        self._find = find
        self._forget = journal.removed if journal is not None else _no_store
        self._dl_depth = 0
        #: see :data:`DeadLetterSink` (None: dead letters go to the local queues)
        self.dead_letter_sink: DeadLetterSink | None = None
        #: the server's delivery counters (see :meth:`count_delivered`)
        self.delivered = 0
        self.acked = 0

    def count_delivered(self, q: Queue, c: Consumer | None, n: int, auto: bool) -> None:
        """The one place the delivery counters move (the two per-message paths,
        ``_dispatch_one`` and ``_deliver``, inline it: a call there costs 4-5% of
        publish-to-deliver):
        ``n`` messages of ``q`` went out to ``c`` (None: a PULL); with ``auto`` they
        count as acknowledged at once."""
        q.delivered += n
        self.delivered += n
        if c is not None:
            c.delivered += n
        if auto:
            q.acked += n
            self.acked += n

    def count_acked(self, n: int) -> None:
        """``n`` manual deliveries were acknowledged (their queues counted them)."""
        self.acked += n

    def expiry(self, q: Queue, ttl: int | None) -> float | None:
        """When a message with ``ttl`` (ms) put in ``q`` now dies: the shorter of its
        own ttl and the queue's; None when neither has one."""
        qttl = q.options.ttl
        if ttl is None:
            if qttl is None:
                return None
            ms = qttl
        else:
            ms = ttl if qttl is None else min(ttl, qttl)
        return self.clock.seconds() + ms / 1000.0

    def enqueue(self, q: Queue, m: QueuedMessage) -> bool:
        """Put ``m`` at the tail of ``q`` and dispatch; False if refused (reject)."""
        o = q.options
        limited = o.max_length is not None or o.max_bytes is not None
        if limited and o.overflow == "reject" and refuses(q, len(m.payload)):
            q.rejected += 1
            return False
        q.published += 1
        q.ready.append(m)
        q.ready_bytes += len(m.payload)
        if m.expires_at is not None:
            if m.expires_at < q.last_expiry:
                q.expiry_ordered = False
            q.last_expiry = m.expires_at
            self.schedule_expiry(q, m.expires_at)
        self.dispatch(q)
        if limited:
            self.enforce_limits(q)
        return True

    def admit(self, q: Queue, m: QueuedMessage, at_once: bool) -> bool:
        """:meth:`enqueue` (or with ``at_once``, ttl=0, :meth:`enqueue_now`) a message
        that may have properties: its priority turns the queue's ``ready`` into a
        :class:`~mbroker.core.model.PriorityReady` first if it needs one."""
        props = m.props
        if props is not None and props.priority and type(q.ready) is deque:
            q.ready = PriorityReady(q.ready)
        return self.enqueue_now(q, m) if at_once else self.enqueue(q, m)

    def enqueue_now(self, q: Queue, m: QueuedMessage) -> bool:
        """ttl=0: ``m`` goes to a consumer or waiter that takes it at once (behind what is
        ready before it), or expires at once; it never waits in ``q``.  False if
        refused (reject), as :meth:`enqueue`."""
        o = q.options
        if (
            (o.max_length is not None or o.max_bytes is not None)
            and o.overflow == "reject"
            and refuses(q, len(m.payload))
        ):
            q.rejected += 1
            return False
        q.published += 1
        expires = m.expires_at
        # (alive for this one dispatch only: it must not be found dead on the way out)
        m.expires_at = None
        ready = q.ready
        ready.append(m)
        q.ready_bytes += len(m.payload)
        self.dispatch(q)
        m.expires_at = expires  # a delivered copy that comes back has outlived its ttl
        if not m.deliveries:
            if ready and ready[-1] is m:
                ready.pop()
            else:
                ready.remove(m)
            self._expire(q, m)
        return True

    def dispatch_now(self, q: Queue, now: Sequence[QueuedMessage]) -> None:
        """Dispatch ``q``, where the ready messages ``now`` (ttl=0) go to a consumer or
        waiter that takes them in this dispatch, or expire at once: they never wait (as
        :meth:`enqueue_now`'s one message, for messages fed to ``q`` in a batch)."""
        held = [(m, m.expires_at, m.deliveries) for m in now]
        for m in now:
            m.expires_at = None  # (alive for this one dispatch only, as in enqueue_now)
        self.dispatch(q)
        left = []
        for m, expires, deliveries in held:
            m.expires_at = expires  # a delivered copy that comes back has outlived its ttl
            if m.deliveries == deliveries:
                left.append(m)
        ready = q.ready
        for m in reversed(left):
            if ready and ready[-1] is m:
                ready.pop()
            else:
                ready.remove(m)
        for m in left:
            self._expire(q, m)

    def enforce_limits(self, q: Queue) -> None:
        o = q.options
        max_len = o.max_length
        max_bytes = o.max_bytes
        ready = q.ready
        # drop-head: the oldest message of the lowest priority present
        drop = ready.pop_lowest if isinstance(ready, PriorityReady) else ready.popleft
        dropped = 0
        while ready and (
            (max_len is not None and len(ready) > max_len)
            or (max_bytes is not None and q.ready_bytes > max_bytes)
        ):
            m = drop()
            q.ready_bytes -= len(m.payload)
            q.dropped += 1
            dropped += 1
            self.dead_letter(q, m, "maxlen")
        if dropped and q.private and self.config.slow_consumer_disconnect:
            for c in list(q.consumers):
                if not c.session.closed:
                    c.session.target.slow(c.sid)

    def dispatch(self, q: Queue) -> None:
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
        if n == 1:
            self._dispatch_one(q, consumers[0])
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
                    self.dead_letter(q, m, "expired")
                    continue
            self._deliver(q, c, m)

    def _dispatch_one(self, q: Queue, c: Consumer) -> None:
        """The common case of a queue with one consumer: every ready message it has
        room for goes out in one push (pipelined publishes arrive as runs)."""
        s = c.session
        if not (c.active and s.writable):
            return
        ready = q.ready
        manual = c.manual
        # (with ack=auto nothing stays in flight: a prefetch never binds)
        room = c.prefetch - c.in_flight if manual and c.prefetch else len(ready)
        if room <= 0:
            return
        out: list[QueuedMessage] = []
        size = 0
        now: float | None = None
        while ready and len(out) < room:
            m = ready.popleft()
            if m.expires_at is not None:
                if now is None:
                    now = self.clock.seconds()
                if m.expires_at <= now:
                    q.expired += 1
                    q.ready_bytes -= len(m.payload)
                    self.dead_letter(q, m, "expired")
                    continue
            size += len(m.payload)
            m.deliveries += 1
            out.append(m)
        q.ready_bytes -= size
        k = len(out)
        if not k:
            return
        first = tag = s.next_tag
        s.next_tag = tag + k
        # (count_delivered, inlined: with one message per read this runs once per
        # message)
        q.delivered += k
        c.delivered += k
        self.delivered += k
        if manual:
            outstanding = s.outstanding
            timeout = c.ack_timeout
            for m in out:
                d = outstanding[tag] = Delivery(tag, m, q, c, timeout)
                if timeout is not None:
                    d.timer = self.clock.callLater(timeout, self._ack_timed_out, s, d)
                tag += 1
            c.in_flight += k
            q.unacked += k
        else:
            q.acked += k
            self.acked += k
            journal = self.journal
            if journal is not None and (q.options.durable or out[0].msg_id):
                ids = [m.msg_id for m in out if m.msg_id]
                if ids:
                    journal.removed_many(q.name, ids)
        s.target.push_many(c.sid, first, out)

    def _deliver(self, q: Queue, c: Consumer, m: QueuedMessage) -> None:
        s = c.session
        tag = s.next_tag
        s.next_tag = tag + 1
        m.deliveries += 1
        # (count_delivered, inlined: this runs once per message)
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
            if m.msg_id:
                self._forget(q.name, m.msg_id)
        s.target.push(c.sid, tag, m)

    def take_ready(
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
                self.dead_letter(q, m, "expired")
                continue
            tag = s.next_tag
            s.next_tag = tag + 1
            m.deliveries += 1
            if manual:
                d = Delivery(tag, m, q, None, timeout)
                s.outstanding[tag] = d
                q.unacked += 1
                if timeout is not None:
                    d.timer = self.clock.callLater(timeout, self._ack_timed_out, s, d)
            elif m.msg_id:
                self._forget(q.name, m.msg_id)
            out.append((tag, m))
        if out:
            self.count_delivered(q, None, len(out), not manual)
        return out

    def _serve_waiters(self, q: Queue) -> None:
        while q.waiters and q.ready:
            w = q.waiters.popleft()
            out = self.take_ready(w.session, q, w.max, w.manual, w.ack_timeout)
            if not out:  # all expired
                q.waiters.appendleft(w)
                return
            w.finish(out)

    def wait_timed_out(self, w: PullWaiter) -> None:
        try:
            w.queue.waiters.remove(w)
        except ValueError:
            return
        w.finish([])

    def release(self, d: Delivery) -> None:
        """A delivery ends (acked, nacked, returned): free its consumer's room."""
        if d.timer is not None and d.timer.active():
            d.timer.cancel()
        d.queue.unacked -= 1
        c = d.consumer
        if c is not None:
            c.in_flight -= 1

    def return_deliveries(self, deliveries: list[Delivery]) -> None:
        """Put delivered messages back at the head of their queues, in tag order."""
        by_queue: dict[Queue, list[QueuedMessage]] = {}
        for d in deliveries:
            self.release(d)
            if not d.queue.deleted:
                by_queue.setdefault(d.queue, []).append(d.message)
        for q, msgs in by_queue.items():
            self._requeue(q, msgs)
            self.dispatch(q)

    def _requeue(self, q: Queue, msgs: list[QueuedMessage]) -> None:
        max_deliver = q.options.max_deliver
        for m in reversed(msgs):
            if max_deliver is not None and m.deliveries >= max_deliver:
                self.dead_letter(q, m, "delivery-limit")
                continue
            q.ready.appendleft(m)
            q.ready_bytes += len(m.payload)
            q.redelivered += 1
            if m.expires_at is not None:
                q.expiry_ordered = False
                self.schedule_expiry(q, m.expires_at)

    def requeue_later(self, d: Delivery, seconds: float) -> None:
        """NACK with a delay: ``d``'s message waits ``seconds`` aside (an entry of the
        one timer structure), then goes back to the head of its priority."""
        self.release(d)
        q = d.queue
        m = d.message
        q.delayed[m] = None
        self.timers.later(round(seconds * 1000), self._undelay, q, m)
        self.dispatch(q)

    def _undelay(self, q: Queue, m: QueuedMessage) -> None:
        if q.deleted or m not in q.delayed:
            return  # purged or deleted meanwhile
        del q.delayed[m]
        self._requeue(q, [m])
        self.dispatch(q)

    def _ack_timed_out(self, s: Session, d: Delivery) -> None:
        if s.outstanding.get(d.tag) is not d:
            return
        del s.outstanding[d.tag]
        d.timer = None
        self.return_deliveries([d])

    def schedule_expiry(self, q: Queue, when: float) -> None:
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
        if q.expiry_ordered and type(ready) is deque:
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
                self.schedule_expiry(q, head)
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
            self.schedule_expiry(q, next_at)

    def _expire(self, q: Queue, m: QueuedMessage) -> None:
        q.ready_bytes -= len(m.payload)
        q.expired += 1
        self.dead_letter(q, m, "expired")

    def dead_letter(self, q: Queue, m: QueuedMessage, reason: str) -> None:
        """``m`` leaves ``q`` for good: send it to ``q``'s dead-letter target with its
        reason, or drop it."""
        if m.msg_id:
            self._forget(q.name, m.msg_id)
        dl = q.options.dead_letter
        if dl is None or self._dl_depth >= MAX_DEAD_LETTER_DEPTH:
            return
        target = self._find(dl)
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
        if self.dead_letter_sink is not None:
            self.dead_letter_sink(targets, m, reason, path, self._dl_depth)
            return
        copies = []
        for t in targets:
            copy = QueuedMessage(m.source, m.key, m.route, m.payload, None, 0, m.props)
            copy.reason = reason
            copy.dl_path = path
            if t.options.ttl is not None:
                copy.expires_at = self.expiry(t, None)
            copies.append((t, copy))
        if self.journal is not None:
            # The reason is not kept across a restart (the record has no field for it).
            self.store(copies, m.source, m.key, m.payload, None, m.props)
        self._dl_depth += 1
        try:
            for t, copy in copies:
                self.admit(t, copy, t.options.ttl == 0)
        finally:
            self._dl_depth -= 1

    def store(
        self,
        copies: list[tuple[Queue, QueuedMessage]],
        source: str,
        key: str,
        payload: bytes,
        expires: float | None,
        props: Props | None = None,
        delayed: bool = False,
    ) -> None:
        """Give the copies bound for durable queues (and not refused) one store id and
        record them, *before* they are enqueued: ids then grow in log order, and a
        removal (an auto-ack on delivery) always follows its message in the log.
        ``delayed`` copies are never refused now (overflow applies when they are due)."""
        journal = self.journal
        assert journal is not None
        names = [
            q.name
            for q, m in copies
            if q.options.durable
            and (delayed or not (q.options.overflow == "reject" and refuses(q, len(payload))))
        ]
        if not names:
            return
        msg_id = journal.new_id()
        for q, m in copies:
            if q.name in names:
                m.msg_id = msg_id
        journal.add(MessageStored(msg_id, tuple(names), source, key, payload, expires, props))


def refuses(q: Queue, size: int) -> bool:
    """Whether ``q`` is too full for one more message of ``size`` bytes."""
    o = q.options
    return (o.max_length is not None and len(q.ready) >= o.max_length) or (
        o.max_bytes is not None and q.ready_bytes + size > o.max_bytes
    )
