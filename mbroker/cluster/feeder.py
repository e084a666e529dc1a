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

A local NACK or a disconnect puts the message back in the local queue, where the
core redelivers it to a local consumer.  When the queue has no local consumer
left, the loop ends and gives what the node still holds back to the stream
(:meth:`~mbroker.cluster.writer.ClusterWriter.give_back`) for any node to take.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.cluster import keys, limits
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
            return
        if not q.consumers and not q.waiters:
            self._loops.discard(name)
            if q.ready:
                self._writer.give_back(name, self._broker.withdraw(q))
            return
        n = room(q)
        if n <= 0:
            self._clock.callLater(RECHECK, self._loop, name)
            return
        client, node, counted = self._link.client, self.node, self.counted(name)
        d: Deferred[Any] = self._link.read(lambda: _read(client, name, node, n, counted))
        d.addCallbacks(self._got, self._failed, callbackArgs=(name,), errbackArgs=(name,))

    def _got(self, entries: list[keys.Entry], name: str) -> None:
        q = self._broker.find(name)
        if entries and isinstance(q, Queue) and not q.deleted:
            messages: list[rec.StoredMessage] = []
            marks: list[tuple[int, str | None]] = []
            remember = self._writer.remember
            new_id = self._journal.new_id
            for entry, fields in entries:
                source, key, payload, expires, count, reason, props = keys.read_entry(fields)
                msg_id = new_id()
                remember(name, msg_id, entry)
                messages.append((msg_id, source, key, payload, expires, props))
                marks.append((count, reason))
            self.fed += len(entries)
            self._broker.feed(q, messages, marks)
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
    client: Any, queue: str, node: str, count: int, counted: bool = False
) -> list[keys.Entry]:
    """On a read thread: up to ``count`` new entries of ``queue`` for ``node``
    (``counted``: their sizes then leave the queue's ready bytes, see
    :mod:`mbroker.cluster.limits`)."""
    stream = keys.stream(queue)
    try:
        got = client.xreadgroup(keys.GROUP, node, {stream: ">"}, count=count, block=BLOCK_MS)
    except Exception as e:
        if "NOGROUP" not in str(e):
            raise
        # (the stream went away and came back, or the group was never made)
        try:
            client.xgroup_create(stream, keys.GROUP, "0", mkstream=True)
        except Exception as e2:
            if "BUSYGROUP" not in str(e2):
                raise
        return []
    if not got:
        return []
    # RESP2: [[stream, [(id, fields), …]]]; entries deleted since have fields None
    entries = [(eid, fields) for eid, fields in got[0][1] if fields]
    if counted and entries:
        sizes = [x for eid, f in entries for x in (eid, len(f.get(b"p", b"")))]
        client.eval(limits.MARK_SCRIPT, 2, limits.bytes_key(queue), limits.sizes_key(queue), *sizes)
    return entries
