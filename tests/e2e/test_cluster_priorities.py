"""Priorities across a shared queue's stream, end to end: real ``twistd -n mbroker
--cluster`` nodes on a real local Redis Cluster (docs/cluster.rst: a queue keeps a
stream per priority level in use, and a node reads the highest level first).

Two nodes (A and B) serve the module; the ``kill -9`` test starts a third.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, poll, unique
from tests.helpers.lineclient import Msg
from tests.helpers.redis_cluster import SPREAD, made, start_node, take, two_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

#: the documented bound on taking over a dead node's messages, with room for a slow CI
TAKEOVER = 15.0
#: the documented bound on an expired message leaving a queue nobody reads (about 2 s
#: after its ttl), with room for a slow CI
EXPIRY = 10.0


@pytest.fixture(scope="module")
def nodes(
    redis_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    yield from two_nodes(redis_cluster, tmp_path_factory.mktemp("cluster-prio"), ("pa", "pb"))


def publish_run(c: Client, q: str, payloads: list[bytes], *options: str) -> None:
    """PUBLISH each of ``payloads`` in one write, then read every ``+OK 1``."""
    opts = "".join(f" {o}" for o in options)
    c.send(
        b"".join(
            b"PUBLISH %s%s %d\r\n%s\r\n" % (q.encode(), opts.encode(), len(p), p) for p in payloads
        )
    )
    for _ in payloads:
        assert c.read_reply()[1] == b"+OK 1"


def counts(c: Client, q: str) -> tuple[str, str]:
    row = c.listing()[q]
    return row["messages"], row["unacked"]


def test_a_priority_9_behind_a_backlog_of_priority_0_comes_first(a: Client, b: Client) -> None:
    q = made(a, b)
    backlog = 10_000
    publish_run(a, q, [b"%d" % i for i in range(backlog)])
    assert a.publish(q, b"urgent", "", "priority=9") == "+OK 1"
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
    first = b.read_msg(15)
    assert (first.payload, first.attrs.get("priority")) == (b"urgent", "9")
    b.ok(f"ACK {first.tag}")
    assert [m.payload for m in take(b, 3)] == [b"0", b"1", b"2"]


def test_fifo_within_a_level_highest_level_first(a: Client, b: Client) -> None:
    q = made(a, b)
    sent = [(b"%s%d" % (b"plh"[i % 3 : i % 3 + 1], i), (0, 4, 7)[i % 3]) for i in range(30)]
    for payload, priority in sent:
        opts = (f"priority={priority}",) if priority else ()
        assert a.publish(q, payload, "", *opts) == "+OK 1"
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
    got = [m.payload for m in take(b, len(sent))]
    want = [p for level in (7, 4, 0) for p, prio in sent if prio == level]
    assert got == want
    assert b.quiet(0.3)


def test_a_requeued_message_goes_back_to_the_head_of_its_level(a: Client, b: Client) -> None:
    q = made(a, b)
    a.publish(q, b"z", "")  # (older, but of a lower level)
    for payload in (b"r1", b"r2"):
        a.publish(q, payload, "", "priority=5")
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
    m = b.read_msg(15)
    assert m.payload == b"r1"
    assert b.ok(f"NACK {m.tag}") == "+OK 1"
    again = take(b, 3)
    assert [(x.payload, x.attrs.get("redelivered")) for x in again] == [
        (b"r1", "1"),
        (b"r2", None),
        (b"z", None),
    ]


def test_figures_purge_and_delete_cover_every_level(a: Client, b: Client, redis: Any) -> None:
    q = made(a, b)
    for payload, priority in ((b"a", 0), (b"b", 0), (b"c", 7), (b"d", 7), (b"e", 9)):
        opts = (f"priority={priority}",) if priority else ()
        a.publish(q, payload, "", *opts)
    poll(lambda: counts(a, q) == ("5", "0") and counts(b, q) == ("5", "0"), 10)
    (m,) = poll(lambda: b.pull(f"PULL {q} ack=manual wait=500"), 10)
    assert m.payload == b"e"
    poll(lambda: counts(a, q) == ("4", "1"), 10)
    assert a.ok(f"PURGE {q}").startswith("+OK")
    poll(lambda: counts(a, q) == ("0", "1") and counts(b, q) == ("0", "1"), 10)
    assert b.ok(f"ACK {m.tag}") == "+OK 1"
    assert a.pull(f"PULL {q} wait=300") == []
    # the levels still work after a purge
    a.publish(q, b"f", "", "priority=7")
    (m,) = poll(lambda: b.pull(f"PULL {q} wait=500"), 10)
    assert m.payload == b"f"
    # DELETE removes every level's stream and the set of levels
    assert redis.exists(f"mb:q:{{{q}}}:7", f"mb:q:{{{q}}}:9", f"mb:lv:{{{q}}}") == 3
    a.ok(f"DELETE {q}")
    poll(lambda: q not in b.listing(), SPREAD * 2)
    assert redis.exists(f"mb:q:{{{q}}}", f"mb:q:{{{q}}}:7", f"mb:q:{{{q}}}:9") == 0
    assert redis.exists(f"mb:lv:{{{q}}}") == 0
    # made again: a priority makes its level again
    a.ok(f"CREATE {q} queue")
    poll(lambda: q in b.listing(), SPREAD * 2)
    a.publish(q, b"g", "")
    a.publish(q, b"h", "", "priority=3")
    got = [m.payload for m in poll(lambda: b.pull(f"PULL {q} max=2 wait=500"), 10)]
    got += [m.payload for m in b.pull(f"PULL {q} max=2 wait=500")]
    assert got == [b"h", b"g"]


def test_a_plain_queue_has_no_other_key(a: Client, b: Client, redis: Any) -> None:
    q = made(a, b)
    a.publish(q, b"x", "")
    (m,) = poll(lambda: b.pull(f"PULL {q} wait=500"), 10)
    assert m.payload == b"x"
    names = {k.decode() for k in redis.keys(f"*{{{q}}}*", target_nodes=RedisCluster.ALL_NODES)}
    assert names == {f"mb:q:{{{q}}}"}


def test_a_killed_node_s_priority_messages_are_taken_over(
    redis_cluster: Any, nodes: Any, b: Client, tmp_path: Path
) -> None:
    c_node = start_node(tmp_path, redis_cluster, "pc")
    try:
        with connect(c_node) as c:
            q = made(b, c, "durable")
            sent = [(b"l%d" % i, 0) for i in range(4)] + [(b"m%d" % i, 4) for i in range(4)]
            sent += [(b"h%d" % i, 9) for i in range(4)]
            for payload, priority in sent:
                opts = (f"priority={priority}",) if priority else ()
                assert b.publish(q, payload, "", *opts) == "+OK 1"
            c.ok(f"SUBSCRIBE {q} ack=manual prefetch=6")
            held = c.msgs(6, 15)
            # the node read the highest levels first
            assert sorted(m.payload for m in held) == [b"h0", b"h1", b"h2", b"h3", b"m0", b"m1"]
            c.ok(f"ACK {held[0].tag}")
            c_node.kill()
            killed = time.monotonic()
        b.ok(f"SUBSCRIBE {q} ack=manual prefetch=100")
        got: list[Msg] = []
        while len(got) < len(sent) - 1:
            m = b.read_msg(TAKEOVER)
            got.append(m)
            b.ok(f"ACK {m.tag}")
        assert time.monotonic() - killed < TAKEOVER
        assert sorted(m.payload for m in got) == sorted(p for p, _ in sent if p != held[0].payload)
        redelivered = {m.payload for m in got if "redelivered" in m.attrs}
        # what the killed node held, and perhaps the next by priority (m2), which it
        # may have read into the room the ACK made before it was killed
        held_then = {m.payload for m in held[1:]}
        assert held_then <= redelivered <= held_then | {b"m2"}
        by_payload = {m.payload: m.attrs.get("priority") for m in got}
        assert by_payload[b"h1"] == "9" and by_payload[b"m1"] == "4"
        assert b.quiet(0.5)
    finally:
        c_node.stop()


def test_expired_messages_of_every_level_are_swept_and_dead_lettered(a: Client, b: Client) -> None:
    """Nobody reads the queue: the expiry sweep removes the expired entries of each
    level's stream, and they go to the dead-letter queue."""
    dl = made(a, b)
    q = made(a, b, "ttl=300", f"dead-letter={dl}")
    for payload, priority in ((b"p0", 0), (b"p4", 4), (b"p9", 9)):
        opts = (f"priority={priority}",) if priority else ()
        assert b.publish(q, payload, "", *opts) == "+OK 1"
    poll(lambda: b.stats(dl).get("messages") == "3", EXPIRY)
    poll(lambda: counts(a, q) == ("0", "0") and counts(b, q) == ("0", "0"), 10)
    dead = b.pull(f"PULL {dl} max=3 wait=2000")
    assert sorted((m.payload, m.attrs.get("reason")) for m in dead) == [
        (b"p0", "expired"),
        (b"p4", "expired"),
        (b"p9", "expired"),
    ]


