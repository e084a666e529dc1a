"""The namespace: the exchanges and queues by name, and the commands that change them.

:class:`Namespace` creates and deletes exchanges and queues (they share one namespace),
binds and unbinds them, purges queues, makes a subscription's private queue and
rebuilds the durable declarations a store recovered.  A declaration that must survive
a restart becomes a record in the :class:`~mbroker.core.journal.Journal`.

Deleting a queue ends everything that hangs on it: its subscriptions are cancelled
(``CANCEL sid deleted``), its waiting PULLs answered with nothing, its ready and
delayed messages dropped; deliveries still out become void (their tags ack nothing).
"""

from __future__ import annotations

from mbroker import errors
from mbroker.core import records as rec
from mbroker.core.journal import Journal
from mbroker.core.model import Exchange, Obj, Queue, Session
from mbroker.core.routing import make_matcher
from mbroker.wire.frames import QueueOptions


class Namespace:
    """The broker's objects by name (read them with :meth:`get` or :meth:`find`)."""

    def __init__(self, journal: Journal | None) -> None:
        self.journal = journal
        self._objects: dict[str, Obj] = {}
        #: the object under a name, or None (a bound ``dict.get``: it is on hot paths)
        self.find = self._objects.get

    def __len__(self) -> int:
        return len(self._objects)

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
            if if_empty and (obj.messages or obj.unacked):
                raise errors.NotEmpty(f"{name} holds {obj.messages + obj.unacked} messages")
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
        dropped = _drop_ready(q) + q.unacked
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
            q.waiters.popleft().finish([])
        if q.owner is not None and q in q.owner.exclusive:
            q.owner.exclusive.remove(q)
        # deliveries still out are now void: their tags ack nothing (see Consumption)
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
                self.delete_queue(q)

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
            ids = [m.msg_id for m in (*q.ready, *q.delayed.values()) if m.msg_id]
            if ids:
                self.journal.removed_many(q.name, ids)
        n = _drop_ready(q)
        q.expiry_ordered = True
        q.last_expiry = 0.0
        return n

    # ------------------------------------------------------------------- restore

    def restore(self, recovered: rec.Recovered) -> None:
        """Rebuild the durable exchanges, queues and bindings a store recovered
        (their messages are the dispatcher's: see ``Dispatcher.restore``)."""
        for name, kind in recovered.exchanges.items():
            self._objects[name] = Exchange(name, kind, make_matcher(kind), True)
        for name, options in recovered.queues.items():
            self._objects[name] = Queue(name, options)
        for queue, exchange, key in recovered.bindings:
            q, ex = self._objects.get(queue), self._objects.get(exchange)
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


def _drop_ready(q: Queue) -> int:
    """Forget the queue's ready and delayed messages (their timers too): how many."""
    n = len(q.ready) + len(q.delayed)
    q.ready.clear()
    q.ready_bytes = 0
    for timer in q.delayed:
        if timer.active():
            timer.cancel()
    q.delayed.clear()
    return n
