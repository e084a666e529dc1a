"""Liveness, takeover of a dead node's messages, and the shared queues' figures.

Every :data:`TICK` seconds :class:`Watch` runs one round on a read thread:

1. ``SET mb:node:{name} 1 PX`` :data:`LIVE_MS`: this node is alive.  Its key expires
   :data:`LIVE_MS` after the last round of a node that stopped (``kill -9``, a
   network partition, a hung process).
2. For each shared queue: ``XLEN``, ``XINFO CONSUMERS`` and ``ZCARD`` of its sorted
   set of delayed copies (the figures LIST, STATS and the HTTP API show:
   ``messages`` is the stream's length less the entries delivered and not
   acknowledged, ``unacked`` those, ``delayed`` the copies not due yet), and the
   ready bytes of a queue that counts them (``max-bytes``: STAT ``bytes``).
3. A consumer of the group (a node) that has pending entries and no liveness key is
   dead: its pending entries are claimed (``XCLAIM`` with a min-idle time of
   :data:`MIN_IDLE_MS`, so that two nodes never both take one) and put back at the
   tail of the stream (``XADD`` with one more delivery counted, the sizes a node had
   taken off a max-bytes queue's ready bytes counted again, then ``XACK`` + ``XDEL``
   of the old entry); a dead consumer with nothing pending is removed
   (``XGROUP DELCONSUMER``).

A queue with priorities has a stream per level in use (:mod:`mbroker.cluster.levels`,
read from its set of levels each round): steps 2 and 3 go over each, the figures are
summed over them and a dead node's entries go back to the tail of their own level.

So the messages a killed node held unacknowledged reach other nodes' consumers
:data:`LIVE_MS` + :data:`TICK` seconds after its last round at the latest (about 4 s
with the defaults).  At start a node gives back what a former process of the same
name left pending, before it reads anything.

A node's liveness key also goes when the master holding it fails over: the node
cannot refresh it while the master is down, and the promoted replica finds it
expired.  The other nodes could not reach that master either: their rounds failed,
or waited for the cluster to come back.  So after a round that failed, a node
judges no other node dead until :data:`LIVE_MS` after the end of the first round
that passes again (:func:`judging`; it asks for the keys meanwhile all the same, so
that its rounds fail for as long as their master is down): the living nodes have
set their keys again by then, and their messages stay with them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.cluster import keys, levels, limits
from mbroker.cluster.link import RedisLink

_log = Logger()

#: seconds between rounds
TICK = 1.0
#: a node's liveness key lives this long after its last round (ms)
LIVE_MS = 3000
#: an entry must have been idle this long to be claimed from a dead node (ms)
MIN_IDLE_MS = 1000
#: most entries claimed from one dead node per queue per round
CLAIM_BATCH = 500

#: per shared queue: ``(stream length, entries pending, delayed copies)``
Counts = dict[str, tuple[int, int, int]]


class Watch:
    """The liveness and takeover rounds of one node (see the module's text)."""

    def __init__(self, link: RedisLink, node: str, queues: Callable[[], list[str]]) -> None:
        self._link = link
        self.node = node
        self._queues = queues
        self._call: LoopingCall | None = None
        #: the last figures of the shared queues
        self.counts: Counts = {}
        #: the ready bytes of the shared queues that count them (max-bytes)
        self.bytes: dict[str, int] = {}
        #: entries taken over from dead nodes
        self.taken_over = 0
        self._clock: Any = None
        #: when the last round that failed, or the first that passed after it, ended
        self._trouble_at: float | None = None
        self._recovering = False

    def start(self, clock: Any) -> Deferred[None]:
        """Give back what a former life of this node left, then run every TICK."""
        client, node = self._link.client, self.node
        names = self._queues()
        self._clock = clock
        d = self._link.read(lambda: _first_round(client, node, names))

        def started(n: int) -> None:
            self.taken_over += n
            call = self._call = LoopingCall(self._round)
            call.clock = clock
            call.start(TICK, now=False).addErrback(
                lambda f: _log.failure("the cluster watch stopped", failure=f)
            )

        return d.addCallback(started)

    def _round(self) -> Deferred[None]:
        client, node, names = self._link.client, self.node, self._queues()
        clock = self._clock
        judge = judging(self._trouble_at, clock.seconds())
        d = self._link.read(lambda: _round(client, node, names, judge))

        def done(result: tuple[Counts, int, dict[str, int]]) -> None:
            self.counts, n, self.bytes = result
            self.taken_over += n
            if self._recovering:  # (it may have waited for the cluster to come back)
                self._recovering = False
                self._trouble_at = clock.seconds()

        def failed(f: Failure) -> None:
            self._trouble_at = clock.seconds()
            self._recovering = True
            _log.warn("the cluster watch round failed: {reason}", reason=f.getErrorMessage())

        return d.addCallbacks(done, failed)

    def stop(self) -> None:
        if self._call is not None and self._call.running:
            self._call.stop()


def judging(trouble_at: float | None, now: float) -> bool:
    """Whether a node may judge other nodes by their liveness keys ``now``: not for
    LIVE_MS after ``trouble_at``, the end of its last Redis work that failed or of
    the first that passed after it (a failover: a living node's key may have expired
    meanwhile)."""
    return trouble_at is None or now - trouble_at >= LIVE_MS / 1000


def _first_round(client: Any, node: str, names: list[str]) -> int:
    taken = 0
    for name in names:
        for level in levels.in_use(client, name):
            stream = keys.level_stream(name, level)
            taken += _take_over(client, name, stream, node, node, min_idle=0)
    client.set(keys.node_key(node), b"1", px=LIVE_MS)
    return taken


def _round(
    client: Any, node: str, names: list[str], judge: bool = True
) -> tuple[Counts, int, dict[str, int]]:
    """One round (see the module's text); ``judge``: whether a consumer without a
    liveness key is dead (:func:`judging`)."""
    client.set(keys.node_key(node), b"1", px=LIVE_MS)
    counts: Counts = {}
    sizes: dict[str, int] = {}
    alive: dict[str, bool] = {node: True}
    taken = 0
    for name in names:
        length = pending = 0
        seen = False
        for level in levels.in_use(client, name):
            stream = keys.level_stream(name, level)
            try:
                consumers = client.xinfo_consumers(stream, keys.GROUP)
            except Exception as e:  # noqa: BLE001 (a queue made or deleted meanwhile)
                if "NOGROUP" in str(e) or "no such key" in str(e):
                    continue
                raise
            seen = True
            for c in consumers:
                cname = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                pending += int(c["pending"])
                if cname not in alive:  # (asked even when not judging: a failure says
                    # that its master is still down, and judging waits longer)
                    alive[cname] = bool(client.exists(keys.node_key(cname))) or not judge
                if alive[cname]:
                    continue
                if int(c["pending"]):
                    taken += _take_over(client, name, stream, cname, node, MIN_IDLE_MS)
                else:
                    client.xgroup_delconsumer(stream, keys.GROUP, cname)
            length += int(client.xlen(stream))
        if not seen:
            continue
        delayed = int(client.zcard(keys.delayed(name)))
        counts[name] = (length, pending, delayed)
        size = client.get(limits.bytes_key(name))
        if size is not None:
            sizes[name] = int(size)
    return counts, taken, sizes


def _take_over(client: Any, queue: str, stream: str, dead: str, node: str, min_idle: int) -> int:
    """Put ``dead``'s pending entries of ``stream`` (of ``queue``) back at its tail;
    how many."""
    try:
        rows = client.xpending_range(
            stream, keys.GROUP, min="-", max="+", count=CLAIM_BATCH, consumername=dead
        )
    except Exception as e:  # noqa: BLE001
        if "NOGROUP" in str(e):
            return 0
        raise
    if not rows:
        return 0
    ids = [r["message_id"] for r in rows]
    claimed = client.xclaim(stream, keys.GROUP, node, min_idle_time=min_idle, message_ids=ids)
    if not claimed:
        return 0
    pipe = client.pipeline(transaction=False)
    old = []
    for entry, fields in claimed:
        old.append(entry)
        if not fields:
            continue  # deleted meanwhile (acknowledged)
        d = fields.get(b"d")
        fields[b"d"] = b"%d" % ((int(d) if d else 0) + 1)  # (the rest kept as it was)
        pipe.xadd(stream, fields)
    # (ready again: the sizes a node had taken off a max-bytes queue count again)
    bkey, skey = limits.bytes_key(queue), limits.sizes_key(queue)
    node = client.get_node_from_key(stream)  # (else redis-py asks Redis for the keys)
    sized = [limits.size_field(e, keys.level_of(stream)) for e in old]
    pipe.execute_command("EVAL", limits.RECOUNT_SCRIPT, 2, bkey, skey, *sized, target_nodes=node)
    pipe.xack(stream, keys.GROUP, *old)
    pipe.xdel(stream, *old)
    pipe.execute()
    _log.info(
        "took over {n} unacknowledged messages of {stream} from node {dead}",
        n=len(old),
        stream=stream,
        dead=dead,
    )
    return len(old)