def test_a_publish_with_an_id_goes_to_its_level(a: Client, b: Client) -> None:
    """To the queue itself (one script checks the id and adds the entry) and through
    an exchange; a retry with the same id is a duplicate and adds nothing."""
    q, ex = made(a, b), unique("ex")
    a.ok(f"CREATE {ex} direct")
    a.ok(f"BIND {q} {ex} k")
    poll(lambda: b.listing().get(ex, {}).get("bindings") == "1", SPREAD * 2)
    publish_run(a, q, [b"%d" % i for i in range(50)])
    assert a.publish(q, b"direct", "", "priority=8", "id=one") == "+OK 1"
    assert b.publish(q, b"direct", "", "priority=8", "id=one") == "+OK 1 duplicate"
    assert a.publish(ex, b"routed", "k", "priority=6", "id=two") == "+OK 1"
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
    assert [m.payload for m in take(b, 3)] == [b"direct", b"routed", b"0"]


def test_a_delayed_message_goes_to_its_level_when_due(a: Client, b: Client) -> None:
    q = made(a, b)
    assert a.publish(q, b"late", "", "priority=7", "delay=300") == "+OK 1"
    publish_run(a, q, [b"%d" % i for i in range(50)])
    poll(lambda: counts(b, q) == ("51", "0"), 10)  # (moved into a stream by now)
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1")
    assert [m.payload for m in take(b, 2)] == [b"late", b"0"]
