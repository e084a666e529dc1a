"""A PUBLISH with an id on a cluster node: at most once per dedup window across every
node, judged by Redis (:data:`ONCE_SCRIPT`: the id's key set with ``SET PX`` and, for a
queue in the key's slot, the entry added in the same script).

:class:`Once` is the job the node hands the writer
(:meth:`~mbroker.cluster.writer.ClusterWriter.publish_once`), which runs it on the
write thread in publish order and answers ``duplicate`` from the script's answer.
Through an exchange, the entries follow the script, and a target queue whose ttl is
shorter than the PUBLISH's gets fields of its own (:attr:`Once.own`, from
:func:`~mbroker.cluster.keys.own_ttls`: its expiry, and a ttl=0 copy's mark).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from mbroker.cluster.limits import Verdict
from mbroker.core.model import Published

#: one Redis command for the pipeline: ``(method of the pipeline, args)``
Op = tuple[str, tuple[Any, ...]]

#: a PUBLISH with an id, at most once per window across the cluster: KEYS[1] the id's
#: key, KEYS[2..] streams (or, delayed, sorted sets) in its slot to add the entry to;
#: ARGV: what the first one reached, the window (ms), the delay (ms, '' for none), the
#: entry's fields (delayed: its member).  Returns what the first one reached, or nil
#: when this is the first (then the id is remembered and the entry added).
ONCE_SCRIPT = """
local first = redis.call('GET', KEYS[1])
if first then return first end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] == '' then
  for i = 2, #KEYS do redis.call('XADD', KEYS[i], '*', unpack(ARGV, 4)) end
else
  local t = redis.call('TIME')
  local due = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
  for i = 2, #KEYS do redis.call('ZADD', KEYS[i], due, ARGV[4]) end
end
return false
"""


@attrs.define(eq=False)
class Once:
    """A PUBLISH with an id (see :meth:`ClusterWriter.publish_once`)."""

    key: str
    window: int
    queues: tuple[str, ...]
    fields: dict[str, bytes | str]
    #: ms, with the entry as a member of the queues' sorted sets (None: not delayed)
    delay: int | None
    member: bytes
    #: whether the queues share the key's slot (a queue: one script does it all)
    atomic: bool
    result: Published
    #: on the reactor thread, when it was the first: the node's local deliveries
    then: Callable[[], None] | None
    #: not atomic: the commands adding the entries (through the limits' script)
    entry_ops: list[Op] = attrs.Factory(list)
    #: what Redis says of its copies in queues with limits (None: nobody asks)
    verdict: Verdict | None = None
    #: the message's priority: its entries go to that level's stream
    level: int = 0
    #: the queues whose entry has fields of its own (a queue ttl shorter than the
    #: PUBLISH's, :func:`~mbroker.cluster.keys.own_ttls`; not atomic only)
    own: dict[str, dict[str, bytes | str]] = attrs.Factory(dict)
    #: delayed: their members (:func:`~mbroker.cluster.delays.members`)
    items: dict[str, bytes] = attrs.Factory(dict)
