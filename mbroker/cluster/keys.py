"""Where a cluster keeps things in Redis: key names, and how values are written there.

Layout (``{…}`` is a Redis Cluster hash tag: keys with the same tag share a slot):

- ``{mb}:queues`` (hash) name -> JSON of the queue's CREATE options;
- ``{mb}:exchanges`` (hash) name -> kind;
- ``{mb}:bindings`` (set) ``queue NUL exchange NUL key``;
- ``{mb}:ns`` (sharded pub/sub channel): "the namespace changed, read it again";
- ``mb:q:{NAME}`` (stream) one per shared queue, consumer group ``mb``, one consumer
  per node (the node's name); an entry's fields: ``s`` source, ``k`` routing key,
  ``p`` payload, ``e`` expiry (epoch seconds, absent: none), ``d`` earlier
  deliveries (absent: none), ``r`` dead-letter reason (absent: none), ``a`` the
  message's section 7 properties as the store keeps them
  (:func:`~mbroker.wire.props.stored_text`; absent: none), ``h`` on a dead-lettered
  copy only: its cascade depth and its dead-letter path (:func:`hops_field`), ``z``
  on a ttl=0 copy only: the grace (ms) it may be read in, which ``e`` includes
  (:func:`at_once`);
- ``mb:q:{NAME}:N`` (stream, N 1-9) the entries of priority N of a queue (level 0,
  priority 0, stays ``mb:q:{NAME}``), same
  group, and ``mb:lv:{NAME}`` (set) the levels 1-9 the queue has streams for
  (:func:`level_stream`; a plain queue has neither);
- ``mb:id:{NAME}:ID`` (string with a PX expiry: the dedup window) a PUBLISH id of
  queue or exchange NAME, holding what the first PUBLISH with it reached;
- ``mb:d:{NAME}`` (sorted set) a queue's delayed entries, and ``{mb}:delayed`` (set)
  the queues that may have some (:mod:`mbroker.cluster.delays`);
- ``mb:node:{NAME}`` (string with a PX expiry) a node's liveness;
- ``mb:life:{NAME}`` (hash) and ``mb:used:{NAME}`` (string) a queue's lifetime
  state (:mod:`mbroker.cluster.lifetime`);
- ``mb:x:{NAME}`` (sharded pub/sub channel) transient messages published to an
  exchange, each ``node LF key LF payload`` (node: the publishing node's name), or
  ``node SP properties LF key LF payload`` for a message with section 7 properties.

Queue names go inside the hash tag, so a queue's stream lives on one master and the
queues spread over the cluster's masters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Optional

import attrs

from mbroker.wire.frames import Props, QueueOptions
from mbroker.wire.props import from_stored, stored_text

QUEUES = "{mb}:queues"
EXCHANGES = "{mb}:exchanges"
BINDINGS = "{mb}:bindings"
NS_CHANNEL = "{mb}:ns"
#: the queues that may hold delayed entries (:mod:`mbroker.cluster.delays`)
DELAYED = "{mb}:delayed"
GROUP = "mb"

#: a stream entry's fields, as redis-py returns them
Fields = dict[bytes, bytes]
#: one entry read from a stream: ``(entry id, fields)``
Entry = tuple[bytes, Fields]


def stream(queue: str) -> str:
    return f"mb:q:{{{queue}}}"


#: the priority levels a queue may have a stream of, highest first (0 included)
LEVELS = tuple(range(9, -1, -1))


def level_stream(queue: str, level: int) -> str:
    """The stream of ``queue``'s entries of priority ``level`` (0: :func:`stream`)."""
    return f"mb:q:{{{queue}}}:{level}" if level else f"mb:q:{{{queue}}}"


def levels(queue: str) -> str:
    """The set of the levels 1-9 ``queue`` has a stream of (in its slot)."""
    return f"mb:lv:{{{queue}}}"


def level_of(stream_name: bytes | str) -> int:
    """The level of a stream named by :func:`level_stream`."""
    text = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
    return 0 if text.endswith("}") else int(text[-1])


def dedup(name: str, msg_id: str) -> str:
    """The key remembering PUBLISH id ``msg_id`` of queue or exchange ``name`` for its
    dedup window (a queue's: in its stream's slot)."""
    return f"mb:id:{{{name}}}:{msg_id}"


def delayed(queue: str) -> str:
    """A queue's delayed entries (sorted set, score: due time in ms; in its slot)."""
    return f"mb:d:{{{queue}}}"


def node_key(node: str) -> str:
    return f"mb:node:{{{node}}}"


def channel(exchange: str) -> str:
    return f"mb:x:{{{exchange}}}"


def exchange_of(chan: bytes) -> str:
    """The exchange of a channel named by :func:`channel`."""
    return chan.decode()[len("mb:x:{") : -1]


def encode_options(options: QueueOptions) -> str:
    return json.dumps(attrs.asdict(options), sort_keys=True)


