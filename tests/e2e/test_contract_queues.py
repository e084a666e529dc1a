"""Contract section 4, queue options: max-length, max-bytes, overflow, ttl, dead-letter
(with its reasons) and max-deliver."""

from __future__ import annotations

import time

import pytest

from tests.helpers.contract import (
    Client,
    fill,
    poll,
    queue,
    unique,
)
from tests.helpers.targets import figures, pull_all, stats_show, subscribed_and_waiting

# ---------------------------------------------------------------- length limits


def test_max_length_drops_the_head(client: Client) -> None:
    q = queue(client, "max-length=3")
    fill(client, q, "1", "2", "3", "4", "5")
    assert client.payloads(f"PULL {q} max=9") == [b"3", b"4", b"5"]
    assert client.stats(q)["dropped"] == "2"


def test_max_bytes_drops_the_head(client: Client, on_node: bool) -> None:
    q = queue(client, "max-bytes=10")
    fill(client, q, "aaaa", "bbbb", "cccc")

    def settled() -> bool:
        stats = client.stats(q)
        return (stats["messages"], stats["bytes"], stats["dropped"]) == ("2", "8", "1")

    figures(on_node, settled)
    assert client.payloads(f"PULL {q} max=9") == [b"bbbb", b"cccc"]


def test_overflow_reject(client: Client) -> None:
    by_length = queue(client, "max-length=2", "overflow=reject")
    fill(client, by_length, "1", "2")
    assert client.err(f"PUBLISH {by_length} :3") == f"-ERR OVERFLOW {by_length} is full"
    by_bytes = queue(client, "max-bytes=5", "overflow=reject")
    fill(client, by_bytes, "abc")
    assert client.code(f"PUBLISH {by_bytes} :def") == "OVERFLOW"
    fill(client, by_bytes, "de")  # exactly full
    assert client.payloads(f"PULL {by_length} max=9") == [b"1", b"2"]
    assert client.payloads(f"PULL {by_bytes} max=9") == [b"abc", b"de"]
    assert client.stats(by_length)["rejected"] == "1"
    fill(client, by_length, "4")  # room again


def test_limits_count_ready_messages_only(client: Client, on_node: bool) -> None:
    q = queue(client, "max-length=2", "overflow=reject")
    fill(client, q, "1", "2")
    client.pull(f"PULL {q} max=2 ack=manual")
    fill(client, q, "3", "4")  # the two unacknowledged ones do not count
    assert client.code(f"PUBLISH {q} :5") == "OVERFLOW"

    def settled() -> bool:
        stats = client.stats(q)
        return (stats["messages"], stats["unacked"]) == ("2", "2")

    figures(on_node, settled)


def test_a_waiting_consumer_takes_a_message_before_the_limit_applies(
    client: Client, request: pytest.FixtureRequest, on_node: bool
) -> None:
    q = queue(client, "max-length=0", "overflow=drop-head")

    def subscribe() -> None:
        assert client.ok(f"SUBSCRIBE {q}") == "+OK 1"

    # (on a node: once its read loop for the queue waits in Redis, docs/cluster.rst)
    subscribed_and_waiting(request, on_node, subscribe)
    fill(client, q, "straight through")
    assert client.read_msg().payload == b"straight through"
    assert client.ok("UNSUBSCRIBE 1") == "+OK"
    fill(client, q, "nobody")
    figures(on_node, lambda: client.stats(q)["dropped"] == "1")
    stats_show(on_node, client, q, messages="0")


# ---------------------------------------------------------------- ttl


def test_queue_ttl(client: Client, on_node: bool) -> None:
    q = queue(client, "ttl=100")
    fill(client, q, "old")
    poll(lambda: client.stats(q)["expired"] == "1")
    stats_show(on_node, client, q, messages="0")
    assert client.pull(f"PULL {q}") == []


def test_message_ttl(client: Client) -> None:
    q = queue(client)
    assert client.ok(f"PUBLISH {q} ttl=100 :short") == "+OK 1"
    fill(client, q, "forever")
    poll(lambda: client.stats(q)["expired"] == "1")
    assert client.payloads(f"PULL {q} max=5") == [b"forever"]


@pytest.mark.parametrize("queue_ttl, message_ttl", [(60_000, 100), (100, 60_000)])
def test_the_shorter_ttl_counts(client: Client, queue_ttl: int, message_ttl: int) -> None:
    dead = queue(client)
    q = queue(client, f"ttl={queue_ttl}", f"dead-letter={dead}")
    start = time.monotonic()
    assert client.ok(f"PUBLISH {q} ttl={message_ttl} :x") == "+OK 1"
    (m,) = client.pull(f"PULL {dead} wait=5000")
    assert 0.09 <= time.monotonic() - start < 5
    assert m.attrs == {"reason": "expired"}


def test_an_unacked_message_expires_only_once_it_is_back(client: Client, on_node: bool) -> None:
    dead = queue(client)
    q = queue(client, "ttl=100", f"dead-letter={dead}")
    fill(client, q, "x")
    (m,) = client.pull(f"PULL {q} ack=manual")
    assert client.pull(f"PULL {dead} wait=250") == []  # delivered: it does not expire
    stats_show(on_node, client, q, unacked="1")
    assert client.ok(f"NACK {m.tag}") == "+OK 1"  # back, and past its time
    (expired,) = client.pull(f"PULL {dead} wait=5000")
    assert expired.attrs == {"reason": "expired"}


# ---------------------------------------------------------------- dead letters


