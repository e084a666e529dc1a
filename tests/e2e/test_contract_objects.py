"""Contract sections 2-4: names and keys, exchanges and routing, and the commands that
manage objects (CREATE, DELETE, BIND, UNBIND, PUBLISH, PURGE, LIST, STATS, PING, AUTH)."""

from __future__ import annotations

import re

import pytest

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, poll, queue
from tests.helpers.contract import unique as fresh
from tests.helpers.targets import figures


def exchange(c: Client, kind: str, *options: str) -> str:
    name = fresh(kind)
    assert c.ok(" ".join(["CREATE", name, kind, *options])) == "+OK created"
    return name


# ---------------------------------------------------------------- names and keys


def test_names(client: Client) -> None:
    good = fresh("A-Za-z0-9_.x")
    assert client.ok(f"CREATE {good} queue") == "+OK created"
    longest = (fresh("n") + "x" * 255)[:255]
    assert client.ok(f"CREATE {longest} queue") == "+OK created"
    assert client.code(f"CREATE {longest}y queue") == "BAD_ARGS"
    for bad in ["a/b", "a:b", "a*b", "a#b", "é", "a,b"]:
        assert client.code(f"CREATE {bad} queue") == "BAD_ARGS", bad


def test_mbroker_names_are_the_servers(client: Client) -> None:
    assert client.err("CREATE mbroker.mine queue").startswith("-ERR BAD_ARGS reserved name")
    assert client.code("CREATE mbroker.x topic") == "BAD_ARGS"
    assert client.ok("CREATE mbrokerx-" + fresh() + " queue") == "+OK created"


def test_exchanges_and_queues_share_one_namespace(client: Client) -> None:
    name = fresh("shared")
    client.ok(f"CREATE {name} queue")
    assert client.code(f"CREATE {name} topic") == "EXISTS"
    assert client.code(f"CREATE {name}") == "EXISTS"


def test_routing_keys(client: Client) -> None:
    q = queue(client)
    for key in ["a", "a.b.c", "A-Z_a-z.0-9", "x" * 255, "-a", "a-"]:
        assert client.ok(f"PUBLISH {q} {key} :x") == "+OK 1", key
    for key in ["x" * 256, "-", ".a", "a.", "a..b", "a/b", "a.*", "#", "a:b"]:
        assert client.code(f"PUBLISH {q} {key} :x") == "BAD_ARGS", key
    msgs = client.pull(f"PULL {q} max=10")
    assert [m.key for m in msgs] == ["a", "a.b.c", "A-Z_a-z.0-9", "x" * 255, "-a", "a-"]


def test_the_empty_key_is_written_as_a_dash(client: Client) -> None:
    q = queue(client)
    client.ok(f"PUBLISH {q} :x")
    (m,) = client.pull(f"PULL {q}")
    assert m.header == f"MSG 0 1 {q} - 1".encode()


def test_binding_patterns(client: Client) -> None:
    q, ex = queue(client), exchange(client, "topic")
    for pattern in ["*", "#", "a.*.b", "#.a", "*.#.*", "a-b.*", "#.#"]:
        assert client.ok(f"BIND {q} {ex} {pattern}") == "+OK", pattern
    for pattern in ["a*", "*a", "a.#b", "**", "a..*", ".#", "-", "x" * 256]:
        assert client.code(f"BIND {q} {ex} {pattern}") == "BAD_ARGS", pattern


# ---------------------------------------------------------------- CREATE


def test_create_defaults_to_a_topic_exchange(client: Client) -> None:
    name = fresh("ex")
    assert client.ok(f"CREATE {name}") == "+OK created"
    assert client.ok(f"CREATE {name} topic") == "+OK exists"
    assert client.listing()[name] == {"kind": "topic", "durable": "0", "bindings": "0"}


@pytest.mark.parametrize("kind", ["queue", "direct", "fanout", "topic"])
def test_create_exists_only_with_the_same_kind_and_options(client: Client, kind: str) -> None:
    name = fresh(kind)
    assert client.ok(f"CREATE {name} {kind} durable") == "+OK created"
    assert client.ok(f"CREATE {name} {kind} durable") == "+OK exists"
    assert client.code(f"CREATE {name} {kind}") == "EXISTS"
    other = "queue" if kind == "topic" else "topic"
    assert client.code(f"CREATE {name} {other} durable") == "EXISTS"


