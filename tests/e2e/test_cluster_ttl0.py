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
from tests.helpers.redis_cluster import two_nodes
from tests.helpers.targets import pull_all

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

#: the documented bound on the spread of a namespace change (docs/cluster.rst)
SPREAD = 2.0
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


def made(a: Client, b: Client, *options: str) -> str:
    """A new queue, made on A and known to B."""
    q = unique("q")
    a.ok(" ".join([f"CREATE {q} queue", *options]))
    poll(lambda: q in b.listing(), SPREAD * 2)
    return q


def test_a_consumer_with_room_on_b_gets_a_ttl0_message_published_on_a(
    ab: tuple[Client, Client],
) -> None:
    a, b = ab
    dead = made(a, b)
    q = made(a, b, "ttl=0", f"dead-letter={dead}")
    plain = made(a, b, f"dead-letter={dead}")
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
    dead = made(a, b)
    q = made(a, b, "ttl=0", f"dead-letter={dead}")
    plain = made(a, b, f"dead-letter={dead}")
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
