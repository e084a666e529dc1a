"""A cluster node: the broker core over queues and a namespace kept in Redis Cluster.

:class:`ClusterBroker` is the core :class:`~mbroker.core.broker.Broker` with the
commands that touch shared state replaced (the server cannot tell the difference):

- CREATE, DELETE, BIND, UNBIND apply to the local core (same checks, same errors as
  a single broker), then go to Redis (:class:`~mbroker.cluster.writer.ClusterWriter`);
  a record in the journal makes the ``+OK`` wait until Redis has them;
- PUBLISH routes through the local mirror of the namespace and writes one stream
  entry per shared target queue (``XADD``, batched); ``+OK`` once Redis has it.  A
  publish to an exchange is also sent on its pub/sub channel for the subscriptions
  to it (:mod:`mbroker.cluster.pubsub`);
- SUBSCRIBE and PULL on a shared queue start its read loop
  (:class:`~mbroker.cluster.feeder.Feeder`);
- LIST shows a shared queue's figures as Redis has them (refreshed every second).

Exclusive queues and the private queues of subscriptions to exchanges stay on their
node (they die with their connection anyway).
:class:`~mbroker.cluster.startup.ClusterNode` builds and starts everything;
:mod:`mbroker.server.service` only chooses it with ``--cluster``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Callable

import attrs
from twisted.logger import Logger

from mbroker import errors
from mbroker.cluster import keys
from mbroker.cluster.delays import Mover, members
from mbroker.cluster.expiry import TTL_HINT, Removed
from mbroker.cluster.feeder import Feeder
from mbroker.cluster.lifetime import Lifetime
from mbroker.cluster.limits import ClusterJournal, Limits, queue_limits
from mbroker.cluster.nssync import LocalNamespace
from mbroker.cluster.once import Once
from mbroker.cluster.pubsub import PubSubThread
from mbroker.cluster.watch import Watch
from mbroker.cluster.writer import ClusterWriter
from mbroker.config import Config
from mbroker.core import records as rec
from mbroker.core.broker import Broker
from mbroker.core.model import (
    Clock,
    Consumer,
    Exchange,
    Published,
    PublishResult,
    Pulled,
    Queue,
    QueuedMessage,
    Session,
)
from mbroker.core.snapshots import QueueReport, QueueTotals
from mbroker.wire.frames import ExchangeInfo, Props, QueueInfo, QueueOptions
from mbroker.wire.props import from_stored, stored_text

_log = Logger()

#: a PULL without ``wait`` on a shared queue with nothing here waits this long (ms)
#: for Redis to answer
PULL_FETCH_MS = 250


def shared(q: Queue) -> bool:
    """Whether ``q`` lives in Redis (every queue but exclusive and private ones)."""
    return not (q.private or q.options.exclusive)


class ClusterBroker(Broker):
    """The broker of a cluster node (see the module's text)."""

    def __init__(
        self,
        clock: Clock,
        config: Config,
        journal: ClusterJournal,
        writer: ClusterWriter,
        node: str,
    ) -> None:
        super().__init__(clock, config, journal)
        self.node = node
        #: how this node's pub/sub messages begin (``node LF key LF payload``)
        self._echo = node.encode() + b"\n"
        #: … or ``node SP properties LF key LF payload`` for a message with properties
        self._head = node.encode() + b" "
        self.writer = writer
        self.cluster_journal = journal
        #: the core's namespace commands, for what comes from Redis
        self.local = LocalNamespace(self.create, self.delete, self.bind, self.unbind)
        self._core_publish = self.publish
        self._core_publish_props = self.publish_props
        self._core_subscribe = self.subscribe
        self._core_activate = self.activate
        self._core_pull = self.pull
        self._core_purge = self.purge
        self._core_list = self.list_objects
        self._core_stats = self.stats
        self._core_queue_reports = self.queue_reports
        self._core_queue_totals = self.queue_totals
        self.feeder: Feeder | None = None
        self.mover: Mover | None = None
        self.watch: Watch | None = None
        self.lifetime: Lifetime | None = None
        self.pubsub: PubSubThread | None = None
        self.on_namespace: Callable[[], None] = lambda: None
        self.cluster_published = 0
        self.dedup_default = config.dedup_window
        self.divert_dead_letters(self._dead_letter)
        writer.limits = self.limits
        #: what Redis removed from shared queues: counted here, dead-lettered
        self.removed = Removed(self.find, self._dead_letter)
        writer.on_dropped = self.removed.dropped
        writer.on_refused = self.removed.refused
        self._ttl_hinted: set[str] = set()
        self.create = self._create
        self.delete = self._delete
        self.bind = self._bind
        self.unbind = self._unbind
        self.publish = self._publish_one
        self.publish_many = self._publish_many
        self.publish_props = self._publish_props
        self.subscribe = self._subscribe
        self.activate = self._activate
        self.pull = self._pull
        self.purge = self._purge
        self.list_objects = self._list_objects
        self.stats = self._stats
        self.queue_reports = self._queue_reports
        self.queue_totals = self._queue_totals

    @property
    def published(self) -> int:
        return self.cluster_published

    def shared_queues(self) -> list[str]:
        return [q.name for q in self.queue_objects() if shared(q)]

    def queue_objects(self) -> list[Queue]:
        out = []
        for row in self._core_list():
            obj = self.find(row.name)
            if isinstance(obj, Queue):
                out.append(obj)
        return out

    # ------------------------------------------------------------- namespace

    def _create(self, s: Session | None, name: str, kind: str, options: QueueOptions) -> bool:
        made = self.local.create(s, name, kind, options)
        if made:
            if kind == "queue":
                if not options.exclusive:
                    if self.lifetime is not None:
                        self.lifetime.fresh(name)
                    self.writer.declare_queue(name, options)
                    self.cluster_journal.add(rec.QueueDeclared(name, options))
            else:
                self.writer.declare_exchange(name, kind, options.durable, options.dedup_window)
                self.cluster_journal.add(rec.ExchangeDeclared(name, kind))
        return made

    def _delete(self, name: str, if_empty: bool = False, if_unused: bool = False) -> int:
        obj = self.get(name)
        counts = self.watch.counts.get(name) if self.watch is not None else None
        # (a shared queue's messages as Redis has them: its stream and delayed copies)
        held = counts[0] + counts[2] if counts else 0
        if isinstance(obj, Queue) and shared(obj) and if_empty and held:
            raise errors.NotEmpty(f"{name} holds {held} messages")
        n = self.local.delete(name, if_empty, if_unused)
        if isinstance(obj, Exchange):
            self.writer.delete_exchange(name)
            self.cluster_journal.add(rec.ExchangeDeleted(name))
        elif shared(obj):
            self.writer.delete_queue(name)
            self.cluster_journal.add(rec.QueueDeleted(name))
            n = max(n, held)
        return n

    def _bind(self, queue: str, exchange: str, key: str = "") -> bool:
        changed = self.local.bind(queue, exchange, key)
        q = self.find(queue)
        if isinstance(q, Queue) and shared(q):
            if changed:
                self.writer.bind(queue, exchange, key, True)
                self.cluster_journal.add(rec.Bound(queue, exchange, key))
        elif self.pubsub is not None:
            self.pubsub.listen(keys.channel(exchange))
        return changed

    def _unbind(self, queue: str, exchange: str, key: str = "") -> None:
        self.local.unbind(queue, exchange, key)
        q = self.find(queue)
        if isinstance(q, Queue) and shared(q):
            self.writer.bind(queue, exchange, key, False)
            self.cluster_journal.add(rec.Unbound(queue, exchange, key))

    # ------------------------------------------------------------ publishing

    def _publish(
        self,
        name: str,
        key: str,
        payload: bytes,
        ttl: int | None = None,
        props: Props | None = None,
    ) -> int:
        obj = self.find(name)
        if obj is None:
            raise errors.NotFound(name)
        journal = self.cluster_journal
        if isinstance(obj, Queue):
            if not shared(obj):
                if props is not None:
                    done = self._core_publish_props(name, key, payload, ttl, props)
                    return done[0] if isinstance(done, tuple) else done.reached
                return self._core_publish(name, key, payload, ttl)
            names: tuple[str, ...] = (name,)
            qs = [obj]
            reached = 1
            if obj.idle_timer is not None:  # (a use: mbroker.cluster.lifetime)
                obj.last_used = self.clock.seconds()
        else:
            targets = obj.matcher.match(key)
            qs = [q for q in targets if shared(q)]
            names = tuple([q.name for q in qs])
            reached = len(targets)
            obj.published += 1
            if reached:
                obj.routed += 1
            else:
                obj.unroutable += 1
            if len(names) < reached:  # subscriptions here get it at once
                for q in targets:
                    if not shared(q):
                        self.enqueue(q, name, key, payload, props)
            head = self._echo if props is None else self._head + stored_text(props) + b"\n"
            self.writer.spublish(keys.channel(name), head + b"%s\n%s" % (key.encode(), payload))
        if names:
            if not journal.available:
                raise errors.Unavailable("Redis cannot take writes; nothing was published")
            now = self.clock.seconds()
            expires = None if ttl is None else now + ttl / 1000.0
            if ttl is not None:
                self._hint_ttl(names)
            for q in qs:  # (a queue's ttl counts from the publish: its own expiry)
                qttl = q.options.ttl
                if qttl is not None and (ttl is None or qttl < ttl):  # (ttl=0 too)
                    names = tuple([n for n in names if n != q.name])
                    expiry = now + qttl / 1000.0
                    self._store((q.name,), name, key, payload, expiry, props, qttl == 0)
            if names:
                self._store(names, name, key, payload, expires, props, ttl == 0)
        self.cluster_published += 1
        return reached

    def _store(
        self,
        names: tuple[str, ...],
        source: str,
        key: str,
        payload: bytes,
        expires: float | None,
        props: Props | None,
        at_once: bool = False,
    ) -> None:
        """One entry in each queue of ``names``; Redis judges the copies for queues
        with limits (a verdict each, for the reply); ``at_once``: ttl=0 copies."""
        journal = self.cluster_journal
        msg_id = journal.new_id()
        if at_once:
            self.writer.at_once.add(msg_id)
        for q in names:
            if self.limits(q) is not None:
                self.writer.verdicts[(msg_id, q)] = journal.verdict()
        journal.add(rec.MessageStored(msg_id, names, source, key, payload, expires, props))
        for n in names:  # (STATS published: the copies this node routed there)
            target = self.find(n)
            if isinstance(target, Queue):
                target.published += 1

    def _hint_ttl(self, names: Sequence[str]) -> None:
        """Entries with their own ttl go to ``names``: the expiry sweep must look at
        them (said once per queue by each node)."""
        new = [n for n in names if n not in self._ttl_hinted]
        if new:
            self._ttl_hinted.update(new)
            self.writer.hint(TTL_HINT, new)

    def _publish_one(self, name: str, key: str, payload: bytes, ttl: int | None = None) -> int:
        """PUBLISH without properties: a command of its own (one reply line)."""
        self.cluster_journal.new_command()
        return self._publish(name, key, payload, ttl)

    def unawaited(self) -> None:
        """Nobody waits for the verdicts of the copies just published: forget them."""
        self.cluster_journal.new_command()

    def limits(self, name: str) -> Limits | None:
        return queue_limits(self.find(name))

    def _publish_many(
        self,
        name: str,
        key: str,
        payloads: list[bytes],
        ttl: int | None = None,
        stop_at_refusal: bool = False,
        props: Props | None = None,
    ) -> tuple[int, dict[int, errors.BrokerError]]:
        # (``props`` here: headers only; they go with each message, as in _publish)
        if self.find(name) is None:
            raise errors.NotFound(name)
        reached = 0
        refused: dict[int, errors.BrokerError] = {}
        journal = self.cluster_journal
        journal.new_command()
        for i, payload in enumerate(payloads):
            journal.line = i
            try:
                reached = self._publish(name, key, payload, ttl, props)
            except errors.BrokerError as e:
                refused[i] = e
                if stop_at_refusal:
                    break
        return reached, refused

    def _dead_letter(
        self,
        targets: Sequence[Queue],
        m: QueuedMessage,
        reason: str,
        path: tuple[str, ...] = (),
        depth: int = 0,
    ) -> None:
        """Dead letters: to the streams of shared targets (their ttl counting from
        now; each entry carries ``path`` and the cascade's ``depth``, see
        :func:`~mbroker.cluster.keys.hops_field`), into local ones here."""
        hops = keys.hops_field(depth + 1, path) if targets else ""
        for t in targets:
            if shared(t):
                ttl = t.options.ttl
                expires = None if ttl is None else self.clock.seconds() + ttl / 1000.0
                self.writer.dead_letter(t.name, m, reason, expires, hops, ttl == 0)
            else:
                self.enqueue(t, m.source, m.key, m.payload)

    def _publish_props(
        self, name: str, key: str, payload: bytes, ttl: int | None, props: Props
    ) -> PublishResult:
        """PUBLISH with section 7 properties: they go with the stream entry (field
        ``a``) and the pub/sub message, so that every node delivers them.  With an id
        (and a window), Redis says whether it is new, whichever node had it first
        (:meth:`~mbroker.cluster.writer.ClusterWriter.publish_once`): the reply waits
        for that.  A delayed copy waits in Redis (:mod:`mbroker.cluster.delays`)."""
        obj = self.find(name)
        if obj is None:
            raise errors.NotFound(name)
        if isinstance(obj, Queue) and not shared(obj):
            return self._core_publish_props(name, key, payload, ttl, props)
        self.cluster_journal.next_line()
        window = 0
        if props.id is not None:
            ms = obj.options.dedup_window if isinstance(obj, Queue) else obj.dedup_window
            window = self.dedup_default if ms is None else ms
        delay = props.delay
        if not window and delay is None:
            return self._publish(name, key, payload, ttl, props), False
        journal = self.cluster_journal
        if not journal.available:
            raise errors.Unavailable("Redis cannot take writes; nothing was published")
        if isinstance(obj, Queue):
            names: tuple[str, ...] = (name,)
            result = Published(1)
            if obj.idle_timer is not None:
                obj.last_used = self.clock.seconds()
            then, ttls = None, []
        else:
            targets = obj.matcher.match(key)
            mine = [q for q in targets if shared(q)]
            names = tuple([q.name for q in mine])
            ttls = [(q.name, q.options.ttl) for q in mine if q.options.ttl is not None]
            result = Published(len(targets))
            then = partial(self._routed, obj, key, payload, props, targets)
        expires = None
        if ttl is not None:  # (a delayed copy's ttl counts from its due time)
            expires = self.clock.seconds() + (ttl + (delay or 0)) / 1000.0
            self._hint_ttl(names)
        qttl = obj.options.ttl if isinstance(obj, Queue) else None
        if qttl is not None and (ttl is None or qttl < ttl):  # (a queue's ttl: the same)
            expires = self.clock.seconds() + (qttl + (delay or 0)) / 1000.0
        fields = keys.entry_fields(name, key, payload, expires, 0, None, props)
        if expires is not None and (ttl == 0 or qttl == 0):
            keys.at_once(fields, expires)
        own = keys.own_ttls(fields, ttl, self.clock.seconds() + (delay or 0) / 1000.0, ttls)
        item, items = (b"", {}) if delay is None else members(self.node, fields, own)
        writer = self.writer
        if window:
            # (the writes recorded before it go first: a queue stays in publish order)
            journal.flush()
            dedup = keys.dedup(name, props.id or "")
            limited = delay is None and any([self.limits(q) for q in names])
            job = Once(dedup, window, names, fields, delay, item, then is None, result, then)
            job.level, job.own, job.items = props.priority, own, items
            if limited:  # (the id first, then the entries through the limits' script)
                job.atomic, job.verdict = False, journal.verdict()
            writer.publish_once(job)
        else:
            assert delay is not None
            if names:
                writer.delay(names, delay, item, items)
            if then is not None:
                then()
        if delay is not None and self.mover is not None:
            for q in names:
                self.mover.soon(q, delay)
        journal.add(rec.MessagesRemoved(name, ()))  # (the reply waits for the batch)
        self.cluster_published += 1
        return result if window else (result.reached, False)

    def _routed(
        self, ex: Exchange, key: str, payload: bytes, props: Props, targets: Sequence[Queue]
    ) -> None:
        """A PUBLISH with properties to ``ex`` that is routed (its id is new, Redis
        said): count it, hand it to the subscriptions here and to other nodes' through
        pub/sub (a delayed one: here when due, there too)."""
        ex.published += 1
        if targets:
            ex.routed += 1
        else:
            ex.unroutable += 1
        for q in targets:
            if not shared(q):
                self._enqueue_when_due(q, ex.name, key, payload, props)
        text = stored_text(props)
        if props.delay is not None:
            text = b"delay=%d %s" % (props.delay, text)
        head = self._head + text + b"\n"
        self.writer.spublish(keys.channel(ex.name), head + b"%s\n%s" % (key.encode(), payload))

    def _enqueue_when_due(
        self, q: Queue, source: str, key: str, payload: bytes, props: Props | None
    ) -> None:
        """A copy for a subscription here (it dies with its connection, so a delayed
        one waits on this node)."""
        if props is None or props.delay is None:
            self.enqueue(q, source, key, payload, props)
        else:
            self.clock.callLater(
                props.delay / 1000.0, self._enqueue_due, q, source, key, payload, props
            )

    def _enqueue_due(self, q: Queue, source: str, key: str, payload: bytes, props: Props) -> None:
        if not q.deleted:
            self.enqueue(q, source, key, payload, attrs.evolve(props, delay=None))

    def on_message(self, chan: bytes, data: bytes) -> None:
        """A message from Redis pub/sub (on the reactor thread)."""
        if chan == keys.NS_CHANNEL.encode():
            self.on_namespace()
            return
        name = keys.exchange_of(chan)
        ex = self.find(name)
        if not isinstance(ex, Exchange):
            return
        if data.startswith(self._echo) or data.startswith(self._head):
            return  # (published here: delivered here already)
        first, _, rest = data.partition(b"\n")
        _, space, text = first.partition(b" ")
        props = from_stored(text) if space else None
        key, _, payload = rest.partition(b"\n")
        routing_key = key.decode()
        for q in ex.matcher.match(routing_key):
            if not shared(q):
                self._enqueue_when_due(q, name, routing_key, payload, props)

    # ------------------------------------------------------------- consuming

    def _subscribe(
        self,
        s: Session,
        name: str,
        pattern: str | None = None,
        prefetch: int | None = None,
        manual: bool = False,
        ack_timeout: int | None = None,
    ) -> Consumer:
        c = self._core_subscribe(s, name, pattern, prefetch, manual, ack_timeout)
        if self.lifetime is not None and shared(c.queue):
            self.lifetime.changed(c.queue)
        if not shared(c.queue) and self.pubsub is not None:
            for exchange in c.queue.bound_to:
                d = self.pubsub.listen(keys.channel(exchange))
                if not d.called:  # the reply waits until Redis has the subscription
                    self.writer.barrier(d)
                    self.cluster_journal.add(rec.MessagesRemoved(c.queue.name, ()))
        return c

    def _activate(self, c: Consumer) -> None:
        self._core_activate(c)
        if self.feeder is not None:
            self.feeder.want(c.queue)

    def _pull(
        self,
        s: Session,
        name: str,
        max: int = 1,
        wait: int | None = None,
        manual: bool = False,
        ack_timeout: int | None = None,
        on_done: Callable[[Pulled], None] | None = None,
    ) -> Pulled | None:
        q = self.queue(name)
        if shared(q) and not q.ready and not wait:
            wait = PULL_FETCH_MS
        out = self._core_pull(s, name, max, wait, manual, ack_timeout, on_done)
        if out is None and self.feeder is not None:
            self.feeder.want(q)
        return out

    def _purge(self, name: str) -> int:
        q = self.queue(name)
        if not shared(q):
            return self._core_purge(name)
        counts = self.watch.counts.get(name) if self.watch is not None else None
        withdrawn = self.withdraw(q)
        self.writer.purge(name, withdrawn)
        self.cluster_journal.add(rec.MessagesRemoved(name, ()))
        return max(len(withdrawn), counts[0] - counts[1] if counts else 0)

    # --------------------------------------------------------------- reports

    def _list_objects(self) -> list[ExchangeInfo | QueueInfo]:
        counts = self.watch.counts if self.watch is not None else {}
        rows = self._core_list()
        for i, row in enumerate(rows):
            if isinstance(row, QueueInfo) and row.name in counts:
                length, pending, _ = counts[row.name]
                rows[i] = attrs.evolve(row, messages=length - pending, unacked=pending)
        return rows

    def _stats(self, name: str | None = None) -> list[tuple[str, str]]:
        pairs = self._core_stats(name)
        if name is None:
            pairs.append(("redis_batches", str(self.writer.batches)))
            pairs.append(("redis_commands", str(self.writer.commands)))
            if self.feeder is not None:
                pairs.append(("redis_fed", str(self.feeder.fed)))
            if self.watch is not None:
                pairs.append(("redis_taken_over", str(self.watch.taken_over)))
        elif self.watch is not None and name in self.watch.counts:
            # (a shared queue: the figures Redis has, as LIST shows them)
            length, pending, delayed = self.watch.counts[name]
            figures = {
                "messages": str(length - pending),
                "unacked": str(pending),
                "delayed": str(delayed),
            }
            if name in self.watch.bytes:
                figures["bytes"] = str(self.watch.bytes[name])
            pairs = [(k, figures.get(k, v)) for k, v in pairs]
        return pairs

    def _queue_reports(self, name: str | None = None) -> list[QueueReport]:
        """The HTTP API's queues: a shared queue's ready, delayed and unacknowledged
        messages as Redis has them (as LIST and STATS show them)."""
        reports = self._core_queue_reports(name)
        counts = self.watch.counts if self.watch is not None else {}
        for i, r in enumerate(reports):
            if r.name in counts:
                length, pending, delayed = counts[r.name]
                ready = length - pending
                size = self.watch.bytes.get(r.name, r.ready_bytes) if self.watch else 0
                reports[i] = attrs.evolve(
                    r, ready=ready, unacked=pending, delayed=delayed, ready_bytes=size
                )
        return reports

    def _queue_totals(self) -> QueueTotals:
        totals = self._core_queue_totals()
        counts = self.watch.counts if self.watch is not None else {}
        if not counts:
            return totals
        ready, delayed, unacked = totals.ready, totals.delayed, totals.unacked
        for q in self.queue_objects():
            figures = counts.get(q.name)
            if figures is not None:
                length, pending, waiting = figures
                ready += length - pending - len(q.ready)
                delayed += waiting - q.held
                unacked += pending - q.unacked
        return QueueTotals(ready, delayed, unacked, totals.consumers)