def test_create_queue_options(client: Client) -> None:
    dl = fresh("dl")
    options = f"max-length=5 max-bytes=100 overflow=reject ttl=1000 dead-letter={dl} max-deliver=3"
    name = fresh("q")
    assert client.ok(f"CREATE {name} queue {options}") == "+OK created"
    assert client.ok(f"CREATE {name} queue {options}") == "+OK exists"
    assert client.code(f"CREATE {name} queue {options} durable") == "EXISTS"
    assert client.code(f"CREATE {name} queue max-length=5") == "EXISTS"


@pytest.mark.parametrize("option", ["max-length=5", "ttl=10", "exclusive", "max-deliver=1"])
def test_an_exchange_takes_only_durable(client: Client, option: str) -> None:
    assert client.code(f"CREATE {fresh('ex')} fanout {option}") == "BAD_ARGS"


def test_an_exclusive_queue_cannot_be_durable(client: Client) -> None:
    name = fresh("q")
    assert client.err(f"CREATE {name} queue exclusive durable") == (
        "-ERR BAD_ARGS an exclusive queue cannot be durable"
    )
    assert client.code(f"STATS {name}") == "NOT_FOUND"


def test_an_exclusive_queue_is_deleted_when_its_connection_closes(broker: BrokerProcess) -> None:
    name = fresh("excl")
    with connect(broker) as owner:
        assert owner.ok(f"CREATE {name} queue exclusive") == "+OK created"
        owner.ok(f"PUBLISH {name} :x")
        with connect(broker) as other:
            assert other.stats(name)["messages"] == "1"
    with connect(broker) as other:
        poll(lambda: other.request(f"STATS {name}")[1] == f"-ERR NOT_FOUND {name}".encode())


# ---------------------------------------------------------------- DELETE


def test_delete_counts_ready_and_unacked_messages(client: Client, on_node: bool) -> None:
    q = queue(client)
    for i in range(5):
        client.ok(f"PUBLISH {q} :{i}")
    assert len(client.pull(f"PULL {q} max=2 ack=manual")) == 2
    # (a node judges and counts by the figures of Redis: docs/cluster.rst)
    figures(on_node, lambda: client.listing()[q]["messages"] == "3")
    assert client.code(f"DELETE {q} if-empty") == "NOT_EMPTY"
    assert client.ok(f"DELETE {q} if-unused") == "+OK 5"
    assert client.err(f"DELETE {q}") == f"-ERR NOT_FOUND {q}"
    assert client.code("ACK 1-2") == "NOT_FOUND"  # the deliveries died with the queue


def test_delete_if_empty_counts_unacked_messages(client: Client) -> None:
    q = queue(client)
    client.ok(f"PUBLISH {q} :x")
    client.pull(f"PULL {q} ack=manual")
    assert client.err(f"DELETE {q} if-empty").startswith("-ERR NOT_EMPTY ")
    client.ok("ACK 1")
    assert client.ok(f"DELETE {q} if-empty") == "+OK 0"


def test_delete_if_unused(broker: BrokerProcess, client: Client) -> None:
    q, ex = queue(client), exchange(client, "fanout")
    client.ok(f"BIND {q} {ex}")
    assert client.err(f"DELETE {ex} if-unused").startswith("-ERR IN_USE ")
    with connect(broker) as consumer:
        consumer.ok(f"SUBSCRIBE {q}")
        assert client.err(f"DELETE {q} if-unused").startswith("-ERR IN_USE ")
        client.ok(f"UNBIND {q} {ex}")
        assert client.ok(f"DELETE {ex} if-unused") == "+OK 0"
        assert client.ok(f"DELETE {q} if-empty") == "+OK 0"
        assert consumer.read_push() == b"CANCEL 1 deleted"


def test_deleting_a_queue_cancels_every_subscription(broker: BrokerProcess) -> None:
    with connect(broker) as a, connect(broker) as b, connect(broker) as admin:
        q = queue(admin)
        assert a.ok(f"SUBSCRIBE {q}") == "+OK 1"
        assert a.ok(f"SUBSCRIBE {q} ack=manual") == "+OK 2"
        b.ok("PING")
        assert b.ok(f"SUBSCRIBE {q}") == "+OK 1"
        admin.ok(f"PUBLISH {q} :x")
        assert a.read_msg().sid == 1
        assert admin.ok(f"DELETE {q}") == "+OK 0"
        assert {a.read_push(), a.read_push()} == {b"CANCEL 1 deleted", b"CANCEL 2 deleted"}
        assert b.read_push() == b"CANCEL 1 deleted"
        assert a.code("UNSUBSCRIBE 1") == "NOT_FOUND"
        assert a.quiet(0.1) and b.quiet(0.05)


