"""ttl=0 across two nodes, end to end: real ``twistd -n mbroker --cluster`` nodes on a
real local Redis Cluster (docs/cluster.rst: a ttl=0 copy goes to a consumer or waiting
PULL of whichever node reads it within its grace, and otherwise expires, dead-lettered
with ``reason=expired``)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, poll, unique
from tests.helpers.redis_cluster import SPREAD, made, two_nodes
from tests.helpers.targets import pull_all

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

#: the documented bound on an untaken ttl=0 copy expiring (its 1 s grace, then the
#: sweep and the figures: about 3 s), with room for a slow CI
EXPIRY = 15.0


@pytest.fixture(scope="module")
def nodes(
    redis_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    yield from two_nodes(redis_cluster, tmp_path_factory.mktemp("cluster-ttl0"), ("za", "zb"))


@pytest.fixture
def ab(nodes: tuple[BrokerProcess, BrokerProcess]) -> Iterator[tuple[Client, Client]]:
    a, b = nodes
    with connect(a) as ca, connect(b) as cb:
        yield ca, cb


def with_dead_letters(a: Client, b: Client) -> tuple[str, str, str]:
    """A dead-letter queue, a ``ttl=0`` queue and a plain queue that dead-letter there."""
    dead = made(a, b)
    return dead, made(a, b, "ttl=0", f"dead-letter={dead}"), made(a, b, f"dead-letter={dead}")


def test_a_consumer_with_room_on_b_gets_a_ttl0_message_published_on_a(
    ab: tuple[Client, Client],
) -> None:
    a, b = ab
    dead, q, plain = with_dead_letters(a, b)
    assert b.ok(f"SUBSCRIBE {q} ack=manual prefetch=5") == "+OK 1"
    assert b.ok(f"SUBSCRIBE {plain} ack=manual prefetch=5") == "+OK 2"
    assert a.publish(q, b"queue ttl") == "+OK 1"
    assert a.publish(plain, b"own ttl", "", "ttl=0") == "+OK 1"
    assert a.publish(plain, b"due", "", "delay=300", "ttl=0") == "+OK 1"
    assert a.publish(plain, b"with id", "", f"id={unique('i')}", "ttl=0") == "+OK 1"
    got = sorted(b.read_msg().payload for _ in range(4))
    assert got == [b"due", b"own ttl", b"queue ttl", b"with id"]
    # none expired: the dead-letter queue stays empty, and so do the queues
    assert b.quiet(0.5)
    for c in (a, b):
        assert (c.stats(q)["expired"], c.stats(plain)["expired"]) == ("0", "0")
    poll(lambda: a.listing()[plain]["unacked"] == "3", EXPIRY)
    assert a.listing()[dead]["messages"] == "0"
    # delivered copies are acknowledged as any others
    assert b.ok("ACK 1-4") == "+OK 4"
    poll(lambda: a.listing()[plain]["unacked"] == "0", EXPIRY)


def test_a_node_without_room_leaves_it_to_one_with_room(ab: tuple[Client, Client]) -> None:
    a, b = ab
    q = made(a, b)
    assert a.ok(f"SUBSCRIBE {q} ack=manual prefetch=1") == "+OK 1"
    assert a.publish(q, b"fills a") == "+OK 1"
    assert a.read_msg().payload == b"fills a"
    assert b.ok(f"SUBSCRIBE {q} ack=manual prefetch=1") == "+OK 1"
    assert a.publish(q, b"for b", "", "ttl=0") == "+OK 1"
    assert b.read_msg().payload == b"for b"
    assert a.quiet()


def test_a_waiting_pull_on_b_gets_a_ttl0_message_published_on_a(
    nodes: tuple[BrokerProcess, BrokerProcess], ab: tuple[Client, Client]
) -> None:
    a, b = ab
    q = made(a, b, "ttl=0")
    b.send(f"PULL {q} wait=10000\r\n".encode())
    assert a.publish(q, b"pulled") == "+OK 1"
    data, status = b.read_reply()
    assert status == b"+OK 1"
    assert [m.payload for m in data] == [b"pulled"]  # type: ignore[union-attr]
    assert b.stats(q)["expired"] == "0"


def test_with_no_consumer_anywhere_it_expires_and_is_dead_lettered(
    ab: tuple[Client, Client],
) -> None:
    a, b = ab
    dead, q, plain = with_dead_letters(a, b)
    assert a.publish(q, b"nobody") == "+OK 1"
    assert a.publish(plain, b"nobody either", "", "ttl=0") == "+OK 1"

    def expired() -> int:
        return sum(int(c.stats(n)["expired"]) for c in (a, b) for n in (q, plain))

    poll(lambda: expired() == 2, EXPIRY)

    def emptied(c: Client) -> bool:
        rows = c.listing()
        return rows[q]["messages"] == rows[plain]["messages"] == "0"

    for c in (a, b):  # (on both nodes' figures, as Redis has them)
        poll(partial(emptied, c), EXPIRY)
    got = sorted((m.payload, m.attrs["reason"]) for m in pull_all(b, dead, 2, True))
    assert got == [(b"nobody", "expired"), (b"nobody either", "expired")]
    # and a consumer that comes later does not get them
    assert b.ok(f"SUBSCRIBE {q}") == "+OK 1"
    assert b.quiet(0.5)


def routed(a: Client, b: Client, *options: str) -> tuple[str, str, str]:
    """A fanout exchange made on A, bound to a new queue with ``options`` and to a
    plain queue, both known to B: ``(exchange, queue, plain queue)``."""
    q = made(a, b, *options)
    plain = made(a, b)
    ex = unique("ex")
    a.ok(f"CREATE {ex} fanout")
    a.ok(f"BIND {q} {ex}")
    a.ok(f"BIND {plain} {ex}")
    poll(lambda: b.listing().get(ex, {}).get("bindings") == "2", SPREAD * 2)
    return ex, q, plain


#: PUBLISH options with an id or a delay (each entry written apart from a plain
#: publish's), with and without a ttl of the PUBLISH's own
SPECIAL = (("id=%s",), ("delay=300",), ("id=%s", "ttl=60000"), ("delay=300", "ttl=60000"))


def gone(c: Client, q: str) -> bool:
    return c.listing()[q]["messages"] == "0"


def special(options: tuple[str, ...]) -> list[str]:
    return [o % unique("i") if "%s" in o else o for o in options]


def test_through_an_exchange_with_an_id_or_a_delay_a_consumer_on_b_gets_it(
    ab: tuple[Client, Client],
) -> None:
    a, b = ab
    dead = made(a, b)
    ex, q, plain = routed(a, b, "ttl=0", f"dead-letter={dead}")
    assert b.ok(f"SUBSCRIBE {q} ack=manual prefetch=10") == "+OK 1"
    for i, options in enumerate(SPECIAL):
        assert a.publish(ex, b"%d" % i, "", *special(options)) == "+OK 2"
    got = sorted(b.read_msg().payload for _ in SPECIAL)
    assert got == [b"%d" % i for i in range(len(SPECIAL))]
    assert b.quiet(0.5)
    assert (a.stats(q)["expired"], b.stats(q)["expired"]) == ("0", "0")
    poll(lambda: a.listing()[q]["unacked"] == str(len(SPECIAL)), EXPIRY)
    assert a.listing()[dead]["messages"] == "0"
    # the plain queue's copies live on (no ttl of its own)
    assert sorted(m.payload for m in pull_all(b, plain, len(SPECIAL), True)) == got
    # a duplicate id routes nothing, to either queue
    once = unique("i")
    assert a.publish(ex, b"first", "", f"id={once}") == "+OK 2"
    assert b.publish(ex, b"again", "", f"id={once}") == "+OK 2 duplicate"
    assert b.read_msg().payload == b"first"
    assert b.quiet(0.5)
    assert [m.payload for m in pull_all(b, plain, 1, True)] == [b"first"]


def test_through_an_exchange_with_an_id_or_a_delay_and_nobody_it_expires(
    ab: tuple[Client, Client],
) -> None:
    a, b = ab
    dead = made(a, b)
    ex, q, plain = routed(a, b, "ttl=0", f"dead-letter={dead}")
    for i, options in enumerate(SPECIAL):
        assert a.publish(ex, b"%d" % i, "", *special(options)) == "+OK 2"
    n = len(SPECIAL)
    poll(lambda: sum(int(c.stats(q)["expired"]) for c in (a, b)) == n, EXPIRY)
    for c in (a, b):
        poll(partial(gone, c, q), EXPIRY)
    got = sorted((m.payload, m.attrs["reason"]) for m in pull_all(b, dead, n, True))
    assert got == [(b"%d" % i, "expired") for i in range(n)]
    # and a consumer that comes later does not get them; the plain queue keeps them
    assert b.ok(f"SUBSCRIBE {q}") == "+OK 1"
    assert b.quiet(0.5)
    assert sorted(m.payload for m in pull_all(b, plain, n, True)) == [b"%d" % i for i in range(n)]
