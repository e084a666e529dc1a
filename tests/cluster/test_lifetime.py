"""Queue lifetime across nodes (mbroker.cluster.lifetime): the script that records a
node's report and judges the queue, on the real local Redis Cluster (a fake Redis
cannot run Lua), and the node's rounds on a fake clock and a fake link."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred

from mbroker.cluster import keys, lifetime
from mbroker.cluster.lifetime import GRACE_MS, Lifetime, life_key, report, used_key
from mbroker.cluster.watch import LIVE_MS
from mbroker.core.model import Queue
from mbroker.wire.frames import QueueOptions
from tests.helpers.fakeredis import FakeLink, FakeRedis, Flaky, HoldingLink


def now_ms() -> int:
    return int(time.time() * 1000)


def alive(r: Any, *nodes: str) -> None:
    for n in nodes:
        r.set(keys.node_key(n), b"1", px=60000)


def test_auto_delete_waits_for_every_live_node_s_consumers(r: Any) -> None:
    alive(r, "a", "b")
    t = now_ms()
    assert not report(r, "a", ("q", 0, 0, t, -1, True), {})  # never had one: stays
    assert not report(r, "a", ("q", 1, 0, t, -1, True), {})
    assert not report(r, "b", ("q", 2, 0, t, -1, True), {})
    assert not report(r, "a", ("q", 0, 0, t, -1, True), {})  # b still has two
    assert report(r, "b", ("q", 0, 5, t, -1, True), {})  # waiting PULLs do not count
    assert not r.exists(life_key("q"), used_key("q"))  # (a new queue starts afresh)


def test_the_fields_of_a_gone_node_count_for_nothing(r: Any) -> None:
    alive(r, "a")
    t = now_ms()
    assert not report(r, "dead", ("q", 1, 0, t, -1, True), {})
    assert not report(r, "a", ("q", 0, 0, t, -1, True), {"dead": True})
    assert report(r, "a", ("q", 0, 0, t, -1, True), {})  # (asks Redis: no liveness key)


def test_expires_counts_the_last_use_of_any_node_and_their_users(r: Any) -> None:
    alive(r, "a", "b")
    t = now_ms()
    old = t - 1000 - GRACE_MS - 50
    assert not report(r, "a", ("q", 0, 0, old, 1000, False), {})  # (a new key: now)
    r.set(used_key("q"), old)
    assert not report(r, "b", ("q", 0, 1, old, 1000, False), {})  # b's waiting PULL
    assert report(r, "b", ("q", 0, 0, old, 1000, False), {})
    r.set(used_key("q"), old)
    assert not report(r, "a", ("q", 0, 0, t - 10, 1000, False), {})  # a used it
    assert not report(r, "b", ("q", 0, 0, old, 1000, False), {})  # (the latest counts)


def test_a_round_reports_the_node_s_queues_with_a_lifetime_and_deletes_as_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = task.Clock()
    fake = FakeRedis()
    link: Any = FakeLink(fake)
    plain = Queue("plain", QueueOptions())
    ad = Queue("ad", QueueOptions(auto_delete=True))
    deleted: list[str] = []
    life = Lifetime(link, clock, "a", lambda: [plain, ad], deleted.append)
    seen: list[tuple[Any, ...]] = []

    def judge(client: Any, node: str, rep: Any, known: dict[str, bool], *_: Any) -> bool:
        seen.append(rep)
        return True

    monkeypatch.setattr(lifetime, "report", judge)
    life.start()
    clock.advance(1.0)
    life.stop()
    assert [s[0] for s in seen] == ["ad"] and deleted == ["ad"]


class HeldLink:
    """A link whose read jobs run when the test says (one Deferred each)."""

    def __init__(self) -> None:
        self.client = FakeRedis()
        self.jobs: list[tuple[Any, Deferred[Any]]] = []

    def read(self, job: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.jobs.append((job, d))
        return d

    def run(self) -> None:
        job, d = self.jobs.pop(0)
        d.callback(job())


def test_reports_go_one_batch_at_a_time_the_latest_of_each_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    link = HeldLink()
    q = Queue("q", QueueOptions(auto_delete=True))
    life = Lifetime(cast(Any, link), task.Clock(), "a", lambda: [q], lambda name: None)
    seen: list[tuple[str, int]] = []
    monkeypatch.setattr(lifetime, "report", lambda c, n, r, k, *_: seen.append((r[0], r[1])))
    monkeypatch.setattr(link.client, "delete", lambda *ks: seen.append((ks[0], -1)), False)
    q.consumers.append(cast(Any, object()))
    life.changed(q)
    assert len(link.jobs) == 1  # on its way
    q.consumers.clear()
    life.changed(q)
    life.fresh("q2")
    q.consumers.append(cast(Any, object()))
    life.changed(q)
    assert len(link.jobs) == 1  # the others wait for it
    link.run()
    assert len(link.jobs) == 1
    link.run()
    assert seen == [("q", 1), (life_key("q2"), -1), ("q", 1)]
    assert not link.jobs


def test_no_node_is_judged_gone_until_live_ms_after_a_failover(r: Any) -> None:
    """The master holding node a's liveness key fails over: b's batches fail while
    it is down (they ask for a's key, judging or not), and a's key expires.  a's
    consumer keeps the auto-delete queue until a has had LIVE_MS from the first
    batch that passes after it to set its key again (before, b deleted the queue,
    and its messages, at its first batch after the failover)."""
    t = now_ms()
    assert not report(r, "a", ("q", 1, 0, t, -1, True), {"a": True})  # (a's consumer)
    clock = task.Clock()
    flaky = Flaky(r)
    q = Queue("q", QueueOptions(auto_delete=True))
    deleted: list[str] = []
    life = Lifetime(cast(Any, FakeLink(cast(Any, flaky))), clock, "b", lambda: [q], deleted.append)
    life.start()
    flaky.dead = {keys.node_key("a")}
    for _ in range(3):
        clock.advance(1.0)  # (batches that fail: the master is down)
    flaky.dead = set()
    clock.advance(1.0)  # the first batch that passes
    back = clock.seconds()
    assert not deleted
    while clock.seconds() + 1.0 - back < LIVE_MS / 1000:
        clock.advance(1.0)
        assert not deleted, clock.seconds()  # a may be alive
    assert r.hget(life_key("q"), "a") == b"1 0"
    clock.advance(1.0)
    life.stop()
    assert deleted == ["q"]  # a is gone indeed: its consumer counts for nothing


def test_nor_until_a_batch_that_waited_for_the_cluster_is_live_ms_old(r: Any) -> None:
    """A batch may also wait (redis-py retrying) until the cluster is back: LIVE_MS
    count from its end (as measured with two nodes: a batch failed, the next waited
    3 s, and the one after deleted the queue of a living node's consumer)."""
    t = now_ms()
    assert not report(r, "a", ("q", 1, 0, t, -1, True), {"a": True})
    clock = task.Clock()
    flaky = Flaky(r)
    link = HoldingLink(flaky)
    q = Queue("q", QueueOptions(auto_delete=True))
    deleted: list[str] = []
    life = Lifetime(cast(Any, link), clock, "b", lambda: [q], deleted.append)
    life.start()
    flaky.dead = {keys.node_key("a")}
    clock.advance(1.0)  # (a failed batch)
    flaky.dead = set()
    link.holding = True
    clock.advance(1.0)  # a batch starts, and waits
    clock.advance(2.5)
    link.release()  # the cluster is back: it ends (and the reports made meanwhile go)
    back = clock.seconds()
    while clock.seconds() + 1.0 - back < LIVE_MS / 1000:
        clock.advance(1.0)
        assert not deleted, clock.seconds()
    clock.advance(1.0)
    life.stop()
    assert deleted == ["q"]
