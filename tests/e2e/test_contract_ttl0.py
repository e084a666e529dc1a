"""Contract sections 4 and 7, ttl=0 against a real broker: a copy is delivered only if a
consumer (a subscription with room, a waiting PULL) takes it at once, and otherwise
expires at once; the reply counts the queues it was routed to either way.  On a cluster
node the same holds for a copy a node reads within its grace; one nobody takes expires
once the grace is over instead of at once (docs/cluster.rst): :func:`figures` waits."""

from __future__ import annotations

import time

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, queue, unique
from tests.helpers.lineclient import Msg
from tests.helpers.targets import figures, pull_all


def test_queue_ttl0(client: Client, on_node: bool) -> None:
    dead = queue(client)
    q = queue(client, "ttl=0", f"dead-letter={dead}")
    # no consumer: expired, not left in the queue; on a single broker at once (no
    # timer to wait for), on a node once its grace is over (docs/cluster.rst)
    assert client.publish(q, b"nobody") == "+OK 1"
    figures(
        on_node, lambda: (client.stats(q)["messages"], client.stats(q)["expired"]) == ("0", "1")
    )
    (m,) = pull_all(client, dead, 1, on_node)
    assert (m.payload, m.attrs) == (b"nobody", {"reason": "expired"})
    # a subscription with room takes it
    assert client.ok(f"SUBSCRIBE {q} ack=manual prefetch=1") == "+OK 1"
    assert client.publish(q, b"taken") == "+OK 1"
    assert client.read_msg().payload == b"taken"
    # at its prefetch limit it does not
    assert client.publish(q, b"no room") == "+OK 1"
    figures(on_node, lambda: client.stats(q)["expired"] == "2")
    assert [m.payload for m in pull_all(client, dead, 1, on_node)] == [b"no room"]
    assert client.quiet()
    assert client.ok("UNSUBSCRIBE 1") == "+OK"


def test_publish_ttl0_pipelined_and_fanout(client: Client, on_node: bool) -> None:
    q = queue(client)
    x = unique("x")
    client.ok(f"CREATE {x} fanout")
    plain = queue(client)
    zero = queue(client, "ttl=0")
    client.ok(f"BIND {plain} {x}")
    client.ok(f"BIND {zero} {x}")
    assert client.ok(f"SUBSCRIBE {q} ack=manual prefetch=2") == "+OK 1"
    # several publishes in one write: the broker reads them as a run
    client.send(b"".join(b"PUBLISH %s ttl=0 :%d\r\n" % (q.encode(), i) for i in range(5)))
    replies = [client.read_reply() for _ in range(5)]
    assert [status for _, status in replies] == [b"+OK 1"] * 5
    # room for two: the first two are taken, the others expire
    assert [client.read_msg().payload for _ in range(2)] == [b"0", b"1"]
    assert client.quiet()
    figures(
        on_node, lambda: (client.stats(q)["messages"], client.stats(q)["expired"]) == ("0", "3")
    )
    # a fanout to a queue with ttl=0 and one without: the reply counts both
    assert client.publish(x, b"f") == "+OK 2"
    assert [m.payload for m in pull_all(client, plain, 1, on_node)] == [b"f"]
    figures(on_node, lambda: client.stats(zero)["expired"] == "1")


def test_a_waiting_pull_takes_a_ttl0_message(
    broker: BrokerProcess, client: Client, on_node: bool
) -> None:
    q = queue(client)
    with connect(broker) as waiter:
        waiter.send(f"PULL {q} wait=10000\r\n".encode())
        # Until the broker has read that PULL each copy expires; the first one
        # published after it goes to the PULL.  (A node's read takes a copy for its
        # grace, docs/cluster.rst: there the first one goes to the PULL.)
        deadline = time.monotonic() + 10
        i = 0
        while client.stats(q)["expired"] == str(i):
            assert time.monotonic() < deadline, "the PULL never took a ttl=0 message"
            i += 1
            assert client.publish(q, b"%d" % i, "", "ttl=0") == "+OK 1"
        data, status = waiter.read_reply()
        assert status == b"+OK 1"
        assert [m.payload for m in data if isinstance(m, Msg)] == [b"%d" % i]
        figures(on_node, lambda: client.stats(q)["messages"] == "0")
