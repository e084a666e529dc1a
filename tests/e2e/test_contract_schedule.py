"""Contract section 7, priorities and delayed delivery, against a real ``twistd``.

Priorities: higher first, FIFO within one, a requeued message at the head of its own
priority, ``drop-head`` of the lowest; MSG carries ``priority=N``.  Delays: routed at
once, ready MS later, not in LIST ``messages=`` until then, counted by ``STAT
delayed``; durable delayed messages survive a graceful restart and a ``kill -9`` and
come at their (wall-clock) due time.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.helpers.broker import start_broker
from tests.helpers.contract import Client, connect, poll, queue, unique
from tests.helpers.targets import figures, pull_all


def test_priorities_end_to_end(client: Client, on_node: bool) -> None:
    q = queue(client)
    for payload, prio in [("a0", 0), ("b5", 5), ("c9", 9), ("d5", 5), ("e0", 0)]:
        assert client.ok(f"PUBLISH {q} priority={prio} :{payload}") == "+OK 1"
    msgs = client.pull(f"PULL {q} max=10 ack=manual")
    assert [m.payload for m in msgs] == [b"c9", b"b5", b"d5", b"a0", b"e0"]
    assert [m.attrs.get("priority") for m in msgs] == ["9", "5", "5", None, None]
    # NACK b5 and a0: each goes back to the head of its own priority
    assert client.ok(f"NACK {msgs[1].tag},{msgs[3].tag}") == "+OK 2"
    assert client.ok(f"ACK {msgs[0].tag},{msgs[2].tag},{msgs[4].tag}") == "+OK 3"
    assert client.ok(f"PUBLISH {q} priority=5 :f5") == "+OK 1"
    if on_node:
        # the requeued b5 and a0 wait on the node, in priority order, and a node's PULL
        # takes what it holds before what is still in Redis (f5): docs/cluster.rst
        again = pull_all(client, q, 3, on_node)
        got = [(m.payload, m.attrs.get("redelivered") or "") for m in again]
        assert sorted(got) == [(b"a0", "1"), (b"b5", "1"), (b"f5", "")]
        assert got.index((b"b5", "1")) < got.index((b"a0", "1"))
        return
    again = client.pull(f"PULL {q} max=10")
    assert [(m.payload, m.attrs.get("redelivered")) for m in again] == [
        (b"b5", "1"),
        (b"f5", None),
        (b"a0", "1"),
    ]


def test_drop_head_takes_the_oldest_of_the_lowest_priority(client: Client) -> None:
    dead = queue(client)
    q = queue(client, "max-length=2", f"dead-letter={dead}")
    client.ok(f"PUBLISH {q} priority=1 :low-old")
    client.ok(f"PUBLISH {q} priority=1 :low-new")
    client.ok(f"PUBLISH {q} priority=3 :high")
    assert client.payloads(f"PULL {q} max=5") == [b"high", b"low-new"]
    (m,) = client.pull(f"PULL {dead}")
    assert (m.payload, m.attrs) == (b"low-old", {"reason": "maxlen", "priority": "1"})


def test_delayed_is_routed_at_once_and_ready_later(client: Client, on_node: bool) -> None:
    x = unique("x")
    client.ok(f"CREATE {x} fanout")
    a, b = queue(client), queue(client)
    client.ok(f"BIND {a} {x}")
    client.ok(f"BIND {b} {x}")
    # (a node reads the figures of Redis every second: the copy waits longer there)
    delay = 3000 if on_node else 1000
    start = time.monotonic()
    assert client.ok(f"PUBLISH {x} delay={delay} :later") == "+OK 2"
    assert client.ok(f"PUBLISH {a} :now") == "+OK 1"

    def counted() -> bool:
        listing, stats = client.listing(), client.stats(b)
        return (listing[a]["messages"], listing[b]["messages"]) == ("1", "0") and (
            stats["messages"],
            stats["delayed"],
        ) == ("0", "1")

    figures(on_node, counted)
    assert client.payloads(f"PULL {b}") == []
    assert client.ok(f"SUBSCRIBE {b}") == "+OK 1"
    m = client.read_msg(timeout=10)
    assert m.payload == b"later"
    assert time.monotonic() - start >= delay / 1000
    figures(on_node, lambda: client.stats(b)["delayed"] == "0")
    assert [m.payload for m in pull_all(client, a, 2, on_node)] == [b"now", b"later"]
    assert client.ok("UNSUBSCRIBE 1") == "+OK"


def test_delete_counts_delayed_copies(client: Client, on_node: bool) -> None:
    q = queue(client)
    client.ok(f"PUBLISH {q} delay=60000 :a")
    client.ok(f"PUBLISH {q} :b")
    # (a node judges and counts by the figures of Redis: docs/cluster.rst)
    figures(on_node, lambda: client.listing()[q]["messages"] == "1")
    assert client.code(f"DELETE {q} if-empty") == "NOT_EMPTY"
    assert client.ok(f"PURGE {q}") == "+OK 1"
    figures(on_node, lambda: client.listing()[q]["messages"] == "0")
    assert client.ok(f"DELETE {q}") == "+OK 1"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "kill-9"])
def test_durable_delayed_message_survives_and_comes_at_its_due_time(
    tmp_path: Path, sig: int
) -> None:
    broker = start_broker(tmp_path)
    try:
        with connect(broker) as c:
            c.ok("CREATE jobs queue durable")
            # the reply to a durable PUBLISH comes once it is on disk
            sent = time.time()
            assert c.ok("PUBLISH jobs delay=2500 priority=2 h.kind=late :due") == "+OK 1"
            assert c.ok("PUBLISH jobs :plain") == "+OK 1"
    finally:
        broker.kill(sig)
    broker = start_broker(tmp_path)
    try:
        with connect(broker) as c:
            stats = c.stats("jobs")
            if time.time() < sent + 2.4:  # (on a slow machine it may be due already)
                assert (stats["messages"], stats["delayed"]) == ("1", "1")
                assert c.listing()["jobs"]["messages"] == "1"
            assert c.payloads("PULL jobs") == [b"plain"]
            (m,) = poll(lambda: c.pull("PULL jobs"), timeout=15)
            assert time.time() >= sent + 2.5 - 0.002  # (the due time is kept to the ms)
            assert m.payload == b"due"
            assert m.attrs == {"priority": "2", "h.kind": "late"}
            assert c.stats("jobs")["delayed"] == "0"
    finally:
        broker.stop()
    # delivered (ack=auto): it does not come back
    broker = start_broker(tmp_path)
    try:
        with connect(broker) as c:
            assert c.stats("jobs")["delayed"] == "0"
            assert c.payloads("PULL jobs") == []
    finally:
        broker.stop()