def test_deleting_an_exchange_removes_its_bindings_and_subscriptions(client: Client) -> None:
    q, ex = queue(client), exchange(client, "topic")
    client.ok(f"BIND {q} {ex} #")
    assert client.ok(f"SUBSCRIBE {ex} a.#") == "+OK 1"
    private = [n for n in client.listing() if n.startswith("mbroker.sub.")]
    assert client.ok(f"DELETE {ex}") == "+OK 0"
    assert client.read_push() == b"CANCEL 1 deleted"
    listing = client.listing()
    assert ex not in listing and not set(private) & set(listing)
    client.ok(f"CREATE {ex} topic")
    assert client.ok(f"PUBLISH {ex} a.b :x") == "+OK 0"
    assert client.listing()[ex]["bindings"] == "0"


def test_delete_unknown(client: Client) -> None:
    assert client.code(f"DELETE {fresh()}") == "NOT_FOUND"
    assert client.code(f"DELETE {fresh()} if-empty if-unused") == "NOT_FOUND"


# ---------------------------------------------------------------- BIND and UNBIND


def test_bind_and_unbind(client: Client) -> None:
    q, ex = queue(client), exchange(client, "direct")
    assert client.ok(f"BIND {q} {ex}") == "+OK"  # the empty key
    assert client.ok(f"BIND {q} {ex}") == "+OK"  # twice: no change
    assert client.ok(f"BIND {q} {ex} k") == "+OK"
    assert client.listing()[ex]["bindings"] == "2"
    assert client.ok(f"PUBLISH {ex} :x") == "+OK 1"
    assert client.ok(f"UNBIND {q} {ex}") == "+OK"
    assert client.code(f"UNBIND {q} {ex}") == "NOT_FOUND"
    assert client.ok(f"PUBLISH {ex} :x") == "+OK 0"
    assert client.ok(f"PUBLISH {ex} k :x") == "+OK 1"
    assert client.listing()[ex]["bindings"] == "1"


def test_bind_errors(client: Client) -> None:
    q, q2, ex = queue(client), queue(client), exchange(client, "topic")
    missing = fresh("missing")
    assert client.code(f"BIND {missing} {ex}") == "NOT_FOUND"
    assert client.code(f"BIND {q} {missing}") == "NOT_FOUND"
    assert client.code(f"UNBIND {missing} {ex}") == "NOT_FOUND"
    assert client.code(f"UNBIND {q} {missing}") == "NOT_FOUND"
    assert client.code(f"BIND {ex} {ex}") == "WRONG_KIND"
    assert client.code(f"BIND {q} {q2}") == "WRONG_KIND"
    assert client.code(f"UNBIND {ex} {q}") == "WRONG_KIND"
    assert client.code(f"BIND {q}") == "BAD_ARGS"


def test_a_direct_exchange_binds_keys_not_patterns(client: Client) -> None:
    q, ex = queue(client), exchange(client, "direct")
    assert client.code(f"BIND {q} {ex} a.*") == "BAD_ARGS"
    assert client.code(f"BIND {q} {ex} #") == "BAD_ARGS"
    assert client.code(f"SUBSCRIBE {ex} a.*") == "BAD_ARGS"


# ---------------------------------------------------------------- routing


def test_direct_routing(client: Client) -> None:
    ex = exchange(client, "direct")
    eu, eu2, us = queue(client), queue(client), queue(client)
    for q, key in [(eu, "eu"), (eu2, "eu"), (us, "us"), (us, "us.east")]:
        client.ok(f"BIND {q} {ex} {key}")
    assert client.ok(f"PUBLISH {ex} eu :1") == "+OK 2"
    assert client.ok(f"PUBLISH {ex} us.east :2") == "+OK 1"
    assert client.ok(f"PUBLISH {ex} EU :3") == "+OK 0"
    assert client.ok(f"PUBLISH {ex} eu.x :4") == "+OK 0"
    assert client.payloads(f"PULL {eu} max=9") == [b"1"]
    assert client.payloads(f"PULL {eu2} max=9") == [b"1"]
    assert client.payloads(f"PULL {us} max=9") == [b"2"]


