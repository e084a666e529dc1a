"""Broker core, queue limits and message life: max-length and max-bytes with
drop-head and reject, message and queue ttl, dead-lettering and max-deliver
(``docs/protocol.rst``: CREATE, ACK, NACK and TOUCH, "Dead letters")."""

from __future__ import annotations

import pytest

from mbroker import errors
from mbroker.wire.frames import QueueInfo
from tests.helpers.world import World, msgs


@pytest.fixture
def w() -> World:
    return World()


def dl_rows(w: World, name: str = "dl") -> list[tuple[bytes, str | None, str, str]]:
    return [(m.payload, m.reason, m.source, m.key) for m in w.broker.queue(name).ready]


# --------------------------------------------------------------- overflow


class TestMaxLength:
    def test_drop_head(self, w: World) -> None:
        w.queue("q", max_length=3)
        w.publish("q", *msgs(*"abcde"))
        assert w.ready("q") == msgs("c", "d", "e")
        st = w.stat("q")
        assert (st["dropped"], st["messages"], st["published"]) == ("2", "3", "5")

    def test_drop_head_dead_letters_maxlen_keeping_source_and_key(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", max_length=1, dead_letter="dl")
        w.exchange("x", "topic")
        w.broker.bind("q", "x", "#")
        w.publish("x", b"a", key="k.1")
        w.publish("x", b"b", key="k.2")
        assert w.ready("q") == [b"b"]
        assert dl_rows(w) == [(b"a", "maxlen", "x", "k.1")]
        (m,) = w.broker.queue("dl").ready
        assert m.route == b"x k.1"

    def test_counts_ready_not_unacked(self, w: World) -> None:
        w.queue("q", max_length=2)
        c = w.client()
        c.sub("q", manual=True, prefetch=2)
        w.publish("q", *msgs(*"abcd"))
        assert c.payloads == msgs("a", "b")
        assert w.ready("q") == msgs("c", "d")
        w.publish("q", b"e")
        assert w.ready("q") == msgs("d", "e")
        assert w.info("q") == QueueInfo("q", 2, 2, 1, False)

    def test_a_consumer_with_room_takes_it_before_the_limit(self, w: World) -> None:
        w.queue("q", max_length=1)
        c = w.client()
        c.sub("q")
        w.publish("q", *msgs(*"abc"))
        assert c.payloads == msgs(*"abc")
        assert w.stat("q")["dropped"] == "0"

    def test_max_bytes_drop_head(self, w: World) -> None:
        w.queue("q", max_bytes=10)
        w.publish("q", b"12345", b"12345")
        assert w.stat("q")["bytes"] == "10"
        w.publish("q", b"x")
        assert w.ready("q") == [b"12345", b"x"]
        w.publish("q", b"y" * 9)
        assert w.ready("q") == [b"x", b"y" * 9]
        w.publish("q", b"z" * 11)  # larger than the limit by itself
        assert w.ready("q") == []
        st = w.stat("q")
        assert (st["dropped"], st["bytes"]) == ("5", "0")

    def test_length_and_bytes_together(self, w: World) -> None:
        w.queue("q", max_length=3, max_bytes=6)
        w.publish("q", b"aa", b"bb", b"cc")
        w.publish("q", b"d")
        assert w.ready("q") == [b"bb", b"cc", b"d"]
        w.publish("q", b"eeee")
        assert w.ready("q") == [b"d", b"eeee"]

    def test_reject(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", max_length=2, overflow="reject", dead_letter="dl")
        w.publish("q", b"a", b"b")
        with pytest.raises(errors.Overflow):
            w.publish("q", b"c")
        assert w.ready("q") == [b"a", b"b"]
        assert w.ready("dl") == []  # a refused publish is not dead-lettered
        st = w.stat("q")
        assert (st["rejected"], st["dropped"], st["published"]) == ("1", "0", "2")
        w.client().pull("q")
        assert w.publish("q", b"d") == 1
        assert w.ready("q") == [b"b", b"d"]

    def test_reject_other_targets_keep_their_copy(self, w: World) -> None:
        b = w.broker
        w.exchange("x", "fanout")
        w.queue("a")
        w.queue("full", max_length=1, overflow="reject")
        w.queue("z")
        for q in ("a", "full", "z"):
            b.bind(q, "x")
        assert b.publish("x", "", b"1") == 3
        with pytest.raises(errors.Overflow):
            b.publish("x", "", b"2")
        assert w.ready("a") == w.ready("z") == [b"1", b"2"]
        assert w.ready("full") == [b"1"]

    def test_reject_max_bytes(self, w: World) -> None:
        w.queue("q", max_bytes=5, overflow="reject")
        w.publish("q", b"abc")
        with pytest.raises(errors.Overflow):
            w.publish("q", b"def")
        assert w.publish("q", b"de") == 1
        assert w.ready("q") == [b"abc", b"de"]

    def test_reject_counts_ready_only(self, w: World) -> None:
        w.queue("q", max_length=1, overflow="reject")
        c = w.client()
        c.sub("q", manual=True, prefetch=1)
        w.publish("q", b"a", b"b")  # a out, b ready
        with pytest.raises(errors.Overflow):
            w.publish("q", b"c")
        c.ack(1)  # b goes out, the queue has room again
        assert w.publish("q", b"d") == 1


# -------------------------------------------------------------------- ttl


class TestTtl:
    def test_message_ttl_expires_with_a_timer(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", dead_letter="dl")
        w.publish("q", b"a", ttl=100)
        w.publish("q", b"b")
        w.advance_ms(99)
        assert w.ready("q") == [b"a", b"b"]
        w.advance_ms(1)
        assert w.ready("q") == [b"b"]
        assert dl_rows(w) == [(b"a", "expired", "q", "")]
        st = w.stat("q")
        assert (st["expired"], st["dead_lettered"]) == ("1", "1")
        w.advance_ms(10_000)
        assert w.ready("q") == [b"b"]

    def test_expired_without_dead_letter_is_dropped(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a", ttl=10)
        w.advance_ms(10)
        assert w.info("q") == QueueInfo("q", 0, 0, 0, False)
        assert w.stat("q")["expired"] == "1"

    def test_queue_ttl(self, w: World) -> None:
        w.queue("q", ttl=200)
        w.publish("q", b"a")
        w.advance_ms(100)
        w.publish("q", b"b")
        w.advance_ms(100)
        assert w.ready("q") == [b"b"]
        w.advance_ms(100)
        assert w.ready("q") == []

    @pytest.mark.parametrize(
        "qttl, mttl, lives", [(100, 300, 100), (300, 100, 100), (100, 100, 100)]
    )
    def test_the_shorter_of_queue_and_message_ttl(
        self, w: World, qttl: int, mttl: int, lives: int
    ) -> None:
        w.queue("q", ttl=qttl)
        w.publish("q", b"a", ttl=mttl)
        w.advance_ms(lives - 1)
        assert w.ready("q") == [b"a"]
        w.advance_ms(1)
        assert w.ready("q") == []

    def test_a_short_ttl_behind_a_long_one_expires_on_time(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", dead_letter="dl")
        w.publish("q", b"long", ttl=10_000)
        w.publish("q", b"none")
        w.publish("q", b"short", ttl=100)
        w.publish("q", b"mid", ttl=500)
        w.advance_ms(100)
        assert w.ready("q") == [b"long", b"none", b"mid"]
        assert w.ready("dl") == [b"short"]
        w.advance_ms(400)
        assert w.ready("q") == [b"long", b"none"]
        w.advance_ms(9_500)
        assert w.ready("q") == [b"none"]
        assert w.ready("dl") == [b"short", b"mid", b"long"]

    def test_ttl_behind_a_message_without_one(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"none")
        w.publish("q", b"t", ttl=50)
        w.advance_ms(50)
        assert w.ready("q") == [b"none"]

    def test_many_in_order_expire_in_order(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", ttl=1000, dead_letter="dl")
        # steps of 125 ms: exact in binary floating point
        for i in range(8):
            w.publish("q", b"%d" % i)
            w.advance_ms(125)
        # at 1000 ms: message 0 (published at 0) expired
        assert w.ready("dl") == [b"0"]
        w.advance_ms(500)
        assert w.ready("dl") == [b"%d" % i for i in range(5)]
        assert w.ready("q") == [b"%d" % i for i in range(5, 8)]

    def test_found_expired_at_dispatch(self, w: World) -> None:
        # The timer has not run yet (a busy reactor, say): dispatch finds it dead.
        w.queue("dl")
        w.queue("q", dead_letter="dl")
        w.publish("q", b"a", ttl=100)
        w.publish("q", b"b", ttl=1000)
        c = w.client()
        s = c.sub("q", activate=False)
        w.clock.rightNow = 0.5  # past a's expiry, no timer run
        w.broker.activate(s)
        assert c.payloads == [b"b"]
        assert dl_rows(w) == [(b"a", "expired", "q", "")]
        assert w.stat("q")["expired"] == "1"

    def test_found_expired_at_pull(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", dead_letter="dl")
        w.publish("q", b"a", ttl=100)
        w.publish("q", b"b", ttl=100)
        w.publish("q", b"c")
        w.clock.rightNow = 0.2
        out = w.client().pull("q", max=2)
        assert [m.payload for _, m in out or []] == [b"c"]
        assert w.ready("dl") == [b"a", b"b"]

    def test_pull_wait_skips_the_expired(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", dead_letter="dl")
        w.publish("q", b"a", ttl=100)
        w.clock.rightNow = 0.2  # a is dead, its timer has not run
        got: list = []
        assert w.client().pull("q", wait=1000, on_done=got.append) is None
        assert w.ready("dl") == [b"a"]
        w.publish("q", b"b")
        assert [[m.payload for _, m in r] for r in got] == [[b"b"]]

    def test_a_waiting_pull_skips_a_requeued_message_past_its_ttl(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", dead_letter="dl")
        w.publish("q", b"a", ttl=100)
        c1, c2 = w.client(), w.client()
        c1.pull("q", manual=True)
        got: list = []
        assert c2.pull("q", wait=1000, on_done=got.append) is None
        w.clock.rightNow = 0.2
        c1.nack(1)  # a comes back dead
        assert got == [] and w.ready("dl") == [b"a"]
        w.publish("q", b"b")
        assert [[m.payload for _, m in r] for r in got] == [[b"b"]]

    def test_delivered_messages_do_not_expire(self, w: World) -> None:
        w.queue("q", ttl=100)
        w.publish("q", b"a")
        c = w.client()
        c.sub("q", manual=True)
        w.advance_ms(1000)
        assert w.info("q") == QueueInfo("q", 0, 1, 1, False)
        assert c.ack(1) == 1

    def test_requeued_after_its_ttl_is_expired(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", ttl=100, dead_letter="dl")
        w.publish("q", b"a", b"b")
        c = w.client()
        c.pull("q", max=2, manual=True)
        w.advance_ms(50)
        c.nack(2)  # b back, 50 ms left
        w.advance_ms(100)
        c.nack(1)  # a back, already past its ttl
        w.advance_ms(0)
        assert w.ready("q") == []
        assert sorted(w.ready("dl")) == [b"a", b"b"]

    def test_requeued_expires_on_time(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a", ttl=100)
        w.publish("q", b"b", ttl=1000)
        c = w.client()
        c.pull("q", manual=True)
        w.advance_ms(50)
        c.close()  # a goes back ahead of b, expiring at 100
        w.advance_ms(50)
        assert w.ready("q") == [b"b"]

    def test_pending_timer_cancelled_with_its_queue(self, w: World) -> None:
        w.queue("q", ttl=100)
        w.publish("q", b"a")
        w.broker.delete("q")
        assert w.clock.getDelayedCalls() == []


# --------------------------------------------------------------- dead letters


class TestDeadLetter:
    def test_into_an_exchange_routes_by_the_original_key(self, w: World) -> None:
        b = w.broker
        w.exchange("dlx", "direct")
        w.queue("dl-a")
        w.queue("dl-b")
        b.bind("dl-a", "dlx", "a")
        b.bind("dl-b", "dlx", "b")
        w.queue("q", dead_letter="dlx", max_length=1)
        w.publish("q", b"1", key="a")
        w.publish("q", b"2", key="b")
        w.publish("q", b"3", key="c")  # unroutable in dlx: dropped
        w.publish("q", b"4")
        assert [(m.payload, m.reason, m.source, m.key) for m in b.queue("dl-a").ready] == [
            (b"1", "maxlen", "q", "a")
        ]
        assert w.ready("dl-b") == [b"2"]
        assert w.stat("q")["dead_lettered"] == "3"

    def test_into_a_topic_exchange(self, w: World) -> None:
        b = w.broker
        w.exchange("dlx", "topic")
        w.queue("d1")
        w.queue("d2")
        b.bind("d1", "dlx", "orders.#")
        b.bind("d2", "dlx", "#")
        b.bind("d2", "dlx", "orders.*")
        w.queue("q", dead_letter="dlx")
        w.publish("q", b"m", key="orders.eu", ttl=10)
        w.advance_ms(10)
        assert w.ready("d1") == [b"m"] and w.ready("d2") == [b"m"]

    def test_missing_target_drops(self, w: World) -> None:
        w.queue("q", dead_letter="nowhere", max_length=1)
        w.publish("q", b"a", b"b")
        assert w.ready("q") == [b"b"]
        assert w.stat("q")["dropped"] == "1"

    def test_target_queue_limits_and_ttl_apply(self, w: World) -> None:
        w.queue("dl", ttl=100, max_length=2)
        w.queue("q", dead_letter="dl")
        w.publish("q", *msgs(*"abc"), ttl=10)
        w.advance_ms(10)
        assert w.ready("dl") == [b"b", b"c"]
        w.advance_ms(99)
        assert w.ready("dl") == [b"b", b"c"]
        w.advance_ms(1)
        assert w.ready("dl") == []

    def test_dead_lettered_message_is_a_fresh_delivery(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", dead_letter="dl")
        w.publish("q", b"a")
        c = w.client()
        c.sub("q", manual=True)
        c.nack(1)
        c.nack(2, requeue=False)
        (m,) = w.broker.queue("dl").ready
        assert (m.deliveries, m.reason) == (0, "rejected")
        assert c.pull("dl") is not None

    def test_a_reason_is_replaced_on_the_next_dead_lettering(self, w: World) -> None:
        w.queue("dl2")
        w.queue("dl", dead_letter="dl2", ttl=100)
        w.queue("q", dead_letter="dl")
        w.publish("q", b"a")
        c = w.client()
        c.pull("q", manual=True)
        c.nack(1, requeue=False)
        assert dl_rows(w, "dl") == [(b"a", "rejected", "q", "")]
        w.advance_ms(100)
        assert dl_rows(w, "dl2") == [(b"a", "expired", "q", "")]

    def test_cycle_of_overflow_terminates(self, w: World) -> None:
        # q dead-letters into itself: each drop makes a drop.
        w.queue("q", max_length=1, dead_letter="q")
        for i in range(5):
            w.publish("q", b"%d" % i)
        assert len(w.ready("q")) == 1

    def test_cycle_between_full_queues_terminates(self, w: World) -> None:
        w.queue("a", max_length=1, dead_letter="b")
        w.queue("b", max_length=1, dead_letter="a")
        w.publish("a", b"1")
        w.publish("b", b"2")
        for i in range(10):
            w.publish("a", b"a%d" % i)
            w.publish("b", b"b%d" % i)
        assert len(w.ready("a")) == 1 and len(w.ready("b")) == 1

    def test_cycle_of_expiry_terminates(self, w: World) -> None:
        # a and b dead-letter their expired messages into each other, with nobody
        # consuming: the message must not travel round for ever.
        w.queue("a", ttl=100, dead_letter="b")
        w.queue("b", ttl=100, dead_letter="a")
        w.publish("a", b"m")
        for _ in range(50):
            w.advance_ms(100)
        assert w.ready("a") == [] and w.ready("b") == []
        assert w.clock.getDelayedCalls() == []

    def test_self_cycle_of_expiry_terminates(self, w: World) -> None:
        w.queue("q", ttl=100, dead_letter="q")
        w.publish("q", b"m")
        for _ in range(20):
            w.advance_ms(100)
        assert w.ready("q") == []
        assert w.clock.getDelayedCalls() == []

    def test_retry_loop_through_rejection_keeps_going(self, w: World) -> None:
        # The usual delayed-retry pattern: work rejects into retry, whose ttl sends the
        # message back to work.  A rejection is a consumer's decision, not a cycle.
        w.queue("work", dead_letter="retry")
        w.queue("retry", ttl=100, dead_letter="work")
        w.publish("work", b"job")
        c = w.client()
        c.sub("work", manual=True)
        for i in range(10):
            assert c.payloads == [b"job"] * (i + 1)
            c.nack(i + 1, requeue=False)
            w.advance_ms(100)
        assert c.payloads == [b"job"] * 11


# ---------------------------------------------------------------- max-deliver


class TestMaxDeliver:
    def test_nack_requeue_up_to_the_limit(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", max_deliver=3, dead_letter="dl")
        w.exchange("x", "fanout")
        w.broker.bind("q", "x")
        w.publish("x", b"a", key="k")
        c = w.client()
        c.sub("q", manual=True)
        c.nack(1)
        c.nack(2)
        assert c.payloads == [b"a"] * 3
        c.nack(3)  # three deliveries without an ack
        assert c.payloads == [b"a"] * 3
        assert dl_rows(w) == [(b"a", "delivery-limit", "x", "k")]
        assert w.info("q") == QueueInfo("q", 0, 0, 1, False)

    def test_ack_on_the_last_delivery_is_fine(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", max_deliver=2, dead_letter="dl")
        w.publish("q", b"a")
        c = w.client()
        c.sub("q", manual=True)
        c.nack(1)
        assert c.ack(2) == 1
        assert w.ready("dl") == []

    def test_limit_one(self, w: World) -> None:
        w.queue("q", max_deliver=1)
        w.publish("q", b"a")
        c = w.client()
        c.pull("q", manual=True)
        c.nack(1)
        assert w.info("q") == QueueInfo("q", 0, 0, 0, False)

    def test_counts_close_and_ack_timeout_redeliveries(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", max_deliver=3, dead_letter="dl")
        w.publish("q", b"a")
        c1 = w.client()
        c1.sub("q", manual=True)
        c1.close()  # 1
        c2 = w.client()
        c2.sub("q", manual=True, ack_timeout=100)
        w.advance_ms(100)  # 2, redelivered as 3
        assert c2.payloads == [b"a", b"a"]
        w.advance_ms(100)
        assert c2.payloads == [b"a", b"a"]
        assert dl_rows(w) == [(b"a", "delivery-limit", "q", "")]

    def test_counts_unsubscribe(self, w: World) -> None:
        w.queue("q", max_deliver=1)
        w.publish("q", b"a")
        c = w.client()
        s = c.sub("q", manual=True)
        w.broker.unsubscribe(c.session, s.sid)
        assert w.info("q") == QueueInfo("q", 0, 0, 0, False)

    def test_nack_delay_is_counted_when_it_comes_back(self, w: World) -> None:
        w.queue("dl")
        w.queue("q", max_deliver=1, dead_letter="dl")
        w.publish("q", b"a")
        c = w.client()
        c.pull("q", manual=True)
        c.nack(1, delay=100)
        w.advance_ms(100)
        assert w.ready("q") == [] and w.ready("dl") == [b"a"]

    def test_auto_ack_never_reaches_it(self, w: World) -> None:
        w.queue("q", max_deliver=1)
        w.publish("q", b"a", b"b")
        c = w.client()
        c.sub("q")
        assert c.payloads == [b"a", b"b"]
