"""ttl=0 on a cluster node, on a fake clock and a fake Redis: a ttl=0 copy's entry is
marked (field ``z``) and readable for a grace after it became ready; a node that
reads it in time hands it to a consumer or waiting PULL that takes it at once (or
expires it then), and one that reads it later expires it and dead-letters it (the
real thing: tests/e2e/test_cluster_ttl0.py and test_contract_ttl0.py on a node)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from mbroker.cluster import delays, keys
from mbroker.cluster.node import ClusterBroker
from mbroker.cluster.once import ONCE_SCRIPT
from mbroker.core.model import Published, Pulled
from mbroker.wire.frames import Props, QueueOptions
from tests.helpers.fakenode import FakeNode
from tests.helpers.fakeredis import FakeRedis

GRACE = keys.GRACE_MS / 1000.0


class Node(FakeNode):
    def __init__(self) -> None:
        super().__init__()
        self.clock.advance(100)

    def added(self, queue: str) -> list[dict[str, Any]]:
        """The fields of the entries XADDed to ``queue``'s stream."""
        stream = keys.stream(queue)
        return [a[1] for n, a in self.redis.calls if n == "xadd" and a[0] == stream]

    def subscribe(self, queue: str, prefetch: int = 1) -> None:
        c = self.broker.subscribe(self.session, queue, prefetch=prefetch, manual=True)
        self.broker.activate(c)
        self.turns()


@pytest.fixture
def node() -> Node:
    return Node()


def test_ttl0_entries_are_marked_and_readable_for_a_grace(node: Node) -> None:
    b = node.broker
    b.create(None, "q", "queue", QueueOptions())
    b.create(None, "z", "queue", QueueOptions(ttl=0))
    b.create(None, "x", "fanout", QueueOptions())
    b.bind("z", "x", "")
    b.bind("q", "x", "")
    node.turns()
    now = node.clock.seconds()
    b.publish("q", "", b"plain")
    b.publish("q", "", b"own", ttl=0)
    b.publish("q", "", b"five", ttl=5000)
    b.publish("x", "", b"routed")  # (z's ttl=0; q has none)
    node.turns()
    ready = repr(now + GRACE)
    assert [(f["p"], f.get("e"), f.get("z")) for f in node.added("q")] == [
        (b"plain", None, None),
        (b"own", ready, str(keys.GRACE_MS)),
        (b"five", repr(now + 5), None),
        (b"routed", None, None),
    ]
    assert [(f["p"], f.get("e"), f.get("z")) for f in node.added("z")] == [
        (b"routed", ready, str(keys.GRACE_MS))
    ]
    assert not node.writer.at_once  # (each id is forgotten once written)


def test_a_consumer_with_room_takes_a_ttl0_entry_read_in_time(node: Node) -> None:
    b = node.broker
    b.create(None, "dl", "queue", QueueOptions())
    b.create(None, "q", "queue", QueueOptions(ttl=0, dead_letter="dl"))
    node.turns()
    b.publish("q", "", b"a")
    node.turns()
    node.clock.advance(GRACE / 2)  # read late, but within the grace
    node.subscribe("q")
    assert node.target.payloads() == [b"a"]
    q = b.queue("q")
    assert (q.expired, node.added("dl")) == (0, [])
    # acknowledged like any other: XACK and XDEL of its entry
    node.redis.calls.clear()
    b.ack(node.session, ((1, 1),))
    node.turns()
    assert [a[2:] for n, a in node.redis.calls if n == "xack"] == [(b"1-0",)]


def test_one_read_after_the_grace_is_expired_and_dead_lettered(node: Node) -> None:
    b = node.broker
    b.create(None, "dl", "queue", QueueOptions())
    b.create(None, "q", "queue", QueueOptions(dead_letter="dl"))
    node.turns()
    b.publish("q", "", b"late", ttl=0)
    node.turns()
    node.clock.advance(GRACE)
    node.subscribe("q")
    node.turns()
    assert node.target.payloads() == []
    assert b.queue("q").expired == 1
    assert [(f["p"], f["r"]) for f in node.added("dl")] == [(b"late", "expired")]
    assert [a[1:] for n, a in node.redis.calls if n == "xdel"] == [(b"1-0",)]


def test_no_room_then_the_next_entries_wait_in_redis(node: Node) -> None:
    # prefetch 1: the node reads one, the other stays in the stream (for the sweep)
    b = node.broker
    b.create(None, "q", "queue", QueueOptions())
    node.turns()
    node.subscribe("q")
    b.publish("q", "", b"1", ttl=0)
    b.publish("q", "", b"2", ttl=0)
    node.turns()
    node.clock.advance(0.01)
    assert node.target.payloads() == [b"1"]
    assert [f[b"p"] for _, f in node.redis.streams[keys.stream("q")]] == [b"2"]
    assert b.queue("q").expired == 0


def test_a_waiting_pull_takes_a_ttl0_entry(node: Node) -> None:
    b = node.broker
    b.create(None, "q", "queue", QueueOptions(ttl=0))
    node.turns()
    got: list[Pulled] = []
    assert b.pull(node.session, "q", 1, 5000, on_done=got.append) is None
    node.turns()
    b.publish("q", "", b"p")
    node.turns()
    node.clock.advance(0.01)
    assert [[m.payload for _, m in out] for out in got] == [[b"p"]]
    assert b.queue("q").expired == 0


