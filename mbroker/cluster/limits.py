"""A shared queue's max-length, max-bytes and overflow, judged atomically in Redis.

Each copy for a shared queue with ``max-length`` or ``max-bytes`` and
``overflow=reject`` is added by :data:`LIMIT_SCRIPT`, in the queue's hash slot, which
counts the queue's *ready* entries and bytes over the streams of all its priority
levels (:mod:`mbroker.cluster.levels`), and then either refuses the copy (the
publisher hears ``-ERR OVERFLOW <queue> is full``) or adds it to its level's stream.
With ``drop-head`` the copies are added first and the limits applied by a later
command of the same pipeline (:mod:`mbroker.cluster.drophead`: a node waiting for
them takes them in between), which deletes ready entries beyond the limits, the
oldest of the lowest level first, the new ones included, returning them when the
queue has a dead-letter target (``drop_head`` of :data:`LIMIT_FUNCTION`; the
delayed-copy mover does the same).  So publishers on any number of nodes never
overfill a queue.

**Ready entries** are those after the group's last-delivered id (the stream's length
less the entries delivered and not acknowledged), as for LIST.  **Ready bytes** (the
payloads' sizes) are a counter per queue with ``max-bytes``, ``mb:b:{NAME}``, kept in
the same slot by every path an entry takes:

- added by the scripts that add an entry (this one, the delayed-copy mover, a
  PUBLISH with an id), by a message given back to the stream or taken over from a
  dead node (ready again);
- taken off by the scripts that drop or expire a ready entry, by PURGE, and when a
  node reads entries (:data:`MARK_SCRIPT`, which also remembers their sizes in the
  hash ``mb:m:{NAME}``, by :func:`size_field`, until they are acknowledged, so that
  an entry given back is counted again exactly once).

How a refusal reaches the client: the node's reply to a PUBLISH waits for Redis
anyway (the journal's commit); :class:`ClusterJournal` lets the node hand each copy
Redis judges a :class:`Verdict`, which the writer fills from the script's answer,
and turns the refused ones into a :class:`~mbroker.errors.Refused` for the reply
waiting on that commit (one line of a run of PUBLISH per verdict).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import Any

from mbroker import errors
from mbroker.cluster import keys
from mbroker.core.journal import Done, Journal
from mbroker.core.model import Queue

#: The Lua functions of the scripts below, of the delayed-copy mover and of
#: :data:`~mbroker.cluster.drophead.TRIM_SCRIPT`: ``ready_of`` counts a queue's ready
#: entries per level, ``drop_head`` deletes the oldest of the lowest level while a
#: limit is passed, and ``add(streams, lvkey, counter, group,
#: maxlen, maxbytes, reject, want, level, fields)`` adds the entry ``fields`` (a flat
#: list) to ``streams[level]`` (``streams``: the queue's stream of each level 0-9,
#: ``lvkey`` its set of levels in use, see :mod:`mbroker.cluster.levels`) under the
#: limits, counted over all its levels (``maxlen``/``maxbytes`` nil: none; the counter
#: is kept only with ``maxbytes``); drop-head drops the oldest ready entries of the
#: lowest level that has any, the new one included.  Returns ``{0}`` when refused
#: (``reject``), else ``{1, fields of each dropped entry …}`` (``want``) or ``{1, how
#: many were dropped}``.
LIMIT_FUNCTION = """
local function ready_of(streams, lvkey, group)
  local per, ready = {}, 0
  local used = redis.call('SMEMBERS', lvkey)
  used[#used + 1] = '0'
  for _, l in ipairs(used) do
    local lv = tonumber(l)
    local pending = 0
    local ok, summary = pcall(redis.call, 'XPENDING', streams[lv], group)
    if ok then pending = summary[1] end
    per[lv] = redis.call('XLEN', streams[lv]) - pending
    ready = ready + per[lv]
  end
  return per, ready
end
local function drop_head(streams, group, maxlen, maxbytes, want, per, ready, bytes)
  local function over()
    return (maxlen and ready > maxlen) or (maxbytes and bytes > maxbytes)
  end
  local dropped, n, cursors = {1}, 0, {}
  while over() do
    local lv = nil
    for l = 0, 9 do
      if per[l] and per[l] > 0 then lv = l break end
    end
    if lv == nil then break end
    if cursors[lv] == nil then
      cursors[lv] = '(0-0'
      for _, g in ipairs(redis.call('XINFO', 'GROUPS', streams[lv])) do
        local f = {}
        for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
        if f['name'] == group then cursors[lv] = '(' .. f['last-delivered-id'] end
      end
    end
    local count = 1
    if maxlen and ready > maxlen then count = math.min(ready - maxlen, per[lv], 100) end
    local old = redis.call('XRANGE', streams[lv], cursors[lv], '+', 'COUNT', count)
    if #old == 0 then per[lv] = 0 end
    for _, e in ipairs(old) do
      redis.call('XDEL', streams[lv], e[1])
      cursors[lv] = '(' .. e[1]
      ready = ready - 1
      per[lv] = per[lv] - 1
      n = n + 1
      local fl = e[2]
      for i = 1, #fl, 2 do
        if fl[i] == 'p' then bytes = bytes - #fl[i + 1] end
      end
      if want then dropped[#dropped + 1] = fl end
      if not over() then break end
    end
  end
  if not want then dropped[2] = n end
  return dropped, n, bytes
end
local function add(streams, lvkey, counter, group, maxlen, maxbytes, reject, want, level, fields)
  local size = 0
  for i = 1, #fields, 2 do
    if fields[i] == 'p' then size = #fields[i + 1] end
  end
  local per, ready = ready_of(streams, lvkey, group)
  local bytes = 0
  if maxbytes then bytes = tonumber(redis.call('GET', counter) or '0') end
  if reject then
    if (maxlen and ready >= maxlen) or (maxbytes and bytes + size > maxbytes) then
      return {0}
    end
  end
  if level > 0 and redis.call('SADD', lvkey, level) == 1 then
    pcall(redis.call, 'XGROUP', 'CREATE', streams[level], group, '0', 'MKSTREAM')
  end
  redis.call('XADD', streams[level], '*', unpack(fields))
  per[level] = (per[level] or 0) + 1
  local dropped, n
  dropped, n, bytes = drop_head(streams, group, maxlen, maxbytes, want, per, ready + 1,
    bytes + size)
  if maxbytes then redis.call('SET', counter, bytes) end
  return dropped
end
"""

#: One entry for a queue with limits: KEYS[1] the queue's stream (level 0), KEYS[2]
#: its ready-bytes counter, KEYS[3] its set of levels, KEYS[3 + N] its stream of
#: priority N (1-9); ARGV[1] the group, ARGV[2] max-length ('' none), ARGV[3]
#: max-bytes ('' none), ARGV[4] '1' for overflow=reject, ARGV[5] '1' to return the
#: dropped entries' fields, ARGV[6] the entry's level, ARGV[7..] its fields.  Returns
#: what ``add`` returns.
LIMIT_SCRIPT = (
    LIMIT_FUNCTION
    + """
local streams = {[0] = KEYS[1]}
for l = 1, 9 do streams[l] = KEYS[3 + l] end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
return add(streams, KEYS[3], KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
  ARGV[4] == '1', ARGV[5] == '1', tonumber(ARGV[6]), fields)
"""
)

LIMIT_SHA = hashlib.sha1(LIMIT_SCRIPT.encode()).hexdigest()

#: A node read entries of a queue with max-bytes: KEYS[1] its ready-bytes counter,
#: KEYS[2] its hash of read entries' sizes; ARGV: entry id, size, entry id, size …
MARK_SCRIPT = """
local total = 0
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  total = total + tonumber(ARGV[i + 1])
end
redis.call('DECRBY', KEYS[1], total)
"""

#: Entries of a queue with max-bytes go back to the stream's tail (given back, taken
#: over): KEYS[1] the counter, KEYS[2] the sizes hash; ARGV: the old entries' ids.
#: Those a node had read (and so taken off the counter) count again.
RECOUNT_SCRIPT = """
local total = 0
for _, id in ipairs(ARGV) do
  local size = redis.call('HGET', KEYS[2], id)
  if size then
    total = total + tonumber(size)
    redis.call('HDEL', KEYS[2], id)
  end
end
if total > 0 then redis.call('INCRBY', KEYS[1], total) end
return total
"""


def bytes_key(queue: str) -> str:
    """A queue's ready-bytes counter (in its stream's slot)."""
    return f"mb:b:{{{queue}}}"


def sizes_key(queue: str) -> str:
    """The sizes of a queue's entries read by nodes and not acknowledged yet."""
    return f"mb:m:{{{queue}}}"


class Limits:
    """What the writer needs to know of a shared queue's limits (set by the node)."""

    __slots__ = ("max_length", "max_bytes", "reject", "dead_letter")

    def __init__(
        self, max_length: int | None, max_bytes: int | None, reject: bool, dead_letter: bool
    ) -> None:
        self.max_length = max_length
        self.max_bytes = max_bytes
        self.reject = reject
        self.dead_letter = dead_letter


def queue_limits(q: object) -> Limits | None:
    """Shared queue ``q``'s limits, judged in Redis (None: it has none)."""
    if not isinstance(q, Queue):
        return None
    o = q.options
    if o.max_length is None and o.max_bytes is None:
        return None
    dl = o.dead_letter is not None and o.overflow != "reject"
    return Limits(o.max_length, o.max_bytes, o.overflow == "reject", dl)


def counts_bytes(q: object) -> bool:
    """Whether shared queue ``q`` keeps a ready-bytes counter (it has max-bytes)."""
    return isinstance(q, Queue) and q.options.max_bytes is not None


def limit_plan(
    queues: Sequence[Queue], shared: Callable[[Queue], bool]
) -> dict[str, tuple[tuple[Any, ...], bool]]:
    """For the delayed-copy mover: each shared queue with limits, its limits as the
    scripts take them and whether it has a dead-letter target."""
    out = {}
    for q in queues:
        lim = queue_limits(q) if shared(q) else None
        if lim is not None:
            out[q.name] = (limit_argv(lim), q.options.dead_letter is not None)
    return out


def limit_args(
    queue: str, limits: Limits, fields: dict[str, bytes | str], level: int = 0
) -> tuple[Any, ...]:
    """The arguments of ``EVAL`` :data:`LIMIT_SCRIPT` for one entry of priority
    ``level`` (0-9)."""
    flat = [v for pair in fields.items() for v in pair]
    return (LIMIT_SCRIPT, 12, *_limit_keys(queue), "mb", *limit_argv(limits), level, *flat)


@lru_cache(maxsize=4096)
def _limit_keys(queue: str) -> tuple[str, ...]:
    """LIMIT_SCRIPT's KEYS for ``queue`` (made once: they are the same for each entry)."""
    streams = [keys.level_stream(queue, n) for n in range(1, 10)]
    return (keys.stream(queue), bytes_key(queue), keys.levels(queue), *streams)


def size_field(entry: bytes, level: int) -> bytes:
    """An entry's field in a queue's hash of read entries' sizes (:func:`sizes_key`):
    its id, behind its level for a priority's own stream (ids are per stream)."""
    return b"%d:%s" % (level, entry) if level else entry


def limit_argv(limits: Limits) -> tuple[Any, ...]:
    """A queue's limits as the scripts take them (ARGV[2..5] of LIMIT_SCRIPT)."""
    return (
        "" if limits.max_length is None else limits.max_length,
        "" if limits.max_bytes is None else limits.max_bytes,
        "1" if limits.reject else "0",
        "1" if limits.dead_letter else "0",
    )


class Verdict:
    """What Redis said of one copy of one PUBLISH (``error`` set when refused);
    ``line``: which line of the reply it is (a run of PUBLISH has one per message)."""

    __slots__ = ("line", "error")

    def __init__(self, line: int) -> None:
        self.line = line
        self.error: errors.BrokerError | None = None


class ClusterJournal(Journal):
    """The core's journal, whose commit callbacks also hear the verdicts of the copies
    published by the command that registered them (see the module's text)."""

    def __init__(
        self, clock: Any, writer: Callable[..., None], available: Callable[[], bool]
    ) -> None:
        super().__init__(clock, writer, available)
        self._verdicts: list[Verdict] = []
        #: the reply line of the next publish
        self.line = 0

    def verdict(self) -> Verdict:
        """A verdict for a copy the command being run adds (its reply line: ``line``)."""
        v = Verdict(self.line)
        self._verdicts.append(v)
        return v

    def next_line(self) -> None:
        """A publish that may be one of a run (PUBLISH with properties): the first
        line when no verdict waits, else the next one."""
        self.line = self.line + 1 if self._verdicts else 0

    def new_command(self) -> None:
        """A command that is its own reply begins: verdicts nobody waited for are
        forgotten."""
        self.line = 0
        if self._verdicts:
            self._verdicts = []

    def on_commit(self, callback: Done) -> None:
        verdicts = self._verdicts
        if verdicts:
            self._verdicts = []
            callback = partial(_judged, callback, verdicts)
        self.line = 0
        super().on_commit(callback)

    def commit(self) -> None:
        """The end of a reactor turn: verdicts nobody waited for are forgotten."""
        self.new_command()
        super().commit()

    def flush(self) -> None:
        """Commit what came before, in the middle of a command (its verdicts wait)."""
        super().commit()


def _judged(callback: Done, verdicts: list[Verdict], err: errors.BrokerError | None) -> None:
    if err is None:
        refused = {v.line: v.error for v in verdicts if v.error is not None}
        if refused:
            err = errors.Refused(refused)
    callback(err)
