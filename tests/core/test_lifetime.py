"""Queue lifetime (contract section 7): ``auto-delete`` and ``expires=MS``, on the fake clock.

An auto-delete queue goes when its last SUBSCRIBE consumer goes (PULL does not count);
an expires queue goes once nothing has used it for MS: no SUBSCRIBE consumer, no
waiting PULL, no PUBLISH, PULL or CREATE naming it.  Messages routed in through an
exchange are not a use.  Both drop the messages and cancel nothing.
"""

from __future__ import annotations

import pytest

from mbroker import errors
from mbroker.core import records as rec
from mbroker.wire.frames import QueueOptions
from tests.helpers.world import World


@pytest.fixture
def w() -> World:
    return World()


def exists(w: World, name: str = "q") -> bool:
    return w.broker._namespace.find(name) is not None


# ----------------------------------------------------------------- auto-delete


class TestAutoDelete:
    def test_deleted_when_the_last_consumer_unsubscribes(self, w: World) -> None:
        w.queue("q", auto_delete=True)
        a, b = w.client(), w.client()
        ca, cb = a.sub("q"), b.sub("q")
        w.broker.unsubscribe(a.session, ca.sid)
        assert exists(w)
        w.broker.publish("q", "", b"kept for a while")
        w.broker.unsubscribe(b.session, cb.sid)
        assert not exists(w)
        assert a.target.cancels == [] and b.target.cancels == []

    def test_deleted_when_the_last_consumer_disconnects_and_drops_messages(self, w: World) -> None:
        w.queue("q", auto_delete=True)
        a = w.client()
        a.sub("q", manual=True, prefetch=1)
        w.publish("q", b"1", b"2")
        a.close()
        assert not exists(w)
        w.queue("q")  # the name is free, and nothing came back into the new queue
        assert w.broker.stats("q")[2] == ("messages", "0")

    def test_not_before_the_first_consumer(self, w: World) -> None:
        w.queue("q", auto_delete=True)
        w.clock.advance(3600)
        assert exists(w)

    def test_pull_does_not_count(self, w: World) -> None:
        w.queue("q", auto_delete=True)
        w.publish("q", b"1")
        c = w.client()
        assert [m.payload for _, m in c.pull("q") or []] == [b"1"]
        assert c.pull("q", wait=100, on_done=lambda out: None) is None
        w.clock.advance(0.2)
        c.close()
        assert exists(w)

    def test_other_options_alike_matter_for_exists(self, w: World) -> None:
        w.queue("q", auto_delete=True)
        assert w.broker.create(None, "q", "queue", QueueOptions(auto_delete=True)) is False
        with pytest.raises(errors.Exists):
            w.broker.create(None, "q", "queue", QueueOptions())


# --------------------------------------------------------------------- expires


