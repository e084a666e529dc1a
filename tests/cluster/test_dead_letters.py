"""Dead letters on a cluster node, on a fake clock and a fake Redis: a dead-lettered
entry carries its cascade depth and dead-letter path (field ``h``), so that a cycle of
expiring messages ends and a cascade of drop-head dead letters stops after 4 queues,
as on a single broker (the real thing: tests/e2e/test_contract_queues.py on a node)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mbroker.cluster import keys
from mbroker.cluster.expiry import Removed
from mbroker.core.model import Queue, QueuedMessage
from mbroker.wire.frames import QueueOptions
from tests.helpers.fakenode import FakeNode
from tests.helpers.fakeredis import FakeRedis


class HeadDroppingRedis(FakeRedis):
    """Answers the drop-head scripts as queues of max-length 1 would: each trim keeps
    the newest entry of the stream and drops (returns the fields of) the others."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[str, list[Any]] = {}

    def add_run(self, stream: str, flat: list[Any]) -> int:
        n = super().add_run(stream, flat)
        added = [dict(args[1]) for name, args in self.calls[-n:]]
        self.kept.setdefault(stream, []).extend(added)
        return n

    def trim(self, stream: str) -> list[Any]:
        entries = self.kept.get(stream, [])
        dropped, self.kept[stream] = entries[:-1], entries[-1:]
        return [1, *[[_b(v) for pair in f.items() for v in pair] for f in dropped]]


class Node(FakeNode):
    def turns(self, n: int = 10) -> None:
        super().turns(n)

    def added(self, queue: str) -> list[keys.Fields]:
        """The fields of the entries written to ``queue``'s stream (XADD or script)."""
        stream = keys.stream(queue)
        calls = self.redis.calls
        return [
            raw(args[1]) for name, args in calls if name in ("xadd", "limit") and args[0] == stream
        ]


def _b(v: bytes | str) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


def raw(fields: dict[Any, Any]) -> keys.Fields:
    """Fields as redis-py reads them back."""
    return {_b(k): _b(v) for k, v in fields.items()}


def test_the_hops_field_round_trips_and_plain_entries_have_none() -> None:
    assert keys.hops_field(1, ()) == "1"
    hops = keys.hops_field(3, ("a", "b.c"))
    fields = keys.entry_fields("s", "", b"p", None, 0, "expired", None, hops)
    assert keys.read_hops(raw(fields)) == (3, ("a", "b.c"))
    assert keys.read_entry(raw(fields))[5] == "expired"
    plain = keys.entry_fields("s", "", b"p", None)
    assert "h" not in plain
    assert keys.read_hops({k.encode(): b"" for k in plain}) == (0, ())


def test_a_drop_head_cascade_stops_after_4_queues() -> None:
    node = Node(HeadDroppingRedis())
    b = node.broker
    names = [f"c{i}" for i in range(6)]
    b.create(None, names[5], "queue", QueueOptions())
    for i in range(4, -1, -1):
        opts = QueueOptions(max_length=1, dead_letter=names[i + 1])
        b.create(None, names[i], "queue", opts)
    for i in range(5):
        b.publish(names[i], "", b"old%d" % i)
    node.turns()
    b.publish(names[0], "", b"new")
    node.turns()
    # each dead letter one deeper, with the queue it left as its path
    dead = [[(f[b"p"], f[b"h"]) for f in node.added(n) if b"h" in f] for n in names]
    assert dead == [
        [],
        [(b"old0", b"1 c0")],
        [(b"old1", b"2 c1")],
        [(b"old2", b"3 c2")],
        [(b"old3", b"4 c3")],
        [],  # old4, dropped at depth 4: the fifth hop
    ]
    assert [dict(b.stats(n))["dropped"] for n in names] == ["1"] * 5 + ["0"]
    assert dict(b.stats(names[4]))["dead_lettered"] == "0"


def cycle(a: QueueOptions) -> Node:
    """A node with queue ``a`` (options ``a``) dead-lettering into fanout ``x``, which
    goes to ``a``, ``b`` and ``c``."""
    node = Node()
    b = node.broker
    b.create(None, "a", "queue", a)
    for name in ("b", "c"):
        b.create(None, name, "queue", QueueOptions())
    b.create(None, "x", "fanout", QueueOptions())
    for name in ("a", "b", "c"):
        b.bind(name, "x", "")
    node.turns()
    return node


def test_removed_entries_never_go_back_along_their_path() -> None:
    node = cycle(QueueOptions(ttl=50, dead_letter="x"))
    b = node.broker
    got: list[tuple[list[str], tuple[str, ...], int]] = []

    def sink(
        targets: Sequence[Queue], m: QueuedMessage, reason: str, path: tuple[str, ...], depth: int
    ) -> None:
        got.append(([t.name for t in targets], path, depth))

    removed = Removed(b.find, sink)
    came_round = keys.entry_fields("a", "", b"m", 1.0, 0, "expired", None, "1 b")
    plain = keys.entry_fields("a", "", b"n", 1.0)
    entries = [raw(came_round), raw(plain)]
    removed.expired("a", entries, 2)  # swept
    assert got == [(["c"], ("b", "a"), 0), (["b", "c"], ("a",), 0)]
    got.clear()
    removed.dropped("a", entries[:1], 1, 3)  # dropped by a dead letter of depth 3
    assert got == [(["c"], ("b", "a"), 3)]
    got.clear()
    removed.dropped("a", entries[:1], 1, 4)  # of depth 4: dropped only
    assert got == []
    assert dict(b.stats("a"))["dropped"] == "2"


def test_an_entry_expiring_at_read_is_dead_lettered_with_its_path() -> None:
    node = cycle(QueueOptions(dead_letter="x"))
    b = node.broker
    # an entry that came to a from b by expiry, and has expired again
    fields = keys.entry_fields("a", "", b"m", node.clock.seconds() - 1, 0, "expired", None, "1 b")
    node.redis.streams[keys.stream("a")] = [(b"9-0", raw(fields))]
    c = b.subscribe(node.session, "a", manual=True)
    b.activate(c)
    node.turns()
    assert node.target.payloads() == []
    assert node.added("b") == []  # on its path
    (copy,) = node.added("c")
    assert (copy[b"p"], copy[b"r"], copy[b"h"]) == (b"m", b"expired", b"1 b a")


def test_a_rejected_message_starts_a_new_path() -> None:
    node = Node()
    b = node.broker
    b.create(None, "a", "queue", QueueOptions(dead_letter="b"))
    b.create(None, "b", "queue", QueueOptions())
    node.turns()
    fields = keys.entry_fields("a", "", b"m", None, 0, "expired", None, "2 b")
    node.redis.streams[keys.stream("a")] = [(b"9-0", raw(fields))]
    c = b.subscribe(node.session, "a", manual=True)
    b.activate(c)
    node.turns()
    assert node.target.payloads() == [b"m"]
    b.nack(node.session, ((1, 1),), requeue=False)
    node.turns()
    (copy,) = node.added("b")
    assert (copy[b"p"], copy[b"r"], copy[b"h"]) == (b"m", b"rejected", b"1")
