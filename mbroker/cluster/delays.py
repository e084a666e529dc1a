"""Delayed delivery on a cluster: due entries wait in Redis, and any live node moves them.

A PUBLISH with ``delay=MS`` to a shared queue adds, instead of a stream entry, a member
to the queue's sorted set ``mb:d:{NAME}`` (:func:`~mbroker.cluster.keys.delayed`, in
the stream's slot) whose score is its due time in milliseconds of the Redis master's
clock (``TIME`` + MS, taken by :data:`DELAY_SCRIPT`, so that nodes' clocks do not
matter), and the queue's name to the set ``{mb}:delayed`` (a hint: the queues that
may hold delayed entries).  A member is the entry's fields, each written as a netstring
(``<length>:<bytes>``), behind a unique, ordered prefix so that members due at the
same millisecond keep publish order.

:class:`Mover` is one periodic timer per node (every :data:`TICK` seconds): on a read
thread it reads the hint set and, for the queues whose next due time has come (or
that it has not looked at for :data:`RECHECK` seconds), runs :data:`MOVE_SCRIPT`, which
atomically takes the due members (``ZRANGEBYSCORE``), adds each as a stream entry
(``XADD``; one with a priority: to its level's stream, see
:mod:`mbroker.cluster.levels`) and removes them (``ZREM``), and answers how long
until the next one.  So nothing of a delayed message is on a node: whichever nodes
are alive move it, at its due time plus at most :data:`TICK` (and plus
:data:`RECHECK` when the node that published it died before it was due), and never
twice.  A queue with limits: ``overflow=reject``, each due entry judged as a new
message would be (:data:`MOVE_LIMITED_SCRIPT`); ``drop-head``, the entries moved as
without limits, then the limits applied by a second script
(:data:`~mbroker.cluster.drophead.TRIM_SCRIPT`), so that a node waiting for the
queue takes them first, as for a publish (:mod:`mbroker.cluster.drophead`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.cluster import drophead, keys
from mbroker.cluster.limits import LIMIT_FUNCTION
from mbroker.cluster.link import RedisLink

_log = Logger()

#: seconds between a node's rounds
TICK = 0.05
#: a queue is looked at at least this often (s), whatever its next due time seemed
RECHECK = 1.0
#: most entries one script moves
MOVE_BATCH = 1000

#: KEYS[1] the queue's sorted set; ARGV: delay (ms), member
DELAY_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
"""

#: What both move scripts begin with: ``decode(m)``, a member's parts (the entry's
#: fields after the queue name, see :func:`member`), ``now`` (ms, Redis's clock) and
#: ``due``, at most ARGV[1] members of the sorted set KEYS[1] due by then.
_DUE = """
local function decode(m)
  local f, i = {}, 1
  while i <= #m do
    local c = string.find(m, ':', i, true)
    local n = tonumber(string.sub(m, i, c - 1))
    f[#f + 1] = string.sub(m, c + 1, c + n)
    i = c + n + 1
  end
  return f
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

#: KEYS[1] the queue's sorted set, KEYS[2] its stream, KEYS[3] its ready-bytes
#: counter (kept when it exists: a queue with max-bytes), KEYS[4] its set of levels,
#: KEYS[4 + N] its stream of priority N (1-9: an entry with a priority goes there,
#: see :mod:`mbroker.cluster.levels`); ARGV: most members to move.  Returns the
#: milliseconds until the next member is due (-1 when none is left) and how many it
#: moved.
MOVE_SCRIPT = (
    _DUE
    + """
local size = 0
for _, m in ipairs(due) do
  local f = decode(m)
  local target = KEYS[2]
  for j = 2, #f, 2 do
    if f[j] == 'p' then size = size + #f[j + 1] end
    if f[j] == 'a' then
      local lv = tonumber(string.match(' ' .. f[j + 1], ' priority=(%d)') or '0')
      if lv > 0 then
        if redis.call('SADD', KEYS[4], lv) == 1 then
          pcall(redis.call, 'XGROUP', 'CREATE', KEYS[4 + lv], 'mb', '0', 'MKSTREAM')
        end
        target = KEYS[4 + lv]
      end
    end
  end
  redis.call('XADD', target, '*', unpack(f, 2))
