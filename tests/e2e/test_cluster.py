"""Cluster mode end to end: real ``twistd -n mbroker --cluster`` nodes on a real local
Redis Cluster (tests/helpers/redis_cluster.py), driven over TCP as users drive them.

Two nodes (A and B) serve most tests of the module; the ``kill -9`` test starts its
own.  Names are unique per test, so the tests share the nodes without seeing each
other's queues.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.contract import Client, connect, poll, unique
from tests.helpers.lineclient import Msg
from tests.helpers.redis_cluster import (
    DevCluster,
    cluster,
    failover_report,
    master_of,
    replication,
    spans,
    start_node,
    two_nodes,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

__all__ = ["cluster"]  # (a fixture, used by name; redis_cluster: tests/e2e/conftest.py)

#: the documented bound on the spread of a namespace change (docs/cluster.rst)
SPREAD = 2.0
#: the documented bound on taking over a dead node's messages, with room for a slow CI
TAKEOVER = 15.0


@pytest.fixture(scope="module")
def nodes(
    redis_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    yield from two_nodes(
        redis_cluster,
        tmp_path_factory.mktemp("cluster"),
        ("a", "b"),
        b_extra=("--http", "tcp:0:interface=127.0.0.1"),
    )


def listed(c: Client, name: str) -> bool:
    return name in c.listing()


def maybe_msg(c: Client, timeout: float) -> Msg | None:
    """The next MSG if one comes within ``timeout``, else None."""
    try:
        return c.read_msg(timeout)
    except TimeoutError:
        return None


def test_namespace_made_on_one_node_is_on_the_other(a: Client, b: Client) -> None:
    q, ex = unique("q"), unique("ex")
    assert a.ok(f"CREATE {q} queue durable max-deliver=5") == "+OK created"
    assert a.ok(f"CREATE {ex} topic") == "+OK created"
    a.ok(f"BIND {q} {ex} a.#")
    poll(lambda: b.listing().get(ex, {}).get("bindings") == "1", SPREAD * 2)
    assert b.listing()[q]["durable"] == "1"
    # the same options on the other node: it exists, alike; other options: EXISTS
    assert b.ok(f"CREATE {q} queue durable max-deliver=5") == "+OK exists"
    assert b.code(f"CREATE {q} queue") == "EXISTS"
    b.ok(f"DELETE {ex}")
    poll(lambda: not listed(a, ex), SPREAD * 2)
    assert a.listing()[q]["kind"] == "queue"


@pytest.mark.parametrize("kind", ["queue", "direct", "fanout", "topic"])
def test_publish_on_one_node_reaches_a_consumer_on_the_other(
    a: Client, b: Client, kind: str
) -> None:
    q = unique("q")
    a.ok(f"CREATE {q} queue")
    target, key = q, ""
    if kind != "queue":
        target = unique("ex")
        a.ok(f"CREATE {target} {kind}")
        key = {"direct": "k", "fanout": "", "topic": "x.y"}[kind]
        a.ok(f"BIND {q} {target} {'x.*' if kind == 'topic' else key}")
    poll(lambda: listed(b, q) and listed(b, target), SPREAD * 2)
    assert b.ok(f"SUBSCRIBE {q} ack=manual") == "+OK 1"
    assert a.publish(target, b"hello", key) == "+OK 1"
    m = b.read_msg(10)
    assert (m.source, m.key, m.payload) == (target, key, b"hello")
    assert b.ok(f"ACK {m.tag}") == "+OK 1"


def test_subscribe_to_an_exchange_across_nodes(a: Client, b: Client) -> None:
    """Transient pub/sub: once B has answered the SUBSCRIBE, whatever A publishes to
    the exchange reaches it (B's reply waits for Redis to have its subscription)."""
    ex = unique("ex")
    a.ok(f"CREATE {ex} topic")
    poll(lambda: listed(b, ex), SPREAD * 2)
    assert b.ok(f"SUBSCRIBE {ex} news.#") == "+OK 1"
    with connect_to(a) as local:  # and a subscription on A itself
        local.ok(f"SUBSCRIBE {ex} #")
        for key in ("news.uk", "sport", "news"):
            # (the count is of the queues A knows: its own subscription's)
            assert a.publish(ex, key.encode(), key) == "+OK 1"
        assert [m.key for m in local.msgs(3, 10)] == ["news.uk", "sport", "news"]
    assert [(m.key, m.payload) for m in b.msgs(2, 10)] == [
        ("news.uk", b"news.uk"),
        ("news", b"news"),
    ]
    assert b.quiet(0.3)


def test_competing_consumers_on_two_nodes_split_the_messages(a: Client, b: Client) -> None:
    q = unique("q")
    a.ok(f"CREATE {q} queue")
    poll(lambda: listed(b, q), SPREAD * 2)
    a.ok(f"SUBSCRIBE {q} ack=manual prefetch=5")
    b.ok(f"SUBSCRIBE {q} ack=manual prefetch=5")
    n = 40
    with connect_to(a) as pub:
        for i in range(n):
            assert pub.publish(q, b"%d" % i) == "+OK 1"
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    deadline = time.monotonic() + 30
    while len(got["a"]) + len(got["b"]) < n and time.monotonic() < deadline:
        for name, c in (("a", a), ("b", b)):
            m = maybe_msg(c, 0.05)
            if m is not None:
                got[name].append(m.payload)
                c.ok(f"ACK {m.tag}")
    everything = sorted(got["a"] + got["b"], key=int)
    assert everything == [b"%d" % i for i in range(n)]  # each once
    assert got["a"] and got["b"], got  # both nodes took some


def connect_to(c: Client) -> Client:
    host, port = c.sock.getpeername()[:2]
    return Client(host, port, timeout=10)


def test_ack_on_one_node_and_redelivery_after_a_disconnect(a: Client, b: Client) -> None:
    q = unique("q")
    a.ok(f"CREATE {q} queue")
    poll(lambda: listed(b, q), SPREAD * 2)
    for p in (b"one", b"two", b"three"):
        a.publish(q, p)
    with connect_to(b) as worker:
        worker.ok(f"SUBSCRIBE {q} ack=manual prefetch=2")
        first, second = worker.msgs(2, 10)
        assert worker.ok(f"ACK {first.tag}") == "+OK 1"
        assert second.payload == b"two"
    # the worker is gone: "two" (unacked) goes back; "one" (acked) never comes again
    a.ok(f"SUBSCRIBE {q} ack=manual")
    got = sorted(m.payload for m in a.msgs(2, 15))
    assert got == [b"three", b"two"]
    assert a.quiet(0.5)


def test_pull_and_nack_across_nodes(a: Client, b: Client) -> None:
    q = unique("q")
    a.ok(f"CREATE {q} queue")
    poll(lambda: listed(b, q), SPREAD * 2)
    a.publish(q, b"x")
    (m,) = poll(lambda: b.pull(f"PULL {q} ack=manual wait=1000"), 10)
    assert m.payload == b"x"
    assert b.ok(f"NACK {m.tag}") == "+OK 1"
    (again,) = poll(lambda: b.pull(f"PULL {q} wait=1000"), 10)
    assert (again.payload, again.attrs.get("redelivered")) == (b"x", "1")
    assert b.pull(f"PULL {q}") == []


def test_bad_input_is_answered_as_on_a_single_broker(a: Client, tmp_path: Path) -> None:
    single = start_broker(tmp_path, memory_only=True)
    try:
        with connect(single) as s:
            q = unique("q")
            for c in (a, s):
                c.ok(f"CREATE {q} queue")
            lines = [
                "FROB",
                "CREATE",
                "CREATE bad/name queue",
                f"CREATE {q} fanout",
                "PUBLISH nowhere :x",
                f"BIND {q} {q}",
                "ACK 99",
                "NACK 1-3",
                f"SUBSCRIBE {q} prefetch=x",
                "DELETE nowhere",
                f"PULL {q} max=0",
            ]
            for line in lines:
                assert a.request(line)[1] == s.request(line)[1], line
    finally:
        single.stop()
    # bad section 7 properties: refused, the payload consumed
    for options in ("delay=-1", "priority=10", "id=", "h.a=%zz"):  # (as on one broker)
        a.send(f"PUBLISH {q} {options} 2\r\nab\r\n".encode())
        assert a.read_reply()[1].startswith(b"-ERR BAD_ARGS"), options
    assert a.ok("PING") == "+PONG"


@pytest.mark.slow
def test_kill_9_of_a_node_loses_nothing_confirmed(cluster: Any, tmp_path: Path) -> None:
    """Publishes confirmed through A survive; what C held unacknowledged reaches a
    consumer on B once C is known to be gone; nothing acknowledged comes again."""
    a_node = start_node(tmp_path, cluster, "ka")
    procs: list[BrokerProcess] = [a_node]
    try:
        procs.append(start_node(tmp_path, cluster, "kb"))
        procs.append(start_node(tmp_path, cluster, "kc"))
        a_node, b_node, c_node = procs
        q = unique("q")
        with connect(a_node) as a, connect(b_node) as b, connect(c_node) as c:
            a.ok(f"CREATE {q} queue durable")
            poll(lambda: listed(c, q) and listed(b, q), SPREAD * 2)
            c.ok(f"SUBSCRIBE {q} ack=manual prefetch=10")
            n = 60
            for i in range(n):
                assert a.publish(q, b"%d" % i) == "+OK 1"
            held = c.msgs(10, 10)
            acked = held[:4]
            for m in acked:
                c.ok(f"ACK {m.tag}")
            c_node.kill()
            killed = time.monotonic()
            b.ok(f"SUBSCRIBE {q} ack=manual prefetch=100")
            got: list[bytes] = []
            redelivered = 0
            while len(got) < n - len(acked):
                m = b.read_msg(TAKEOVER)
                got.append(m.payload)
                redelivered += "redelivered" in m.attrs
                b.ok(f"ACK {m.tag}")
            took = time.monotonic() - killed
            expected = sorted({b"%d" % i for i in range(n)} - {m.payload for m in acked})
            assert sorted(got) == expected  # nothing lost, nothing acked came again
            # what C held unacknowledged: the 6 it had read, and those it got after the
            # acks (its prefetch of 10 was full again), each marked redelivered
            assert 6 <= redelivered <= 10, redelivered
            assert took < TAKEOVER
            assert b.quiet(0.5)  # and no duplicates
    finally:
        for p in procs:
            p.stop()


def test_dead_letters_ttl_and_max_deliver_across_nodes(a: Client, b: Client) -> None:
    q, dl = unique("q"), unique("dl")
    a.ok(f"CREATE {dl} queue")
    a.ok(f"CREATE {q} queue dead-letter={dl} max-deliver=2")
    poll(lambda: listed(b, q) and listed(b, dl), SPREAD * 2)
    a.ok(f"SUBSCRIBE {dl}")
    # rejected on B, dead-lettered to a consumer on A
    a.publish(q, b"reject-me")
    (m,) = poll(lambda: b.pull(f"PULL {q} ack=manual wait=500"), 10)
    assert b.ok(f"NACK {m.tag} requeue=0") == "+OK 1"
    d = a.read_msg(10)
    assert (d.payload, d.source, d.attrs.get("reason")) == (b"reject-me", q, "rejected")
    # expired (ttl) before any consumer took it
    a.publish(q, b"too-late", "", "ttl=1")
    time.sleep(0.05)  # (the message must be older than its ttl: that is the test)
    assert b.pull(f"PULL {q} wait=300") == []
    d = a.read_msg(10)
    assert (d.payload, d.attrs.get("reason")) == (b"too-late", "expired")
    # delivered twice without an ack: delivery-limit
    a.publish(q, b"twice")
    for _ in range(2):
        (m,) = poll(lambda: b.pull(f"PULL {q} ack=manual wait=500"), 10)
        b.ok(f"NACK {m.tag}")
    d = a.read_msg(10)
    assert (d.payload, d.attrs.get("reason")) == (b"twice", "delivery-limit")


@pytest.mark.slow
def test_a_redis_master_fails_over(tmp_path: Path) -> None:
    """The master of the queue's slot is killed and its replica takes over: the node
    refuses publishes (-ERR UNAVAILABLE) meanwhile, then takes them again; what was
    confirmed before and after is delivered, with no duplicate.  Redis replicates
    asynchronously, so a confirmed publish may be lost in a failover (Redis promises no
    better): the test counts them (docs/cluster.rst gives the figure) and allows a few."""
    dev = DevCluster(masters=3, replicas=1).start()
    node = None
    try:
        node = start_node(tmp_path, dev, "fo")
        with connect(node) as c:
            c.ok("CREATE fq queue durable")
            master = master_of(dev, "mb:q:{fq}")
            confirmed: list[int] = []
            refused = 0
            i = 0
            deadline = time.monotonic() + 60
            after = 0  # confirmations since the first refusal
            at_kill = ""
            down = back = 0.0
            while after < 50 and time.monotonic() < deadline:
                if i == 200:
                    at_kill = replication(dev, master)  # (its replicas' offsets then)
                    dev.kill(master)
                status = c.publish("fq", b"%d" % i)
                if status.startswith("+OK"):
                    confirmed.append(i)
                    if refused and not after:
                        back = time.monotonic()
                    after += refused > 0
                else:
                    assert status.startswith("-ERR UNAVAILABLE"), status
                    if not refused:
                        down = time.monotonic()
                    refused += 1
                i += 1
            assert refused and after == 50, (refused, after)  # down, then back
            c.ok("SUBSCRIBE fq ack=manual prefetch=1000")
            got: list[int] = []
            last = confirmed[-1]
            while last not in got:
                try:
                    m = c.read_msg(TAKEOVER)
                except TimeoutError:
                    break  # (the last one lost too: the report below says what else)
                got.append(int(m.payload))
                c.ok(f"ACK {m.tag}")
            lost = sorted(set(confirmed) - set(got))
            twice = sorted(n for n in set(got) if got.count(n) > 1)
            print(f"failover: unavailable {back - down:.1f} s, {len(lost)} confirmed lost")
            if len(lost) > 10 or twice:
                print(failover_report(dev, "mb:q:{fq}", node.output()))
            assert len(lost) <= 10, (
                f"{len(lost)} of {len(confirmed)} confirmed lost: {spans(lost)}; "
                f"kill at 200 ({at_kill}); refused {refused}; got {spans(got)}"
            )
            assert not twice, f"duplicates: {spans(twice)}"
    finally:
        if node is not None:
            node.stop()
        dev.stop()


def test_a_node_that_cannot_reach_redis_says_so_and_exits(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as failed:
        start_broker(tmp_path, "--cluster", "redis://127.0.0.1:1", memory_only=True)
    assert "mbroker cannot start: cannot use the Redis Cluster at 127.0.0.1:1" in str(failed.value)
    assert "Traceback" not in str(failed.value)


def test_headers_and_priority_published_on_one_node_arrive_on_the_other(
    a: Client, b: Client
) -> None:
    """Section 7 properties travel with the stream entry: MSG on B carries them as a
    single broker would, also after a NACK, a dead-letter and on a subscription to an
    exchange (Redis pub/sub)."""
    q, dl, ex = unique("q"), unique("dl"), unique("ex")
    a.ok(f"CREATE {dl} queue")
    a.ok(f"CREATE {q} queue dead-letter={dl}")
    a.ok(f"CREATE {ex} fanout")
    poll(lambda: listed(b, q) and listed(b, dl) and listed(b, ex), SPREAD * 2)
    props = ("priority=3", "h.trace=a%20b%0D", "h.empty=")
    want = {"priority": "3", "h.trace": "a%20b%0D", "h.empty": ""}
    assert a.publish(q, b"one", "", *props) == "+OK 1"
    (m,) = poll(lambda: b.pull(f"PULL {q} ack=manual wait=500"), 10)
    assert m.payload == b"one" and m.attrs == want
    assert b.ok(f"NACK {m.tag}") == "+OK 1"
    (m,) = poll(lambda: b.pull(f"PULL {q} ack=manual wait=500"), 10)
    assert m.attrs == {"redelivered": "1", **want}
    assert b.ok(f"NACK {m.tag} requeue=0") == "+OK 1"
    (d,) = poll(lambda: a.pull(f"PULL {dl} wait=500"), 10)
    assert (d.payload, d.attrs) == (b"one", {"reason": "rejected", **want})
    # through an exchange to a subscription on the other node
    assert b.ok(f"SUBSCRIBE {ex}") == "+OK 1"
    a.publish(ex, b"two", "", "h.x=1")  # (counts the queues A knows: none)
    m = b.read_msg(10)
    assert (m.payload, m.attrs) == (b"two", {"h.x": "1"})
    # a run of PUBLISH with the same headers (routed once on A): each carries them
    a.send(f"PUBLISH {q} h.r=1 2\r\nr1\r\nPUBLISH {q} h.r=1 2\r\nr2\r\n".encode())
    assert [a.read_reply()[1] for _ in range(2)] == [b"+OK 1", b"+OK 1"]
    got = pull_n(b, q, 2)
    assert [(m.payload, m.attrs) for m in got] == [(b"r1", {"h.r": "1"}), (b"r2", {"h.r": "1"})]


def test_a_publish_id_is_deduplicated_across_nodes(a: Client, b: Client) -> None:
    """Redis remembers a PUBLISH id for the dedup window: a retry through another node
    is ``+OK <n> duplicate`` and routes nothing; the id travels with the message."""
    q, ex, q2 = unique("q"), unique("ex"), unique("q")
    a.ok(f"CREATE {q} queue")
    a.ok(f"CREATE {q2} queue")
    a.ok(f"CREATE {ex} fanout dedup-window=300")
    a.ok(f"BIND {q2} {ex}")
    poll(lambda: b.listing().get(ex, {}).get("bindings") == "1" and listed(b, q), SPREAD * 2)
    assert a.publish(q, b"first", "", "id=order-1", "h.k=v") == "+OK 1"
    assert b.publish(q, b"again", "", "id=order-1") == "+OK 1 duplicate"
    assert a.publish(q, b"again", "", "id=order-1") == "+OK 1 duplicate"
    assert b.publish(q, b"other", "", "id=order-2") == "+OK 1"
    got = pull_n(b, q, 2)
    assert [(m.payload, m.attrs.get("id")) for m in got] == [
        (b"first", "order-1"),
        (b"other", "order-2"),
    ]
    assert got[0].attrs["h.k"] == "v"
    # an exchange's window (dedup-window=300 ms, made on A) holds on B, then ends
    assert b.publish(ex, b"x", "", "id=e1") == "+OK 1"
    assert a.publish(ex, b"x", "", "id=e1") == "+OK 1 duplicate"
    poll(lambda: a.publish(ex, b"y", "", "id=e1") == "+OK 1", 5)
    assert [m.payload for m in pull_n(a, q2, 2)] == [b"x", b"y"]
    assert a.pull(f"PULL {q2} wait=100") == []


def pull_n(c: Client, q: str, n: int, timeout: float = 10) -> list[Msg]:
    """PULL from ``q`` until ``n`` messages came (within ``timeout``)."""
    got: list[Msg] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += c.pull(f"PULL {q} max={n - len(got)} wait=300")
    return got


def test_a_delayed_publish_on_one_node_is_delivered_on_the_other_when_due(
    a: Client, b: Client
) -> None:
    """Delayed copies wait in Redis and are moved into the stream by any node when
    due: not before, and soon after (the documented tick)."""
    q, ex, q2 = unique("q"), unique("ex"), unique("q")
    a.ok(f"CREATE {q} queue")
    a.ok(f"CREATE {q2} queue")
    a.ok(f"CREATE {ex} topic")
    a.ok(f"BIND {q2} {ex} k")
    poll(lambda: b.listing().get(ex, {}).get("bindings") == "1" and listed(b, q), SPREAD * 2)
    b.ok(f"SUBSCRIBE {q}")
    start = time.monotonic()
    assert a.publish(q, b"later", "", "delay=600", "h.x=1") == "+OK 1"
    assert a.publish(q, b"now", "", "h.x=2") == "+OK 1"
    m = b.read_msg(10)
    assert (m.payload, m.attrs) == (b"now", {"h.x": "2"})
    m = b.read_msg(10)
    took = time.monotonic() - start
    assert (m.payload, m.attrs) == (b"later", {"h.x": "1"})
    assert 0.6 <= took < 3.0, took
    # through an exchange, with an id: delayed once, a retry through B a duplicate
    assert a.publish(ex, b"d", "k", "delay=300", "id=d1") == "+OK 1"
    assert b.publish(ex, b"d", "k", "delay=300", "id=d1") == "+OK 1 duplicate"
    assert b.pull(f"PULL {q2} wait=100") == []
    assert [m.payload for m in pull_n(b, q2, 1)] == [b"d"]
    assert b.pull(f"PULL {q2} wait=300") == []


def test_a_delayed_message_survives_the_kill_of_its_node(
    nodes: Any, b: Client, redis_cluster: Any, tmp_path: Path
) -> None:
    """Nothing of a delayed message is on its node: published through C, C killed
    with ``kill -9`` before it is due, it reaches a consumer on B at its due time."""
    c_node = start_node(tmp_path, redis_cluster, "dc")
    try:
        q = unique("q")
        with connect(c_node) as c:
            c.ok(f"CREATE {q} queue durable")
            assert c.publish(q, b"due", "", "delay=700", "id=k1") == "+OK 1"
            c_node.kill()
        start = time.monotonic()
        poll(lambda: listed(b, q), SPREAD * 2)
        b.ok(f"SUBSCRIBE {q}")
        m = b.read_msg(10)
        assert (m.payload, m.attrs) == (b"due", {"id": "k1"})
        assert time.monotonic() - start < 5
    finally:
        c_node.stop()


def test_priorities_order_what_a_node_reads_at_once(a: Client, b: Client) -> None:
    """The rule that holds (docs/cluster.rst): a node delivers the messages it has
    read from the stream highest priority first, FIFO within one priority; so a PULL
    of several messages already in Redis gets them in priority order."""
    q = unique("q")
    a.ok(f"CREATE {q} queue")
    poll(lambda: listed(b, q), SPREAD * 2)
    for payload, priority in ((b"a", 0), (b"b", 0), (b"c", 5), (b"d", 9), (b"e", 5)):
        assert a.publish(q, payload, "", f"priority={priority}") == "+OK 1"
    got = b.pull(f"PULL {q} max=5 wait=2000 ack=manual")
    assert [(m.payload, m.attrs.get("priority")) for m in got] == [
        (b"d", "9"),
        (b"c", "5"),
        (b"e", "5"),
        (b"a", None),
        (b"b", None),
    ]
    # requeued: back to the head of its own priority, on this node
    b.ok(f"NACK {got[1].tag}")
    b.ok(f"NACK {got[3].tag}")
    again = b.pull(f"PULL {q} max=2 wait=2000")
    assert [m.payload for m in again] == [b"c", b"a"]


def test_max_length_reject_on_a_queue_made_on_the_other_node(a: Client, b: Client) -> None:
    q = unique("q")
    a.ok(f"CREATE {q} queue max-length=3 overflow=reject")
    poll(lambda: listed(b, q), SPREAD * 2)
    for i in range(3):
        assert b.publish(q, b"m%d" % i) == "+OK 1"
    # (B counts its own copies at once; the figures of Redis agree within a round)
    assert b.publish(q, b"m3").startswith("-ERR OVERFLOW")
    poll(lambda: a.listing()[q].get("messages") == "3", SPREAD * 2)
    assert a.publish(q, b"m4").startswith("-ERR OVERFLOW")
    assert [m.payload for m in pull_n(a, q, 3)] == [b"m0", b"m1", b"m2"]


def test_max_length_drop_head_keeps_the_newest(a: Client, b: Client) -> None:
    q = unique("q")
    a.ok(f"CREATE {q} queue max-length=3")
    poll(lambda: listed(b, q), SPREAD * 2)
    # one held by a consumer (delivered, not acknowledged) is never dropped
    assert b.publish(q, b"held") == "+OK 1"
    (held,) = poll(lambda: a.pull(f"PULL {q} ack=manual wait=500"), 10)
    for i in range(5):
        assert b.publish(q, b"m%d" % i) == "+OK 1"
    poll(lambda: a.listing()[q].get("messages") == "3", SPREAD * 2)
    assert a.ok(f"ACK {held.tag}") == "+OK 1"
    assert [m.payload for m in pull_n(a, q, 3)] == [b"m2", b"m3", b"m4"]


def test_delayed_copies_in_redis_are_counted_by_stat_and_http(
    nodes: Any, a: Client, b: Client
) -> None:
    """STAT delayed and the HTTP API count the copies waiting in Redis, whichever
    node published them; LIST's messages= does not (as on a single broker)."""
    q = unique("q")
    a.ok(f"CREATE {q} queue")
    poll(lambda: listed(b, q), SPREAD * 2)
    for i in range(2):
        assert a.publish(q, b"d%d" % i, "", "delay=60000") == "+OK 1"
    assert a.publish(q, b"now") == "+OK 1"

    def api() -> Any:
        url = f"http://127.0.0.1:{nodes[1].http_port}/api/queues/{q}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    # (each node reads the figures of Redis every second)
    poll(lambda: a.stats(q).get("delayed") == b.stats(q).get("delayed") == "2", SPREAD * 2)
    assert b.listing()[q]["messages"] == "1"
    view = api()
    assert (view["messages_delayed"], view["messages"]) == (2, 3), view
    b.ok(f"PURGE {q}")
    poll(lambda: b.stats(q).get("messages") == "0", SPREAD * 2)
    assert b.stats(q)["delayed"] == "2"
