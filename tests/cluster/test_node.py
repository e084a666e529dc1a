"""The cluster node's pieces on a fake clock and a fake Redis: what goes to Redis
when, and what comes back to the core (the real thing is in tests/e2e/test_cluster.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mbroker import errors
from mbroker.cluster import keys
from mbroker.cluster.feeder import room
from mbroker.cluster.link import parse_nodes
from mbroker.cluster.writer import RETRY_AFTER
from mbroker.core.model import Published
from mbroker.wire.frames import Props, QueueOptions
from mbroker.wire.props import parse_props
from tests.helpers.fakenode import FakeNode
from tests.helpers.fakeredis import FakeRedis


class Node(FakeNode):
    def turn(self) -> None:
        """End the reactor turn: the journal commits, the writer sends its batch."""
        self.turns(2)


@pytest.fixture
def node() -> Node:
    return Node()


def test_create_writes_the_namespace_and_waits_for_it(node: Node) -> None:
    changes = node.journal.changes
    assert node.broker.create(None, "q", "queue", QueueOptions(max_deliver=3))
    assert node.journal.changes > changes  # (so the +OK waits for the commit)
    assert node.broker.create(None, "x", "fanout", QueueOptions())
    node.broker.bind("q", "x", "")
    node.turn()
    names = node.redis.names()
    assert names.count("hset") == 2 and "sadd" in names and "xgroup_create" in names
    assert ("spublish", (keys.NS_CHANNEL, b"1")) in node.redis.calls
    (hset,) = [a for n, a in node.redis.calls if n == "hset" and a[0] == keys.QUEUES]
    assert keys.decode_options(hset[2]) == QueueOptions(max_deliver=3)


def test_errors_are_the_cores(node: Node) -> None:
    node.broker.create(None, "q", "queue", QueueOptions())
    with pytest.raises(errors.Exists):
        node.broker.create(None, "q", "fanout", QueueOptions())
    with pytest.raises(errors.NotFound):
        node.broker.publish("nope", "", b"x")
    with pytest.raises(errors.WrongKind):
        node.broker.bind("q", "q", "")


def test_publish_is_one_xadd_per_target_queue_in_one_pipeline(node: Node) -> None:
    b = node.broker
    b.create(None, "q1", "queue", QueueOptions())
    b.create(None, "q2", "queue", QueueOptions())
    b.create(None, "t", "topic", QueueOptions())
    b.bind("q1", "t", "a.*")
    b.bind("q2", "t", "#")
    node.turn()
    node.redis.pipelines.clear()
    assert b.publish("t", "a.b", b"one") == 2
    assert b.publish("q1", "", b"two") == 1
    assert b.publish("t", "zzz", b"three") == 1
    node.turn()
    batch = [op for pipeline in node.redis.pipelines for op in pipeline]
    xadds = [(a[0], a[1]["p"]) for n, a in batch if n == "xadd"]
    assert xadds == [
        (keys.stream("q1"), b"one"),
        (keys.stream("q2"), b"one"),
        (keys.stream("q1"), b"two"),
        (keys.stream("q2"), b"three"),
    ]
    # subscriptions to the exchange get it through pub/sub
    assert [a[0] for n, a in batch if n == "spublish"] == [keys.channel("t")] * 2
    # nothing was queued here: the messages live in Redis until a node reads them
    assert not b.queue("q1").ready


def test_a_consumer_reads_its_prefetch_and_an_ack_is_xack_and_xdel(node: Node) -> None:
    b = node.broker
    b.create(None, "q", "queue", QueueOptions())
    for i in range(5):
        b.publish("q", "", b"m%d" % i)
    node.turn()
    c = b.subscribe(node.session, "q", prefetch=2, manual=True)
    b.activate(c)
    node.turn()
    assert node.target.payloads() == [b"m0", b"m1"]
    assert room(b.queue("q")) <= 0
    node.redis.calls.clear()
    b.ack(node.session, ((1, 1),))
    for _ in range(3):
        node.clock.advance(0.01)
    acked = [a for n, a in node.redis.calls if n == "xack"]
    assert acked and acked[0][2:] == (b"1-0",)
    assert node.target.payloads()[-1] == b"m2"  # room again: the next one came


def test_what_is_left_when_the_last_consumer_goes_is_given_back(node: Node) -> None:
    b = node.broker
    b.create(None, "q", "queue", QueueOptions())
    b.publish("q", "", b"held")
    node.turn()
    c = b.subscribe(node.session, "q", manual=True)
    b.activate(c)
    node.turn()
    assert node.target.payloads() == [b"held"]
    node.redis.calls.clear()
    b.close_session(node.session)  # unacked: back in the local queue, then to Redis
    for _ in range(3):
        node.clock.advance(0.01)
    xadd = [a for n, a in node.redis.calls if n == "xadd"]
    assert xadd and xadd[0][1]["p"] == b"held" and xadd[0][1]["d"] == "1"
    assert [a[1:] for n, a in node.redis.calls if n == "xdel"] == [(b"1-0",)]
    assert not b.queue("q").ready


def test_a_failed_batch_answers_unavailable(node: Node) -> None:
    def broken(*args: Any, **kw: Any) -> Any:
        raise ConnectionError("Redis is gone")

    node.redis.pipeline = broken  # type: ignore[method-assign]
    node.broker.create(None, "q", "queue", QueueOptions())
    got: list[Any] = []
    node.journal.on_commit(got.append)
    node.turn()
    assert isinstance(got[0], errors.Unavailable)
    assert not node.writer.available
    with pytest.raises(errors.Unavailable):
        node.broker.publish("q", "", b"x")


def test_exclusive_and_private_queues_stay_local(node: Node) -> None:
    b = node.broker
    b.create(node.session, "mine", "queue", QueueOptions(exclusive=True))
    node.turn()
    assert "hset" not in node.redis.names()
    assert b.publish("mine", "", b"local") == 1
    assert [m.payload for m in b.queue("mine").ready] == [b"local"]


@pytest.mark.parametrize(
    ("url", "nodes"),
    [
        ("redis://127.0.0.1:7000,127.0.0.1:7001", [("127.0.0.1", 7000), ("127.0.0.1", 7001)]),
        ("h:1", [("h", 1)]),
    ],
)
def test_parse_nodes(url: str, nodes: list[tuple[str, int]]) -> None:
    assert parse_nodes(url) == nodes


@pytest.mark.parametrize("url", ["", "redis://", "http://h:1", "redis://h", "redis://h:x"])
def test_parse_nodes_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        parse_nodes(url)


def test_a_queue_ttl_of_0_counts_from_the_publish(node: Node) -> None:
    # (ttl=0: the entry may be read for a grace, then the sweep and a read expire it)
    b = node.broker
    b.create(None, "z", "queue", QueueOptions(ttl=0))
    b.create(None, "x", "fanout", QueueOptions())
    b.bind("z", "x", "")
    node.clock.advance(5)
    node.turn()
    node.redis.pipelines.clear()
    assert b.publish("z", "", b"direct") == 1
    assert b.publish("x", "", b"fanout") == 1
    node.turn()
    batch = [op for pipeline in node.redis.pipelines for op in pipeline]
    ready = repr(5 + keys.GRACE_MS / 1000.0)
    assert [(a[1]["p"], a[1].get("e")) for n, a in batch if n == "xadd"] == [
        (b"direct", ready),
        (b"fanout", ready),
    ]


def test_entry_fields_round_trip() -> None:
    fields = keys.entry_fields("src", "a.b", b"\x00\r\n", 12.5, 2, "expired")
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    assert keys.read_entry(raw) == ("src", "a.b", b"\x00\r\n", 12.5, 2, "expired", None)
    props = parse_props([b"h.a=x%20y", b"id=i-1", b"priority=3"])
    fields = keys.entry_fields("src", "", b"p", None, 0, None, props)
    raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    assert fields["a"] == b"id=i-1 priority=3 h.a=x%20y"
    assert keys.read_entry(raw)[6] == props
    plain = keys.entry_fields("src", "", b"p", None)
    assert set(plain) == {"s", "k", "p"}
    assert keys.exchange_of(keys.channel("ex.1").encode()) == "ex.1"
    assert keys.split_binding(keys.binding("q", "x", "a.#")) == ("q", "x", "a.#")


class OnceRedis(FakeRedis):
    """Answers ONCE_SCRIPT as Redis would (ids remembered here), and fails the XADD of
    stream ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, int] = {}
        self.failing = ""

    def eval(self, script: str, numkeys: int, key: str, *args: Any) -> Any:
        self.calls.append(("eval", (key, *args[: numkeys - 1])))
        if key in self.ids:
            return b"%d" % self.ids[key]
        self.ids[key] = int(args[numkeys - 1])
        return None

    def call(self, name: str, *args: Any) -> Any:
        if name == "xadd" and args[0] == self.failing:
            self.calls.append((name, args))
            return errors.Unavailable("MOVED")
        return super().call(name, *args)

    def delete(self, *names: str) -> int:
        self.calls.append(("delete", names))
        for name in names:
            self.ids.pop(name, None)
        return len(names)


