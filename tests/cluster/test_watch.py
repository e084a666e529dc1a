"""The watch's takeover of a dead node's messages, against the real Redis (the
session's cluster) on a fake clock: not after a Redis failover that only made a
living node's liveness key expire (docs/cluster.rst, "A Redis master failing over")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from twisted.internet import task

from mbroker.cluster import keys
from mbroker.cluster.link import RedisLink
from mbroker.cluster.watch import LIVE_MS, TICK, Watch
from tests.helpers.fakeredis import FakeLink
from tests.helpers.redis_cluster import flush, redis_cluster

pytestmark = [pytest.mark.cluster]

__all__ = ["redis_cluster"]  # (a fixture, used by name)

Q = "wq"


class Flaky:
    """The real client, or while ``down`` one whose every command fails as when the
    master it needs is dead."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.down = False

    def __getattr__(self, name: str) -> Any:
        if self.down:
            raise RedisConnectionError("Error 111 connecting to the master. Connection refused.")
        return getattr(self.client, name)


@pytest.fixture
def client(redis_cluster: Any) -> Iterator[Any]:
    from redis.cluster import ClusterNode, RedisCluster

    flush(redis_cluster)
    r = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster.nodes])
    try:
        yield r
    finally:
        r.close()


def held_by_a(client: Any) -> int:
    """Entries of the queue that node ``a`` (no liveness key) read and holds."""
    return sum(
        [
            int(c["pending"])
            for c in client.xinfo_consumers(keys.stream(Q), keys.GROUP)
            if c["name"] == b"a"
        ]
    )


def watching(client: Any) -> tuple[task.Clock, Flaky, Watch]:
    """Node ``a`` holds 2 entries of the queue (idle for 5 s) and has no liveness key:
    it is dead, or its key expired in a failover.  Node ``b``'s watch is started."""
    stream = keys.stream(Q)
    client.xgroup_create(stream, keys.GROUP, "0", mkstream=True)
    for p in (b"1", b"2"):
        client.xadd(stream, {"s": Q, "p": p})
    got = client.xreadgroup(keys.GROUP, "a", {stream: ">"}, count=10)
    ids = [entry for entry, _ in got[0][1]]
    client.xclaim(stream, keys.GROUP, "a", 0, ids, idle=5000)  # (idle long enough)
    assert held_by_a(client) == 2
    clock = task.Clock()
    flaky = Flaky(client)
    watch = Watch(cast(RedisLink, FakeLink(cast(Any, flaky))), "b", lambda: [Q])
    watch.start(clock)
    return clock, flaky, watch


def test_a_node_without_its_key_is_taken_over_at_the_next_round(client: Any) -> None:
    clock, _, watch = watching(client)
    clock.advance(TICK)
    assert held_by_a(client) == 0 and watch.taken_over == 2
    assert client.xlen(keys.stream(Q)) == 2  # (put back at the tail, for any node)


def test_no_node_is_judged_dead_until_a_failed_round_is_live_ms_old(client: Any) -> None:
    """The master of ``a``'s key failed over: ``b``'s rounds failed meanwhile; once
    they pass again, ``a`` has LIVE_MS to set its key again before ``b`` judges it."""
    clock, flaky, watch = watching(client)
    flaky.down = True
    clock.advance(TICK)  # (a failed round)
    failed = clock.seconds()
    flaky.down = False
    while clock.seconds() + TICK - failed < LIVE_MS / 1000:
        clock.advance(TICK)
        assert held_by_a(client) == 2, clock.seconds()  # not taken over: maybe alive
    assert watch.counts[Q][1] == 2  # (the rounds themselves passed)
    clock.advance(TICK)
    assert held_by_a(client) == 0 and watch.taken_over == 2  # dead indeed
