"""``overflow=drop-head`` on a shared queue: a waiting consumer first, then the limit.

The contract: a message published into a queue with ``max-length``/``max-bytes`` and
``drop-head`` goes first to a consumer that can take it; only *ready* messages count
against the limit (``max-length=0`` with a waiting consumer delivers everything).

On a node a waiting consumer is a read loop of :mod:`mbroker.cluster.feeder` blocked
in ``XREADGROUP … BLOCK`` on the queue's stream(s).  Redis serves such blocked clients
after each command it runs, never inside a script (checked on Redis 7.0.15: a script
that adds and then counts sees its entries ready; the same two steps as two commands
of one pipeline see them pending, read by the blocked client in between).  So the
writer adds a batch's copies for a drop-head queue with one script, :data:`ADD_SCRIPT`
(no count, no trim: ``XADD`` per copy to its level's stream, the ready-bytes counter
raised once), and trims with a second one, :data:`TRIM_SCRIPT`, sent as a later
command of the same pipeline (so to the same master, in order): by then the entries
a blocked node took are delivered-not-acknowledged, no longer ready, and the trim
counts only what is left, dropping the oldest ready entries of the lowest level
beyond the limits (``drop_head`` of :data:`~mbroker.cluster.limits.LIMIT_FUNCTION`,
the dropped entries returned for the dead-letter target, as before).

A :class:`Runs` gathers the copies of one batch: consecutive copies for a queue (at
the same dead-letter cascade depth, which the drops they cause inherit) make one
:class:`Run`, one ``EVAL`` of :data:`ADD_SCRIPT` at the place of its first copy, and
one trim per run at the end of the batch.  Two to four commands per queue and batch
instead of one script per copy; a blocked node gets up to its ``COUNT`` (its
consumers' room) of the batch in one read.

``max-bytes``: a node takes the entries it read off the ready-bytes counter with a
script of its own right after its read (:data:`~mbroker.cluster.limits.MARK_SCRIPT`),
which comes after the trim.  So :data:`ADD_SCRIPT` notes the first entry id it added
per level (``mb:r:{NAME}``) and the trim leaves the entries since then that are
pending and not marked yet out of the bytes it judges by (the counter itself stays as
the node's mark will leave it).  The delayed-copy mover, which moves due copies with
a script of its own and then runs :data:`TRIM_SCRIPT`, notes no ids: a node's read
between the two counts there until its mark (stricter, never looser).

The bound: a node counts as waiting only while its ``XREADGROUP`` is blocked in Redis
(between two reads, while it hands what it read to its consumers, it is not), and it
takes at most its ``COUNT``.  ``overflow=reject`` is not concerned: it is judged
atomically before the add, one :data:`~mbroker.cluster.limits.LIMIT_SCRIPT` per copy.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from mbroker.cluster import keys
from mbroker.cluster.limits import LIMIT_FUNCTION, Limits, bytes_key, limit_argv, sizes_key

#: most copies one ADD_SCRIPT takes (a longer run is cut in several, one trim)
RUN_MAX = 1000

#: Copies for a drop-head queue, no limit applied: KEYS as :data:`TRIM_SCRIPT`; ARGV[1]
#: the group, ARGV[2] '1' when the queue counts its ready bytes, then per copy its
#: level, its number of field values and those.  Returns how many it added.
ADD_SCRIPT = """
local streams = {[0] = KEYS[1]}
for l = 1, 9 do streams[l] = KEYS[3 + l] end
local counted, total, i, n, seen = ARGV[2] == '1', 0, 3, 0, {}
while i <= #ARGV do
  local level, nf = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local fields = {}
  for j = i + 2, i + 1 + nf, 2 do
    fields[#fields + 1] = ARGV[j]
    fields[#fields + 1] = ARGV[j + 1]
    if ARGV[j] == 'p' then total = total + #ARGV[j + 1] end
  end
  if level > 0 and redis.call('SADD', KEYS[3], level) == 1 then
    pcall(redis.call, 'XGROUP', 'CREATE', streams[level], ARGV[1], '0', 'MKSTREAM')
  end
  local id = redis.call('XADD', streams[level], '*', unpack(fields))
  if counted and not seen[level] then
    seen[level] = true
    redis.call('HSETNX', KEYS[14], level, id)
  end
  n = n + 1
  i = i + 2 + nf
end
if counted then
  redis.call('PEXPIRE', KEYS[14], 60000)
  if total > 0 then redis.call('INCRBY', KEYS[2], total) end
end
return n
"""

#: The limits of a drop-head queue applied after its copies were added: KEYS[1] its
#: stream (level 0), KEYS[2] its ready-bytes counter, KEYS[3] its set of levels,
#: KEYS[3 + N] its stream of priority N (1-9), KEYS[13] its hash of read entries'
#: sizes, KEYS[14] the first ids ADD_SCRIPT added per level; ARGV as LIMIT_SCRIPT's
#: ARGV[1..5].  Returns what ``add`` of LIMIT_FUNCTION returns.
TRIM_SCRIPT = (
    LIMIT_FUNCTION
    + """
local streams = {[0] = KEYS[1]}
for l = 1, 9 do streams[l] = KEYS[3 + l] end
local group, maxlen, maxbytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local per, ready = ready_of(streams, KEYS[3], group)
local bytes, unmarked = 0, 0
if maxbytes then
  bytes = tonumber(redis.call('GET', KEYS[2]) or '0')
  local firsts = redis.call('HGETALL', KEYS[14])
  if #firsts > 0 then redis.call('DEL', KEYS[14]) end
  for i = 1, #firsts, 2 do
    local lv = tonumber(firsts[i])
    local ok, taken = pcall(redis.call, 'XPENDING', streams[lv], group, firsts[i + 1], '+', 10000)
    if not ok then taken = {} end
    for _, p in ipairs(taken) do
      local field = p[1]
      if lv > 0 then field = lv .. ':' .. p[1] end
      if redis.call('HEXISTS', KEYS[13], field) == 0 then
        for _, e in ipairs(redis.call('XRANGE', streams[lv], p[1], p[1])) do
          for j = 1, #e[2], 2 do
            if e[2][j] == 'p' then unmarked = unmarked + #e[2][j + 1] end
          end
        end
      end
    end
  end
end
local dropped, n, left = drop_head(streams, group, maxlen, maxbytes, ARGV[5] == '1', per, ready,
  bytes - unmarked)
if maxbytes and n > 0 then redis.call('SET', KEYS[2], left + unmarked) end
return dropped
"""
)

TRIM_SHA = hashlib.sha1(TRIM_SCRIPT.encode()).hexdigest()

#: the names of the two ops in a writer's batch (each with ``(run,)``)
OPS = ("addrun", "trim")


@lru_cache(maxsize=4096)
def script_keys(queue: str) -> tuple[str, ...]:
    """The KEYS of both scripts for ``queue`` (all in its slot)."""
    streams = [keys.level_stream(queue, n) for n in range(1, 10)]
    return (
        keys.stream(queue),
        bytes_key(queue),
        keys.levels(queue),
        *streams,
        sizes_key(queue),
        f"mb:r:{{{queue}}}",
    )


class Run:
    """Consecutive copies for one drop-head queue in one batch (see the module)."""

    __slots__ = ("queue", "limits", "depth", "flat", "n")

    def __init__(self, queue: str, limits: Limits, depth: int) -> None:
        self.queue = queue
        self.limits = limits
        #: the dead-letter cascade depth of its copies (0: published)
        self.depth = depth
        #: ADD_SCRIPT's ARGV from ARGV[3] on
        self.flat: list[Any] = []
        self.n = 0

    def append(self, fields: dict[str, bytes | str], level: int) -> None:
        self.flat += (level, 2 * len(fields), *[v for pair in fields.items() for v in pair])
        self.n += 1

    def add_args(self) -> tuple[Any, ...]:
        """``EVAL`` arguments of :data:`ADD_SCRIPT` for the run's copies."""
        counted = "1" if self.limits.max_bytes is not None else "0"
        return (ADD_SCRIPT, 14, *script_keys(self.queue), keys.GROUP, counted, *self.flat)

    def trim_args(self) -> tuple[Any, ...]:
        """``EVALSHA`` arguments of :data:`TRIM_SCRIPT` (the SHA first: the text is long)."""
        argv = limit_argv(self.limits)
        return (TRIM_SHA, 14, *script_keys(self.queue), keys.GROUP, *argv)

    def command(self, op: str) -> tuple[Any, ...]:
        """The Redis command of the op ``op`` (one of :data:`OPS`) for this run."""
        return ("EVAL", *self.add_args()) if op == "addrun" else ("EVALSHA", *self.trim_args())


class Runs:
    """The open runs of a writer's next batch, one per drop-head queue."""

    def __init__(self) -> None:
        self._open: dict[str, Run] = {}

    def add(
        self,
        ops: list[Any],
        queue: str,
        limits: Limits,
        fields: dict[str, bytes | str],
        level: int,
        depth: int,
    ) -> None:
        """A copy for ``queue`` in the batch ``ops``: added to the queue's open run, or
        a new run (the open one of another depth trimmed first)."""
        run = self._open.get(queue)
        if run is None or run.depth != depth or not 0 < run.n < RUN_MAX:
            if run is not None and run.depth != depth:
                ops.append(("trim", (run,)))
            run = self._open[queue] = Run(queue, limits, depth)
            ops.append(("addrun", (run,)))
        run.append(fields, level)

    def trim(self, queue: str, limits: Limits) -> None:
        """Apply ``queue``'s limits at the end of the batch (copies given back to its
        stream: ready again, they count)."""
        if queue not in self._open:
            self._open[queue] = Run(queue, limits, 0)

    def close(self, ops: list[Any]) -> None:
        """The end of the batch: a trim for each open run."""
        if self._open:
            ops += [("trim", (run,)) for run in self._open.values()]
            self._open = {}


def single(ops: list[Any], queue: str, limits: Limits, fields: Any, level: int, depth: int) -> None:
    """One copy as a run of its own and its trim (a PUBLISH with an id: its own batch)."""
    run = Run(queue, limits, depth)
    run.append(fields, level)
    ops += [("addrun", (run,)), ("trim", (run,))]
