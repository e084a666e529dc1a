"""Contract section 7, headers, ids and priorities end to end against ``twistd -n
mbroker``, over raw TCP lines and through the client: through every exchange kind and a
queue, a redelivery, a dead-letter (expired and rejected keep them, their redelivered
count starts afresh), and a restart of a durable queue, graceful and ``kill -9``."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import pytest_twisted

from mbroker.client.connection import connect as client_connect
from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.contract import Client, connect, queue, unique
from tests.helpers.lineclient import Msg
from tests.helpers.proc import reactor

#: four headers, values needing escapes among them, as written on the wire
PROPS = "id=order-7 priority=4 h.content-type=text/plain h.note=a%20b%25 h.bin=%00%FF h.e="
TAIL = b"id=order-7 priority=4 h.content-type=text/plain h.note=a%20b%25 h.bin=%00%FF h.e="


def tail(m: Msg) -> bytes:
    """A MSG line's attributes after the server's own, as written."""
    words = m.header.split()[5:-1]
    return b" ".join(w for w in words if not w.startswith((b"redelivered=", b"reason=")))


@pytest.mark.parametrize(
    "kind, key, binding", [("direct", "k", "k"), ("fanout", "", ""), ("topic", "a.b", "a.#")]
)
def test_headers_through_every_exchange_kind(
    client: Client, kind: str, key: str, binding: str
) -> None:
    ex = unique("x")
    client.ok(f"CREATE {ex} {kind}")
    q1, q2 = queue(client), queue(client)
    for q in (q1, q2):
        client.ok(f"BIND {q} {ex} {binding}".rstrip())
    assert client.publish(ex, b"body", key, PROPS) == "+OK 2"
    for q in (q1, q2):
        (m,) = client.pull(f"PULL {q}")
        assert (m.payload, m.source, tail(m)) == (b"body", ex, TAIL)
    sid = int(client.ok(f"SUBSCRIBE {ex} {binding}".rstrip()).split()[1])
    # the same id again is a duplicate (dedup window), whatever the exchange now reaches
    assert client.publish(ex, b"pushed", key, PROPS) == "+OK 2 duplicate"
    again = PROPS.replace("order-7", "order-8")
    assert client.publish(ex, b"pushed", key, again) == "+OK 3"  # and the private queue
    (m,) = client.msgs(1)
    assert (m.sid, m.payload, tail(m)) == (sid, b"pushed", TAIL.replace(b"order-7", b"order-8"))


def test_headers_through_a_queue_and_a_redelivery(client: Client) -> None:
    q = queue(client)
    assert client.publish(q, b"x", "", PROPS) == "+OK 1"
    (m,) = client.pull(f"PULL {q} ack=manual")
    assert tail(m) == TAIL and "redelivered" not in m.attrs
    client.ok(f"NACK {m.tag}")
    (m,) = client.pull(f"PULL {q} ack=manual")
    assert m.attrs["redelivered"] == "1" and tail(m) == TAIL
    # the contract's order: redelivered, then id, priority, headers
    assert m.header.split()[5:7] == [b"redelivered=1", b"id=order-7"]
    client.ok(f"ACK {m.tag}")


def test_a_dead_letter_keeps_them_and_starts_afresh(client: Client, on_node: bool) -> None:
    dead = queue(client)
    rejecting = queue(client, f"dead-letter={dead}")
    expiring = queue(client, f"dead-letter={dead}", "ttl=1")
    assert client.publish(rejecting, b"rejected", "", PROPS) == "+OK 1"
    (m,) = client.pull(f"PULL {rejecting} ack=manual")
    client.ok(f"NACK {m.tag}")  # redelivered once first
    (m,) = client.pull(f"PULL {rejecting} ack=manual")
    assert m.attrs["redelivered"] == "1"
    client.ok(f"NACK {m.tag} requeue=0")
    if on_node:
        # (a queue's ttl counts from the moment a node reads the message, a PUBLISH
        # ttl from the publish, and a node expires a message when it reads it:
        # docs/cluster.rst)
        assert client.publish(expiring, b"expired", "", "ttl=1", PROPS) == "+OK 1"
        assert client.quiet(0.05)  # (nothing comes, and the 1 ms runs out meanwhile)
        assert client.pull(f"PULL {expiring}") == []
    else:
        assert client.publish(expiring, b"expired", "", PROPS) == "+OK 1"
    got = client.pull(f"PULL {dead} wait=5000") + client.pull(f"PULL {dead} wait=5000")
    assert [(m.payload, m.attrs.get("reason"), m.attrs.get("redelivered")) for m in got] == [
        (b"rejected", "rejected", None),
        (b"expired", "expired", None),
    ]
    for m in got:
        assert m.header.split()[5].startswith(b"reason=")  # then the properties
        assert tail(m) == TAIL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["graceful", "kill-9"])
def test_a_durable_queue_keeps_them_across_a_restart(tmp_path: Path, sig: int) -> None:
    broker = start_broker(tmp_path)
    try:
        with connect(broker) as c:
            c.ok("CREATE jobs queue durable")
            c.ok("CREATE fan fanout durable")
            c.ok("BIND jobs fan")
            assert c.publish("jobs", b"direct", "", PROPS) == "+OK 1"
            assert c.publish("fan", b"routed", "", "h.only=1") == "+OK 1"
            assert c.publish("jobs", b"plain") == "+OK 1"
    finally:
        broker.kill(sig)
    broker = start_broker(tmp_path)
    try:
        with connect(broker) as c:
            got = c.pull("PULL jobs max=10")
            assert [(m.payload, tail(m)) for m in got] == [
                (b"direct", TAIL),
                (b"routed", b"h.only=1"),
                (b"plain", b""),
            ]
    finally:
        broker.stop()


@pytest_twisted.ensureDeferred
async def test_through_the_client(broker: BrokerProcess) -> None:
    c = await client_connect(reactor, f"tcp:{broker.host}:{broker.port}")
    try:
        q = unique("q")
        await c.create(q, "queue")
        headers: dict[str, bytes | str] = {
            "content-type": "text/plain",
            "note": "a b%",
            "bin": b"\x00\xff",
            "e": "",
        }
        sent = await c.publish(q, b"x", headers=headers, id="order-7", priority=4)
        assert sent == 1
        [m] = await c.pull(q, ack="manual")
        assert (m.headers, m.id, m.priority) == (
            {"content-type": b"text/plain", "note": b"a b%", "bin": b"\x00\xff", "e": b""},
            "order-7",
            4,
        )
        await m.nack()
        [m] = await c.pull(q)
        assert m.redelivered == 1 and m.headers["bin"] == b"\x00\xff"
    finally:
        await c.close()


def test_bad_properties_are_refused_and_lose_nothing(client: Client) -> None:
    q = queue(client)
    for options, code in [
        ("h.a=1 h.a=2", "BAD_ARGS"),
        ("h.a=%G1", "BAD_ARGS"),
        ("h.bad/name=1", "BAD_ARGS"),
        ("priority=10", "BAD_ARGS"),
        (" ".join(f"h.n{i}=" for i in range(65)), "LIMIT"),
        ("h.big=" + "x" * 8200, "LIMIT"),
    ]:
        status = client.publish(q, b"x", "", options)
        assert status.split()[:2] == ["-ERR", code], (options, status)
    assert client.ok("PING") == "+PONG"  # still in step
    assert client.stats(q)["messages"] == "0"
