"""Cluster mode end to end, through a node's HTTP API and STOMP listener: two real
``twistd -n mbroker --cluster`` nodes (each with ``--http`` and ``--stomp``) on the
run's local Redis Cluster (tests/helpers/redis_cluster.py).

What one node's HTTP API shows (overview, queues, a queue) and does (purge, publish)
is the shared state in Redis, whichever node made it; a message sent through one
node's STOMP listener reaches a STOMP or native consumer on the other.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import stomp  # type: ignore[import-untyped]

from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.contract import Client, poll, unique
from tests.helpers.redis_cluster import two_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

#: a node's figures of a shared queue are those of Redis, read every second, and a
#: namespace change spreads within 2 s (docs/cluster.rst); room for a loaded machine
BOUND = 10.0
LISTENERS = ("--http", "tcp:0:interface=127.0.0.1", "--stomp", "tcp:0:interface=127.0.0.1")


@pytest.fixture(scope="module")
def nodes(
    redis_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    yield from two_nodes(
        redis_cluster, tmp_path_factory.mktemp("cluster-http"), ("ha", "hb"), LISTENERS
    )


def api(node: BrokerProcess, path: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.http_port}/api/{path}", data=data, method=method
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def shared_queue(a: Client, b: Client) -> str:
    """A queue made through node A, once node B knows it."""
    q = unique("q")
    a.ok(f"CREATE {q} queue")
    poll(lambda: q in b.listing(), BOUND)
    return q


def test_the_http_api_of_a_node_shows_the_shared_queues(
    nodes: tuple[BrokerProcess, BrokerProcess], a: Client, b: Client
) -> None:
    _, node_b = nodes
    q = shared_queue(a, b)
    for i in range(3):
        assert a.publish(q, b"m%d" % i) == "+OK 1"
    # one of them delivered through A and not acknowledged
    (held,) = a.pull(f"PULL {q} ack=manual")

    def seen() -> bool:
        view = api(node_b, f"queues/{q}")
        return (view["messages_ready"], view["messages_unacknowledged"]) == (2, 1)

    poll(seen, BOUND)
    assert api(node_b, f"queues/{q}")["messages"] == 3
    listed = {row["name"]: row for row in api(node_b, "queues")}
    assert (listed[q]["messages_ready"], listed[q]["messages_unacknowledged"]) == (2, 1)

    def totals() -> bool:  # (the module's first test: its queue is the only one)
        t = api(node_b, "overview")["queue_totals"]
        return (t["messages"], t["messages_ready"], t["messages_unacknowledged"]) == (3, 2, 1)

    poll(totals, BOUND)
    url = f"http://127.0.0.1:{node_b.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert f'queue="{q}"'.encode() in response.read()
    a.ok(f"ACK {held.tag}")


def test_every_view_of_the_http_api_answers_on_a_node(
    nodes: tuple[BrokerProcess, BrokerProcess], a: Client, b: Client
) -> None:
    _, node_b = nodes
    q = shared_queue(a, b)
    x = unique("x")
    a.ok(f"CREATE {x} topic")
    a.ok(f"BIND {q} {x} k.#")
    poll(lambda: b.listing().get(x, {}).get("bindings") == "1", BOUND)
    assert a.publish(q, b"peeked") == "+OK 1"
    for path in (
        "whoami",
        "overview",
        "queues",
        f"queues/{q}",
        f"queues/{q}/bindings",
        "exchanges",
        f"exchanges/{x}",
        "bindings",
        f"bindings/e/{x}/q/{q}",
        "connections",
    ):
        assert api(node_b, path) is not None, path
    assert api(node_b, f"queues/{q}/bindings") == api(node_b, f"bindings/e/{x}/q/{q}")
    assert isinstance(api(node_b, f"queues/{q}/messages"), list)  # (what the node holds)
    for page in ("healthz", "metrics"):
        with urllib.request.urlopen(f"http://127.0.0.1:{node_b.http_port}/{page}") as r:
            assert r.status == 200, page


def test_purge_through_the_http_api_of_the_other_node(
    nodes: tuple[BrokerProcess, BrokerProcess], a: Client, b: Client
) -> None:
    _, node_b = nodes
    q = shared_queue(a, b)
    for i in range(4):
        assert a.publish(q, b"m%d" % i) == "+OK 1"
    poll(lambda: api(node_b, f"queues/{q}")["messages_ready"] == 4, BOUND)
    assert api(node_b, f"queues/{q}/contents", "DELETE") == {"purged": 4}
    poll(lambda: a.listing()[q]["messages"] == "0", BOUND)
    assert a.pull(f"PULL {q} wait=300") == []


def test_delete_if_empty_through_the_http_api_counts_delayed_copies(
    nodes: tuple[BrokerProcess, BrokerProcess], a: Client, b: Client
) -> None:
    """A queue whose only message is a delayed copy waiting in Redis is not empty, on
    any node, and DELETE counts the copy (as on a single broker)."""
    _, node_b = nodes
    q = shared_queue(a, b)
    assert a.publish(q, b"later", "", "delay=60000") == "+OK 1"
    poll(lambda: api(node_b, f"queues/{q}")["messages_delayed"] == 1, BOUND)
    with pytest.raises(urllib.error.HTTPError) as refused:
        api(node_b, f"queues/{q}?if-empty=true", "DELETE")
    assert refused.value.code == 409
    assert json.loads(refused.value.read())["error"] == "NOT_EMPTY"
    assert api(node_b, f"queues/{q}", "DELETE") == {"dropped": 1}
    poll(lambda: q not in a.listing(), BOUND)


def test_publish_through_the_http_api_reaches_a_consumer_on_the_other_node(
    nodes: tuple[BrokerProcess, BrokerProcess], a: Client, b: Client
) -> None:
    _, node_b = nodes
    q = shared_queue(a, b)
    x = unique("x")
    a.ok(f"CREATE {x} fanout")
    a.ok(f"BIND {q} {x}")
    poll(lambda: b.listing().get(x, {}).get("bindings") == "1", BOUND)
    assert a.ok(f"SUBSCRIBE {q}") == "+OK 1"
    reply = api(node_b, f"exchanges/{q}/publish", "POST", {"payload": "to the queue"})
    assert reply == {"routed": True, "queues": 1}
    reply = api(node_b, f"exchanges/{x}/publish", "POST", {"payload": "via the fanout"})
    assert reply == {"routed": True, "queues": 1}
    got = {a.read_msg(BOUND).payload for _ in range(2)}
    assert got == {b"to the queue", b"via the fanout"}


# ------------------------------------------- publish answers, as a single broker's


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A single broker with the HTTP API, whose answers a node's must match."""
    broker = start_broker(tmp_path_factory.mktemp("single-http"), *LISTENERS, memory_only=True)
    try:
        yield broker
    finally:
        broker.stop()


