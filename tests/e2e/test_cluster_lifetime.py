"""Queue lifetime (``auto-delete``, ``expires``) of shared queues across cluster nodes,
end to end: real ``twistd -n mbroker --cluster`` nodes on a real local Redis Cluster
(docs/cluster.rst, "Queue lifetime"; :mod:`mbroker.cluster.lifetime`).

Two nodes (A and B) serve the tests of the module; the ``kill -9`` test starts a third.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, poll, unique
from tests.helpers.redis_cluster import cluster, start_node, two_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

__all__ = ["cluster"]  # (a fixture, used by name; redis_cluster: tests/e2e/conftest.py)

#: the documented bound on the spread of a namespace change (docs/cluster.rst)
SPREAD = 2.0
#: a lifetime round runs every second, a use is judged 2 s late (GRACE_MS)
TICK, GRACE = 1.0, 2.0
#: room for a slow CI on top of the documented bounds
SLACK = 8.0


@pytest.fixture(scope="module")
def nodes(
    redis_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    yield from two_nodes(redis_cluster, tmp_path_factory.mktemp("lifetime"), ("la", "lb"))


def listed(c: Client, name: str) -> bool:
    return name in c.listing()


def on_both(a: Client, b: Client, name: str) -> bool:
    return listed(a, name) and listed(b, name)


def gone_from_both(a: Client, b: Client, name: str) -> bool:
    return not listed(a, name) and not listed(b, name)


def stays(a: Client, b: Client, name: str, seconds: float, use: Any = None) -> None:
    """``name`` is on both nodes for ``seconds`` (calling ``use`` meanwhile)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if use is not None:
            use()
        assert on_both(a, b, name)
        time.sleep(0.2)


def test_auto_delete_waits_for_the_last_consumer_on_any_node(nodes: Any) -> None:
    q = unique("ad")
    with connect(nodes[0]) as a, connect(nodes[1]) as b:
        a.ok(f"CREATE {q} queue auto-delete")
        poll(lambda: on_both(a, b, q), SPREAD * 2)
        with connect(nodes[0]) as ca:
            ca.ok(f"SUBSCRIBE {q}")
            with connect(nodes[1]) as cb:
                cb.ok(f"SUBSCRIBE {q}")
                # B's consumer leaves; A's is still there: the queue stays
            stays(a, b, q, TICK * 3)
            assert a.publish(q, b"still") == "+OK 1"
            assert ca.read_msg(5).payload == b"still"
        # the last consumer (on A) left: gone on both nodes
        poll(lambda: gone_from_both(a, b, q), SPREAD + TICK + SLACK, 0.05)


def test_auto_delete_queue_of_a_killed_node_s_last_consumer(
    nodes: Any, redis_cluster: Any, tmp_path: Path
) -> None:
    """The node holding the last consumer is killed (``kill -9``): the queue is deleted
    once the node is known gone (its liveness key expired, then a round)."""
    c_node = start_node(tmp_path, redis_cluster, "lc")
    try:
        q = unique("ak")
        with connect(nodes[0]) as a, connect(nodes[1]) as b, connect(c_node) as c:
            a.ok(f"CREATE {q} queue auto-delete")
            poll(lambda: on_both(a, b, q) and listed(c, q), SPREAD * 2)
            c.ok(f"SUBSCRIBE {q}")
            stays(a, b, q, TICK * 2)
            c_node.kill()
            # LIVE_MS (3 s) + a round, and the spread of the DELETE
            poll(lambda: gone_from_both(a, b, q), 3.0 + TICK + SPREAD + SLACK, 0.05)
    finally:
        c_node.stop()


def test_expires_counts_uses_through_any_node(nodes: Any) -> None:
    q = unique("ex")
    with connect(nodes[0]) as a, connect(nodes[1]) as b:
        a.ok(f"CREATE {q} queue expires=1000")
        poll(lambda: on_both(a, b, q), SPREAD * 2)
        # used through B only, for longer than expires + the grace: it stays
        stays(a, b, q, 1.0 + GRACE + TICK * 2, lambda: b.publish(q, b"x"))
        started = time.monotonic()
        poll(lambda: gone_from_both(a, b, q), 1.0 + GRACE + TICK + SPREAD + SLACK, 0.05)
        assert time.monotonic() - started >= 1.0  # (never before expires)


def test_expires_is_held_off_by_a_consumer_on_either_node(nodes: Any) -> None:
    q = unique("ec")
    with connect(nodes[0]) as a, connect(nodes[1]) as b:
        a.ok(f"CREATE {q} queue expires=1000")
        poll(lambda: on_both(a, b, q), SPREAD * 2)
        with connect(nodes[1]) as cb:
            cb.ok(f"SUBSCRIBE {q}")
            stays(a, b, q, 1.0 + GRACE + TICK * 2)
        poll(lambda: gone_from_both(a, b, q), 1.0 + GRACE + TICK + SPREAD + SLACK, 0.05)
        q2 = unique("ec")
        a.ok(f"CREATE {q2} queue expires=1000")
        poll(lambda: on_both(a, b, q2), SPREAD * 2)
        with connect(nodes[0]) as ca:
            ca.ok(f"SUBSCRIBE {q2}")
            stays(a, b, q2, 1.0 + GRACE + TICK * 2)
        poll(lambda: gone_from_both(a, b, q2), 1.0 + GRACE + TICK + SPREAD + SLACK, 0.05)


def test_expires_is_held_off_by_a_waiting_pull_on_another_node(nodes: Any) -> None:
    q = unique("ep")
    with connect(nodes[0]) as a, connect(nodes[1]) as b:
        a.ok(f"CREATE {q} queue expires=1000")
        poll(lambda: on_both(a, b, q), SPREAD * 2)
        with connect(nodes[1]) as cb:
            # a PULL that waits longer than expires + the grace + a round
            wait = int((1.0 + GRACE + TICK * 3) * 1000)
            cb.send_line(f"PULL {q} wait={wait}")
            stays(a, b, q, 1.0 + GRACE + TICK * 2)
            assert a.publish(q, b"for the pull") == "+OK 1"
            assert cb.read_msg(5).payload == b"for the pull"
        poll(lambda: gone_from_both(a, b, q), 1.0 + GRACE + TICK + SPREAD + SLACK, 0.05)
