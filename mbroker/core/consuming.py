"""Consuming: subscriptions, PULL, and the acknowledgement commands.

:class:`Consumption` handles SUBSCRIBE (to a queue, or to an exchange through a private
queue of its own), UNSUBSCRIBE, PULL (at once, or waiting up to ``wait`` ms) and ACK,
NACK and TOUCH of the session's outstanding deliveries.  Moving the messages themselves
is the :class:`~mbroker.core.dispatch.Dispatcher`'s job; this object decides who gets
them and what an acknowledgement does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mbroker import errors
from mbroker.config import DEFAULT_MANUAL_PREFETCH, Config
from mbroker.core.dispatch import Dispatcher
from mbroker.core.journal import Journal
from mbroker.core.model import Clock, Consumer, Delivery, Pulled, PullWaiter, Queue, Session
from mbroker.core.namespace import Namespace
from mbroker.wire.frames import QueueOptions, TagRanges


def _no_store(queue: str, msg_ids: list[int]) -> None:
    """Without a journal no message has a store id: nothing is ever removed."""
    raise AssertionError(f"stored messages {msg_ids} in {queue} without a journal")


class Consumption:
    """The consumers' commands."""

    def __init__(
        self,
        clock: Clock,
        config: Config,
        journal: Journal | None,
        namespace: Namespace,
        dispatcher: Dispatcher,
    ) -> None:
        self.clock = clock
        self.config = config
        self._namespace = namespace
        self._dispatcher = dispatcher
        self._forget_many = journal.removed_many if journal is not None else _no_store
        self._dispatch = dispatcher.dispatch
        self._count_acked = dispatcher.count_acked

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
        obj = self._namespace.get(name)
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
            q = self._namespace.private_queue(s, qname, options, obj, key)
            private = True
        s.next_sid = sid + 1
        timeout = ack_timeout / 1000.0 if ack_timeout is not None else None
        c = Consumer(s, sid, q, manual, prefetch, timeout, private=private)
        q.consumers.append(c)
        s.consumers[sid] = c
        return c

    def activate(self, c: Consumer) -> None:
        if c.session.consumers.get(c.sid) is c:
            c.active = True
            self._dispatcher.dispatch(c.queue)

    def unsubscribe(self, s: Session, sid: int) -> None:
        c = s.consumers.pop(sid, None)
        if c is None:
            raise errors.NotFound(f"no subscription {sid}")
        self.drop_consumer(c)
        mine = [d for d in s.outstanding.values() if d.consumer is c]
        for d in mine:
            del s.outstanding[d.tag]
        self._dispatcher.return_deliveries(mine)

    def drop_consumer(self, c: Consumer) -> None:
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
            self._namespace.delete_queue(q)
        elif q.options.auto_delete or q.idle_timer is not None:
            self._namespace.consumer_gone(q)

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
        q = self._namespace.queue(name)
        if q.idle_timer is not None:
            self._namespace.used(q)
        timeout = ack_timeout / 1000.0 if ack_timeout is not None else None
        out = self._dispatcher.take_ready(s, q, max, manual, timeout)
        if out or not wait or on_done is None:
            return out
        if q.idle_timer is not None:
            on_done = self._waited(q, on_done)
        w = PullWaiter(s, q, max, manual, timeout, on_done)
        w.timer = self.clock.callLater(wait / 1000.0, self._dispatcher.wait_timed_out, w)
        q.waiters.append(w)
        s.waiters.append(w)
        return None

    def _waited(self, q: Queue, on_done: Callable[[Pulled], None]) -> Callable[[Pulled], None]:
        """``on_done`` for a waiting PULL on a queue with ``expires``: the idle time
        starts again when the wait ends."""

        def done(out: Pulled) -> None:
            if q.idle_timer is not None:
                self._namespace.used(q)
            on_done(out)

        return done

    # ---------------------------------------------------------------------- acks

    def ack(self, s: Session, tags: TagRanges) -> int:
        """ACK: the number handled.  Tags that name no outstanding delivery raise
        NotFound, after the others were handled."""
        found, missing = self._take(s, tags)
        touched: dict[Queue, list[int]] = {}  # queue -> store ids of what left it
        last: Queue | None = None
        ids: list[int] = []
        for d in found:  # (what Dispatcher.release does, inlined: once per acknowledged message)
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
        self._count_acked(len(found))
        for q, ids in touched.items():
            if ids:
                self._forget_many(q.name, ids)
            self._dispatch(q)
        return _handled(found, missing)

    def nack(
        self, s: Session, tags: TagRanges, requeue: bool = True, delay: int | None = None
    ) -> int:
        found, missing = self._take(s, tags)
        if requeue and delay:
            for d in found:
                self._dispatcher.requeue_later(d, delay / 1000.0)
        elif requeue:
            # in delivery order, however the tags were listed
            self._dispatcher.return_deliveries(sorted(found, key=tag_order))
        else:
            for d in found:
                self._dispatcher.release(d)
                self._dispatcher.dead_letter(d.queue, d.message, "rejected")
                self._dispatcher.dispatch(d.queue)
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


def _handled(found: list[Delivery], missing: str) -> int:
    if missing:
        raise errors.NotFound(missing)
    return len(found)


def tag_order(d: Delivery) -> int:
    """Sort key: deliveries in the order they were made."""
    return d.tag
