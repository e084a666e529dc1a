"""The namespace: the exchanges and queues by name, and the commands that change them.

:class:`Namespace` creates and deletes exchanges and queues (they share one namespace),
binds and unbinds them, purges queues, makes a subscription's private queue and
rebuilds the durable declarations a store recovered.  A declaration that must survive
a restart becomes a record in the :class:`~mbroker.core.journal.Journal`.

Deleting a queue ends everything that hangs on it: its subscriptions are cancelled
(``CANCEL sid deleted``), its waiting PULLs answered with nothing, its ready and
delayed messages dropped; deliveries still out become void (their tags ack nothing).

It also keeps the queues' lifetimes (section 7): ``auto-delete`` (see
:meth:`Namespace.consumer_gone`) and ``expires``: one idle timer per queue that has
it, rescheduled lazily (a use only writes ``Queue.last_used``; the timer checks it
when it fires).  A queue without these options has no timer and pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from mbroker import errors
from mbroker.core import records as rec
from mbroker.core.journal import Journal
from mbroker.core.model import Clock, Exchange, Obj, Queue, Session
from mbroker.core.routing import make_matcher
from mbroker.core.timers import Timers
from mbroker.wire.frames import QueueOptions


class Namespace:
    """The broker's objects by name (read them with :meth:`get` or :meth:`find`)."""

    def __init__(
        self, journal: Journal | None, clock: Clock | None = None, timers: Timers | None = None
    ) -> None:
        self.journal = journal
        self.clock = clock
        #: where delayed messages wait (a deleted queue's entries are cancelled there)
        self.timers = timers
        self._objects: dict[str, Obj] = {}
        #: the object under a name, or None (a bound ``dict.get``: it is on hot paths)
        self.find = self._objects.get
        #: how many of the objects are exchanges (kept on CREATE and DELETE, so that
        #: STATS counts queues and exchanges without walking them)
        self.exchanges = 0
        #: set by a cluster node: whether it judges a queue's lifetime across nodes
        #: (then the core deletes nothing and tells ``consumer_left`` instead)
        self.shares_lifetime: Callable[[Queue], bool] | None = None
        self.consumer_left: Callable[[Queue], None] = lambda q: None

    def __len__(self) -> int:
        return len(self._objects)

    @property
    def queues(self) -> int:
        """How many queues there are (private subscription queues included)."""
        return len(self._objects) - self.exchanges

    def objects(self) -> list[Obj]:
        """Every exchange and queue, in creation order."""
        return list(self._objects.values())

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

    # ------------------------------------------------------------ create, delete

    def create(self, s: Session | None, name: str, kind: str, options: QueueOptions) -> bool:
        """CREATE: True when made, False when it existed alike; raises Exists."""
        existing = self._objects.get(name)
        if existing is not None:
            if isinstance(existing, Queue):
                same = kind == "queue" and existing.options == options
            else:
                same = (
                    kind == existing.kind
                    and options.durable == existing.durable
                    and options.dedup_window == existing.dedup_window
                )
            if same:
                if isinstance(existing, Queue) and existing.idle_timer is not None:
                    self.used(existing)  # a CREATE naming it is a use
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
            if options.expires is not None:
                self._arm_idle(q)
        else:
            self._objects[name] = Exchange(
                name, kind, make_matcher(kind), options.durable, dedup_window=options.dedup_window
            )
            self.exchanges += 1
        if options.durable and self.journal is not None:
            if kind == "queue":
                self.journal.add(rec.QueueDeclared(name, options))
            else:
                self.journal.add(rec.ExchangeDeclared(name, kind, options.dedup_window))
        return True

    def private_queue(
        self, s: Session, name: str, options: QueueOptions, ex: Exchange, key: str
    ) -> Queue:
        """A subscription's own queue, bound to ``ex`` with ``key``: exclusive to
        ``s``, deleted with the subscription."""
        q = Queue(name, options, owner=s, private=True)
        bindable(q, ex, key)
        self._objects[name] = q
        s.exclusive.append(q)
        ex.matcher.add(key, q)
        q.bound_to[ex.name] = ex
        return q

    def delete(self, name: str, if_empty: bool = False, if_unused: bool = False) -> int:
        """DELETE: returns the number of messages dropped (ready and unacked)."""
        obj = self.get(name)
        if isinstance(obj, Queue):
            held = obj.messages + obj.unacked + obj.scheduled
            if if_empty and held:
                raise errors.NotEmpty(f"{name} holds {held} messages")
            if if_unused and obj.consumers:
                raise errors.InUse(f"{name} has {len(obj.consumers)} consumers")
            return self.delete_queue(obj)
        if if_unused and len(obj.matcher):
            raise errors.InUse(f"{name} has {len(obj.matcher)} bindings")
        self._delete_exchange(obj)
        return 0

    def delete_queue(self, q: Queue) -> int:
        """Delete ``q`` and end what hangs on it: how many messages it dropped."""
        q.deleted = True
        if self._objects.get(q.name) is q:
            del self._objects[q.name]
        if q.options.durable and self.journal is not None:
            self.journal.add(rec.QueueDeleted(q.name))
        dropped = self._drop_ready(q) + q.unacked + q.scheduled
        if self.timers is not None:
            self.timers.cancel(q, q.scheduled)  # (its NACK delays: _drop_ready)
        if q.expiry_timer is not None and q.expiry_timer.active():
            q.expiry_timer.cancel()
        if q.idle_timer is not None:
            if q.idle_timer.active():
                q.idle_timer.cancel()
            q.idle_timer = None
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
            q.waiters.popleft().finish([])
        if q.owner is not None and q in q.owner.exclusive:
            q.owner.exclusive.remove(q)
        # deliveries still out are now void: their tags ack nothing (see Consumption)
        return dropped

    def _delete_exchange(self, ex: Exchange) -> None:
        ex.deleted = True
        del self._objects[ex.name]
        self.exchanges -= 1
        if ex.durable and self.journal is not None:
            self.journal.add(rec.ExchangeDeleted(ex.name))
        for q in list({q: None for _, q in ex.matcher.bindings()}):
            ex.matcher.remove_target(q)
            q.bound_to.pop(ex.name, None)
            if q.private and not q.deleted:
                # a subscription to this exchange can never receive again: end it
                self.delete_queue(q)

    # ------------------------------------------------------------------ lifetime

    def used(self, q: Queue) -> None:
        """A use of ``q``, which has ``expires``: its idle time starts again now."""
        assert self.clock is not None
        q.last_used = self.clock.seconds()

    def consumer_gone(self, q: Queue) -> None:
        """A SUBSCRIBE consumer left ``q``: an ``auto-delete`` queue left with none is
        deleted; an ``expires`` queue's idle time starts now."""
        if q.deleted:
            return
        shares = self.shares_lifetime
        if shares is not None and shares(q):
            if q.idle_timer is not None:
                self.used(q)
            self.consumer_left(q)
        elif q.options.auto_delete and not q.consumers:
            self.delete_queue(q)
        elif q.idle_timer is not None:
            self.used(q)

    def _arm_idle(self, q: Queue) -> None:
        assert self.clock is not None and q.options.expires is not None
        q.last_used = self.clock.seconds()
        q.idle_timer = self.clock.callLater(q.options.expires / 1000.0, self._idle_check, q)

    def _idle_check(self, q: Queue) -> None:
        """``q``'s idle timer fired: delete it if unused for ``expires``, else wait on."""
        assert self.clock is not None and q.options.expires is not None
        if q.deleted:
            return
        period = q.options.expires / 1000.0
        now = self.clock.seconds()
        if q.consumers or q.waiters:
            # in use now; when the last one goes it writes last_used
            q.last_used = now
            delay = period
        elif self.shares_lifetime is not None and self.shares_lifetime(q):
            delay = period  # (judged across nodes: mbroker.cluster.lifetime)
        else:
            delay = q.last_used + period - now
            if delay <= 1e-9:
                q.idle_timer = None
                self.delete_queue(q)
                return
        q.idle_timer = self.clock.callLater(delay, self._idle_check, q)

    # ------------------------------------------------------------------ bindings

    def bind(self, queue: str, exchange: str, key: str = "") -> bool:
        q, ex = bindable(self.get(queue), self.get(exchange), key)
        if ex.matcher.add(key, q):
            q.bound_to[ex.name] = ex
            if q.options.durable and ex.durable and self.journal is not None:
                self.journal.add(rec.Bound(queue, exchange, key))
            return True
        return False

    def unbind(self, queue: str, exchange: str, key: str = "") -> None:
        q, ex = bindable(self.get(queue), self.get(exchange), key)
        if not ex.matcher.remove(key, q):
            raise errors.NotFound(f"{queue} is not bound to {exchange} with {key or '(empty key)'}")
        if not ex.matcher.count_for(q):
            q.bound_to.pop(ex.name, None)
        if q.options.durable and ex.durable and self.journal is not None:
            self.journal.add(rec.Unbound(queue, exchange, key))

    # --------------------------------------------------------------------- purge

    def purge(self, name: str) -> int:
        q = self.queue(name)
        if q.options.durable and self.journal is not None:
            ids = [m.msg_id for m in (*q.ready, *q.delayed) if m.msg_id]
            if ids:
                self.journal.removed_many(q.name, ids)
        n = self._drop_ready(q)
        q.expiry_ordered = True
        q.last_expiry = 0.0
        return n

    def _drop_ready(self, q: Queue) -> int:
        """Forget the queue's ready messages and those a NACK delayed (their timer
        entries too): how many.  Those published with a delay are not touched."""
        n = len(q.ready) + len(q.delayed)
        q.ready.clear()
        q.ready_bytes = 0
        if self.timers is not None:
            for m in q.delayed:
                self.timers.cancel(m)
        q.delayed.clear()
        return n

    # ------------------------------------------------------------------- restore

    def restore(self, recovered: rec.Recovered) -> None:
        """Rebuild the durable exchanges, queues and bindings a store recovered
        (their messages are the dispatcher's: see ``Dispatcher.restore``)."""
        for name, kind in recovered.exchanges.items():
            window = recovered.dedup_windows.get(name)
            self._objects[name] = Exchange(
                name, kind, make_matcher(kind), True, dedup_window=window
            )
            self.exchanges += 1
        for name, options in recovered.queues.items():
            queue = Queue(name, options)
            self._objects[name] = queue
            if options.expires is not None:
                self._arm_idle(queue)  # its idle time starts again now
        for qname, exchange, key in recovered.bindings:
            q, ex = self._objects.get(qname), self._objects.get(exchange)
            if isinstance(q, Queue) and isinstance(ex, Exchange):
                ex.matcher.add(key, q)
                q.bound_to[exchange] = ex


def bindable(q: Obj, ex: Obj, key: str) -> tuple[Queue, Exchange]:
    """``(q, ex)`` when a binding of queue ``q`` to exchange ``ex`` with ``key`` makes
    sense (BIND, UNBIND, a SUBSCRIBE to an exchange); raises what is wrong."""
    if not isinstance(q, Queue):
        raise errors.WrongKind(f"{q.name} is not a queue")
    if not isinstance(ex, Exchange):
        raise errors.WrongKind(f"{ex.name} is not an exchange")
    if ex.kind == "direct" and ("*" in key or "#" in key):
        raise errors.BadArgs("a direct exchange binds keys, not patterns")
    return q, ex