def test_dead_letter_reasons(client: Client) -> None:
    dead = queue(client)
    q = queue(client, "max-length=2", "ttl=200", "max-deliver=2", f"dead-letter={dead}")
    assert client.ok(f"PUBLISH {q} k.1 :maxlen") == "+OK 1"
    assert client.ok(f"PUBLISH {q} k.2 :rejected") == "+OK 1"
    assert client.ok(f"PUBLISH {q} k.3 :limit") == "+OK 1"  # drops "maxlen"
    (rejected,) = client.pull(f"PULL {q} ack=manual")
    client.ok(f"NACK {rejected.tag} requeue=0")
    for _ in range(2):
        (limit,) = client.pull(f"PULL {q} ack=manual")
        client.ok(f"NACK {limit.tag}")
    assert client.ok(f"PUBLISH {q} k.4 :expired") == "+OK 1"
    msgs = client.pull(f"PULL {dead} max=3")
    (expired,) = client.pull(f"PULL {dead} wait=5000")
    got = [(m.payload, m.source, m.key, m.attrs) for m in [*msgs, expired]]
    assert got == [
        (b"maxlen", q, "k.1", {"reason": "maxlen"}),
        (b"rejected", q, "k.2", {"reason": "rejected"}),
        (b"limit", q, "k.3", {"reason": "delivery-limit"}),
        (b"expired", q, "k.4", {"reason": "expired"}),
    ]
    assert expired.header.endswith(f"{q} k.4 reason=expired 7".encode())
    assert client.stats(q)["dead_lettered"] == "4"


def test_dead_letter_through_an_exchange_keeps_source_and_key(client: Client) -> None:
    ex = unique("dlx")
    client.ok(f"CREATE {ex} topic")
    errors, others = queue(client), queue(client)
    client.ok(f"BIND {errors} {ex} orders.#")
    client.ok(f"BIND {others} {ex} #")
    src = unique("src")
    client.ok(f"CREATE {src} direct")
    q = queue(client, f"dead-letter={ex}")
    client.ok(f"BIND {q} {src} orders.eu")
    client.ok(f"PUBLISH {src} orders.eu :order")
    (m,) = client.pull(f"PULL {q} ack=manual")
    client.ok(f"NACK {m.tag} requeue=0")
    for target in (errors, others):
        (dl,) = client.pull(f"PULL {target}")
        assert (dl.source, dl.key, dl.payload, dl.attrs) == (
            src,
            "orders.eu",
            b"order",
            {"reason": "rejected"},
        )


def test_a_redelivered_message_is_dead_lettered_afresh(client: Client) -> None:
    dead = queue(client)
    q = queue(client, f"dead-letter={dead}")
    fill(client, q, "x")
    (m,) = client.pull(f"PULL {q} ack=manual")
    client.ok(f"NACK {m.tag}")
    (m,) = client.pull(f"PULL {q} ack=manual")
    assert m.attrs == {"redelivered": "1"}
    client.ok(f"NACK {m.tag} requeue=0")
    (dl,) = client.pull(f"PULL {dead}")
    assert dl.attrs == {"reason": "rejected"}


def test_a_missing_dead_letter_target_drops(client: Client) -> None:
    q = queue(client, "max-length=1", f"dead-letter={unique('nowhere')}")
    fill(client, q, "1", "2")
    assert client.payloads(f"PULL {q} max=5") == [b"2"]


def test_overflow_reject_does_not_dead_letter(client: Client) -> None:
    dead = queue(client)
    q = queue(client, "max-length=1", "overflow=reject", f"dead-letter={dead}")
    fill(client, q, "1")
    assert client.code(f"PUBLISH {q} :2") == "OVERFLOW"
    assert client.pull(f"PULL {dead}") == []


def test_an_expiry_cycle_ends(client: Client, on_node: bool) -> None:
    a, b = unique("a"), unique("b")
    client.ok(f"CREATE {a} queue ttl=50 dead-letter={b}")
    client.ok(f"CREATE {b} queue ttl=50 dead-letter={a}")
    fill(client, a, "round")
    poll(lambda: client.stats(b)["expired"] == "1")
    # time for it to come round again, if it were to (on a node: a sweep more)
    assert client.quiet(2.5 if on_node else 0.2)
    assert client.stats(a)["expired"] == "1"
    stats_show(on_node, client, a, messages="0")
    stats_show(on_node, client, b, messages="0")


def test_a_dead_letter_cascade_stops_after_4_queues(client: Client, on_node: bool) -> None:
    # q0 -> q1 -> … -> q5: every queue but the last holds one message at most, so one
    # publish to a full q0 sets off drop after drop down the chain.
    names = [unique(f"c{i}") for i in range(6)]
    client.ok(f"CREATE {names[5]} queue")
    for i in range(4, -1, -1):
        client.ok(f"CREATE {names[i]} queue max-length=1 dead-letter={names[i + 1]}")
    for i in range(5):
        fill(client, names[i], f"old{i}")
    fill(client, names[0], "new")
    # (a node's PULL takes what the node holds: PULL until each has come)
    contents = [[m.payload for m in pull_all(client, n, 1, on_node)] for n in names[:5]]
    assert contents == [[b"new"], [b"old0"], [b"old1"], [b"old2"], [b"old3"]]
    figures(on_node, lambda: client.stats(names[4])["dropped"] == "1")  # old4: the
    assert client.stats(names[4])["dead_lettered"] == "0"  # fifth hop is dropped
    assert client.quiet(0.2)
    assert client.payloads(f"PULL {names[5]} max=5") == []
    stats_show(on_node, client, names[5], messages="0")
