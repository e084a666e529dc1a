"""Cluster mode: priorities on a shared queue with ``max-length``/``max-bytes``, end to
end through two real ``twistd -n mbroker --cluster`` nodes on a real local Redis
Cluster (docs/cluster.rst: such a queue keeps a stream per priority level too, its
limits count over all of them and drop-head drops the oldest of the lowest level)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, poll
from tests.helpers.redis_cluster import made, redis_cluster, take, two_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

__all__ = ["redis_cluster"]  # (a fixture, used by name)


@pytest.fixture(scope="module")
def nodes(
    redis_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    yield from two_nodes(
        redis_cluster, tmp_path_factory.mktemp("cluster-limits-prio"), ("la", "lb")
    )


def ready_bytes(redis: Any, q: str) -> int:
    return int(redis.get(f"mb:b:{{{q}}}") or 0)


def test_drop_head_drops_the_oldest_of_the_lowest_priority(a: Client, b: Client) -> None:
    dl = made(a, b)
    q = made(a, b, "max-length=2", f"dead-letter={dl}")
    assert a.publish(q, b"low-old", "", "priority=1") == "+OK 1"
    assert a.publish(q, b"low-new", "", "priority=1") == "+OK 1"
    assert a.publish(q, b"high", "", "priority=3") == "+OK 1"
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
    assert [m.payload for m in take(b, 2)] == [b"high", b"low-new"]
    assert b.quiet(0.3)
    (m,) = poll(lambda: a.pull(f"PULL {dl} wait=500"), 10)
    assert (m.payload, m.attrs) == (b"low-old", {"reason": "maxlen", "priority": "1"})


def test_a_new_message_of_the_lowest_priority_is_the_one_dropped(a: Client, b: Client) -> None:
    dl = made(a, b)
    q = made(a, b, "max-length=2", f"dead-letter={dl}")
    for payload in (b"h1", b"h2"):
        assert a.publish(q, payload, "", "priority=5") == "+OK 1"
    assert b.publish(q, b"low", "", "priority=2") == "+OK 1"
    assert b.publish(q, b"zero", "") == "+OK 1"
    dead = [m.payload for m in poll(lambda: a.pull(f"PULL {dl} max=2 wait=500"), 10)]
    dead += [m.payload for m in a.pull(f"PULL {dl} max=2 wait=300")]
    assert dead == [b"low", b"zero"]
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
    assert [m.payload for m in take(b, 2)] == [b"h1", b"h2"]
    assert b.quiet(0.3)


def test_a_priority_9_behind_a_backlog_of_a_limited_queue_comes_first(a: Client, b: Client) -> None:
    q = made(a, b, "max-length=20000")
    backlog = 5000
    a.send(b"".join(b"PUBLISH %s 4\r\n%04d\r\n" % (q.encode(), i) for i in range(backlog)))
    for _ in range(backlog):
        assert a.read_reply()[1] == b"+OK 1"
    assert a.publish(q, b"urgent", "", "priority=9") == "+OK 1"
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
    got = take(b, 3)
    assert [(m.payload, m.attrs.get("priority")) for m in got] == [
        (b"urgent", "9"),
        (b"0000", None),
        (b"0001", None),
    ]


def test_reject_counts_every_level(a: Client, b: Client) -> None:
    q = made(a, b, "max-length=3", "overflow=reject")
    assert a.publish(q, b"p0", "") == "+OK 1"
    assert b.publish(q, b"p5", "", "priority=5") == "+OK 1"
    assert a.publish(q, b"p9", "", "priority=9") == "+OK 1"
    assert b.publish(q, b"more", "", "priority=9") == f"-ERR OVERFLOW {q} is full"
    assert a.publish(q, b"more", "") == f"-ERR OVERFLOW {q} is full"
    (m,) = poll(lambda: b.pull(f"PULL {q} wait=500"), 10)  # (read: no longer ready)
    assert m.payload == b"p9"
    assert a.publish(q, b"p7", "", "priority=7") == "+OK 1"
    assert b.publish(q, b"more", "", "priority=9") == f"-ERR OVERFLOW {q} is full"
    got = [m.payload for m in poll(lambda: a.pull(f"PULL {q} max=3 wait=500"), 10)]
    got += [m.payload for m in a.pull(f"PULL {q} max=3 wait=300")]
    got += [m.payload for m in a.pull(f"PULL {q} max=3 wait=300")]
    assert got == [b"p7", b"p5", b"p0"]


def test_max_bytes_stays_exact_over_levels(nodes: Any, a: Client, b: Client, redis: Any) -> None:
    """The ready-bytes counter is the sum of the ready payloads whatever their level:
    through adds, refusals, reads, messages given back and drop-head."""
    q = made(a, b, "max-bytes=10", "overflow=reject")
    assert a.publish(q, b"aaaa", "") == "+OK 1"
    assert b.publish(q, b"bbbb", "", "priority=4") == "+OK 1"
    assert a.publish(q, b"ccc", "", "priority=9") == f"-ERR OVERFLOW {q} is full"
    assert a.publish(q, b"cc", "", "priority=9") == "+OK 1"
    assert ready_bytes(redis, q) == 10
    with connect(nodes[1]) as c:
        c.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
        assert c.read_msg(15).payload == b"cc"
        poll(lambda: ready_bytes(redis, q) == 8, 10)
        assert a.publish(q, b"dd", "", "priority=2") == "+OK 1"
        assert ready_bytes(redis, q) == 10
    # (the consumer left: its node gives the message back, ready again, counted once)
    poll(lambda: ready_bytes(redis, q) == 12, 10)
    got = [x.payload for x in poll(lambda: a.pull(f"PULL {q} max=4 wait=500"), 10)]
    got += [x.payload for x in a.pull(f"PULL {q} max=4 wait=300")]
    got += [x.payload for x in a.pull(f"PULL {q} max=4 wait=300")]
    assert sorted(got) == [b"aaaa", b"bbbb", b"cc", b"dd"]
    poll(lambda: ready_bytes(redis, q) == 0, 10)
    # drop-head by bytes: the lowest level goes first
    d = made(a, b, "max-bytes=8")
    assert a.publish(d, b"1111", "", "priority=6") == "+OK 1"
    assert a.publish(d, b"2222", "") == "+OK 1"
    assert a.publish(d, b"3333", "", "priority=6") == "+OK 1"
    assert ready_bytes(redis, d) == 8
    b.ok(f"SUBSCRIBE {d} ack=manual prefetch=1")
    assert [x.payload for x in take(b, 2)] == [b"1111", b"3333"]
    assert b.quiet(0.3)
    poll(lambda: ready_bytes(redis, d) == 0, 10)


def test_a_delayed_copy_goes_to_its_level_under_the_limits(a: Client, b: Client) -> None:
    dl = made(a, b)
    q = made(a, b, "max-length=2", f"dead-letter={dl}")
    # (a node reads which queues have limits at least once a second: the other node
    # may move the copy too, so it is due after that)
    assert a.publish(q, b"late", "", "priority=7", "delay=1000") == "+OK 1"
    assert a.publish(q, b"x0", "") == "+OK 1"
    assert a.publish(q, b"x1", "") == "+OK 1"
    (m,) = poll(lambda: b.pull(f"PULL {dl} wait=500"), 10)
    assert (m.payload, m.attrs.get("reason")) == (b"x0", "maxlen")
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
    assert [x.payload for x in take(b, 2)] == [b"late", b"x1"]
