"""``overflow=drop-head`` on a shared queue (mbroker.cluster.drophead): the writer adds a
batch's copies with one script and applies the limit with another, later in the same
pipeline, so that a node blocked in ``XREADGROUP`` takes them first.  Through a real
:class:`~mbroker.cluster.writer.ClusterWriter` on the real local Redis Cluster (a fake
Redis cannot block a reader between two commands of a pipeline)."""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest
from twisted.internet import task

from mbroker.cluster import delays, drophead, keys
from mbroker.cluster.limits import MARK_SCRIPT, Limits, bytes_key, limit_argv, sizes_key
from mbroker.cluster.link import RedisLink
from mbroker.cluster.writer import ClusterWriter
from mbroker.core import records as rec
from mbroker.core.journal import Done
from mbroker.core.model import QueuedMessage
from mbroker.wire.frames import Props
from tests.helpers.contract import poll
from tests.helpers.fakeredis import FakeLink
from tests.helpers.redis_cluster import blocked_reads, redis_cluster

__all__ = ["redis_cluster"]  # (a fixture, used by name)

pytestmark = pytest.mark.cluster

Q = "dh"


class Writer:
    """A ClusterWriter on the real cluster (its jobs run at once), its queue's limits
    ``limits``, and what it reports dropped."""

    def __init__(self, client: Any, limits: Limits) -> None:
        self.clock = task.Clock()
        self.writer = ClusterWriter(self.clock, cast(RedisLink, FakeLink(client)))
        self.writer.limits = lambda name: limits
        self.dropped: list[tuple[list[keys.Fields], int, int]] = []
        self.writer.on_dropped = lambda q, entries, n, depth: self.dropped.append(
            (entries, n, depth)
        )
        self.answers: list[object] = []
        self._ids = iter(range(1, 10**6))

    def publish(self, *payloads: bytes, level: int = 0) -> None:
        """The payloads published in one batch (one journal commit)."""
        props = Props(priority=level) if level else None
        records: list[rec.Record] = [
            rec.MessageStored(next(self._ids), (Q,), "x", "", p, None, props) for p in payloads
        ]
        done: Done = self.answers.append
        self.writer.write(records, done)
        self.clock.advance(0)
        assert self.answers[-1] is None

    def dropped_payloads(self) -> list[bytes]:
        return [f[b"p"] for entries, _, _ in self.dropped for f in entries]


@pytest.fixture
def r(r: Any) -> Any:
    """The emptied cluster's client (tests/cluster/conftest.py), with the queue's group."""
    r.xgroup_create(keys.stream(Q), keys.GROUP, "0", mkstream=True)
    return r


class Reader:
    """A node's read loop blocked in XREADGROUP on the queue (``count``: its room)."""

    def __init__(self, dev: Any, count: int, streams: tuple[str, ...] = (keys.stream(Q),)):
        from redis.cluster import ClusterNode, RedisCluster

        self.client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in dev.nodes])
        self.got: list[Any] = []
        before = blocked_reads(dev.url)
        self.thread = threading.Thread(target=self._read, args=(count, streams))
        self.thread.start()
        poll(lambda: blocked_reads(dev.url) > before)

    def _read(self, count: int, streams: tuple[str, ...]) -> None:
        got: Any = self.client.xreadgroup(
            keys.GROUP, "n2", {s: ">" for s in streams}, count=count, block=20_000
        )
        self.got = [(eid, f) for _, entries in got for eid, f in entries]

    def payloads(self) -> list[bytes]:
        self.thread.join(30)
        self.client.close()
        return [f[b"p"] for _, f in self.got]


def ready(r: Any, level: int = 0) -> int:
    stream = keys.level_stream(Q, level)
    return int(r.xlen(stream)) - int(r.xpending(stream, keys.GROUP)["pending"])


def test_a_waiting_reader_takes_a_batch_before_max_length_0_applies(
    r: Any, redis_cluster: Any
) -> None:
    w = Writer(r, Limits(0, None, False, True))
    reader = Reader(redis_cluster, count=10)
    w.publish(b"a", b"b", b"c")
    assert reader.payloads() == [b"a", b"b", b"c"]
    assert w.dropped == [] and ready(r) == 0
    # nobody waiting: all dropped, their fields back for the dead-letter target
    w.publish(b"d", b"e")
    assert w.dropped_payloads() == [b"d", b"e"]
    assert w.dropped[0][1:] == (2, 0)
    assert (ready(r), r.xlen(keys.stream(Q))) == (0, 3)


def test_the_reader_takes_its_room_and_the_limit_drops_the_oldest_of_the_rest(
    r: Any, redis_cluster: Any
) -> None:
    w = Writer(r, Limits(1, None, False, False))
    reader = Reader(redis_cluster, count=2)
    w.publish(b"1", b"2", b"3", b"4", b"5")
    assert reader.payloads() == [b"1", b"2"]
    assert [(n, depth) for _, n, depth in w.dropped] == [(2, 0)]
    assert [f[b"p"] for _, f in r.xrange(keys.stream(Q), "-", "+")] == [b"1", b"2", b"5"]