def test_a_publish_id_is_asked_of_redis_in_its_place_and_answered_late(node: Node) -> None:
    redis = node.use(OnceRedis())
    node.broker.create(None, "q", "queue", QueueOptions())
    node.turn()
    redis.calls.clear()
    node.broker.publish("q", "", b"before")
    first = node.broker.publish_props("q", "", b"x", None, Props(id="i1"))
    node.broker.publish("q", "", b"after")
    assert isinstance(first, Published) and first.reached == 1
    node.turn()
    # in publish order: the plain entry, the script (id and entry at once), the next
    assert [(n, a[0]) for n, a in redis.calls] == [
        ("xadd", keys.stream("q")),
        ("eval", keys.dedup("q", "i1")),
        ("xadd", keys.stream("q")),
    ]
    again = node.broker.publish_props("q", "", b"x", None, Props(id="i1"))
    node.turn()
    assert isinstance(again, Published) and (again.reached, again.duplicate) == (1, True)
    assert not first.duplicate


def test_an_exchange_id_whose_entries_fail_is_forgotten(node: Node) -> None:
    redis = node.use(OnceRedis())
    node.broker.create(None, "q", "queue", QueueOptions())
    node.broker.create(None, "x", "fanout", QueueOptions())
    node.broker.bind("q", "x", "")
    node.turn()
    redis.failing = keys.stream("q")
    answers: list[object] = []
    node.journal.on_commit(answers.append)
    result = node.broker.publish_props("x", "", b"x", None, Props(id="e1"))
    node.journal.on_commit(answers.append)
    node.turn()
    assert isinstance(result, Published) and not result.duplicate
    assert isinstance(answers[-1], errors.Unavailable)  # (the reply: -ERR UNAVAILABLE)
    assert redis.ids == {}  # (a refused PUBLISH leaves no id behind)
    redis.failing = ""
    node.clock.advance(RETRY_AFTER)  # (writes are refused at once for a while)
    retry = node.broker.publish_props("x", "", b"x", None, Props(id="e1"))
    node.turn()
    assert isinstance(retry, Published) and not retry.duplicate
    assert redis.ids == {keys.dedup("x", "e1"): 1}
