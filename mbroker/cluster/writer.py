"""Writes to Redis, batched: the cluster's side of the core's journal.

The core records what must be kept (:mod:`mbroker.core.records`) in its
:class:`~mbroker.core.journal.Journal` and commits once per reactor turn;
:meth:`ClusterWriter.write` is that journal's writer.  It turns the records into Redis
commands (``XADD`` per message and target queue, or for a queue with ``max-length`` or
``max-bytes`` the script of :mod:`mbroker.cluster.limits` that judges it and fills its
:class:`~mbroker.cluster.limits.Verdict`, with ``drop-head`` a run of them added, the
limits applied later, :mod:`~mbroker.cluster.drophead`; ``XACK`` + ``XDEL`` for those that left
a queue, ``HSET``/``HDEL``/``SADD``/``SREM`` for the namespace) and sends
everything gathered while the previous batch was out as **one pipeline** on the write
thread, as the log store gathers writes into one fsync.  The commit's callbacks (the
``+OK`` of PUBLISH, CREATE, ACK …) run once Redis answered, and with
``replicas_ack`` once ``WAIT`` says that many replicas of each master written to have
it.  A failed batch answers ``-ERR UNAVAILABLE``.

It also keeps which stream entry each message fed to the local core came from
(``(queue, store id) -> entry id``), to acknowledge the right one, and gives messages
back to their stream (:meth:`ClusterWriter.give_back`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker import errors
from mbroker.cluster import delays, drophead, keys, levels, limits
from mbroker.cluster.expiry import TTL_HINT
from mbroker.cluster.limits import Limits, Verdict, bytes_key, limit_args, size_field, sizes_key
from mbroker.cluster.link import RedisLink
from mbroker.cluster.once import ONCE_SCRIPT, Once, Op
from mbroker.core import records as rec
from mbroker.core.journal import Done
from mbroker.core.model import Clock, QueuedMessage
from mbroker.wire.frames import QueueOptions

_log = Logger()

#: what the limits' script did beside adding: ``(queue, n, entries, depth)``, n
#: entries dropped from the queue's head (their fields when it has a dead-letter
#: target) by adding one of cascade ``depth`` (:func:`~mbroker.cluster.keys.hops_field`;
#: 0: not a dead letter), or ``n == -1``: a copy refused
Dropped = list[tuple[str, int, list[keys.Fields], int]]
#: after a failed batch, new writes are refused at once for this long (s); then tried
RETRY_AFTER = 1.0
#: how long WAIT may take for the replicas (ms)
WAIT_TIMEOUT_MS = 1000


class ClusterWriter:
    """The journal's writer for a cluster node (see the module's text)."""

    def __init__(self, clock: Clock, link: RedisLink, replicas_ack: int = 0) -> None:
        self._clock = clock
        self._link = link
        self.replicas_ack = replicas_ack
        self._entries: dict[tuple[str, int], bytes] = {}
        #: the level of each of those read from a priority's own stream (see
        #: :mod:`mbroker.cluster.levels`; the others are in the queue's stream)
        self._levels: dict[tuple[str, int], int] = {}
        self._ops: list[Op] = []
        #: the copies for drop-head queues in ``_ops`` (see :mod:`~mbroker.cluster.drophead`)
        self._runs = drophead.Runs()
        self._prep: list[Callable[[Any], None]] = []
        #: namespace commands waiting for the journal's next write, so that they go
        #: in the batch whose answer confirms them
        self._held: list[Op] = []
        self._held_prep: list[Callable[[Any], None]] = []
        #: what the next batch's confirmation also waits for (see :meth:`barrier`)
        self._barriers: list[Deferred[None]] = []
        self._done: list[Done] = []
        #: namespace changes not sent yet
        self._ns_pending = 0
        self._scheduled = False
        self._busy = False
        #: when the last batch failed (None: it did not)
        self.failed_at: float | None = None
        self._idle: list[Deferred[None]] = []
        #: namespace changes made through this node, and of those, answered by Redis
        self.ns_changes = 0
        self.ns_done = 0
        #: batches sent, and the Redis commands in them
        self.batches = 0
        self.commands = 0
        #: a shared queue's max-length and max-bytes (None: neither); set by the node
        self.limits: Callable[[str], Limits | None] = lambda name: None
        #: the verdicts Redis gives copies of queues with limits: ``(store id, queue)``
        self.verdicts: dict[tuple[int, str], Verdict] = {}
        #: entries dropped from a queue's head by the limits' script, on the reactor
        #: thread: ``(queue, [fields, …] to dead-letter, n, depth)`` (:data:`Dropped`)
        self.on_dropped: Callable[[str, list[keys.Fields], int, int], None] = _ignore
        #: a copy for a queue was refused (overflow=reject); set by the node
        self.on_refused: Callable[[str], None] = lambda q: None
        #: the store ids of messages stored with ttl=0 (:func:`~mbroker.cluster.keys.at_once`)
        self.at_once: set[int] = set()

    @property
    def available(self) -> bool:
        """False for RETRY_AFTER seconds after a failed batch (Redis down, a master
        failing over): commands are refused at once meanwhile, then tried again."""
        failed = self.failed_at
        return failed is None or self._clock.seconds() - failed >= RETRY_AFTER

    # ------------------------------------------------------------ entry ids

    def remember(self, queue: str, msg_id: int, entry: bytes, level: int = 0) -> None:
        self._entries[(queue, msg_id)] = entry
        if level:
            self._levels[(queue, msg_id)] = level

    def forget(self, queue: str, msg_id: int) -> bytes | None:
        self._levels.pop((queue, msg_id), None)
        return self._entries.pop((queue, msg_id), None)

    def _taken(self, queue: str, msg_ids: Sequence[int]) -> dict[int, list[bytes]]:
        """The entries of ``msg_ids`` (forgotten), by level."""
        pop, pop_level = self._entries.pop, self._levels.pop
        out: dict[int, list[bytes]] = {}
        for i in msg_ids:
            entry = pop((queue, i), None)
            if entry is not None:
                out.setdefault(pop_level((queue, i), 0), []).append(entry)
        return out

    # ---------------------------------------------------------------- writes

    def write(self, records: list[rec.Record], done: Done) -> None:
        """The journal's writer: queue the records' commands; ``done`` when stored."""
        ops = self._ops
        if self._held:
            ops += self._held
            self._held = []
        if self._held_prep:
            self._prep += self._held_prep
            self._held_prep = []
        add = self._add
        verdicts = self.verdicts
        zero = self.at_once
        for r in records:
            if isinstance(r, rec.MessageStored):
                fields = keys.entry_fields(
                    r.source, r.key, r.payload, r.expires_at, 0, None, r.props
                )
                if zero and r.msg_id in zero and r.expires_at is not None:
                    zero.discard(r.msg_id)
                    keys.at_once(fields, r.expires_at)
                level = r.props.priority if r.props is not None else 0
                for q in r.queues:
                    add(
                        ops,
                        q,
                        fields,
                        verdicts.pop((r.msg_id, q), None) if verdicts else None,
                        level,
                    )
            elif isinstance(r, rec.MessagesStored):
                for payload in r.payloads:
                    fields = keys.entry_fields(r.source, r.key, payload, None)
                    for q in r.queues:
                        add(ops, q, fields)
            elif isinstance(r, rec.MessagesRemoved) and self._levels:
                lim = self.limits(r.queue)
                for level, ids in self._taken(r.queue, r.msg_ids).items():
                    key = keys.level_stream(r.queue, level)
                    ops.append(("xack", (key, keys.GROUP, *ids)))
                    ops.append(("xdel", (key, *ids)))
                    if lim is not None and lim.max_bytes is not None:
                        sized = [size_field(e, level) for e in ids]
                        ops.append(("hdel", (sizes_key(r.queue), *sized)))
            elif isinstance(r, rec.MessagesRemoved):
                pop = self._entries.pop
                ids = [e for e in (pop((r.queue, i), None) for i in r.msg_ids) if e is not None]
                if ids:
                    key = keys.stream(r.queue)
                    ops.append(("xack", (key, keys.GROUP, *ids)))
                    ops.append(("xdel", (key, *ids)))
                    lim = self.limits(r.queue)
                    if lim is not None and lim.max_bytes is not None:
                        ops.append(("hdel", (sizes_key(r.queue), *ids)))
            # (namespace records only make the reply wait: see the methods below)
        self._done.append(done)
        # (the journal commits at the end of a reactor turn: send the turn's batch now)
        self._flush()

    def _add(
        self,
        ops: list[Op],
        queue: str,
        fields: dict[str, bytes | str],
        verdict: Verdict | None = None,
        level: int = 0,
    ) -> None:
        """An entry for ``queue``: ``XADD``, or with max-length or max-bytes, the
        script that judges and adds it (:mod:`mbroker.cluster.limits`); a priority's
        entry goes to its level's stream (:mod:`mbroker.cluster.levels`)."""
        lim = self.limits(queue)
        if lim is None:
            if level:
                ops.append(("eval", levels.add_args(queue, level, fields)))
            else:
                ops.append(("xadd", (keys.stream(queue), fields)))
        else:
            hops = fields.get("h")  # (a dead letter: the drops it causes go one deeper)
            depth = int(str(hops).split(" ", 1)[0]) if hops else 0
            if lim.reject:  # (judged before the add: one script per copy)
                argv = limit_args(queue, lim, fields, level)
                ops.append(("limit", (argv, queue, verdict, depth)))
            elif ops is self._ops:  # (drop-head: added in runs, trimmed after)
                self._runs.add(ops, queue, lim, fields, level, depth)
            else:
                drophead.single(ops, queue, lim, fields, level, depth)

    # ------------------------------------------------------------- namespace
    # Called by the node for every change of the shared namespace (the core records
    # only durable ones, and without an exchange's durability).  The node then adds a
    # record to the journal: the commands are held until the journal's write, which
    # sends them with the callbacks that answer the command.

    def declare_queue(self, name: str, options: QueueOptions) -> None:
        self._held.append(("hset", (keys.QUEUES, name, keys.encode_options(options))))
        self._held.append(("xgroup_create", (keys.stream(name), keys.GROUP, "0", True)))
        if options.max_bytes is not None:
            self._held.append(("setnx", (bytes_key(name), 0)))
        self._ns_changed()

    def delete_queue(self, name: str) -> None:
        self._held.append(("hdel", (keys.QUEUES, name)))
        self._held.append(("eval", levels.delete_args(name)))
        self._held.append(("delete", (keys.delayed(name),)))
        self._held.append(("srem", (keys.DELAYED, name)))
        self._held.append(("delete", (bytes_key(name),)))
        self._held.append(("srem", (TTL_HINT, name)))
        self._held.append(("delete", (sizes_key(name),)))
        self._held_prep.append(lambda client: _unbind_all(client, name, 0))
        self._ns_changed()

    def declare_exchange(
        self, name: str, kind: str, durable: bool, dedup_window: int | None = None
    ) -> None:
        value = f"{kind} {int(durable)}"
        if dedup_window is not None:
            value += f" {dedup_window}"
        self._held.append(("hset", (keys.EXCHANGES, name, value)))
        self._ns_changed()

    def delete_exchange(self, name: str) -> None:
        self._held.append(("hdel", (keys.EXCHANGES, name)))
        self._held_prep.append(lambda client: _unbind_all(client, name, 1))
        self._ns_changed()

    def bind(self, queue: str, exchange: str, key: str, bound: bool) -> None:
        op = "sadd" if bound else "srem"
        self._held.append((op, (keys.BINDINGS, keys.binding(queue, exchange, key))))
        self._ns_changed()

    def _ns_changed(self) -> None:
        self._ns_pending += 1
        self.ns_changes += 1

    def give_back(self, queue: str, messages: Sequence[QueuedMessage]) -> None:
        """Put ``messages`` (fed to this node, not acknowledged) back at the tail of
        their stream for any node to take: a new entry each, counting the deliveries
        so far, and the old one acknowledged and deleted (a priority's: in its level's
        stream, see :mod:`mbroker.cluster.levels`).  Ready again, they count against a
        drop-head queue's limits, applied at the end of the batch (a node that read
        them while its consumer left: see :mod:`mbroker.cluster.drophead`)."""
        lim = self.limits(queue)
        counted = lim is not None and lim.max_bytes is not None
        pop_level = self._levels.pop
        taken: dict[int, list[bytes]] = {}
        for m in messages:
            entry = self._entries.pop((queue, m.msg_id), None)
            if entry is None:
                continue
            hops = keys.hops_field(0, m.dl_path) if m.dl_path else None
            fields = keys.entry_fields(
                m.source, m.key, m.payload, m.expires_at, m.deliveries, m.reason, m.props, hops
            )
            level = m.props.priority if m.props is not None else 0
            # (not through the limits' script: it was in the queue already)
            self._ops.append(
                ("eval", levels.add_args(queue, level, fields))
                if level
                else ("xadd", (keys.stream(queue), fields))
            )
            taken.setdefault(pop_level((queue, m.msg_id), 0), []).append(entry)
        for was, old in taken.items():
            where = keys.level_stream(queue, was)
            if counted:
                sized = [size_field(e, was) for e in old]
                recount = (limits.RECOUNT_SCRIPT, 2, bytes_key(queue), sizes_key(queue))
                self._ops.append(("eval", (*recount, *sized)))
            self._ops.append(("xack", (where, keys.GROUP, *old)))
            self._ops.append(("xdel", (where, *old)))
        if taken and lim is not None and not lim.reject:
            self._runs.trim(queue, lim)  # (ready again: drop-head applies)
        self._schedule()

    def purge(self, queue: str, withdrawn: Sequence[QueuedMessage]) -> None:
        """PURGE of a shared queue: the entries no node has read yet (read by a
        consumer of their own, then acknowledged and deleted), and ``withdrawn``, the
        ready messages this node held."""
        lim = self.limits(queue)
        counted = lim is not None and lim.max_bytes is not None
        for level, old in self._taken(queue, [m.msg_id for m in withdrawn]).items():
            key = keys.level_stream(queue, level)
            self._held.append(("xack", (key, keys.GROUP, *old)))
            self._held.append(("xdel", (key, *old)))
            if counted:
                sized = [size_field(e, level) for e in old]
                self._held.append(("hdel", (sizes_key(queue), *sized)))
        self._held_prep.append(lambda client: levels.purge(client, queue, counted))

    def barrier(self, d: Deferred[None]) -> None:
        """The callbacks of the next batch also wait for ``d`` (a SUBSCRIBE to an
        exchange: for Redis to have the node's subscription to its channel)."""
        self._barriers.append(d)

    def flushed(self) -> Deferred[None]:
        """Fires once everything handed over so far is answered."""
        d: Deferred[None] = Deferred()
        if not (self._busy or self._scheduled or self._ops or self._done or self._prep):
            d.callback(None)
        else:
            self._idle.append(d)
        return d

    def dead_letter(
        self,
        queue: str,
        m: QueuedMessage,
        reason: str,
        expires: float | None,
        hops: str,
        at_once: bool = False,
    ) -> None:
        """A copy of ``m`` dead-lettered into shared ``queue``: a new entry carrying
        ``reason`` (``expires``: the queue's ttl, ``at_once`` when it is 0; ``hops``:
        its cascade depth and path, :func:`~mbroker.cluster.keys.hops_field`), written
        with the batch that removes ``m`` from its own queue."""
        fields = keys.entry_fields(m.source, m.key, m.payload, expires, 0, reason, m.props, hops)
        if at_once and expires is not None:
            keys.at_once(fields, expires)
        self._add(self._ops, queue, fields, None, m.props.priority if m.props else 0)
        self._schedule()

    def publish_once(self, job: Once) -> None:
        """A PUBLISH with an id: in the next batch, in its place among the other
        writes, ask Redis whether the id is new (``SET NX`` with the window as its
        expiry) and add the entry only if it is; ``job.result`` says which.  For a
        queue the check and the ``XADD`` are one script (atomic); for an exchange the
        entries follow in the same write job, and the id is removed again if they
        fail."""
        if not job.atomic and job.delay is None:
            for q in job.queues:
                fields = job.own.get(q, job.fields)
                self._add(job.entry_ops, q, fields, job.verdict, job.level)
        self._ops.append(("once", (job,)))
        self._schedule()

    def delay(self, queues: Sequence[str], delay: int, item: bytes, own: dict[str, bytes]) -> None:
        """A delayed copy in each of ``queues``, due ``delay`` ms from now by Redis's
        clock (see :mod:`mbroker.cluster.delays`; ``own``: members of their own)."""
        self._ops += delays.delay_ops(queues, delay, item, own)
        self._schedule()

    def hint(self, key: str, names: Sequence[str]) -> None:
        """Add ``names`` to the set ``key`` (a hint for other nodes), in the next batch."""
        self._ops.append(("sadd", (key, *names)))
        self._schedule()

    def spublish(self, chan: str, data: bytes) -> None:
        """A transient message on a sharded pub/sub channel (nobody waits for it)."""
        self._ops.append(("spublish", (chan, data)))
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self._busy:
            self._scheduled = True
            self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not (self._ops or self._done or self._prep):
            return
        self._runs.close(self._ops)
        ops, self._ops = self._ops, []
        prep, self._prep = self._prep, []
        done, self._done = self._done, []
        batch_ns, self._ns_pending = self._ns_pending, 0
        notify = batch_ns > 0
        barriers, self._barriers = self._barriers, []
        self._busy = True
        self.batches += 1
        self.commands += len(ops) + len(prep) + notify
        replicas = self.replicas_ack
        d: Deferred[Dropped] = self._link.write(
            lambda: _run(self._link.client, ops, prep, notify, replicas)
        )

        def finished(result: object) -> None:
            self._busy = False
            if isinstance(result, list):
                for queue, n, entries, depth in result:
                    if n < 0:
                        self.on_refused(queue)
                    else:
                        self.on_dropped(queue, entries, n, depth)
            if not isinstance(result, Failure):
                for name, args in ops:
                    if name == "once" and args[0].then and not args[0].result.duplicate:
                        args[0].then()
            self.ns_done += batch_ns
            err: errors.BrokerError | None = None
            self.failed_at = self._clock.seconds() if isinstance(result, Failure) else None
            if isinstance(result, Failure):
                _log.warn("Redis write failed: {reason}", reason=result.getErrorMessage())
                value = result.value
                err = (
                    value
                    if isinstance(value, errors.BrokerError)
                    else errors.Unavailable(f"Redis: {result.getErrorMessage()}")
                )
            if barriers:
                wait = gatherResults(barriers, consumeErrors=True)
                wait.addBoth(lambda _: _answer(done, err))
            else:
                _answer(done, err)
            if self._ops or self._done or self._prep:
                self._schedule()
            elif self._idle:
                idle, self._idle = self._idle, []
                for w in idle:
                    w.callback(None)

        d.addBoth(finished)


