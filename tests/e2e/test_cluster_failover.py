"""A Redis failover seen by two cluster nodes, end to end: real ``twistd -n mbroker
--cluster`` nodes on a real local Redis Cluster with a replica per master
(tests/helpers/redis_cluster.py).

The master that holds node A's liveness key (``mb:node:{NAME}``) is killed with
``kill -9``: the key expires while no one can reach it, and the other node must not
take living A for dead (docs/cluster.rst, "Failure detection";
:func:`mbroker.cluster.watch.judging`): A keeps the messages it holds, and an
``auto-delete`` queue whose only consumer is on A is not deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from mbroker.cluster import keys, watch
from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, poll, unique
from tests.helpers.lineclient import Msg
from tests.helpers.redis_cluster import (
    DevCluster,
    fail_over,
    failover_report,
    master_of,
    start_node,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow]

#: the documented bound on the spread of a namespace change (docs/cluster.rst)
SPREAD = 2.0
#: how long after its Redis rounds pass again another node could judge a node whose
#: key is gone (a key's life, then the next round; lifetime rounds run as often),
#: with room for a slow machine
JUDGED = watch.LIVE_MS / 1000 + watch.TICK + 1.5
#: the messages A's consumer holds unacknowledged
HELD = 10


def listed(c: Client, name: str) -> bool:
    return name in c.listing()


def named(dev: Any, prefix: str, where: Callable[[int], bool]) -> str:
    """A new queue name whose stream's master (its port) is ``where``."""
    for _ in range(100):
        name = unique(prefix)
        if where(master_of(dev, keys.stream(name))):
            return name
    raise AssertionError(f"no name for {prefix} in 100 tries")


def key_exists(port: int, key: str) -> bool:
    from redis import Redis

    r = Redis(host="127.0.0.1", port=port)
    try:
        return bool(r.exists(key))
    finally:
        r.close()


def test_a_failover_of_a_node_s_key_leaves_its_messages_and_queues_with_it(
    tmp_path: Path,
) -> None:
    """Node A holds messages unacknowledged (a consumer with ``ack=manual``) and has the
    only consumer of an ``auto-delete`` queue; node B has a consumer, with room, on the
    same shared queue.  The master of A's key fails over: B's consumer gets none of A's
    messages, the queue stays, A acknowledges what it holds, and publishes are taken
    again."""
    dev = DevCluster(masters=3, replicas=1).start()
    nodes: list[BrokerProcess] = []
    try:
        nodes.append(start_node(tmp_path, dev, "fa"))
        nodes.append(start_node(tmp_path, dev, "fb"))
        node_a, node_b = nodes
        a_key = keys.node_key("fa")
        key_master = master_of(dev, a_key)
        # A's messages on another master (a failover may lose the latest writes of
        # its own; not what is tested here), the auto-delete queue on the same one
        q = named(dev, "q", lambda port: port != key_master)
        ad = named(dev, "ad", lambda port: port == key_master)
        with ExitStack() as stack:
            a, holder, only = (stack.enter_context(connect(node_a)) for _ in range(3))
            b, other = (stack.enter_context(connect(node_b)) for _ in range(2))
            a.ok(f"CREATE {q} queue")
            a.ok(f"CREATE {ad} queue auto-delete")
            poll(lambda: listed(b, q) and listed(b, ad), SPREAD * 2)
            only.ok(f"SUBSCRIBE {ad}")
            holder.ok(f"SUBSCRIBE {q} ack=manual prefetch={HELD}")
            for i in range(HELD):
                assert a.publish(q, b"%d" % i) == "+OK 1"
            held = holder.msgs(HELD, 10)
            # (every message is with A: what B takes over comes to this consumer)
            other.ok(f"SUBSCRIBE {q} ack=manual")
            killed = time.monotonic()
            promoted = fail_over(dev, key_master)

            def published() -> bool:  # (through B, to the failed-over master's slots)
                status = b.publish(ad, b"after")
                assert status.startswith(("+OK", "-ERR UNAVAILABLE", "-ERR NOT_FOUND")), status
                return not status.startswith("-ERR UNAVAILABLE")  # (NOT_FOUND: see below)

            poll(published, 15, 0.05)
            back = time.monotonic()
            poll(lambda: key_exists(promoted, a_key), JUDGED)  # (A's own rounds)
            # B's rounds pass again: for as long as it could judge A gone, nothing of A's
            got: list[Msg] = []
            while (left := back + JUDGED - time.monotonic()) > 0:
                try:
                    got.append(other.read_msg(left))
                except TimeoutError:
                    break
            wrong = [f"B's consumer got {[(m.payload, m.attrs) for m in got]}"] if got else []
            wrong += [
                f"{ad} is gone from node {n}" for n, c in (("A", a), ("B", b)) if not listed(c, ad)
            ]
            if wrong:
                print(failover_report(dev, keys.stream(q), node_a.output(), node_b.output()))
            assert not wrong, f"{wrong} (kill at 0, publishes back at {back - killed:.1f} s)"
            assert holder.ok(f"ACK {','.join(str(m.tag) for m in held)}") == f"+OK {HELD}"
            # (a publish answered -ERR UNAVAILABLE may have taken effect: "after" again)
            assert a.publish(ad, b"new") == "+OK 1"
            payloads = [only.read_msg(10).payload]
            while payloads[-1] != b"new":
                payloads.append(only.read_msg(10).payload)
            assert set(payloads[:-1]) == {b"after"}, payloads
            assert other.quiet(0.2)
    finally:
        for n in nodes:
            n.stop()
        dev.stop()