class TestExpires:
    def test_deleted_after_ms_unused(self, w: World) -> None:
        w.queue("q", expires=1000)
        w.clock.advance(0.999)
        assert exists(w)
        w.clock.advance(0.001)
        assert not exists(w)

    @pytest.mark.parametrize("use", ["publish", "pull", "create"])
    def test_each_use_starts_the_idle_time_again(self, w: World, use: str) -> None:
        w.queue("q", expires=1000)
        c = w.client()
        w.clock.advance(0.8)
        if use == "publish":
            w.broker.publish("q", "", b"x")
        elif use == "pull":
            c.pull("q")
        else:
            assert w.broker.create(None, "q", "queue", QueueOptions(expires=1000)) is False
        w.clock.advance(0.8)  # 1.6 s after creation, 0.8 s after the use
        assert exists(w)
        w.clock.advance(0.2)
        assert not exists(w)

    def test_a_publish_run_is_a_use(self, w: World) -> None:
        w.queue("q", expires=1000)
        w.clock.advance(0.8)
        w.broker.publish_many("q", "", [b"a", b"b"])
        w.clock.advance(0.8)
        assert exists(w)
        w.clock.advance(0.2)
        assert not exists(w)

    def test_messages_routed_through_an_exchange_are_not_a_use(self, w: World) -> None:
        w.queue("q", expires=1000)
        w.exchange("ev")
        w.broker.bind("q", "ev", "#")
        w.clock.advance(0.5)
        assert w.broker.publish("ev", "a", b"x") == 1
        w.broker.publish_many("ev", "a", [b"y", b"z"])
        w.clock.advance(0.5)
        assert not exists(w)

    def test_a_subscriber_keeps_it_and_its_leaving_starts_the_idle_time(self, w: World) -> None:
        w.queue("q", expires=1000)
        c = w.client()
        sub = c.sub("q")
        w.clock.advance(5)
        assert exists(w)
        w.broker.unsubscribe(c.session, sub.sid)
        w.clock.advance(0.9)
        assert exists(w)
        w.clock.advance(0.1)
        assert not exists(w)
        assert c.target.cancels == []

    def test_a_waiting_pull_keeps_it_until_it_ends(self, w: World) -> None:
        w.queue("q", expires=1000)
        c = w.client()
        done: list[object] = []
        assert c.pull("q", wait=3000, on_done=done.append) is None
        w.clock.advance(2.9)
        assert exists(w)
        w.clock.advance(0.1)  # the wait ends with nothing: idle from now
        assert done == [[]]
        w.clock.advance(0.9)
        assert exists(w)
        w.clock.advance(0.1)
        assert not exists(w)

    def test_a_waiting_pull_ended_by_a_close_starts_the_idle_time(self, w: World) -> None:
        w.queue("q", expires=1000)
        c = w.client()
        c.pull("q", wait=5000, on_done=lambda out: None)
        w.clock.advance(2.5)
        c.close()
        w.clock.advance(0.9)
        assert exists(w)
        w.clock.advance(0.1)
        assert not exists(w)

    def test_expiry_drops_messages_and_frees_the_name(self, w: World) -> None:
        w.queue("q", expires=1000)
        w.publish("q", b"1", b"2")
        w.clock.advance(1)
        assert not exists(w)
        assert not w.clock.getDelayedCalls()
        w.queue("q")
        assert w.broker.stats("q")[2] == ("messages", "0")

    def test_one_timer_per_queue_and_none_without_the_option(self, w: World) -> None:
        w.queue("plain")
        w.queue("q", expires=1000)
        w.publish("plain", b"x")
        assert len(w.clock.getDelayedCalls()) == 1
        for _ in range(50):
            w.broker.publish("q", "", b"x")
        assert len(w.clock.getDelayedCalls()) == 1

    def test_delete_cancels_the_timer(self, w: World) -> None:
        w.queue("q", expires=1000)
        w.broker.delete("q")
        assert not w.clock.getDelayedCalls()

    def test_different_expires_is_another_queue(self, w: World) -> None:
        w.queue("q", expires=1000)
        with pytest.raises(errors.Exists):
            w.broker.create(None, "q", "queue", QueueOptions(expires=2000))
        with pytest.raises(errors.Exists):
            w.broker.create(None, "q", "queue", QueueOptions())


# --------------------------------------------------------------------- durable


def test_a_durable_queue_idles_again_from_the_start_and_its_deletion_is_recorded() -> None:
    w = World()
    w.clock.advance(100)
    recovered = rec.Recovered(
        exchanges={},
        queues={
            "q": QueueOptions(durable=True, expires=1000),
            "a": QueueOptions(durable=True, auto_delete=True),
        },
        bindings=[],
        messages={},
        next_msg_id=1,
    )
    w.broker.restore(recovered)
    w.clock.advance(0.9)
    assert exists(w, "q") and exists(w, "a")
    w.clock.advance(0.1)
    assert not exists(w, "q") and exists(w, "a")
    c = w.client()
    c.sub("a")
    c.close()
    assert not exists(w, "a")


def test_a_cluster_node_judges_the_lifetime_of_the_queues_it_shares(w: World) -> None:
    """share_lifetimes: the core deletes none of the queues named, and tells the node
    when a SUBSCRIBE consumer leaves one (mbroker.cluster.lifetime judges it)."""
    left: list[str] = []
    w.broker.share_lifetimes(lambda q: q.name != "local", lambda q: left.append(q.name))
    w.queue("q", auto_delete=True)
    w.queue("idle", expires=1000)
    w.queue("local", auto_delete=True)
    a = w.client()
    ca, cl = a.sub("q"), a.sub("local")
    w.broker.unsubscribe(a.session, ca.sid)
    w.broker.unsubscribe(a.session, cl.sid)
    w.clock.advance(5)
    assert exists(w, "q") and exists(w, "idle") and not exists(w, "local")
    assert left == ["q"]