def _ignore(queue: str, entries: list[keys.Fields], n: int, depth: int) -> None:
    """No one listens for dropped entries (the node sets ``on_dropped``)."""


def _answer(done: list[Done], err: errors.BrokerError | None) -> None:
    for cb in done:
        try:
            cb(err)
        except Exception:  # noqa: BLE001 (one reply's failure is not the batch's)
            _log.failure("answering a Redis write failed")


def _run(
    client: Any, ops: list[Op], prep: list[Callable[[Any], None]], notify: bool, replicas: int
) -> Dropped:
    """On the write thread: the batch as one pipeline (one round trip per master), or
    one per run of plain commands between PUBLISHes with ids (order is kept).  Returns
    the entries dropped from the head of queues with a dead-letter target."""
    for job in prep:
        job(client)
    dropped: Dropped = []
    if ops:
        firsts: list[Once] = []  # (ids set apart from their entries: undone on failure)
        try:
            start = 0
            for i, (name, args) in enumerate(ops):
                if name == "once":
                    _pipeline(client, ops[start:i], dropped)
                    start = i + 1
                    _once(client, args[0], firsts, dropped)
            _pipeline(client, ops[start:], dropped)
        except Exception:
            if firsts:
                client.delete(*[job.key for job in firsts])
            raise
        if replicas:
            written = [
                key
                for name, args in ops
                for key in (
                    [keys.stream(q) for q in args[0].queues] + [args[0].key]
                    if name == "once"
                    else args[2:3]
                    if name == "eval"
                    else args[0][2:3]
                    if name == "limit"
                    else [keys.stream(args[0].queue)]
                    if name in drophead.OPS
                    else args[:1]
                )
            ]
            nodes = {client.get_node_from_key(key).name: key for key in written}
            for key in nodes.values():
                node = client.get_node_from_key(key)
                got = client.execute_command("WAIT", replicas, WAIT_TIMEOUT_MS, target_nodes=node)
                if int(got) < replicas:
                    raise errors.Unavailable(f"only {got} of {replicas} replicas have it")
    if notify:
        client.spublish(keys.NS_CHANNEL, b"1")
    return dropped