def test_the_drops_a_run_of_dead_letters_causes_go_at_its_depth(r: Any) -> None:
    w = Writer(r, Limits(1, None, False, True))
    w.publish(b"old")
    m = QueuedMessage("x", "", b"x ", b"dl")
    w.writer.dead_letter(Q, m, "maxlen", None, keys.hops_field(3, ("other",)))
    w.writer.dead_letter(Q, m, "maxlen", None, keys.hops_field(3, ("other",)))
    w.publish(b"new")  # (the same batch: a run at depth 0 after the one at depth 3)
    assert [(f[b"p"], depth) for entries, _, depth in w.dropped for f in entries] == [
        (b"old", 3),
        (b"dl", 3),
        (b"dl", 0),
    ]


def test_priorities_drop_the_oldest_of_the_lowest_level(r: Any) -> None:
    w = Writer(r, Limits(2, None, False, True))
    w.publish(b"a1", level=1)
    w.publish(b"b5", level=5)
    w.publish(b"c0")
    w.publish(b"d1", level=1)
    assert w.dropped_payloads() == [b"c0", b"a1"]
    assert [ready(r, n) for n in (0, 1, 5)] == [0, 1, 1]


def test_max_bytes_counts_what_a_reader_took_out_before_its_mark(
    r: Any, redis_cluster: Any
) -> None:
    r.set(bytes_key(Q), 0)
    w = Writer(r, Limits(None, 10, False, True))
    reader = Reader(redis_cluster, count=2)
    w.publish(b"aaa", b"bbb", b"ccc", b"ddd", b"eee")
    assert reader.payloads() == [b"aaa", b"bbb"]
    # 9 bytes left ready: nothing dropped, though the node has not marked its read yet
    assert w.dropped == [] and ready(r) == 3
    assert int(r.get(bytes_key(Q))) == 15
    marks = [x for eid, _ in reader.got for x in (eid, 3)]
    r.eval(MARK_SCRIPT, 2, bytes_key(Q), sizes_key(Q), *marks)
    assert int(r.get(bytes_key(Q))) == 9
    # nobody waiting: 9 + 4 bytes, the oldest ready one goes
    w.publish(b"ffff")
    assert w.dropped_payloads() == [b"ccc"]
    assert int(r.get(bytes_key(Q))) == 10
    assert not r.exists(f"mb:r:{{{Q}}}")


def test_a_batch_for_one_queue_is_one_add_and_one_trim(r: Any) -> None:
    w = Writer(r, Limits(100, None, False, False))
    before = w.writer.commands
    w.publish(*[b"%d" % i for i in range(drophead.RUN_MAX + 5)])
    assert w.writer.commands - before == 3  # (two adds: a run is cut at RUN_MAX)
    assert ready(r) == 100


def test_messages_given_back_count_against_the_limit(r: Any) -> None:
    """A node read a message for a consumer that has left since (it was waiting when
    the message came): given back, it is ready again and drop-head applies."""
    w = Writer(r, Limits(1, None, False, True))
    w.publish(b"read")
    got: Any = r.xreadgroup(keys.GROUP, "n2", {keys.stream(Q): ">"}, count=1)
    w.writer.remember(Q, 7, got[0][1][0][0])
    w.publish(b"ready")
    assert w.dropped == []
    w.writer.give_back(Q, [QueuedMessage("x", "", b"x ", b"read", msg_id=7)])
    w.clock.advance(0)
    assert w.dropped_payloads() == [b"ready"]
    assert [f[b"p"] for _, f in r.xrange(keys.stream(Q), "-", "+")] == [b"read"]
    assert ready(r) == 1


def test_a_delayed_copy_falling_due_goes_to_a_waiting_reader_first(
    r: Any, redis_cluster: Any
) -> None:
    lim = Limits(0, None, False, True)
    clock = task.Clock()
    mover = delays.Mover(cast(RedisLink, FakeLink(r)), clock)
    mover.limited = lambda: {Q: (limit_argv(lim), True)}
    lost: list[bytes] = []
    mover.lost = lambda q, entries: lost.extend([f[b"p"] for f in entries])
    mover.start()

    def delayed(payload: bytes) -> None:
        fields = keys.entry_fields("x", "", payload, None)
        for name, args in delays.delay_ops([Q], 0, delays.member("n1", fields)):
            if name == "sadd":
                r.sadd(*args)
            else:
                r.eval(*args)
        mover.soon(Q, 0)

    reader = Reader(redis_cluster, count=5)
    delayed(b"late")
    clock.advance(delays.TICK)
    assert reader.payloads() == [b"late"] and lost == []
    delayed(b"later")  # (nobody waiting: dropped, back for the dead-letter target)
    clock.advance(delays.TICK)
    assert lost == [b"later"] and ready(r) == 0
    mover.stop()