def test_fanout_routing_ignores_keys(client: Client) -> None:
    ex = exchange(client, "fanout")
    a, b = queue(client), queue(client)
    client.ok(f"BIND {a} {ex}")
    client.ok(f"BIND {b} {ex} some.key")
    client.ok(f"BIND {b} {ex} other")  # bound twice: still one copy
    assert client.ok(f"PUBLISH {ex} :1") == "+OK 2"
    assert client.ok(f"PUBLISH {ex} x.y :2") == "+OK 2"
    assert client.payloads(f"PULL {a} max=9") == [b"1", b"2"]
    assert client.payloads(f"PULL {b} max=9") == [b"1", b"2"]


TOPIC_CASES = [
    ("a.b", "a.b", True),
    ("a.b", "a.bc", False),
    ("a.b", "a", False),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("*", "a", True),
    ("*", "", False),
    ("*.*", "a", False),
    ("*.*", "a.b", True),
    ("#", "", True),
    ("#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b.a", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.x.y.c", False),
    ("*.b.#", "x.b", True),
    ("*.b.#", "b", False),
    ("#.*", "a", True),
    ("#.*", "", False),
    ("#.#", "", True),
]


def test_topic_routing(client: Client) -> None:
    ex = exchange(client, "topic")
    queues = {}
    for pattern, _, _ in TOPIC_CASES:
        if pattern not in queues:
            queues[pattern] = queue(client)
            client.ok(f"BIND {queues[pattern]} {ex} {pattern}")
    keys = sorted({key for _, key, _ in TOPIC_CASES})
    for key in keys:
        client.ok(f"PUBLISH {ex} {key} :{key}")
    got = {p: set(client.payloads(f"PULL {q} max=100")) for p, q in queues.items()}
    for pattern, key, match in TOPIC_CASES:
        assert (key.encode() in got[pattern]) == match, (pattern, key)


def test_a_queue_bound_twice_gets_one_copy(client: Client) -> None:
    ex, q = exchange(client, "topic"), queue(client)
    for pattern in ["#", "a.*", "*.b", "a.b"]:
        client.ok(f"BIND {q} {ex} {pattern}")
    assert client.ok(f"PUBLISH {ex} a.b :x") == "+OK 1"
    assert client.payloads(f"PULL {q} max=9") == [b"x"]


def test_publishing_to_a_queue_name(client: Client) -> None:
    q = queue(client)
    assert client.ok(f"PUBLISH {q} any.key :x") == "+OK 1"
    (m,) = client.pull(f"PULL {q}")
    assert (m.source, m.key) == (q, "any.key")


def test_unroutable_messages_are_dropped(client: Client) -> None:
    ex = exchange(client, "topic")
    assert client.ok(f"PUBLISH {ex} a.b :x") == "+OK 0"
    stats = client.stats(ex)
    assert (stats["published"], stats["routed"], stats["unroutable"]) == ("1", "0", "1")


def test_publish_errors(client: Client) -> None:
    assert client.err("PUBLISH nosuch-x :x") == "-ERR NOT_FOUND nosuch-x"


def test_overflow_reject_keeps_the_other_copies(client: Client, on_node: bool) -> None:
    ex = exchange(client, "fanout")
    full, other = queue(client, "max-length=1", "overflow=reject"), queue(client)
    client.ok(f"BIND {full} {ex}")
    client.ok(f"BIND {other} {ex}")
    assert client.ok(f"PUBLISH {ex} :1") == "+OK 2"
    assert client.err(f"PUBLISH {ex} :2") == f"-ERR OVERFLOW {full} is full"
    figures(on_node, lambda: client.listing()[other]["messages"] == "2")
    assert client.payloads(f"PULL {other} max=9") == [b"1", b"2"]
    assert client.payloads(f"PULL {full} max=9") == [b"1"]
    assert client.stats(full)["rejected"] == "1"


# ---------------------------------------------------------------- PURGE


def test_purge_drops_ready_messages_only(client: Client, on_node: bool) -> None:
    q = queue(client)
    for i in range(4):
        client.ok(f"PUBLISH {q} :{i}")
    client.pull(f"PULL {q} ack=manual")
    # (a node counts what it purged by the figures of Redis: docs/cluster.rst)
    figures(on_node, lambda: client.listing()[q]["messages"] == "3")
    assert client.ok(f"PURGE {q}") == "+OK 3"
    listed = {"kind": "queue", "messages": "0", "unacked": "1", "consumers": "0", "durable": "0"}
    figures(on_node, lambda: client.listing()[q] == listed)
    assert client.ok(f"PURGE {q}") == "+OK 0"
    assert client.listing()[q] == listed
    assert client.ok("NACK 1") == "+OK 1"
    assert client.payloads(f"PULL {q}") == [b"0"]


def test_purge_errors(client: Client) -> None:
    ex = exchange(client, "topic")
    assert client.code(f"PURGE {ex}") == "WRONG_KIND"
    assert client.code(f"PURGE {fresh()}") == "NOT_FOUND"


# ---------------------------------------------------------------- LIST, STATS, PING, AUTH


_EXCHANGE_LINE = re.compile(rb"EXCHANGE \S+ (direct|fanout|topic) durable=[01] bindings=\d+")
_QUEUE_LINE = re.compile(rb"QUEUE \S+ messages=\d+ unacked=\d+ consumers=\d+ durable=[01]")


def test_list(client: Client, on_node: bool) -> None:
    ex = exchange(client, "topic", "durable")
    q = queue(client, "durable")
    client.ok(f"BIND {q} {ex} #")
    client.ok(f"PUBLISH {ex} a :1")
    client.ok(f"PUBLISH {ex} a :2")
    client.pull(f"PULL {q} ack=manual")
    figures(on_node, lambda: client.listing()[q]["messages"] == "1")
    before = set(client.listing())
    assert client.ok(f"SUBSCRIBE {ex} a") == "+OK 1"
    data, status = client.request("LIST")
    assert status == b"+OK %d" % len(data)
    for line in data:
        assert isinstance(line, bytes)
        assert _EXCHANGE_LINE.fullmatch(line) or _QUEUE_LINE.fullmatch(line), line
    listing = client.listing()
    assert listing[ex] == {"kind": "topic", "durable": "1", "bindings": "2"}
    assert listing[q] == {
        "kind": "queue",
        "messages": "1",
        "unacked": "1",
        "consumers": "0",
        "durable": "1",
    }
    (private,) = set(listing) - before
    assert re.fullmatch(r"mbroker\.sub\.[0-9]+\.1", private)
    assert listing[private] == {
        "kind": "queue",
        "messages": "0",
        "unacked": "0",
        "consumers": "1",
        "durable": "0",
    }


def test_stats_of_the_server(broker: BrokerProcess, client: Client) -> None:
    poll(lambda: client.stats()["connections"] == "1")  # earlier tests' connections gone
    before = client.stats()
    for key in [
        "uptime_s",
        "connections",
        "connections_total",
        "exchanges",
        "queues",
        "published",
        "delivered",
        "acked",
        "memory_peak_rss",
    ]:
        assert before[key].isdigit(), key
    with connect(broker) as other:
        q = queue(other)
        other.ok(f"PUBLISH {q} :x")
        other.pull(f"PULL {q}")
        after = client.stats()
    assert int(after["connections"]) == int(before["connections"]) + 1
    assert int(after["connections_total"]) == int(before["connections_total"]) + 1
    assert int(after["queues"]) == int(before["queues"]) + 1
    assert int(after["published"]) == int(before["published"]) + 1
    assert int(after["delivered"]) == int(before["delivered"]) + 1
    assert int(after["acked"]) >= int(before["acked"]) + 1
    poll(lambda: client.stats()["connections"] == before["connections"])


def test_stats_of_a_queue_and_an_exchange(client: Client, on_node: bool) -> None:
    ex, q = exchange(client, "direct"), queue(client)
    client.ok(f"BIND {q} {ex} k")
    client.ok(f"PUBLISH {ex} k :abc")
    client.ok(f"PUBLISH {ex} k :de")
    client.ok(f"PUBLISH {ex} nope :x")
    assert client.stats(ex) == {
        "type": "direct",
        "durable": "0",
        "bindings": "1",
        "published": "3",
        "routed": "2",
        "unroutable": "1",
    }
    client.pull(f"PULL {q} ack=manual")
    figures(on_node, lambda: client.stats(q)["messages"] == "1")
    stats = client.stats(q)
    keys = ["type", "messages", "bytes", "delayed", "unacked", "published"]
    if on_node:  # (bytes: what the node holds ready, not Redis: docs/cluster.rst)
        keys.remove("bytes")
    want = {"type": "queue", "messages": "1", "delayed": "0", "unacked": "1", "published": "2"}
    assert {k: stats[k] for k in keys} == ({**want, "bytes": "2"} if not on_node else want)
    assert client.code(f"STATS {fresh()}") == "NOT_FOUND"


def test_ping_and_auth(client: Client) -> None:
    assert client.ok("PING") == "+PONG"
    assert client.ok("AUTH someone secret") == "+OK"  # auth=none: anyone is welcome
    assert client.code("AUTH someone") == "BAD_ARGS"