def _pipeline(client: Any, ops: list[Op], dropped: Dropped) -> None:
    if not ops:
        return
    pipe = client.pipeline(transaction=False)
    # (a script's node named here: else redis-py asks Redis for its keys each time)
    where = client.get_node_from_key
    for name, args in ops:
        if name == "eval":  # (a cluster pipeline has no eval(): the command itself)
            pipe.execute_command("EVAL", *args, target_nodes=where(args[2]))
        elif name == "limit":  # (by its SHA: the script's text is long)
            sha = limits.LIMIT_SHA
            pipe.execute_command("EVALSHA", sha, *args[0][1:], target_nodes=where(args[0][2]))
        elif name in drophead.OPS:
            run = args[0]
            pipe.execute_command(*run.command(name), target_nodes=where(keys.stream(run.queue)))
        else:
            getattr(pipe, name)(*args)
    results = pipe.execute(raise_on_error=False)
    for (name, args), result in zip(ops, results):
        if name in ("limit", "trim"):
            if isinstance(result, Exception) and type(result).__name__ == "NoScriptError":
                # (a master that has not seen it yet)
                result = client.eval(*(args[0] if name == "limit" else _trim_text(args[0])))
            if not isinstance(result, Exception):
                if name == "trim":
                    _judged(result, args[0].queue, None, dropped, args[0].depth)
                else:
                    _judged(result, args[1], args[2], dropped, args[3])
                continue
        if isinstance(result, Exception):
            if name == "xgroup_create" and "BUSYGROUP" in str(result):
                continue
            raise errors.Unavailable(f"Redis {name.upper()}: {result}")


