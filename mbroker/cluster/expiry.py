"""Expiry of a shared queue's ready messages at their time, and dead letters of the
entries Redis removed (expired, or dropped from the head by the queue's limits).

A shared queue's ``ttl`` counts from the publish: the node that publishes a copy
writes its expiry time into the entry (field ``e``, epoch seconds of that node's
clock, the sooner of the PUBLISH's ``ttl`` and the queue's), so the entry carries it
wherever it goes, as a message's own ttl always did.  A ttl=0 copy's expiry there is
its ready time plus a grace (:func:`~mbroker.cluster.keys.at_once`), so that the
sweep leaves it to a node that reads it in time.

:class:`Sweeper` is one periodic timer per node (every :data:`TICK` seconds): on a
read thread it runs, for each shared queue with a ``ttl``, :data:`SWEEP_SCRIPT` in
the queue's hash slot, which looks at the oldest :data:`SCAN` ready entries (after
the group's last-delivered id), deletes those whose time has passed (taking their
size off the queue's ready bytes, :mod:`mbroker.cluster.limits`) and returns them;
when all it looked at had expired it is run again at once.  The node then
dead-letters them (``reason=expired``) when the queue has a dead-letter target.  So
an expired message leaves LIST's count within :data:`TICK` plus one watch round
(about 2 s), whoever consumes the queue, or nobody.  The scripts are atomic: run by
several nodes at once, each entry is removed (and dead-lettered) once.  A queue with
priorities has a stream per level in use (:mod:`mbroker.cluster.levels`): the
script runs on each.

The dead letters are written by the node in its next batch, after the script that
removed the entries (the dead-letter queue lives in another hash slot): a node killed
between the two loses those dead letters (the messages are gone, as they would be
without a dead-letter target).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.cluster import keys, levels
from mbroker.cluster.limits import bytes_key
from mbroker.cluster.link import RedisLink
from mbroker.core.dispatch import MAX_DEAD_LETTER_DEPTH, DeadLetterSink
from mbroker.core.model import Exchange, Queue, QueuedMessage

_log = Logger()

#: seconds between a node's sweeps
TICK = 1.0
#: most ready entries one script looks at
SCAN = 1000
#: most scripts per queue per sweep (when every entry looked at had expired)
ROUNDS = 20

#: KEYS[1] the stream, KEYS[2] its ready-bytes counter; ARGV[1] the group, ARGV[2]
#: now (epoch seconds), ARGV[3] most entries to look at, ARGV[4] '1' to return the
#: expired entries' fields, ARGV[5] '1' when the queue counts its bytes.  Returns
#: ``{looked at, removed, fields of each removed entry …}``.
SWEEP_SCRIPT = """
local now = tonumber(ARGV[2])
local last = '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return {0, 0} end
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if f['name'] == ARGV[1] then last = f['last-delivered-id'] end
end
local old = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', tonumber(ARGV[3]))
local out = {#old, 0}
local size = 0
for _, e in ipairs(old) do
  local fl, exp, p = e[2], nil, 0
  for i = 1, #fl, 2 do
    if fl[i] == 'e' then exp = tonumber(fl[i + 1]) elseif fl[i] == 'p' then p = #fl[i + 1] end
  end
  if exp and exp <= now then
    redis.call('XDEL', KEYS[1], e[1])
    out[2] = out[2] + 1
    size = size + p
    if ARGV[4] == '1' then out[#out + 1] = fl end
  end
end
if ARGV[5] == '1' and size > 0 then redis.call('DECRBY', KEYS[2], size) end
return out
"""

#: the shared queues that may hold entries with a PUBLISH's own ttl (a set: nodes
#: add a queue the first time they publish to it with a ttl)
TTL_HINT = "{mb}:ttl"

#: what a sweep plans per shared queue: ``(name, dead-letter wanted, bytes counted,
#: has a queue ttl)``; one without a queue ttl is swept when :data:`TTL_HINT` has it
Plan = list[tuple[str, bool, bool, bool]]


class Sweeper:
    """One node's timer removing expired ready entries (see the module's text)."""

    def __init__(
        self,
        link: RedisLink,
        clock: Any,
        plan: Callable[[], Plan],
        expired: Callable[[str, list[keys.Fields], int], None],
    ) -> None:
        self._link = link
        self._clock = clock
        self._plan = plan
        self._expired = expired
        self._call: LoopingCall | None = None
        self._busy = False
        #: entries this node removed as expired
        self.removed = 0

    def start(self) -> None:
        call = self._call = LoopingCall(self.sweep)
        call.clock = self._clock
        call.start(TICK, now=False).addErrback(
            lambda f: _log.failure("the expiry sweep stopped", failure=f)
        )

    def sweep(self) -> Deferred[None] | None:
        plan = self._plan()
        if self._busy or not plan:
            return None
        self._busy = True
        client, now = self._link.client, self._clock.seconds()
        d = self._link.read(lambda: _sweep(client, now, plan))

        def done(result: list[tuple[str, int, list[keys.Fields]]]) -> None:
            self._busy = False
            for name, n, entries in result:
                self.removed += n
                self._expired(name, entries, n)

        def failed(f: Failure) -> None:
            self._busy = False
            _log.warn("the expiry sweep failed: {reason}", reason=f.getErrorMessage())

        return d.addCallbacks(done, failed)

    def stop(self) -> None:
        if self._call is not None and self._call.running:
            self._call.stop()


def _sweep(client: Any, now: float, plan: Plan) -> list[tuple[str, int, list[keys.Fields]]]:
    """On a read thread: the sweep of each planned queue."""
    out = []
    hinted = None
    for name, dead_letter, counted, ttl in plan:
        if not ttl:
            if hinted is None:
                hinted = {n.decode() for n in client.smembers(TTL_HINT)}
            if name not in hinted:
                continue
        removed = 0
        entries: list[keys.Fields] = []
        for level in levels.in_use(client, name):
            for _ in range(ROUNDS):
                got = client.eval(
                    SWEEP_SCRIPT,
                    2,
                    keys.level_stream(name, level),
                    bytes_key(name),
                    keys.GROUP,
                    repr(now),
                    SCAN,
                    "1" if dead_letter else "0",
                    "1" if counted else "0",
                )
                looked, n = int(got[0]), int(got[1])
                removed += n
                entries += [dict(zip(f[::2], f[1::2])) for f in got[2:]]
                if n < looked or looked < SCAN:
                    break
        if removed:
            out.append((name, removed, entries))
    return out


def sweep_plan(queues: Sequence[Queue], shared: Callable[[Queue], bool]) -> Plan:
    """The shared queues, for the expiry sweep."""
    return [
        (
            q.name,
            q.options.dead_letter is not None,
            q.options.max_bytes is not None,
            q.options.ttl is not None,
        )
        for q in queues
        if shared(q)
    ]


class Removed:
    """What Redis removed from a node's shared queues, on the reactor thread: counted
    in the node's STAT of the queue, and dead-lettered through ``sink`` (the node's
    dead-letter writer) when the queue has a target."""

    def __init__(
        self,
        find: Callable[[str], object],
        sink: DeadLetterSink,
    ) -> None:
        self._find = find
        self._sink = sink

    def dropped(
        self,
        name: str,
        entries: list[keys.Fields],
        n: int = -1,
        depth: int = 0,
        reason: str = "maxlen",
    ) -> None:
        """``n`` entries removed from queue ``name`` (dropped from its head by adding
        one written at cascade ``depth``, or with ``reason=expired`` swept; -1: as many
        as ``entries``, the fields of those to dead-letter)."""
        q = self._find(name)
        if isinstance(q, Queue):
            count = len(entries) if n < 0 else n
            if reason == "maxlen":
                q.dropped += count
            else:
                q.expired += count
            dl = q.options.dead_letter
            target = None if dl is None else self._find(dl)
            if not isinstance(target, (Queue, Exchange)):
                target = None
            q.dead_lettered += dead_letters(q, target, entries, reason, self._sink, depth)

    def expired(self, name: str, entries: list[keys.Fields], n: int) -> None:
        self.dropped(name, entries, n, 0, "expired")

    def refused(self, name: str) -> None:
        """A copy for queue ``name`` was refused (full, ``overflow=reject``)."""
        q = self._find(name)
        if isinstance(q, Queue):
            q.rejected += 1


def dead_letters(
    q: Queue,
    target: Queue | Exchange | None,
    entries: Sequence[keys.Fields],
    reason: str,
    sink: DeadLetterSink,
    depth: int = 0,
) -> int:
    """Dead-letter ``entries`` (removed from ``q``'s stream by Redis, by expiry or by
    a drop-head at cascade ``depth``) to ``q``'s dead-letter ``target`` through
    ``sink`` (the node's dead-letter writer), as the core does: never back into a
    queue on an entry's dead-letter path (``q`` included), and not at all from
    :data:`~mbroker.core.dispatch.MAX_DEAD_LETTER_DEPTH` on; how many went."""
    if target is None or depth >= MAX_DEAD_LETTER_DEPTH:
        return 0
    n = 0
    for fields in entries:
        source, key, payload, _, _, _, props = keys.read_entry(fields)
        path = (*keys.read_hops(fields)[1], q.name)
        targets: Sequence[Queue]
        if isinstance(target, Queue):
            targets = (target,)
        else:
            targets = target.matcher.match(key)
        targets = [t for t in targets if t.name not in path]
        route = f"{source} {key or '-'}".encode()
        m = QueuedMessage(source, key, route, payload, None, 0, props)
        sink(targets, m, reason, path, depth)
        n += 1
    return n