end
if size > 0 and redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], size) end
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt == 0 then return {-1, #due} end
return {math.max(tonumber(nxt[2]) - now, 0), #due}
"""
)

#: MOVE_SCRIPT for a queue with max-length or max-bytes: each due entry is added
#: under the queue's limits, as a new message would be (``add`` of
#: :data:`~mbroker.cluster.limits.LIMIT_FUNCTION`, to its level's stream).  KEYS as
#: MOVE_SCRIPT; ARGV[1] most
#: members to move, ARGV[2] the group, ARGV[3..6] the limits (as LIMIT_SCRIPT's
#: ARGV[2..5]), ARGV[7] '1' to return the refused entries.  Returns the wait, how
#: many it moved, and the fields of the entries dropped and of those refused.
MOVE_LIMITED_SCRIPT = (
    LIMIT_FUNCTION
    + _DUE
    + """
local lost = {}
for _, m in ipairs(due) do
  local f = decode(m)
  local fields = {unpack(f, 2)}
  local lv = 0
  for j = 1, #fields, 2 do
    if fields[j] == 'a' then
      lv = tonumber(string.match(' ' .. fields[j + 1], ' priority=(%d)') or '0')
    end
  end
  local streams = {[0] = KEYS[2]}
  for l = 1, 9 do streams[l] = KEYS[4 + l] end
  local r = add(streams, KEYS[4], KEYS[3], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
    ARGV[5] == '1', ARGV[6] == '1', lv, fields)
  if r[1] == 0 then
    if ARGV[7] == '1' then lost[#lost + 1] = fields end
  elseif ARGV[6] == '1' then
    for j = 2, #r do lost[#lost + 1] = r[j] end
  end
end
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if #nxt > 0 then wait = math.max(tonumber(nxt[2]) - now, 0) end
return {wait, #due, lost}
"""
)

#: per queue with limits: LIMIT_SCRIPT's ARGV[2..5] and whether refused entries are
#: wanted back (it has a dead-letter target)
LimitPlan = dict[str, tuple[tuple[Any, ...], bool]]
#: entries a move dropped or refused (for their dead-letter target), per queue
Lost = list[tuple[str, list[keys.Fields]]]

_seq = itertools.count()


def member(node: str, fields: dict[str, bytes | str]) -> bytes:
    """A delayed entry as a member of its queue's sorted set: a unique prefix that
    sorts in publish order (the time, a counter), then the fields, as netstrings."""
    parts = [b"%016x.%08x.%s" % (time.time_ns(), next(_seq) & 0xFFFFFFFF, node.encode())]
    for name, value in fields.items():
        parts.append(name.encode())
        parts.append(value if isinstance(value, bytes) else value.encode())
    return b"".join([b"%d:%s" % (len(p), p) for p in parts])


def read_member(data: bytes) -> dict[bytes, bytes]:
    """The fields of a :func:`member` (what :data:`MOVE_SCRIPT` reads in Lua)."""
    parts = []
    i = 0
    while i < len(data):
        colon = data.index(b":", i)
        n = int(data[i:colon])
        parts.append(data[colon + 1 : colon + 1 + n])
        i = colon + 1 + n
    return dict(zip(parts[1::2], parts[2::2]))


def members(
    node: str, fields: dict[str, bytes | str], own: dict[str, dict[str, bytes | str]]
) -> tuple[bytes, dict[str, bytes]]:
    """The member of a delayed copy with ``fields``, and those of the queues whose
    copies have fields of their own (``own``, see
    :func:`~mbroker.cluster.keys.own_ttls`)."""
    return member(node, fields), {q: member(node, f) for q, f in own.items()}


def delay_ops(
    names: Iterable[str], delay: int, item: bytes, own: dict[str, bytes] | None = None
) -> list[tuple[str, tuple[Any, ...]]]:
    """The writer's commands for one delayed copy in each queue of ``names`` (``own``:
    the queues whose copy is a member of its own, see :func:`members`)."""
    names = list(names)
    ops: list[tuple[str, tuple[Any, ...]]] = [("sadd", (keys.DELAYED, *names))]
    for q in names:
        it = own.get(q, item) if own else item
        ops.append(("eval", (DELAY_SCRIPT, 1, keys.delayed(q), delay, it)))
    return ops


class Mover:
    """One node's timer moving due entries into their streams (see the module's text)."""

    def __init__(self, link: RedisLink, clock: Any) -> None:
        self._link = link
        self._clock = clock
        #: queue -> when (reactor seconds) to look at it next
        self._next: dict[str, float] = {}
        self._call: LoopingCall | None = None
        self._busy = False
        #: entries this node moved
        self.moved = 0
        #: the shared queues with limits (set by the node), read again at most once a
        #: RECHECK, or when this node adds a delayed entry
        self.limited: Callable[[], LimitPlan] = dict
        self._limited: LimitPlan = {}
        self._limited_at = float("-inf")
        #: entries a move dropped from a queue's head or refused (reject), on the
        #: reactor thread: dead-lettered by the node with ``reason=maxlen``
        self.lost: Callable[[str, list[keys.Fields]], None] = lambda q, e: None

    def start(self) -> None:
        call = self._call = LoopingCall(self._round)
        call.clock = self._clock
        call.start(TICK, now=False).addErrback(
            lambda f: _log.failure("the delayed-delivery timer stopped", failure=f)
        )

    def soon(self, queue: str, delay_ms: int) -> None:
        """This node added a delayed entry to ``queue``: look at it when it is due."""
        when = self._clock.seconds() + delay_ms / 1000.0
        self._limited_at = float("-inf")
        if when < self._next.get(queue, when + 1):
            self._next[queue] = when

    def _round(self) -> Deferred[None] | None:
        if self._busy:
            return None
        self._busy = True
        client, now, plan = self._link.client, self._clock.seconds(), dict(self._next)
        if now - self._limited_at >= RECHECK:
            self._limited, self._limited_at = self.limited(), now
        limited = self._limited
        d = self._link.read(lambda: _move(client, now, plan, limited))

        def done(result: tuple[dict[str, float], int, Lost]) -> None:
            self._busy = False
            waits, moved, lost = result
            self.moved += moved
            for q, entries in lost:
                self.lost(q, entries)
            base = self._clock.seconds()
            for q, wait in waits.items():
                due = base + (RECHECK if wait < 0 else min(wait / 1000.0, RECHECK))
                if self._next.get(q) == plan.get(q) or due < self._next[q]:
                    self._next[q] = due  # (unless soon() said sooner meanwhile)

        def failed(f: Failure) -> None:
            self._busy = False
            _log.warn("moving due delayed messages failed: {reason}", reason=f.getErrorMessage())

        return d.addCallbacks(done, failed)

    def stop(self) -> None:
        if self._call is not None and self._call.running:
            self._call.stop()


def _move(
    client: Any, now: float, plan: dict[str, float], limited: LimitPlan | None = None
) -> tuple[dict[str, float], int, Lost]:
    """On a read thread: move what is due in the hinted queues that are due a look;
    returns the wait (ms, -1: none) until the next entry of each queue looked at, how
    many entries were moved, and the entries dropped or refused by queues' limits."""
    names = [n.decode() for n in client.smembers(keys.DELAYED)]
    waits: dict[str, float] = {}
    moved = 0
    lost: Lost = []
    for q in names:
        if plan.get(q, 0.0) > now:
            continue
        where = (keys.delayed(q), keys.stream(q), f"mb:b:{{{q}}}")
        limits = limited.get(q) if limited else None
        levels = [keys.level_stream(q, n) for n in range(1, 10)]
        if limits is None or limits[0][2] == "0":
            wait, n = client.eval(MOVE_SCRIPT, 13, *where, keys.levels(q), *levels, MOVE_BATCH)
            if limits is not None and int(n):  # (drop-head: after a waiting node's read)
                trim = (drophead.TRIM_SCRIPT, 14, *drophead.script_keys(q), keys.GROUP)
                got = client.eval(*trim, *limits[0])
                if len(got) > 1 and isinstance(got[1], list):
                    lost.append((q, [dict(zip(f[::2], f[1::2])) for f in got[1:]]))
        else:
            argv, refused = limits
            got = client.eval(
                MOVE_LIMITED_SCRIPT,
                13,
                *where,
                keys.levels(q),
                *levels,
                MOVE_BATCH,
                keys.GROUP,
                *argv,
                int(refused),
            )
            wait, n, entries = got
            if entries:
                lost.append((q, [dict(zip(f[::2], f[1::2])) for f in entries]))
        moved += int(n)
        waits[q] = float(wait)
    return waits, moved, lost
