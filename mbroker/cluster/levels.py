"""Priorities across a shared queue: one stream per priority level in use.

A queue without ``max-length``/``max-bytes`` keeps the entries of priority N (1-9)
in a stream of their own, ``mb:q:{NAME}:N`` (:func:`~mbroker.cluster.keys.level_stream`),
in the queue's hash slot, with the same consumer group; priority 0 stays in the
queue's stream ``mb:q:{NAME}``, so a plain queue has no other key and pays nothing.
The levels a queue has a stream of are the set ``mb:lv:{NAME}``: the first entry of
a level adds it and makes the level's group (:data:`LEVEL_SCRIPT`, run only for a
message with a priority), and the set goes only when the queue is deleted.

Every path that touches a queue's entries reads that set: the feeder's read (one
``XREADGROUP`` naming the queue's streams, highest first, see
:mod:`mbroker.cluster.feeder`), the figures and the takeover of a dead node's entries
(:mod:`mbroker.cluster.watch`, summed over the levels), PURGE (:func:`purge`) and the
delete (a fixed list of the ten streams and the set: one ``DEL``, no read).  An ACK, a NACK given
back and a dead-lettered copy know their level from the entry the node read or the
message's priority.

A PUBLISH with an id adds its entry to its level's stream in the script that checks
the id (:data:`ONCE_SCRIPT`), and a delayed copy goes to its level's stream when it
falls due (:data:`~mbroker.cluster.delays.MOVE_SCRIPT`).  A queue with
``max-length`` or ``max-bytes`` keeps its levels the same way: its limits' script
(:data:`~mbroker.cluster.limits.LIMIT_FUNCTION`) adds the entry to its level's
stream, counts over every level and drops from the lowest (see ``docs/cluster.rst``).
"""

from __future__ import annotations

from typing import Any

from mbroker.cluster import keys, limits

#: KEYS[1] the level's stream, KEYS[2] the queue's set of levels; ARGV[1] the level,
#: ARGV[2..] the entry's fields.  Adds the level (and its group) the first time.
LEVEL_SCRIPT = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], 'mb', '0', 'MKSTREAM')
end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
"""


#: KEYS: a queue's streams, highest level first; ARGV[1] the group, ARGV[2] the
#: consumer, ARGV[3] how many, ARGV[3 + i] the level of KEYS[i].  Reads up to that
#: many new entries, highest level first: ``{{id, level, {field, value, …}}, …}``.
READ_SCRIPT = """
local left = tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS do
  if left <= 0 then break end
  local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left,
                         'STREAMS', KEYS[i], '>')
  if got then
    for _, e in ipairs(got[1][2]) do
      if e[2] then
        out[#out + 1] = {e[1], ARGV[3 + i], e[2]}
        left = left - 1
      end
    end
  end
end
return out
"""


def read(
    client: Any, queue: str, node: str, count: int, known: list[int], block: int
) -> list[tuple[bytes, keys.Fields, int]]:
    """On a read thread: up to ``count`` new entries of ``queue``'s streams of levels
    ``known`` (highest first) for consumer ``node``, highest level first: one script,
    then if none came, one ``XREADGROUP`` that waits on all of them up to ``block``
    ms (it returns what the first stream to get something has)."""
    names = [keys.level_stream(queue, n) for n in known]
    got = client.eval(READ_SCRIPT, len(names), *names, keys.GROUP, node, count, *known)
    if got:
        return [(e, dict(zip(f[::2], f[1::2])), int(n)) for e, n, f in got]
    waited = client.xreadgroup(
        keys.GROUP, node, {name: ">" for name in names}, count=count, block=block
    )
    return [
        (eid, fields, keys.level_of(stream))
        for stream, rows in sorted(waited or [], key=lambda r: -keys.level_of(r[0]))
        for eid, fields in rows
        if fields
    ]


#: :data:`~mbroker.cluster.writer.ONCE_SCRIPT` for an entry of a priority: KEYS[1]
#: the id's key, then per queue its level's stream and its set of levels; ARGV: what
#: the first one reached, the window (ms), the level, the entry's fields.
ONCE_SCRIPT = """
local first = redis.call('GET', KEYS[1])
if first then return first end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, #KEYS, 2 do
  if redis.call('SADD', KEYS[i + 1], ARGV[3]) == 1 then
    pcall(redis.call, 'XGROUP', 'CREATE', KEYS[i], 'mb', '0', 'MKSTREAM')
  end
  redis.call('XADD', KEYS[i], '*', unpack(ARGV, 4))
end
return false
"""


def add_args(queue: str, level: int, fields: dict[str, bytes | str]) -> tuple[Any, ...]:
    """The ``EVAL`` arguments adding an entry of priority ``level`` (1-9) to ``queue``."""
    flat = [v for pair in fields.items() for v in pair]
    return (LEVEL_SCRIPT, 2, keys.level_stream(queue, level), keys.levels(queue), level, *flat)


#: KEYS: the keys to delete (one slot; a cluster pipeline has no ``DEL`` of several)
DELETE_SCRIPT = "return redis.call('DEL', unpack(KEYS))"


def delete_args(queue: str) -> tuple[Any, ...]:
    """The ``EVAL`` arguments deleting every stream ``queue`` may have and its set of
    levels (a fixed list: no read first)."""
    names = (*[keys.level_stream(queue, n) for n in keys.LEVELS], keys.levels(queue))
    return (DELETE_SCRIPT, len(names), *names)


def in_use(client: Any, queue: str) -> list[int]:
    """On a read or write thread: the levels ``queue`` has streams of, highest first,
    0 included."""
    found = client.smembers(keys.levels(queue))
    return sorted({0, *[int(n) for n in found]}, reverse=True) if found else [0]


def purge(client: Any, queue: str, counted: bool = False) -> None:
    """Read every entry no node has read yet of each of ``queue``'s streams, as
    consumer ``mb.purge``, and drop it (``counted``: and take its size off the
    queue's ready bytes)."""
    purger = "mb.purge"
    for level in in_use(client, queue):
        stream = keys.level_stream(queue, level)
        while True:
            got = client.xreadgroup(keys.GROUP, purger, {stream: ">"}, count=1000)
            rows = got[0][1] if got else []
            ids = [eid for eid, _ in rows]
            if not ids:
                break
            client.xack(stream, keys.GROUP, *ids)
            client.xdel(stream, *ids)
            if counted:
                size = sum([len(f.get(b"p", b"")) for _, f in rows if f])
                client.decrby(limits.bytes_key(queue), size)
        client.xgroup_delconsumer(stream, keys.GROUP, purger)