def _judged(
    result: list[Any], queue: str, verdict: Verdict | None, dropped: Dropped, depth: int = 0
) -> None:
    """What :data:`~mbroker.cluster.limits.LIMIT_SCRIPT` said of one entry (``depth``)."""
    if not int(result[0]):
        if verdict is not None:
            verdict.error = errors.Overflow(f"{queue} is full")
        dropped.append((queue, -1, [], depth))
    elif len(result) > 1 and isinstance(result[1], list):
        entries = [dict(zip(f[::2], f[1::2])) for f in result[1:]]
        dropped.append((queue, len(entries), entries, depth))
    elif len(result) > 1 and int(result[1]):
        dropped.append((queue, int(result[1]), [], depth))


def _trim_text(run: drophead.Run) -> tuple[Any, ...]:
    return (drophead.TRIM_SCRIPT, *run.trim_args()[1:])


def _once(client: Any, job: Once, firsts: list[Once], dropped: Dropped) -> None:
    """One PUBLISH with an id (see :meth:`ClusterWriter.publish_once`)."""
    queues = job.queues if job.atomic else ()
    script = ONCE_SCRIPT
    if job.delay is None and job.level and queues:
        script = levels.ONCE_SCRIPT
        where = [k for q in queues for k in (keys.level_stream(q, job.level), keys.levels(q))]
        args: list[Any] = [job.level, *[v for pair in job.fields.items() for v in pair]]
    elif job.delay is None:
        where = [keys.stream(q) for q in queues]
        args = ["", *[v for pair in job.fields.items() for v in pair]]
    else:
        where = [keys.delayed(q) for q in queues]
        args = [job.delay, job.member]
        if queues:
            client.sadd(keys.DELAYED, *queues)  # (the hint first: see delays)
    first = client.eval(
        script, 1 + len(where), job.key, *where, job.result.reached, job.window, *args
    )
    if first is not None:
        job.result.reached = int(first)
        job.result.duplicate = True
        return
    if not job.atomic and job.queues:
        firsts.append(job)
        if job.delay is None:
            _pipeline(client, job.entry_ops, dropped)
            refused = job.verdict is not None and job.verdict.error is not None
            if refused and len(job.queues) == 1:
                client.delete(job.key)  # (nothing was stored: a retry is not a duplicate)
        else:
            ops = delays.delay_ops(job.queues, job.delay, job.member, job.items)
            _pipeline(client, ops, dropped)


def _unbind_all(client: Any, name: str, position: int) -> None:
    """Remove every binding naming ``name`` as queue (0) or exchange (1)."""
    gone = [m for m in client.smembers(keys.BINDINGS) if keys.split_binding(m)[position] == name]
    if gone:
        client.srem(keys.BINDINGS, *gone)