def decode_options(text: bytes | str) -> QueueOptions:
    return QueueOptions(**json.loads(text))


def binding(queue: str, exchange: str, key: str) -> str:
    return f"{queue}\0{exchange}\0{key}"


def split_binding(member: bytes | str) -> tuple[str, str, str]:
    text = member.decode() if isinstance(member, bytes) else member
    queue, exchange, key = text.split("\0")
    return queue, exchange, key


def entry_fields(
    source: str,
    key: str,
    payload: bytes,
    expires: float | None,
    deliveries: int = 0,
    reason: str | None = None,
    props: Props | None = None,
    hops: str | None = None,
) -> dict[str, bytes | str]:
    """The fields of a stream entry for one message (``hops``: a dead-lettered
    copy's :func:`hops_field`)."""
    fields: dict[str, bytes | str] = {"s": source, "k": key, "p": payload}
    if expires is not None:
        fields["e"] = repr(expires)
    if deliveries:
        fields["d"] = str(deliveries)
    if reason:
        fields["r"] = reason
    if props is not None:
        fields["a"] = stored_text(props)
    if hops is not None:
        fields["h"] = hops
    return fields


#: field ``z``: a ttl=0 copy (:func:`at_once`)
AT_ONCE = b"z"
#: how long after it is ready (published, due, dead-lettered) a ttl=0 copy may still
#: be read and delivered "at once" (ms): a few of a feeder's read cycles
#: (:data:`~mbroker.cluster.feeder.BLOCK_MS`), with room for a busy node
GRACE_MS = 1000


def at_once(fields: dict[str, bytes | str], ready: float) -> None:
    """Make ``fields`` those of a ttl=0 copy that became ready at ``ready`` (epoch
    seconds): a node reading it before ``ready`` + :data:`GRACE_MS` hands it to a
    consumer or waiter that takes it at once, or expires it; later, it (or the
    expiry sweep, which knows only ``e``) expires it."""
    fields["e"] = repr(ready + GRACE_MS / 1000.0)
    fields["z"] = str(GRACE_MS)


def own_ttls(
    fields: dict[str, bytes | str],
    ttl: int | None,
    start: float,
    queues: Sequence[tuple[str, int | None]],
) -> dict[str, dict[str, bytes | str]]:
    """The fields of their own entries for the ``queues`` (name, the queue's ttl) an
    entry with ``fields`` goes to whose ttl is shorter than the PUBLISH's ``ttl`` (ms,
    None: none): the same but for the expiry, counted from ``start`` (epoch seconds:
    the publish, or a delayed copy's due time), and marked when the ttl is 0
    (:func:`at_once`).  One entry serves all the other queues."""
    own: dict[str, dict[str, bytes | str]] = {}
    for name, qttl in queues:
        if qttl is not None and (ttl is None or qttl < ttl):
            copy = own[name] = dict(fields)
            expires = start + qttl / 1000.0
            copy["e"] = repr(expires)
            if qttl == 0:
                at_once(copy, expires)
    return own


def fresh(fields: Fields, expires: float, now: float) -> tuple[float, bool]:
    """For an entry with field ``z`` (:func:`at_once`) and expiry ``expires``: when it
    became ready (its expiry as a ttl=0 message), and whether it is read in time."""
    return expires - int(fields[AT_ONCE]) / 1000.0, now < expires


def hops_field(depth: int, path: tuple[str, ...]) -> str:
    """Field ``h`` of a dead-lettered copy: ``DEPTH[ NAME …]``, the depth of the
    cascade that wrote it (1 for a dead letter that no other dead letter set off: a
    drop-head it causes dead-letters at that depth, and none at
    :data:`~mbroker.core.dispatch.MAX_DEAD_LETTER_DEPTH`) and the queues it left by
    expiry or overflow since its last rejection (the core's
    :attr:`~mbroker.core.model.QueuedMessage.dl_path`: never one to go back to).
    Queue names have no spaces."""
    return " ".join((str(depth), *path))


def read_hops(fields: Fields) -> tuple[int, tuple[str, ...]]:
    """The cascade depth and dead-letter path in an entry's fields (``(0, ())`` for
    one that was not dead-lettered)."""
    h = fields.get(b"h")
    if not h:
        return 0, ()
    depth, *path = h.decode().split(" ")
    return int(depth), tuple(path)


#: what an entry holds: ``(source, key, payload, expires, deliveries, reason, props)``
Read = tuple[str, str, bytes, Optional[float], int, Optional[str], Optional[Props]]


def read_entry(fields: Fields) -> Read:
    """The message in an entry's fields."""
    e = fields.get(b"e")
    d = fields.get(b"d")
    r = fields.get(b"r")
    a = fields.get(b"a")
    return (
        fields[b"s"].decode(),
        fields.get(b"k", b"").decode(),
        fields.get(b"p", b""),
        float(e) if e else None,
        int(d) if d else 0,
        r.decode() if r else None,
        from_stored(a) if a else None,
    )
