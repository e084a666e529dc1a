"""Broker core, ttl=0 (``docs/protocol.rst``, ``ttl``; PROTOCOL.md section 7): a copy
with a ttl of 0, from its queue or its PUBLISH, is delivered only if a consumer can take
it at once, and otherwise expires at once; the reply counts the queues it reached.
(Durable queues: ``test_durable.py``.)"""

from __future__ import annotations

import pytest

from mbroker.core.broker import Pulled
from tests.helpers.world import World, msgs


@pytest.fixture
def w() -> World:
    return World()


def dl_rows(w: World, name: str = "dl") -> list[tuple[bytes, str | None]]:
    return [(m.payload, m.reason) for m in w.broker.queue(name).ready]


class TestQueueTtl0:
    def test_an_idle_subscriber_with_room_gets_it(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", ttl=0, dead_letter="dl")
        c = w.client()
        c.sub("q")
        assert w.publish("q", b"a") == 1
        assert c.payloads == [b"a"]
        assert w.ready("dl") == []
        assert w.stat("q")["expired"] == "0"

    def test_a_manual_subscriber_with_room_gets_it(self, w: World) -> None:
        w.queue("q", ttl=0)
        c = w.client()
        c.sub("q", manual=True, prefetch=5)
        w.publish("q", b"a")
        assert c.payloads == [b"a"]
        assert w.stat("q")["expired"] == "0"

    def test_without_a_consumer_it_expires_at_once(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", ttl=0, dead_letter="dl")
        assert w.publish("q", b"a") == 1
        # at once: no timer has to run
        assert w.ready("q") == []
        assert dl_rows(w) == [(b"a", "expired")]
        st = w.stat("q")
        assert (st["expired"], st["dead_lettered"]) == ("1", "1")
        assert w.clock.getDelayedCalls() == []

    def test_without_a_consumer_or_dead_letter_it_is_dropped(self, w: World) -> None:
        w.queue("q", ttl=0)
        assert w.publish("q", b"a") == 1
        assert w.ready("q") == []
        assert w.stat("q")["expired"] == "1"
        assert w.queue_info("q").messages == 0

    def test_a_consumer_at_its_prefetch_limit_does_not_take_it(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", ttl=0, dead_letter="dl")
        c = w.client()
        c.sub("q", manual=True, prefetch=1)
        w.publish("q", b"a", b"b")
        assert c.payloads == [b"a"]
        assert w.ready("q") == []
        assert dl_rows(w) == [(b"b", "expired")]
        c.ack(1)  # room again: nothing comes back
        assert c.payloads == [b"a"]
        w.publish("q", b"c")
        assert c.payloads == [b"a", b"c"]

    def test_an_inactive_subscription_does_not_take_it(self, w: World) -> None:
        w.queue("q", ttl=0)
        c = w.client()
        c.sub("q", activate=False)
        w.publish("q", b"a")
        assert c.payloads == []
        assert w.stat("q")["expired"] == "1"

    def test_a_waiting_pull_takes_it(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", ttl=0, dead_letter="dl")
        got: list[Pulled] = []
        assert w.client().pull("q", wait=1000, on_done=got.append) is None
        w.publish("q", b"a", b"b")
        assert [[m.payload for _, m in out] for out in got] == [[b"a"]]
        assert dl_rows(w) == [(b"b", "expired")]

    def test_a_pull_after_it_finds_nothing(self, w: World) -> None:
        w.queue("q", ttl=0)
        w.publish("q", b"a")
        assert w.client().pull("q") == []

    def test_a_returned_delivery_expires(self, w: World) -> None:
        # delivered at once, then NACKed: its life (0 ms) is over
        w.queue("dl")
        w.queue("q", ttl=0, dead_letter="dl")
        c = w.client()
        c.sub("q", manual=True, prefetch=1)
        w.publish("q", b"a")
        c.nack(1)
        w.advance_ms(0)
        assert w.ready("q") == []
        assert dl_rows(w) == [(b"a", "expired")]

    def test_fifo_behind_older_messages(self, w: World) -> None:
        # an older message waits (no consumer); the ttl=0 one does not overtake it
        w.queue("q", ttl=10_000)
        w.publish("q", b"old")
        c = w.client()
        c.sub("q", manual=True, prefetch=1)
        assert c.payloads == [b"old"]
        w.publish("q", b"new", ttl=0)
        assert c.payloads == [b"old"]
        assert w.stat("q")["expired"] == "1"

    def test_a_dead_letter_target_with_ttl0(self, w: World) -> None:
        w.queue("dl", ttl=0)
        w.queue("q", ttl=0, dead_letter="dl")
        c = w.client()
        c.sub("dl")
        w.publish("q", b"a")
        assert c.payloads == [b"a"]
        w.broker.unsubscribe(c.session, 1)
        w.publish("q", b"b")
        assert w.ready("dl") == []
        assert w.stat("dl")["expired"] == "1"


class TestPublishTtl0:
    def test_on_a_queue_without_ttl(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", dead_letter="dl")
        assert w.publish("q", b"a", ttl=0) == 1
        assert w.ready("q") == []
        assert dl_rows(w) == [(b"a", "expired")]
        c = w.client()
        c.sub("q")
        assert c.payloads == []
        w.publish("q", b"b", ttl=0)
        w.publish("q", b"c")
        assert c.payloads == [b"b", b"c"]

    def test_messages_without_ttl_stay(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a", ttl=0)
        w.publish("q", b"b")
        assert w.ready("q") == [b"b"]

    def test_a_fanout_counts_every_queue(self, w: World) -> None:
        w.exchange("x", "fanout")
        w.queue("none")  # no ttl, no consumer
        w.queue("zero", ttl=0)  # no consumer
        w.queue("taken", ttl=0)
        for name in ("none", "zero", "taken"):
            w.broker.bind(name, "x")
        c = w.client()
        c.sub("taken")
        assert w.publish("x", b"a") == 3
        assert c.payloads == [b"a"]
        assert w.ready("none") == [b"a"]
        assert w.ready("zero") == []
        assert [w.stat(n)["expired"] for n in ("none", "zero", "taken")] == ["0", "1", "0"]
        assert w.publish("x", b"b", ttl=0) == 3
        assert c.payloads == [b"a", b"b"]
        assert w.ready("none") == [b"a"]

    def test_a_run_of_publishes(self, w: World) -> None:
        # pipelined publishes arrive as a run (publish_many)
        w.queue("dl")
        w.queue("q", ttl=0, dead_letter="dl")
        c = w.client()
        c.sub("q", manual=True, prefetch=2)
        reached, refused = w.broker.publish_many("q", "", msgs("1", "2", "3", "4"))
        assert (reached, refused) == (1, {})
        assert c.payloads == msgs("1", "2")
        assert dl_rows(w) == [(b"3", "expired"), (b"4", "expired")]
        assert w.ready("q") == []

    def test_a_run_with_ttl0_to_an_auto_consumer(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q")
        assert w.broker.publish_many("q", "", msgs("1", "2"), 0) == (1, {})
        assert c.payloads == msgs("1", "2")
        c.close()
        assert w.broker.publish_many("q", "", msgs("3", "4"), 0) == (1, {})
        assert w.ready("q") == []
        assert w.stat("q")["expired"] == "2"
