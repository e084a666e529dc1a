"""Broker core, consumption: SUBSCRIBE and its dispatch, delivery tags, ACK, NACK,
TOUCH, redelivery, UNSUBSCRIBE, PULL, private subscription queues, exclusive
queues and flow control (``docs/protocol.rst``: "Commands", "Limits and flow
control")."""

from __future__ import annotations

import pytest

from mbroker import errors
from mbroker.config import DEFAULT_MANUAL_PREFETCH, Config
from mbroker.core.broker import Pulled
from mbroker.core.model import QueuedMessage
from mbroker.wire.frames import QueueInfo, QueueOptions
from tests.helpers.world import World, msgs, tags


@pytest.fixture
def w() -> World:
    return World()


# ------------------------------------------------------------------ SUBSCRIBE


class TestSubscribe:
    def test_fifo(self, w: World) -> None:
        w.queue("q")
        w.publish("q", *msgs("1", "2", "3"))
        c = w.client()
        s = c.sub("q")
        w.publish("q", *msgs("4", "5"))
        assert c.payloads == msgs("1", "2", "3", "4", "5")
        assert {sid for sid, _, _ in c.target.pushed} == {s.sid}

    def test_inactive_until_activated(self, w: World) -> None:
        # The protocol writes +OK <sid> before activating: no MSG precedes it.
        w.queue("q")
        w.publish("q", b"a")
        c = w.client()
        s = c.sub("q", activate=False)
        w.publish("q", b"b")
        assert c.payloads == []
        assert w.ready("q") == [b"a", b"b"]
        w.broker.activate(s)
        assert c.payloads == [b"a", b"b"]

    def test_activating_an_ended_subscription_does_nothing(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        c = w.client()
        s = c.sub("q", activate=False)
        w.broker.unsubscribe(c.session, s.sid)
        w.broker.activate(s)
        assert c.payloads == []
        assert w.ready("q") == [b"a"]

    def test_unknown_name(self, w: World) -> None:
        with pytest.raises(errors.NotFound):
            w.client().sub("nope")

    def test_sids_are_per_session_from_one(self, w: World) -> None:
        w.queue("q")
        w.exchange("x")
        c1, c2 = w.client(), w.client()
        assert [c1.sub("q").sid, c1.sub("x").sid, c1.sub("q").sid] == [1, 2, 3]
        assert c2.sub("x").sid == 1
        w.broker.unsubscribe(c1.session, 3)
        assert c1.sub("q").sid == 4  # never reused on the connection

    def test_subscription_limit(self) -> None:
        w = World(Config(max_subscriptions=2))
        w.queue("q")
        w.exchange("x")
        c = w.client()
        c.sub("q")
        c.sub("x")
        with pytest.raises(errors.Limit):
            c.sub("q")
        with pytest.raises(errors.Limit):
            c.sub("x")
        # the refused exchange subscription made no private queue
        assert len(w.broker.list_objects()) == 3
        assert w.client().sub("q").sid == 1  # the limit is per connection
        w.broker.unsubscribe(c.session, 1)
        assert c.sub("q").sid == 3

    def test_pattern_on_a_queue_is_refused(self, w: World) -> None:
        w.queue("q")
        with pytest.raises(errors.BadArgs):
            w.client().sub("q", pattern="a.*")

    def test_competing_consumers_round_robin(self, w: World) -> None:
        w.queue("q")
        cs = [w.client() for _ in range(3)]
        for c in cs:
            c.sub("q")
        w.publish("q", *msgs(*"abcdefg"))
        assert [c.payloads for c in cs] == [msgs("a", "d", "g"), msgs("b", "e"), msgs("c", "f")]

    def test_round_robin_over_a_backlog(self, w: World) -> None:
        w.queue("q")
        w.publish("q", *msgs(*"abcd"))
        c1, c2 = w.client(), w.client()
        c1.sub("q", activate=False)
        s2 = c2.sub("q", activate=False)
        w.broker.activate(s2)  # c1 is not active yet: c2 takes the backlog
        assert c2.payloads == msgs(*"abcd")
        w.broker.activate(c1.session.consumers[1])
        w.publish("q", *msgs(*"efgh"))
        assert sorted(c1.payloads) == msgs("e", "g") or sorted(c1.payloads) == msgs("f", "h")
        assert len(c2.payloads) == 6

    def test_round_robin_among_those_with_room(self, w: World) -> None:
        w.queue("q")
        c1, c2, c3 = w.client(), w.client(), w.client()
        c1.sub("q", manual=True, prefetch=1)
        c2.sub("q", manual=True, prefetch=3)
        c3.sub("q", manual=True, prefetch=1)
        w.publish("q", *msgs(*"abcdefgh"))
        assert c1.payloads == [b"a"]
        assert c2.payloads == msgs("b", "d", "e")
        assert c3.payloads == [b"c"]
        assert w.ready("q") == msgs("f", "g", "h")
        c3.ack(1)
        assert c3.payloads == msgs("c", "f")
        c1.ack(1)
        assert c1.payloads == msgs("a", "g")

    def test_round_robin_survives_an_unsubscribe(self, w: World) -> None:
        w.queue("q")
        cs = [w.client() for _ in range(3)]
        for c in cs:
            c.sub("q")
        w.publish("q", b"1", b"2")  # c0, c1; next is c2
        w.broker.unsubscribe(cs[0].session, 1)
        w.publish("q", b"3", b"4", b"5")
        assert cs[2].payloads == [b"3", b"5"]
        assert cs[1].payloads == [b"2", b"4"]

    def test_manual_prefetch_limits_what_is_out(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True, prefetch=2)
        w.publish("q", *msgs(*"abcde"))
        assert c.payloads == msgs("a", "b")
        assert w.info("q") == QueueInfo("q", 3, 2, 1, False)
        c.ack(1)
        assert c.payloads == msgs("a", "b", "c")
        c.ack(2, 3)
        assert c.payloads == msgs(*"abcde")
        assert w.info("q") == QueueInfo("q", 0, 2, 1, False)

    def test_default_manual_prefetch(self, w: World) -> None:
        w.queue("q")
        n = DEFAULT_MANUAL_PREFETCH
        w.publish("q", *[b"%d" % i for i in range(n + 5)])
        c = w.client()
        c.sub("q", manual=True)
        assert len(c.payloads) == n
        assert len(w.ready("q")) == 5

    def test_auto_ack_is_unlimited_and_removes_at_once(self, w: World) -> None:
        w.queue("q")
        w.publish("q", *[b"%d" % i for i in range(DEFAULT_MANUAL_PREFETCH + 5)])
        c = w.client()
        c.sub("q")
        assert len(c.payloads) == DEFAULT_MANUAL_PREFETCH + 5
        assert w.info("q") == QueueInfo("q", 0, 0, 1, False)
        assert c.session.outstanding == {}
        with pytest.raises(errors.NotFound):
            c.ack(1)
        c.close()
        assert w.info("q") == QueueInfo("q", 0, 0, 0, False)  # nothing comes back

    def test_manual_ack(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True)
        w.publish("q", b"a", b"b")
        assert w.info("q") == QueueInfo("q", 0, 2, 1, False)
        assert c.ack(2) == 1
        assert w.info("q") == QueueInfo("q", 0, 1, 1, False)
        assert c.ack(1) == 1
        assert w.info("q") == QueueInfo("q", 0, 0, 1, False)
        c.close()
        assert w.ready("q") == []


# ---------------------------------------------------------------------- tags


class TestTags:
    def test_first_is_one_and_they_increase_across_push_and_pull(self, w: World) -> None:
        w.queue("q")
        w.queue("r")
        w.publish("q", *msgs(*"abc"))
        w.publish("r", *msgs(*"xyz"))
        c = w.client()
        c.sub("q")  # auto: tags 1, 2, 3
        pulled = c.pull("r", max=2, manual=True)
        assert [t for t, _ in pulled or []] == [4, 5]
        assert (c.pull("r") or [])[0][0] == 6
        w.publish("q", b"d")
        assert c.tags == [1, 2, 3, 7]

    def test_tags_are_per_session(self, w: World) -> None:
        w.queue("q")
        c1, c2 = w.client(), w.client()
        c1.sub("q", manual=True)
        c2.sub("q", manual=True)
        w.publish("q", *msgs(*"abcd"))
        assert c1.tags == [1, 2] and c2.tags == [1, 2]
        assert c1.payloads == msgs("a", "c")
        with pytest.raises(errors.NotFound):
            c1.ack(3)
        c2.ack(1, 2)
        assert w.queue_info("q").unacked == 2
        c1.ack(1, 2)
        assert w.queue_info("q").unacked == 0

    def test_each_subscription_shares_the_session_counter(self, w: World) -> None:
        w.queue("q")
        w.queue("r")
        c = w.client()
        a = c.sub("q", manual=True)
        bb = c.sub("r", manual=True)
        w.publish("q", b"1")
        w.publish("r", b"2")
        w.publish("q", b"3")
        assert [(sid, tag) for sid, tag, _ in c.target.pushed] == [
            (a.sid, 1),
            (bb.sid, 2),
            (a.sid, 3),
        ]

    def test_a_redelivery_gets_a_new_tag(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True)
        w.publish("q", b"a")
        c.nack(1)
        assert c.tags == [1, 2]
        with pytest.raises(errors.NotFound):
            c.ack(1)
        assert c.ack(2) == 1

    def test_range_covers_only_outstanding_tags(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True)
        w.publish("q", *msgs(*"abcdef"))  # tags 1..6
        c.ack(2, 4)
        assert c.ack((1, 100)) == 4
        assert w.queue_info("q").unacked == 0

    def test_wide_and_narrow_ranges(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True)
        w.publish("q", *msgs(*"abcdef"))
        assert c.ack((2, 3)) == 2
        assert c.ack((1, 10**12)) == 4

    def test_range_covering_none_is_not_found(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True)
        w.publish("q", b"a", b"b")
        with pytest.raises(errors.NotFound) as e:
            c.ack((5, 9))
        assert e.value.text == "5-9"
        assert w.queue_info("q").unacked == 2

    def test_missing_tags_listed_while_others_are_handled(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True)
        w.publish("q", *msgs(*"abcd"))  # tags 1..4
        with pytest.raises(errors.NotFound) as e:
            c.ack(1, 9, (2, 3), (20, 30), 4, 1)
        assert e.value.text == "9,20-30,1"
        assert w.info("q") == QueueInfo("q", 0, 0, 1, False)

    def test_nack_and_touch_also_handle_the_found_ones(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True, ack_timeout=1000)
        w.publish("q", b"a", b"b")  # tags 1, 2
        w.advance_ms(900)
        with pytest.raises(errors.NotFound) as e:
            c.touch(7, 1)
        assert e.value.text == "7"
        w.advance_ms(200)  # 2 timed out and came back as 3; 1 was touched
        assert c.tags == [1, 2, 3]
        with pytest.raises(errors.NotFound) as e:
            c.nack(2, 1)
        assert e.value.text == "2"
        assert c.tags == [1, 2, 3, 4]
        assert c.payloads[3] == b"a"

    def test_tag_of_pull_and_ack_twice(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        c = w.client()
        assert [t for t, _ in c.pull("q", manual=True) or []] == [1]
        assert c.ack(1) == 1
        with pytest.raises(errors.NotFound):
            c.ack(1)


# ---------------------------------------------------------------- redelivery


class TestRedelivery:
    def test_on_close_session_back_to_the_head_marked(self, w: World) -> None:
        w.queue("q")
        c1 = w.client()
        c1.sub("q", manual=True, prefetch=2)
        w.publish("q", *msgs(*"abcd"))
        assert c1.payloads == msgs("a", "b")
        c1.close()
        assert w.ready("q") == msgs(*"abcd")
        c2 = w.client()
        c2.sub("q", manual=True)
        assert c2.payloads == msgs(*"abcd")
        assert [m.deliveries - 1 for _, _, m in c2.target.pushed] == [1, 1, 0, 0]
        assert w.stat("q")["redelivered"] == "2"

    def test_close_goes_to_a_competing_consumer(self, w: World) -> None:
        w.queue("q")
        c1, c2 = w.client(), w.client()
        c1.sub("q", manual=True)
        w.publish("q", b"a")
        c2.sub("q", manual=True)
        c1.close()
        assert c2.payloads == [b"a"]
        assert c2.target.pushed[0][2].deliveries == 2

    def test_close_returns_in_tag_order_across_subscriptions_and_pulls(self, w: World) -> None:
        w.queue("q")
        w.publish("q", *msgs(*"abcdef"))
        c = w.client()
        c.pull("q", max=2, manual=True)  # a b: tags 1 2
        c.sub("q", manual=True, prefetch=2)  # c d: tags 3 4
        c.pull("q", manual=True)  # e: tag 5
        c.ack(2)
        c.close()
        assert w.ready("q") == msgs("a", "c", "d", "e", "f")

    def test_nack_requeue_to_the_head(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True, prefetch=1)
        w.publish("q", *msgs(*"abc"))
        assert c.nack(1) == 1
        # back at the head: redelivered at once, before b
        assert c.payloads == msgs("a", "a")
        assert c.target.pushed[1][2].deliveries == 2
        c.ack(2)
        assert c.payloads == msgs("a", "a", "b")

    def test_nack_several_keeps_their_order(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True, prefetch=3)
        w.publish("q", *msgs(*"abcde"))
        c2 = w.client()
        # stop c from taking them again, then nack
        w.broker.set_writable(c.session, False)
        assert c.nack((1, 3)) == 3
        assert w.ready("q") == msgs(*"abcde")
        c2.sub("q", manual=True)
        assert c2.payloads == msgs(*"abcde")
        assert [m.deliveries for _, _, m in c2.target.pushed] == [2, 2, 2, 1, 1]

    def test_nack_listed_out_of_order_requeues_in_delivery_order(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True, prefetch=3)
        w.publish("q", *msgs(*"abcde"))
        w.broker.set_writable(c.session, False)
        assert c.nack(3, 1, 2) == 3
        assert w.ready("q") == msgs(*"abcde")

    def test_unsubscribe_returns_unacked(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        s = c.sub("q", manual=True, prefetch=2)
        pulled = c.pull("q", manual=True)  # a pull delivery is not the subscription's
        w.publish("q", *msgs(*"abcd"))
        assert c.payloads == msgs("a", "b")
        w.broker.unsubscribe(c.session, s.sid)
        assert w.ready("q") == msgs(*"abcd")
        assert w.info("q") == QueueInfo("q", 4, 0, 0, False)
        w.publish("q", b"e")
        assert c.payloads == msgs("a", "b")  # no more pushes
        assert pulled == []
        assert c.session.outstanding == {}
        with pytest.raises(errors.NotFound):
            w.broker.unsubscribe(c.session, s.sid)

    def test_unsubscribe_keeps_pull_deliveries(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a", b"b")
        c = w.client()
        c.pull("q", manual=True)  # tag 1
        s = c.sub("q", manual=True)  # b: tag 2
        w.broker.unsubscribe(c.session, s.sid)
        assert w.ready("q") == [b"b"]
        assert c.ack(1) == 1
        with pytest.raises(errors.NotFound):
            c.ack(2)

    def test_unsubscribe_unknown(self, w: World) -> None:
        with pytest.raises(errors.NotFound):
            w.broker.unsubscribe(w.client().session, 1)

    def test_ack_timeout(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True, ack_timeout=500)
        w.publish("q", b"a", b"b")
        w.advance_ms(499)
        assert c.tags == [1, 2]
        c.ack(2)
        w.advance_ms(1)
        # a came back to the head and, the consumer having room, out again
        assert c.payloads == msgs("a", "b", "a")
        assert c.tags == [1, 2, 3]
        assert c.target.pushed[2][2].deliveries == 2
        with pytest.raises(errors.NotFound):
            c.ack(1)  # a tag names one delivery attempt
        assert c.ack(3) == 1
        w.advance_ms(10_000)
        assert c.tags == [1, 2, 3]
        assert w.info("q") == QueueInfo("q", 0, 0, 1, False)

    def test_ack_timeout_goes_to_a_competing_consumer(self, w: World) -> None:
        w.queue("q")
        c1, c2 = w.client(), w.client()
        c1.sub("q", manual=True, prefetch=1, ack_timeout=100)
        c2.sub("q", manual=True, prefetch=1)
        w.publish("q", b"a", b"b", b"c")
        assert (c1.payloads, c2.payloads) == ([b"a"], [b"b"])
        w.advance_ms(100)
        # a is back at the head, ahead of c; c1 has room again and is next in turn
        assert c1.payloads == [b"a", b"a"]
        assert w.ready("q") == [b"c"]

    def test_touch_restarts_the_ack_timeout(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True, ack_timeout=1000)
        w.publish("q", b"a")
        for _ in range(5):
            w.advance_ms(900)
            assert c.touch(1) == 1
        assert c.tags == [1]
        w.advance_ms(999)
        assert c.tags == [1]
        w.advance_ms(1)
        assert c.tags == [1, 2]
        with pytest.raises(errors.NotFound):
            c.touch(1)

    def test_touch_without_timeout_is_handled(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True)
        w.publish("q", b"a")
        assert c.touch(1) == 1
        assert c.ack(1) == 1

    def test_ack_cancels_the_timeout(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True, ack_timeout=100)
        w.publish("q", b"a")
        c.ack(1)
        w.advance_ms(1000)
        assert c.tags == [1]
        assert w.clock.getDelayedCalls() == []

    def test_pull_ack_timeout(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        c = w.client()
        assert [t for t, _ in c.pull("q", manual=True, ack_timeout=100) or []] == [1]
        w.advance_ms(100)
        assert w.ready("q") == [b"a"]
        with pytest.raises(errors.NotFound):
            c.ack(1)
        ((tag, m),) = c.pull("q", manual=True) or []
        assert (tag, m.deliveries) == (2, 2)

    def test_nack_requeue_0_without_dead_letter_drops(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True)
        w.publish("q", b"a", b"b")
        assert c.nack(1, requeue=False) == 1
        assert w.info("q") == QueueInfo("q", 0, 1, 1, False)
        assert c.payloads == [b"a", b"b"]

    def test_nack_requeue_0_dead_letters_rejected(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", dead_letter="dl")
        w.exchange("x", "direct")
        w.broker.bind("q", "x", "k")
        w.publish("x", b"a", key="k")
        c = w.client()
        c.sub("q", manual=True)
        c.nack(1, requeue=False)
        (m,) = w.broker.queue("dl").ready
        assert (m.payload, m.reason, m.source, m.key, m.route) == (
            b"a",
            "rejected",
            "x",
            "k",
            b"x k",
        )
        assert m.deliveries == 0
        assert w.stat("q")["dead_lettered"] == "1"

    def test_nack_delay(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q", manual=True)
        w.publish("q", b"a")
        assert c.nack(1, delay=1000) == 1
        assert w.info("q") == QueueInfo("q", 1, 0, 1, False)  # in the queue, not ready
        w.publish("q", b"b")
        assert c.payloads == [b"a", b"b"]
        w.advance_ms(999)
        assert c.payloads == [b"a", b"b"]
        assert w.broker.pull(c.session, "q") == []
        w.advance_ms(1)
        assert c.payloads == [b"a", b"b", b"a"]
        assert c.target.pushed[-1][2].deliveries == 2

    def test_nack_delay_comes_back_at_the_head(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        assert c.pull("q") == []  # an empty PULL takes no tag
        w.publish("q", b"a")
        c.pull("q", manual=True)  # tag 1
        c.nack(1, delay=100)
        w.publish("q", b"b", b"c")
        w.advance_ms(100)
        assert w.ready("q") == msgs("a", "b", "c")


# ----------------------------------------------------------------------- PULL


class TestPull:
    def test_max_and_default(self, w: World) -> None:
        w.queue("q")
        w.publish("q", *msgs(*"abcde"))
        c = w.client()
        assert [m.payload for _, m in c.pull("q") or []] == [b"a"]
        assert [m.payload for _, m in c.pull("q", max=3) or []] == msgs("b", "c", "d")
        assert [m.payload for _, m in c.pull("q", max=10) or []] == [b"e"]
        assert c.pull("q", max=10) == []

    def test_auto_removes_manual_waits_for_ack(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a", b"b")
        c = w.client()
        c.pull("q")
        assert w.info("q") == QueueInfo("q", 1, 0, 0, False)
        c.pull("q", manual=True)
        assert w.info("q") == QueueInfo("q", 0, 1, 0, False)
        c.close()
        assert w.ready("q") == [b"b"]

    def test_wrong_kind_and_unknown(self, w: World) -> None:
        w.exchange("x")
        c = w.client()
        with pytest.raises(errors.WrongKind):
            c.pull("x")
        with pytest.raises(errors.NotFound):
            c.pull("nope")

    def test_wait_satisfied_by_a_later_publish(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        got: list[Pulled] = []
        assert c.pull("q", max=3, wait=1000, manual=True, on_done=got.append) is None
        w.advance_ms(500)
        assert got == []
        w.publish("q", b"a")
        assert len(got) == 1
        ((tag, m),) = got[0]
        assert (tag, m.payload) == (1, b"a")
        w.publish("q", b"b")
        w.advance_ms(1000)
        assert len(got) == 1
        assert w.ready("q") == [b"b"]
        assert c.ack(1) == 1

    def test_wait_times_out_empty(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        got: list[Pulled] = []
        assert c.pull("q", wait=1000, on_done=got.append) is None
        w.advance_ms(999)
        assert got == []
        w.advance_ms(1)
        assert got == [[]]
        w.publish("q", b"a")
        assert got == [[]]
        assert w.ready("q") == [b"a"]

    def test_wait_not_needed_when_something_is_ready(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        got: list[Pulled] = []
        out = w.client().pull("q", max=5, wait=1000, on_done=got.append)
        assert [m.payload for _, m in out or []] == [b"a"]
        w.advance_ms(2000)
        assert got == []

    def test_waiters_served_in_order(self, w: World) -> None:
        w.queue("q")
        c1, c2 = w.client(), w.client()
        g1: list[Pulled] = []
        g2: list[Pulled] = []
        c1.pull("q", wait=1000, on_done=g1.append)
        c2.pull("q", wait=1000, on_done=g2.append)
        w.publish("q", b"a")
        assert [[m.payload for _, m in r] for r in g1] == [[b"a"]] and g2 == []
        w.publish("q", b"b")
        assert [[m.payload for _, m in r] for r in g2] == [[b"b"]]

    def test_closing_the_session_ends_its_wait(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        got: list[Pulled] = []
        c.pull("q", wait=1000, on_done=got.append)
        c.close()
        w.publish("q", b"a")
        w.advance_ms(2000)
        assert got == []
        assert w.ready("q") == [b"a"]

    def test_wait_satisfied_by_a_requeue(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        c1, c2 = w.client(), w.client()
        c1.pull("q", manual=True)
        got: list[Pulled] = []
        assert c2.pull("q", wait=1000, on_done=got.append) is None
        c1.nack(1)
        ((tag, m),) = got[0]
        assert (tag, m.payload, m.deliveries) == (1, b"a", 2)

    def test_wait_zero_does_not_wait(self, w: World) -> None:
        w.queue("q")
        got: list[Pulled] = []
        assert w.client().pull("q", wait=0, on_done=got.append) == []


# --------------------------------------------------------- private queues


class TestPrivateSubscriptions:
    def test_topic_default_hash(self, w: World) -> None:
        w.exchange("x", "topic")
        c = w.client()
        s = c.sub("x")
        assert s.queue.name.startswith("mbroker.sub.")
        assert w.publish("x", b"1", key="") == 1
        assert w.publish("x", b"2", key="a.b.c") == 1
        assert c.payloads == [b"1", b"2"]
        (sid, _, m) = c.target.pushed[1]
        assert (sid, m.source, m.key) == (s.sid, "x", "a.b.c")

    def test_topic_pattern(self, w: World) -> None:
        w.exchange("x", "topic")
        c = w.client()
        c.sub("x", pattern="sport.*")
        w.publish("x", b"1", key="sport.uk")
        w.publish("x", b"2", key="news.uk")
        w.publish("x", b"3", key="sport.uk.live")
        assert c.payloads == [b"1"]

    def test_direct_default_empty_key(self, w: World) -> None:
        w.exchange("x", "direct")
        c = w.client()
        c.sub("x")
        w.publish("x", b"1", key="")
        w.publish("x", b"2", key="k")
        assert c.payloads == [b"1"]

    def test_direct_key(self, w: World) -> None:
        w.exchange("x", "direct")
        c = w.client()
        c.sub("x", pattern="k")
        w.publish("x", b"1", key="")
        w.publish("x", b"2", key="k")
        assert c.payloads == [b"2"]

    def test_direct_refuses_a_pattern(self, w: World) -> None:
        w.exchange("x", "direct")
        c = w.client()
        with pytest.raises(errors.BadArgs):
            c.sub("x", pattern="a.*")
        assert [r.name for r in w.broker.list_objects()] == ["x"]
        assert c.sub("x", pattern="a").sid == 1

    def test_fanout_ignores_the_pattern(self, w: World) -> None:
        w.exchange("x", "fanout")
        c = w.client()
        c.sub("x", pattern="whatever")
        w.publish("x", b"1", key="a")
        w.publish("x", b"2", key="")
        assert c.payloads == [b"1", b"2"]

    def test_each_subscription_gets_its_copy(self, w: World) -> None:
        w.exchange("x", "topic")
        c1, c2 = w.client(), w.client()
        s1 = c1.sub("x", pattern="#")
        s2 = c1.sub("x", pattern="a")
        c2.sub("x")
        assert w.publish("x", b"m", key="a") == 3
        assert c1.target.pushed[0][0] == s1.sid and c1.target.pushed[1][0] == s2.sid
        assert c2.payloads == [b"m"]
        assert s1.queue.name != s2.queue.name

    def test_deleted_on_unsubscribe(self, w: World) -> None:
        w.exchange("x")
        c = w.client()
        s = c.sub("x", manual=True)
        w.publish("x", b"a")
        name = s.queue.name
        w.broker.unsubscribe(c.session, s.sid)
        assert [r.name for r in w.broker.list_objects()] == ["x"]
        assert w.stat("x")["bindings"] == "0"
        assert w.publish("x", b"b") == 0
        with pytest.raises(errors.NotFound):
            c.ack(1)
        assert c.session.exclusive == []
        assert c.target.cancels == []
        with pytest.raises(errors.NotFound):
            w.broker.stats(name)

    def test_deleted_on_close(self, w: World) -> None:
        w.exchange("x")
        c = w.client()
        c.sub("x", manual=True)
        c.sub("x", pattern="a.*")
        w.publish("x", b"a", key="a.b")
        c.close()
        assert [r.name for r in w.broker.list_objects()] == ["x"]
        assert w.stat("x")["bindings"] == "0"
        assert w.publish("x", b"b", key="a.b") == 0

    def test_private_queue_is_a_queue_for_others(self, w: World) -> None:
        # Nothing in the contract forbids PULL on it; it is gone with its subscription.
        w.exchange("x")
        c = w.client()
        s = c.sub("x", activate=False)
        w.publish("x", b"a")
        other = w.client()
        assert [m.payload for _, m in other.pull(s.queue.name) or []] == [b"a"]

    def test_default_limit_drops_oldest_and_counts(self) -> None:
        w = World(Config(private_max_length=3))
        w.exchange("x", "fanout")
        c = w.client()
        s = c.sub("x")
        w.broker.set_writable(c.session, False)
        w.publish("x", *msgs(*"abcde"))
        name = s.queue.name
        assert w.ready(name) == msgs("c", "d", "e")
        assert w.stat(name)["dropped"] == "2"
        assert c.target.slows == []
        w.broker.set_writable(c.session, True)
        assert c.payloads == msgs("c", "d", "e")

    def test_default_limit_numbers(self, w: World) -> None:
        w.exchange("x")
        s = w.client().sub("x")
        o = s.queue.options
        assert (o.max_length, o.max_bytes, o.overflow) == (10_000, 64 * 1024 * 1024, "drop-head")
        assert o.exclusive and not o.durable

    def test_byte_limit_drops_oldest(self) -> None:
        w = World(Config(private_max_bytes=10))
        w.exchange("x", "fanout")
        c = w.client()
        s = c.sub("x")
        w.broker.set_writable(c.session, False)
        w.publish("x", b"1234", b"5678", b"9abc")
        assert w.ready(s.queue.name) == [b"5678", b"9abc"]
        assert w.stat(s.queue.name)["dropped"] == "1"

    def test_slow_consumer_disconnect(self) -> None:
        w = World(Config(private_max_length=2, slow_consumer_disconnect=True))
        w.exchange("x", "fanout")
        c = w.client()
        other = w.client()
        s = c.sub("x")
        other.sub("x")
        w.broker.set_writable(c.session, False)
        w.publish("x", b"1", b"2")
        assert c.target.slows == []
        w.publish("x", b"3")
        assert c.target.slows == [s.sid]
        assert other.target.slows == []
        assert other.payloads == [b"1", b"2", b"3"]
        c.close()  # what the protocol does on slow()
        assert [r.name for r in w.broker.list_objects()] == [
            "x",
            other.session.consumers[1].queue.name,
        ]

    def test_manual_ack_on_a_private_queue(self, w: World) -> None:
        w.exchange("x")
        c = w.client()
        s = c.sub("x", manual=True, prefetch=1)
        w.publish("x", b"a", b"b")
        assert c.payloads == [b"a"]
        c.nack(1)
        assert c.payloads == [b"a", b"a"]
        c.ack(2)
        assert c.payloads == [b"a", b"a", b"b"]
        assert w.info(s.queue.name) == QueueInfo(s.queue.name, 0, 1, 1, False)


# ---------------------------------------------------------- exclusive queues


class TestSessions:
    def test_close_twice(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        c = w.client()
        c.sub("q", manual=True)
        c.close()
        c.close()
        assert w.ready("q") == [b"a"]
        assert w.stat()["connections"] == "0"

    def test_close_returns_to_several_queues(self, w: World) -> None:
        w.queue("q")
        w.queue("r")
        w.publish("q", b"q1", b"q2")
        w.publish("r", b"r1")
        c = w.client()
        c.sub("q", manual=True)
        c.sub("r", manual=True)
        c.close()
        assert w.ready("q") == [b"q1", b"q2"] and w.ready("r") == [b"r1"]
        assert c.session.outstanding == {} and c.session.consumers == {}


class TestExclusive:
    def test_deleted_when_its_session_closes(self, w: World) -> None:
        c = w.client()
        other = w.client()
        assert w.broker.create(c.session, "ex", "queue", QueueOptions(exclusive=True))
        assert w.broker.create(c.session, "plain", "queue", QueueOptions())
        w.publish("ex", b"a")
        s = other.sub("ex")
        assert other.payloads == [b"a"]
        c.close()
        assert [r.name for r in w.broker.list_objects()] == ["plain"]
        assert other.target.cancels == [(s.sid, "deleted")]

    def test_delete_by_hand_then_close(self, w: World) -> None:
        c = w.client()
        w.broker.create(c.session, "ex", "queue", QueueOptions(exclusive=True))
        w.broker.delete("ex")
        assert c.session.exclusive == []
        w.broker.create(None, "ex", "queue", QueueOptions())
        c.close()
        assert [r.name for r in w.broker.list_objects()] == ["ex"]

    def test_its_bindings_go_with_it(self, w: World) -> None:
        c = w.client()
        w.exchange("x", "fanout")
        w.broker.create(c.session, "ex", "queue", QueueOptions(exclusive=True))
        w.broker.bind("ex", "x")
        c.close()
        assert w.stat("x")["bindings"] == "0"
        assert w.publish("x", b"m") == 0

    def test_other_sessions_queue_survives(self, w: World) -> None:
        c1, c2 = w.client(), w.client()
        w.broker.create(c1.session, "e1", "queue", QueueOptions(exclusive=True))
        w.broker.create(c2.session, "e2", "queue", QueueOptions(exclusive=True))
        c1.close()
        assert [r.name for r in w.broker.list_objects()] == ["e2"]


# ------------------------------------------------------------- flow control


class TestFlowControl:
    def test_unwritable_stops_pushes_and_a_competitor_gets_them(self, w: World) -> None:
        w.queue("q")
        c1, c2 = w.client(), w.client()
        c1.sub("q")
        c2.sub("q")
        w.broker.set_writable(c1.session, False)
        w.publish("q", *msgs(*"abcd"))
        assert c1.payloads == [] and c2.payloads == msgs(*"abcd")
        w.broker.set_writable(c1.session, True)
        w.publish("q", *msgs(*"ef"))
        assert len(c1.payloads) == 1 and len(c2.payloads) == 5

    def test_paused_from_inside_a_push(self, w: World) -> None:
        # A transport whose buffer fills during a write pauses its producer at once:
        # set_writable(False) arrives while the broker is dispatching.
        w.queue("q")
        c1, c2 = w.client(), w.client()
        c1.sub("q")
        c2.sub("q")
        target, broker, session = c1.target, w.broker, c1.session
        real_push = target.push

        def push(sid: int, tag: int, message: QueuedMessage) -> None:
            real_push(sid, tag, message)
            if len(target.pushed) == 2:
                broker.set_writable(session, False)

        target.push = push  # type: ignore[method-assign]
        w.publish("q", *msgs(*"abcdef"))
        assert c1.payloads == msgs("a", "c")
        assert c2.payloads == msgs("b", "d", "e", "f")

    def test_writable_again_resumes_the_backlog(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q")
        w.broker.set_writable(c.session, False)
        w.publish("q", *msgs(*"abc"))
        assert c.payloads == []
        assert w.ready("q") == msgs(*"abc")
        w.broker.set_writable(c.session, True)
        assert c.payloads == msgs(*"abc")

    def test_writable_again_on_a_closed_session_does_nothing(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q")
        c.close()
        w.publish("q", b"a")
        w.broker.set_writable(c.session, True)
        assert c.payloads == []

    def test_pull_ignores_writability(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        c = w.client()
        w.broker.set_writable(c.session, False)
        assert [m.payload for _, m in c.pull("q") or []] == [b"a"]


def test_tags_helper() -> None:
    assert tags(1, (3, 5)) == ((1, 1), (3, 5))