def test_a_dead_letter_into_a_ttl0_queue_is_marked(node: Node) -> None:
    b = node.broker
    b.create(None, "dl", "queue", QueueOptions(ttl=0))
    b.create(None, "q", "queue", QueueOptions(dead_letter="dl"))
    node.turns()
    b.publish("q", "", b"m")
    node.turns()
    node.subscribe("q")
    now = node.clock.seconds()
    b.nack(node.session, ((1, 1),), requeue=False)
    node.turns()
    (f,) = node.added("dl")
    assert (f["p"], f["r"], f["e"], f["z"]) == (
        b"m",
        "rejected",
        repr(now + GRACE),
        str(keys.GRACE_MS),
    )


def test_fresh_reads_the_ready_time_from_the_entry() -> None:
    fields = keys.entry_fields("s", "", b"p", None)
    keys.at_once(fields, 50.0)
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    expires = keys.read_entry(raw)[3]
    assert expires == 50.0 + GRACE
    assert keys.fresh(raw, expires, 50.5) == (50.0, True)
    assert keys.fresh(raw, expires, 50.0 + GRACE) == (50.0, False)


class ScriptRedis(FakeRedis):
    """Answers the scripts of a PUBLISH with an id as Redis would (each id new once)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def eval(self, script: str, numkeys: int, key: str, *args: Any) -> Any:
        assert script == ONCE_SCRIPT
        if key in self.ids:
            return b"3"
        self.ids.add(key)
        return None

    def members(self, queue: str) -> list[dict[bytes, bytes]]:
        """The delayed copies added to ``queue``'s sorted set, as their fields."""
        where = keys.delayed(queue)
        return [
            delays.read_member(a[5])
            for n, a in self.calls
            if n == "execute_command" and a[:2] == ("EVAL", delays.DELAY_SCRIPT) and a[3] == where
        ]


def routed(node: Node) -> ClusterBroker:
    """Fanout ``x`` bound to ``q`` (no ttl), ``z`` (ttl=0) and ``f`` (ttl=5000)."""
    b = node.broker
    node.use(ScriptRedis())
    b.create(None, "x", "fanout", QueueOptions())
    for name, ttl in (("q", None), ("z", 0), ("f", 5000)):
        b.create(None, name, "queue", QueueOptions(ttl=ttl))
        b.bind(name, "x", "")
    node.turns()
    return b


def test_an_id_through_an_exchange_gives_a_ttl0_queue_its_own_marked_entry(node: Node) -> None:
    b = routed(node)
    now = node.clock.seconds()
    first = b.publish_props("x", "", b"i", None, Props(id="i1"))
    b.publish_props("x", "", b"t", 2000, Props(id="i2"))
    node.turns()
    z = str(keys.GRACE_MS)

    def got(queue: str) -> list[tuple[Any, ...]]:
        return [(f["p"], f.get("e"), f.get("z")) for f in node.added(queue)]

    assert got("q") == [(b"i", None, None), (b"t", repr(now + 2), None)]
    assert got("z") == [(b"i", repr(now + GRACE), z), (b"t", repr(now + GRACE), z)]
    assert got("f") == [(b"i", repr(now + 5), None), (b"t", repr(now + 2), None)]
    # a duplicate id still routes nothing, to any queue, and says what the first reached
    assert isinstance(first, Published) and (first.reached, first.duplicate) == (3, False)
    again = b.publish_props("x", "", b"again", None, Props(id="i1"))
    node.turns()
    assert isinstance(again, Published) and (again.reached, again.duplicate) == (3, True)
    assert [len(node.added(n)) for n in ("q", "z", "f")] == [2, 2, 2]


def test_a_delay_through_an_exchange_gives_a_ttl0_queue_its_own_marked_member(
    node: Node,
) -> None:
    b = routed(node)
    now = node.clock.seconds()
    b.publish_props("x", "", b"d", None, Props(delay=300))
    b.publish_props("x", "", b"di", None, Props(id="i3", delay=300))
    node.turns()
    redis = cast(ScriptRedis, node.redis)

    def got(queue: str) -> list[tuple[Any, ...]]:
        return [(f[b"p"], f.get(b"e"), f.get(b"z")) for f in redis.members(queue)]

    due = now + 0.3
    assert got("q") == [(b"d", None, None), (b"di", None, None)]
    mark = (repr(due + GRACE).encode(), str(keys.GRACE_MS).encode())
    assert got("z") == [(b"d", *mark), (b"di", *mark)]
    live = repr(due + 5).encode()
    assert got("f") == [(b"d", live, None), (b"di", live, None)]


def test_a_ttl0_queues_own_entry_read_in_time_goes_to_a_consumer(node: Node) -> None:
    b = routed(node)
    b.create(None, "dl", "queue", QueueOptions())
    node.turns()
    b.publish_props("x", "", b"i", 60_000, Props(id="i4"))
    node.turns()
    node.clock.advance(GRACE / 2)
    node.subscribe("z")
    assert node.target.payloads() == [b"i"]
    assert b.queue("z").expired == 0
