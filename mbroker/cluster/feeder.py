"""Feed the local core the messages of shared queues that its consumers can take.

For each shared queue with consumers (or waiting PULLs) on this node,
:class:`Feeder` runs one read loop: work out the room the local consumers have
(prefetch left, at most :data:`MAX_BATCH`), ``XREADGROUP GROUP mb <node> COUNT room
BLOCK`` :data:`BLOCK_MS` on a read thread, and hand what came to the core
(:meth:`~mbroker.core.broker.Broker.feed`), which delivers it as if it had been
published here.  Each entry gets a local store id, so the core's ACK (a
``MessagesRemoved`` record) becomes ``XACK`` + ``XDEL`` of that entry.  Entries read
from a queue with ``max-bytes`` leave its ready bytes at once (one more script per
read, :data:`~mbroker.cluster.limits.MARK_SCRIPT`).

A queue with priorities has a stream per level in use (:mod:`mbroker.cluster.levels`):
the loop knows them from the queue's set of levels, read again every
:data:`LEVELS_EVERY` seconds (one ``SMEMBERS`` per loop, not per message), and reads
``room`` entries highest level first in one script
(:data:`~mbroker.cluster.levels.READ_SCRIPT`), or when there is none, waits on all
the levels' streams in one ``XREADGROUP``.  So a priority-9 message published behind
a backlog of priority-0 ones is the next read's first, and a new level is noticed
within :data:`LEVELS_EVERY` s.  A queue with no level but 0 reads as before.

A ttl=0 copy's entry carries field ``z`` (:func:`~mbroker.cluster.keys.at_once`):
read before its grace is over, it goes to the core as an at-once message (the
``at_once`` of :meth:`~mbroker.core.broker.Broker.feed`: to a consumer or waiter that
takes it now, or expired now); read later, with its expiry as a ttl=0 message, so the
core expires it.  Only entries with an expiry are looked at for the field.

A local NACK or a disconnect puts the message back in the local queue, where the
core redelivers it to a local consumer.  When the queue has no local consumer
left, the loop ends and gives what the node still holds back to the stream
(:meth:`~mbroker.cluster.writer.ClusterWriter.give_back`) for any node to take.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.cluster import keys, levels, limits
from mbroker.cluster.link import RedisLink
from mbroker.cluster.writer import ClusterWriter
from mbroker.core import records as rec
from mbroker.core.broker import Broker
from mbroker.core.journal import Journal
from mbroker.core.model import Clock, Queue

_log = Logger()

#: how long one XREADGROUP waits for a message (ms); a loop notices a queue with no
#: more local consumers within this time
BLOCK_MS = 200
#: most messages one read takes (and one consumer without a prefetch may hold)
MAX_BATCH = 100
#: most messages one read takes for waiting PULLs
MAX_PULL = 10_000
#: when the local consumers have no room: look again after (s)
RECHECK = 0.005
#: after a failed read: try again after (s)
RETRY = 0.5
#: a loop reads its queue's set of levels again after this long (s)
LEVELS_EVERY = 0.2

#: what a read returns: the entries, each with its level, and the queue's levels when
#: they were read again (None: not read)
Got = tuple[list[tuple[bytes, keys.Fields, int]], Optional[list[int]]]


def room(q: Queue) -> int:
    """How many more messages the local consumers and waiters of ``q`` could take."""
    total = 0
    for c in q.consumers:
        if not c.active:
            continue
        if c.manual and c.prefetch:
            total += max(c.prefetch - c.in_flight, 0)
        else:
            total += MAX_BATCH
    total = min(total, MAX_BATCH)
    for w in q.waiters:  # (a PULL takes its max in one read)
        total += w.max
    return min(total, MAX_PULL) - len(q.ready)


class Feeder:
    """The read loops of one node (see the module's text)."""

    def __init__(
        self,
        clock: Clock,
        link: RedisLink,
        writer: ClusterWriter,
        broker: Broker,
        journal: Journal,
        node: str,
        shared: Callable[[Queue], bool],
    ) -> None:
        self._clock = clock
        self._link = link
        self._writer = writer
        self._broker = broker
        self._journal = journal
        self.node = node
        self._shared = shared
        self._loops: set[str] = set()
        #: per queue with a loop: its levels, and when they were read
        self._levels: dict[str, tuple[list[int], float]] = {}
        self.stopped = False
        #: entries read from Redis
        self.fed = 0
        #: whether a queue counts its ready bytes (max-bytes): its reads are marked
        self.counted: Callable[[str], bool] = lambda name: False

    def want(self, q: Queue) -> None:
        """``q`` has (or may soon have) local demand: make sure its loop runs."""
        if q.name not in self._loops and self._shared(q) and not self.stopped:
            self._loops.add(q.name)
            self._loop(q.name)

    def _loop(self, name: str) -> None:
        q = self._broker.find(name)
        if self.stopped or not isinstance(q, Queue) or q.deleted:
            self._loops.discard(name)
            self._levels.pop(name, None)
            return
        if not q.consumers and not q.waiters:
            self._loops.discard(name)
            self._levels.pop(name, None)
            if q.ready:
                self._writer.give_back(name, self._broker.withdraw(q))
            return
        n = room(q)
        if n <= 0:
            self._clock.callLater(RECHECK, self._loop, name)
            return
        client, node, counted = self._link.client, self.node, self.counted(name)
        now = self._clock.seconds()
        known, at = self._levels.get(name, (None, 0.0))
        if known is not None and now - at >= LEVELS_EVERY:
            known = None
        d: Deferred[Any] = self._link.read(lambda: _read(client, name, node, n, counted, known))
        d.addCallbacks(self._got, self._failed, callbackArgs=(name,), errbackArgs=(name,))

    def _got(self, got: Got, name: str) -> None:
        entries, found = got
        if found is not None:
            self._levels[name] = (found, self._clock.seconds())
        q = self._broker.find(name)
        if entries and isinstance(q, Queue) and not q.deleted:
            messages: list[rec.StoredMessage] = []
            marks: list[tuple[int, str | None, tuple[str, ...]]] = []
            remember = self._writer.remember
            new_id = self._journal.new_id
            now = self._clock.seconds()
            at_once: set[int] = set()
            for entry, fields, level in entries:
                source, key, payload, expires, count, reason, props = keys.read_entry(fields)
                msg_id = new_id()
                if expires is not None and keys.AT_ONCE in fields:  # (ttl=0)
                    expires, in_time = keys.fresh(fields, expires, now)
                    if in_time:
                        at_once.add(msg_id)
                remember(name, msg_id, entry, level)
                messages.append((msg_id, source, key, payload, expires, props))
                marks.append((count, reason, keys.read_hops(fields)[1] if reason else ()))
            self.fed += len(entries)
            self._broker.feed(q, messages, marks, at_once)
            self._loop(name)
        else:
            # (an empty read waited BLOCK_MS already; a turn of the reactor between
            # reads keeps a fake Redis that never blocks from looping in place)
            self._clock.callLater(RECHECK, self._loop, name)

    def _failed(self, f: Failure, name: str) -> None:
        if self.stopped:
            self._loops.discard(name)
            return
        _log.warn(
            "reading {queue} from Redis failed: {reason}", queue=name, reason=f.getErrorMessage()
        )
        self._clock.callLater(RETRY, self._loop, name)

    def stop(self) -> None:
        self.stopped = True


def _read(
    client: Any,
    queue: str,
    node: str,
    count: int,
    counted: bool = False,
    known: list[int] | None = None,
) -> Got:
    """On a read thread: up to ``count`` new entries of ``queue``'s streams for
    ``node``, highest level first (``known``: its levels, None: read them again;
    ``counted``: their sizes then leave the queue's ready bytes, see
    :mod:`mbroker.cluster.limits`)."""
    found = None
    if known is None:
        known = found = levels.in_use(client, queue)
    try:
        if len(known) > 1:
            entries = levels.read(client, queue, node, count, known, BLOCK_MS)
        else:
            stream = keys.stream(queue)
            got = client.xreadgroup(keys.GROUP, node, {stream: ">"}, count=count, block=BLOCK_MS)
            # RESP2: [[stream, [(id, fields), …]]]; entries deleted since have fields None
            entries = [(eid, fields, 0) for eid, fields in got[0][1] if fields] if got else []
    except Exception as e:
        if "NOGROUP" not in str(e):
            raise
        # (a stream went away and came back, or the group was never made)
        for n in known:
            try:
                client.xgroup_create(keys.level_stream(queue, n), keys.GROUP, "0", mkstream=True)
            except Exception as e2:
                if "BUSYGROUP" not in str(e2):
                    raise
        return [], found
    if counted and entries:
        sizes = [
            x for eid, f, lv in entries for x in (limits.size_field(eid, lv), len(f.get(b"p", b"")))
        ]
        client.eval(limits.MARK_SCRIPT, 2, limits.bytes_key(queue), limits.sizes_key(queue), *sizes)
    return entries, found