def post(node: BrokerProcess, name: str, body: Any) -> tuple[int, Any]:
    """``POST /api/exchanges/%2F/NAME/publish``: the status and the JSON body."""
    try:
        return 200, api(node, f"exchanges/%2F/{name}/publish", "POST", body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_duplicate_id_published_through_the_http_api_is_not_routed(
    nodes: tuple[BrokerProcess, BrokerProcess], single: BrokerProcess, a: Client, b: Client
) -> None:
    """A publish whose ``message_id`` came before, through either node, answers
    ``routed: false`` and what the first one reached, as a single broker's API does."""
    node_a, node_b = nodes
    q = shared_queue(a, b)
    x = unique("x")
    a.ok(f"CREATE {x} fanout")
    a.ok(f"BIND {q} {x}")
    poll(lambda: b.listing().get(x, {}).get("bindings") == "1", BOUND)
    with single.connect() as c:
        for line in (f"CREATE {q} queue", f"CREATE {x} fanout", f"BIND {q} {x}"):
            assert c.request(line.encode())[1].startswith(b"+OK")
    first = {"routed": True, "queues": 1}
    again = {"routed": False, "queues": 1}
    ids = [unique("id") for _ in range(3)]

    def publish(node: BrokerProcess, name: str, msg_id: str) -> tuple[int, Any]:
        return post(node, name, {"payload": msg_id, "properties": {"message_id": msg_id}})

    for via_first, via_again, name, msg_id in (
        (node_b, node_b, q, ids[0]),  # twice through B
        (node_a, node_b, q, ids[1]),  # through A, then B
        (node_a, node_b, x, ids[2]),  # through an exchange
    ):
        assert publish(single, name, msg_id) == (200, first), ("single", name)
        assert publish(via_first, name, msg_id) == (200, first), name
        assert publish(single, name, msg_id) == (200, again), ("single", name)
        assert publish(via_again, name, msg_id) == (200, again), name
    # each id routed once
    poll(lambda: a.listing()[q]["messages"] == "3", BOUND)
    got = sorted(m.payload for m in a.pull(f"PULL {q} max=10 wait=300"))
    assert got == sorted(i.encode() for i in ids)


def test_a_full_reject_queue_refuses_a_publish_through_the_http_api(
    nodes: tuple[BrokerProcess, BrokerProcess], single: BrokerProcess, a: Client, b: Client
) -> None:
    """A publish into a full ``overflow=reject`` queue answers 409 OVERFLOW, through
    either node, with or without an id; through an exchange with one full reject
    target and one open queue, the open queue gets its copy and the answer is the
    refusal: all as a single broker's API answers."""
    node_a, node_b = nodes
    full, open_ = unique("full"), unique("open")
    x = unique("x")
    made = (
        f"CREATE {full} queue max-length=1 overflow=reject",
        f"CREATE {open_} queue",
        f"CREATE {x} fanout",
        f"BIND {full} {x}",
        f"BIND {open_} {x}",
    )
    for line in made:
        a.ok(line)
    poll(lambda: b.listing().get(x, {}).get("bindings") == "2", BOUND)
    with single.connect() as c:
        for line in made:
            assert c.request(line.encode())[1].startswith(b"+OK")
    refused = (409, {"error": "OVERFLOW", "reason": f"{full} is full"})
    for node in (node_b, single):
        assert post(node, full, {"payload": "fills it"}) == (200, {"routed": True, "queues": 1})
    for label, node in (("B", node_b), ("A", node_a), ("single", single)):
        assert post(node, full, {"payload": "one too many"}) == refused, label
        with_id = {"payload": "with an id", "properties": {"message_id": unique("id")}}
        assert post(node, full, with_id) == refused, label
        assert post(node, x, {"payload": "to both"}) == refused, label
        with_id = {"payload": "both, with an id", "properties": {"message_id": unique("id")}}
        assert post(node, x, with_id) == refused, label
    # the open queue has its copies (two per node), the full one still one message
    poll(lambda: a.listing()[open_]["messages"] == "4", BOUND)
    assert a.listing()[full]["messages"] == "1"
    with single.connect() as c:
        assert c.request(f"PULL {open_} max=10".encode())[1] == b"+OK 2"


# ------------------------------------------------------------------ STOMP


class Received(stomp.ConnectionListener):
    """The MESSAGE and RECEIPT frames a stomp.py connection gets."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.receipts: queue.Queue[str] = queue.Queue()

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])


def stomp_connect(node: BrokerProcess) -> tuple[Any, Received]:
    conn = stomp.Connection12(
        [(node.host, node.stomp_port)], auto_decode=False, reconnect_attempts_max=1
    )
    received = Received()
    conn.set_listener("t", received)
    conn.connect(wait=True)
    return conn, received


def test_stomp_send_on_one_node_is_received_on_the_other(
    nodes: tuple[BrokerProcess, BrokerProcess], a: Client, b: Client
) -> None:
    node_a, node_b = nodes
    q = shared_queue(a, b)
    sender, sent = stomp_connect(node_a)
    receiver, received = stomp_connect(node_b)
    try:
        headers = {"receipt": "subscribed"}
        receiver.subscribe(f"/queue/{q}", id="s", ack="client-individual", headers=headers)
        assert received.receipts.get(timeout=BOUND) == "subscribed"
        body = b"across \x00 nodes \xff"
        sender.send(f"/queue/{q}", body, headers={"receipt": "r1"})
        assert sent.receipts.get(timeout=BOUND) == "r1"  # (confirmed: Redis has it)
        msg = received.messages.get(timeout=BOUND)
        assert msg.body == body
        assert msg.headers["destination"] == f"/queue/{q}"
        receiver.ack(msg.headers["ack"], receipt="acked")
        assert received.receipts.get(timeout=BOUND) == "acked"
        # to a native consumer on the other node, and from it back to STOMP
        receiver.unsubscribe("s", headers={"receipt": "gone"})
        assert received.receipts.get(timeout=BOUND) == "gone"
        assert b.ok(f"SUBSCRIBE {q}") == "+OK 1"
        sender.send(f"/queue/{q}", b"to native", headers={"receipt": "r2"})
        assert sent.receipts.get(timeout=BOUND) == "r2"
        deadline = time.monotonic() + BOUND
        native = b.read_msg(deadline - time.monotonic())
        assert native.payload == b"to native"
    finally:
        sender.disconnect()
        receiver.disconnect()


def test_stomp_topic_subscription_on_one_node_gets_a_send_on_the_other(
    nodes: tuple[BrokerProcess, BrokerProcess],
) -> None:
    """A subscription to a topic (a private queue bound to ``amq.topic``) on node B
    gets what a STOMP client sends to the topic on node A (Redis pub/sub)."""
    node_a, node_b = nodes
    key = unique("prices")
    sender, sent = stomp_connect(node_a)
    receiver, received = stomp_connect(node_b)
    try:
        receiver.subscribe(f"/topic/{key}.#", id="t", headers={"receipt": "subscribed"})
        assert received.receipts.get(timeout=BOUND) == "subscribed"
        sender.send(f"/topic/{key}.eur", b"1.08", headers={"receipt": "r1"})
        assert sent.receipts.get(timeout=BOUND) == "r1"
        msg = received.messages.get(timeout=BOUND)
        assert (msg.body, msg.headers["destination"]) == (b"1.08", f"/topic/{key}.eur")
    finally:
        sender.disconnect()
        receiver.disconnect()
