"""The watch's takeover of a dead node's messages, against the real Redis (the
session's cluster) on a fake clock: not after a Redis failover that only made a
living node's liveness key expire (docs/cluster.rst, "A Redis master failing over")."""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet import task

from mbroker.cluster import keys
from mbroker.cluster.link import RedisLink
from mbroker.cluster.watch import LIVE_MS, TICK, Watch
from tests.helpers.fakeredis import Flaky, HoldingLink

pytestmark = [pytest.mark.cluster]


Q = "wq"


def held_by_a(r: Any) -> int:
    """Entries of the queue that node ``a`` (no liveness key) read and holds."""
    return sum(
        [
            int(c["pending"])
            for c in r.xinfo_consumers(keys.stream(Q), keys.GROUP)
            if c["name"] == b"a"
        ]
    )


def watching(r: Any) -> tuple[task.Clock, Flaky, HoldingLink, Watch]:
    """Node ``a`` holds 2 entries of the queue (idle for 5 s) and has no liveness key:
    it is dead, or its key expired in a failover.  Node ``b``'s watch is started."""
    stream = keys.stream(Q)
    r.xgroup_create(stream, keys.GROUP, "0", mkstream=True)
    for p in (b"1", b"2"):
        r.xadd(stream, {"s": Q, "p": p})
    got = r.xreadgroup(keys.GROUP, "a", {stream: ">"}, count=10)
    ids = [entry for entry, _ in got[0][1]]
    r.xclaim(stream, keys.GROUP, "a", 0, ids, idle=5000)  # (idle long enough)
    assert held_by_a(r) == 2
    clock = task.Clock()
    flaky = Flaky(r)
    link = HoldingLink(flaky)
    watch = Watch(cast(RedisLink, link), "b", lambda: [Q])
    watch.start(clock)
    return clock, flaky, link, watch


def test_a_node_without_its_key_is_taken_over_at_the_next_round(r: Any) -> None:
    clock, _, _, watch = watching(r)
    clock.advance(TICK)
    assert held_by_a(r) == 0 and watch.taken_over == 2
    assert r.xlen(keys.stream(Q)) == 2  # (put back at the tail, for any node)


def test_no_node_is_judged_dead_until_live_ms_after_a_failover(r: Any) -> None:
    """The master of ``a``'s key fails over: ``b``'s rounds fail while it is down
    (they ask for ``a``'s key, judging or not); from the first round that passes
    after it, ``a`` has LIVE_MS to set its key again before ``b`` judges it (before,
    ``b`` took ``a``'s messages over at its first round after the failover)."""
    clock, flaky, _, watch = watching(r)
    flaky.dead = {keys.node_key("a")}
    for _ in range(3):
        clock.advance(TICK)  # (rounds that fail: the master is down)
    flaky.dead = set()  # (its replica promoted: a's key expired meanwhile)
    clock.advance(TICK)  # the first round that passes
    back = clock.seconds()
    assert held_by_a(r) == 2
    while clock.seconds() + TICK - back < LIVE_MS / 1000:
        clock.advance(TICK)
        assert held_by_a(r) == 2, clock.seconds()  # not taken over: maybe alive
    assert watch.counts[Q][1] == 2  # (the rounds themselves passed)
    clock.advance(TICK)
    assert held_by_a(r) == 0 and watch.taken_over == 2  # dead indeed


def test_nor_until_a_round_that_waited_for_the_cluster_is_live_ms_old(r: Any) -> None:
    """During a failover a round may also wait (redis-py retrying) until the cluster
    is back: LIVE_MS count from its end, not from the last failure (as measured with
    two nodes: a round failed, the next one waited 3 s, and the one after took the
    messages of a living node over)."""
    clock, flaky, link, watch = watching(r)
    flaky.dead = {keys.node_key("a")}
    clock.advance(TICK)  # (a failed round)
    flaky.dead = set()
    link.holding = True
    clock.advance(TICK)  # a round starts, and waits
    clock.advance(2.5 * TICK)
    link.release()  # the cluster is back: the round ends
    back = clock.seconds()
    while clock.seconds() + TICK - back < LIVE_MS / 1000:
        clock.advance(TICK)
        assert held_by_a(r) == 2, clock.seconds()
    clock.advance(TICK)
    assert held_by_a(r) == 0 and watch.taken_over == 2
