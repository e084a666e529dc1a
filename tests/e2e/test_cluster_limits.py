"""Cluster mode: a shared queue's limits, overflow, dead letters of dropped messages and
ttl expiry, judged in Redis (mbroker.cluster.limits, mbroker.cluster.expiry), through
two real ``twistd -n mbroker --cluster`` nodes on a real local Redis Cluster."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, poll, unique
from tests.helpers.lineclient import Msg
from tests.helpers.redis_cluster import blocked_reads, redis_cluster, two_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

__all__ = ["redis_cluster"]  # (a fixture, used by name)

#: the documented bound on the spread of a namespace change, and on the figures of
#: LIST (each node reads them every second)
SPREAD = 2.0
#: the documented bound on an expired message leaving LIST (sweep + watch round),
#: with room for a loaded machine
EXPIRY = 2.0 * 3


@pytest.fixture(scope="module")
def nodes(
    redis_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    yield from two_nodes(redis_cluster, tmp_path_factory.mktemp("cluster-limits"), ("a", "b"))


def both_know(a: Client, b: Client, *names: str) -> None:
    poll(lambda: all([n in a.listing() and n in b.listing() for n in names]), SPREAD * 2)


def messages(c: Client, q: str) -> int:
    return int(c.listing()[q]["messages"])


def pull_all(c: Client, q: str, n: int) -> list[Msg]:
    got: list[Msg] = []

    def more() -> bool:
        got.extend(c.pull(f"PULL {q} max={n - len(got)} wait=500"))
        return len(got) >= n

    poll(more)
    return got


def blast(nodes: Any, q: str, per_client: int, lines: bytes = b"") -> list[bytes]:
    """Two clients on each node publish ``per_client`` messages each at once, written
    in one go (so a node reads them as runs); every reply line, in any order."""
    replies: list[bytes] = []
    lock = threading.Lock()
    clients = [connect(n) for n in nodes for _ in range(2)]
    gate = threading.Barrier(len(clients))

    def run(c: Client, who: int) -> None:
        data = b"".join(
            [b"PUBLISH %s :%d-%d\r\n" % (q.encode(), who, i) for i in range(per_client)]
        )
        gate.wait()
        c.send(data)
        got = [c.readline(30) for _ in range(per_client)]
        with lock:
            replies.extend(got)

    threads = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for c in clients:
            c.close()
    return replies


def test_reject_holds_across_nodes_publishing_at_once(nodes: Any, a: Client, b: Client) -> None:
    """Two nodes, four publishers, 4 x 30 publishes into a max-length=25 reject queue at
    once: exactly 25 are confirmed, the others are refused, and Redis holds 25."""
    q = unique("q")
    a.ok(f"CREATE {q} queue max-length=25 overflow=reject")
    both_know(a, b, q)
    replies = blast(nodes, q, 30)
    assert len(replies) == 120
    ok = [r for r in replies if r == b"+OK 1"]
    refused = [r for r in replies if r == b"-ERR OVERFLOW " + q.encode() + b" is full"]
    assert (len(ok), len(refused)) == (25, 95), set(replies)
    poll(lambda: messages(a, q) == messages(b, q) == 25, SPREAD * 2)
    assert a.publish(q, b"full").startswith("-ERR OVERFLOW")
    (first,) = pull_all(b, q, 1)  # (taken: room for one more, through either node)
    assert b.publish(q, b"again") == "+OK 1"
    assert a.publish(q, b"full").startswith("-ERR OVERFLOW")
    got = pull_all(a, q, 25)
    assert len({m.payload for m in [first, *got]}) == 26 and got[-1].payload == b"again"


def test_reject_through_an_exchange_keeps_the_other_copies(a: Client, b: Client) -> None:
    q, other, ex = unique("q"), unique("q"), unique("ex")
    a.ok(f"CREATE {q} queue max-length=1 overflow=reject")
    a.ok(f"CREATE {other} queue")
    a.ok(f"CREATE {ex} fanout")
    a.ok(f"BIND {q} {ex}")
    a.ok(f"BIND {other} {ex}")
    poll(lambda: b.listing().get(ex, {}).get("bindings") == "2", SPREAD * 2)
    assert b.publish(ex, b"one") == "+OK 2"
    assert b.publish(ex, b"two") == f"-ERR OVERFLOW {q} is full"
    assert [m.payload for m in pull_all(a, other, 2)] == [b"one", b"two"]
    assert [m.payload for m in pull_all(a, q, 1)] == [b"one"]


def test_max_bytes_reject_and_drop_head_across_nodes(a: Client, b: Client) -> None:
    """max-bytes counts the ready payload bytes in Redis: STAT bytes shows them, a
    consumer taking a message frees its bytes, drop-head drops the oldest."""
    rq, dq = unique("q"), unique("q")
    a.ok(f"CREATE {rq} queue max-bytes=10 overflow=reject")
    a.ok(f"CREATE {dq} queue max-bytes=10")
    both_know(a, b, rq, dq)
    assert a.publish(rq, b"12345") == "+OK 1"
    assert b.publish(rq, b"123456") == f"-ERR OVERFLOW {rq} is full"
    assert b.publish(rq, b"abcde") == "+OK 1"
    poll(lambda: a.stats(rq)["bytes"] == b.stats(rq)["bytes"] == "10", SPREAD * 2)
    (m,) = pull_all(b, rq, 1)  # (read: its bytes leave the ready count)
    assert m.payload == b"12345"
    assert a.publish(rq, b"xyz") == "+OK 1"
    poll(lambda: a.stats(rq)["bytes"] == "8", SPREAD * 2)
    for p in (b"aaaa", b"bbbb", b"cccc"):
        assert b.publish(dq, p) == "+OK 1"
    poll(lambda: a.stats(dq)["bytes"] == "8" and messages(a, dq) == 2, SPREAD * 2)
    assert [m.payload for m in pull_all(a, dq, 2)] == [b"bbbb", b"cccc"]
    poll(lambda: b.stats(dq)["bytes"] == "0", SPREAD * 2)


def test_drop_head_dead_letters_what_it_drops(a: Client, b: Client) -> None:
    q, dl = unique("q"), unique("dl")
    a.ok(f"CREATE {dl} queue")
    a.ok(f"CREATE {q} queue max-length=2 dead-letter={dl}")
    both_know(a, b, q, dl)
    for i in range(5):
        assert b.publish(q, b"m%d" % i, "", f"h.n={i}") == "+OK 1"
    dead = pull_all(a, dl, 3)
    assert [(m.payload, m.source, m.attrs.get("reason")) for m in dead] == [
        (b"m0", q, "maxlen"),
        (b"m1", q, "maxlen"),
        (b"m2", q, "maxlen"),
    ]
    assert dead[0].attrs.get("h.n") == "0"
    assert [m.payload for m in pull_all(a, q, 2)] == [b"m3", b"m4"]


def publish_run(c: Client, q: str, payloads: list[bytes]) -> None:
    """PUBLISH each of ``payloads`` to ``q`` in one write (one batch of the node)."""
    c.send(b"".join([b"PUBLISH %s :%s\r\n" % (q.encode(), p) for p in payloads]))
    assert [c.readline(10) for _ in payloads] == [b"+OK 1"] * len(payloads)


def test_drop_head_delivers_to_a_consumer_waiting_on_another_node_first(
    redis_cluster: Any, a: Client, b: Client
) -> None:
    """max-length=0 drop-head: what is published on A while a consumer with room waits
    on B (B's read loop blocked in Redis) all goes to it, none dropped; with nobody
    waiting, everything is dropped and dead-lettered."""
    q, dl = unique("q"), unique("dl")
    a.ok(f"CREATE {dl} queue")
    a.ok(f"CREATE {q} queue max-length=0 overflow=drop-head dead-letter={dl}")
    both_know(a, b, q, dl)
    url = redis_cluster.url
    poll(lambda: blocked_reads(url) == 0)  # (no read loop of an earlier test)
    assert b.ok(f"SUBSCRIBE {q} prefetch=50 ack=manual") == "+OK 1"
    sent = [b"m%d" % i for i in range(30)]
    for run in (sent[:20], sent[20:]):
        poll(lambda: blocked_reads(url) == 1)  # B waits in Redis (again)
        publish_run(a, q, run)
        assert [b.read_msg(10).payload for _ in run] == run
    assert a.stats(q)["dropped"] == b.stats(q)["dropped"] == "0"
    assert b.ok("ACK 1-30") == "+OK 30"
    assert b.ok("UNSUBSCRIBE 1") == "+OK"
    poll(lambda: blocked_reads(url) == 0)
    publish_run(a, q, [b"x", b"y", b"z"])
    dead = pull_all(b, dl, 3)
    assert [(m.payload, m.attrs.get("reason")) for m in dead] == [
        (b"x", "maxlen"),
        (b"y", "maxlen"),
        (b"z", "maxlen"),
    ]
    assert a.stats(q)["dropped"] == "3"
    poll(lambda: messages(a, q) == messages(b, q) == 0, SPREAD * 2)


def test_expired_messages_leave_an_unconsumed_queue_and_are_dead_lettered(
    a: Client, b: Client
) -> None:
    """A queue's ttl counts from the publish; nobody consumes: the expired messages
    leave LIST's count within the documented bound and go to the dead-letter queue."""
    q, dl = unique("q"), unique("dl")
    a.ok(f"CREATE {dl} queue")
    a.ok(f"CREATE {q} queue ttl=300 dead-letter={dl}")
    both_know(a, b, q, dl)
    for i in range(3):
        assert b.publish(q, b"old%d" % i) == "+OK 1"
    # (no node reads q: Redis alone removes them, then LIST stops counting them)
    poll(lambda: b.stats(dl).get("messages") == "3", 0.3 + EXPIRY)
    poll(lambda: messages(a, q) == 0 and messages(b, q) == 0, SPREAD * 2)
    dead = pull_all(b, dl, 3)
    assert sorted([(m.payload, m.attrs.get("reason")) for m in dead]) == [
        (b"old0", "expired"),
        (b"old1", "expired"),
        (b"old2", "expired"),
    ]
    # a fresh one is delivered as usual
    assert a.publish(q, b"fresh") == "+OK 1"
    assert [m.payload for m in pull_all(b, q, 1)] == [b"fresh"]


def test_a_refused_publish_with_an_id_can_be_retried(a: Client, b: Client) -> None:
    q = unique("q")
    a.ok(f"CREATE {q} queue max-length=1 overflow=reject")
    both_know(a, b, q)
    assert a.publish(q, b"first", "", "id=one") == "+OK 1"
    assert b.publish(q, b"second", "", "id=two") == f"-ERR OVERFLOW {q} is full"
    assert [m.payload for m in pull_all(a, q, 1)] == [b"first"]
    assert b.publish(q, b"second", "", "id=two") == "+OK 1"  # (not a duplicate)
    assert a.publish(q, b"first", "", "id=one") == "+OK 1 duplicate"
    assert [m.payload for m in pull_all(b, q, 1)] == [b"second"]


def test_a_delayed_copy_meets_the_overflow_rule_when_it_becomes_ready(a: Client, b: Client) -> None:
    """As a new message would: refused by a full reject queue (dead-lettered with
    reason=maxlen), or dropping the head of a drop-head queue."""
    rq, dq, dl = unique("q"), unique("q"), unique("dl")
    a.ok(f"CREATE {dl} queue")
    a.ok(f"CREATE {rq} queue max-length=1 overflow=reject dead-letter={dl}")
    a.ok(f"CREATE {dq} queue max-length=1 dead-letter={dl}")
    both_know(a, b, rq, dq, dl)
    assert b.publish(rq, b"late-r", "", "delay=1000") == "+OK 1"
    assert b.publish(dq, b"late-d", "", "delay=1000") == "+OK 1"
    # (published before the delayed copies are due: a second is plenty)
    assert a.publish(rq, b"now-r") == "+OK 1"
    assert a.publish(dq, b"now-d") == "+OK 1"
    dead = pull_all(b, dl, 2)
    assert sorted([(m.payload, m.attrs.get("reason")) for m in dead]) == [
        (b"late-r", "maxlen"),
        (b"now-d", "maxlen"),
    ]
    assert [m.payload for m in pull_all(a, rq, 1)] == [b"now-r"]
    assert [m.payload for m in pull_all(a, dq, 1)] == [b"late-d"]


def test_a_publish_ttl_expires_in_a_queue_without_one(a: Client, b: Client) -> None:
    """A PUBLISH's own ttl is swept too: the queue is hinted to every node."""
    q = unique("q")
    a.ok(f"CREATE {q} queue")
    both_know(a, b, q)
    assert b.publish(q, b"short", "", "ttl=100") == "+OK 1"
    assert b.publish(q, b"forever") == "+OK 1"
    poll(lambda: a.stats(q)["messages"] == "1", 0.1 + EXPIRY)
    poll(lambda: b.stats(q)["expired"] == "1" or a.stats(q)["expired"] == "1", EXPIRY)
    assert [m.payload for m in pull_all(a, q, 1)] == [b"forever"]
