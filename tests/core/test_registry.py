"""Unit tests of the broker core (:class:`mbroker.core.broker.Broker`), written from the
contract (``docs/protocol.rst``, "Names, keys and patterns" to "Commands"): the
namespace, CREATE/DELETE/BIND/UNBIND, routing, PURGE, LIST and STATS.

The helpers at the top are shared by the other ``tests/test_registry_*.py`` files:
a fake :class:`~mbroker.core.model.DeliveryTarget` that records what the broker pushes,
and a small client wrapper around a session.  Times given to the broker are
milliseconds; ``task.Clock`` counts seconds.
"""

from __future__ import annotations

import pytest

from mbroker import errors
from mbroker.core.broker import Pulled
from mbroker.wire.frames import ExchangeInfo, QueueInfo, QueueOptions
from tests.helpers.world import World, msgs

# --------------------------------------------------------------------- helpers


@pytest.fixture
def w() -> World:
    return World()


# ---------------------------------------------------------------------- CREATE


class TestCreate:
    def test_created_then_exists_alike(self, w: World) -> None:
        b = w.broker
        opts = QueueOptions(max_length=5, ttl=100, dead_letter="dl")
        assert b.create(None, "q", "queue", opts) is True
        assert (
            b.create(None, "q", "queue", QueueOptions(max_length=5, ttl=100, dead_letter="dl"))
            is False
        )
        for kind in ("direct", "fanout", "topic"):
            assert b.create(None, kind, kind, QueueOptions()) is True
            assert b.create(None, kind, kind, QueueOptions()) is False

    def test_exists_with_other_options_is_an_error(self, w: World) -> None:
        b = w.broker
        b.create(None, "q", "queue", QueueOptions(max_length=5))
        with pytest.raises(errors.Exists):
            b.create(None, "q", "queue", QueueOptions(max_length=6))
        with pytest.raises(errors.Exists):
            b.create(None, "q", "queue", QueueOptions())
        with pytest.raises(errors.Exists):
            b.create(None, "q", "queue", QueueOptions(max_length=5, durable=True))

    def test_exists_with_other_kind_is_an_error(self, w: World) -> None:
        b = w.broker
        b.create(None, "q", "queue", QueueOptions())
        b.create(None, "x", "topic", QueueOptions())
        for name, kind in [
            ("q", "topic"),
            ("q", "direct"),
            ("x", "queue"),
            ("x", "fanout"),
            ("x", "direct"),
        ]:
            with pytest.raises(errors.Exists):
                b.create(None, name, kind, QueueOptions())

    def test_exchange_durability_is_part_of_alike(self, w: World) -> None:
        b = w.broker
        assert b.create(None, "x", "direct", QueueOptions(durable=True))
        assert b.create(None, "x", "direct", QueueOptions(durable=True)) is False
        with pytest.raises(errors.Exists):
            b.create(None, "x", "direct", QueueOptions())

    def test_the_existing_object_is_untouched_by_a_failed_create(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        with pytest.raises(errors.Exists):
            w.broker.create(None, "q", "topic", QueueOptions())
        assert w.ready("q") == [b"a"]

    def test_exchanges_and_queues_share_one_namespace(self, w: World) -> None:
        w.exchange("n")
        with pytest.raises(errors.Exists):
            w.broker.create(None, "n", "queue", QueueOptions())
        assert w.info("n") == ExchangeInfo("n", "topic", False, 0)

    def test_exclusive_durable_queue_is_refused(self, w: World) -> None:
        # The contract does not combine them; the broker refuses the pair.
        with pytest.raises(errors.BadArgs):
            w.broker.create(None, "q", "queue", QueueOptions(exclusive=True, durable=True))


# -------------------------------------------------------------------- routing


class TestRouting:
    def test_publish_to_unknown_name(self, w: World) -> None:
        with pytest.raises(errors.NotFound):
            w.broker.publish("nope", "", b"x")
        assert w.stat()["published"] == "0"

    def test_publish_to_a_queue_name_goes_straight_in(self, w: World) -> None:
        w.queue("q")
        assert w.broker.publish("q", "any.key", b"a") == 1
        assert w.broker.publish("q", "", b"b") == 1
        assert w.ready("q") == [b"a", b"b"]
        m1, m2 = w.broker.queue("q").ready
        assert (m1.source, m1.key, m1.route) == ("q", "any.key", b"q any.key")
        assert (m2.source, m2.key, m2.route) == ("q", "", b"q -")

    def test_unroutable_is_zero_and_dropped(self, w: World) -> None:
        for kind in ("direct", "fanout", "topic"):
            w.exchange(kind, kind)
            assert w.broker.publish(kind, "k", b"x") == 0
            st = w.stat(kind)
            assert (st["published"], st["routed"], st["unroutable"]) == ("1", "0", "1")

    def test_direct_routes_on_key_equality(self, w: World) -> None:
        b = w.broker
        w.exchange("x", "direct")
        for q in ("a", "b", "c"):
            w.queue(q)
        b.bind("a", "x", "red")
        b.bind("b", "x", "red")
        b.bind("c", "x", "blue")
        assert b.publish("x", "red", b"1") == 2
        assert b.publish("x", "blue", b"2") == 1
        assert b.publish("x", "green", b"3") == 0
        assert b.publish("x", "red.x", b"4") == 0
        assert b.publish("x", "", b"5") == 0
        assert w.ready("a") == [b"1"] and w.ready("b") == [b"1"] and w.ready("c") == [b"2"]

    def test_direct_default_empty_key(self, w: World) -> None:
        w.exchange("x", "direct")
        w.queue("q")
        w.broker.bind("q", "x")
        assert w.broker.publish("x", "", b"1") == 1
        assert w.broker.publish("x", "k", b"2") == 0

    def test_direct_refuses_a_pattern(self, w: World) -> None:
        w.exchange("x", "direct")
        w.queue("q")
        with pytest.raises(errors.BadArgs):
            w.broker.bind("q", "x", "a.*")

    def test_fanout_ignores_keys(self, w: World) -> None:
        b = w.broker
        w.exchange("x", "fanout")
        w.queue("a")
        w.queue("b")
        b.bind("a", "x", "whatever")
        b.bind("b", "x")
        assert b.publish("x", "some.key", b"1") == 2
        assert b.publish("x", "", b"2") == 2
        assert w.ready("a") == w.ready("b") == [b"1", b"2"]

    @pytest.mark.parametrize(
        "pattern, key, hit",
        [
            ("#", "", True),
            ("#", "a.b.c", True),
            ("a.*", "a.b", True),
            ("a.*", "a", False),
            ("a.*", "a.b.c", False),
            ("a.#", "a", True),
            ("a.#", "a.b.c", True),
            ("*.b", "a.b", True),
            ("*", "", False),
            ("", "", True),
            ("", "a", False),
            ("a.#.c", "a.c", True),
            ("a.#.c", "a.x.y.c", True),
            ("a.#.c", "a.x.y", False),
            ("sport.uk", "sport.uk", True),
            ("sport.uk", "sport.us", False),
        ],
    )
    def test_topic_patterns(self, w: World, pattern: str, key: str, hit: bool) -> None:
        w.exchange("x", "topic")
        w.queue("q")
        w.broker.bind("q", "x", pattern)
        assert w.broker.publish("x", key, b"m") == int(hit)

    def test_a_queue_bound_twice_gets_one_copy(self, w: World) -> None:
        b = w.broker
        w.exchange("x", "topic")
        w.queue("q")
        w.queue("r")
        b.bind("q", "x", "a.*")
        b.bind("q", "x", "#")
        b.bind("q", "x", "a.b")
        b.bind("r", "x", "a.b")
        assert b.publish("x", "a.b", b"m") == 2
        assert w.ready("q") == [b"m"] and w.ready("r") == [b"m"]
        assert w.stat("x")["bindings"] == "4"

    def test_a_queue_bound_twice_on_fanout_gets_one_copy(self, w: World) -> None:
        w.exchange("x", "fanout")
        w.queue("q")
        w.broker.bind("q", "x", "a")
        w.broker.bind("q", "x", "b")
        assert w.broker.publish("x", "", b"m") == 1
        assert w.ready("q") == [b"m"]

    def test_message_source_is_the_exchange(self, w: World) -> None:
        w.exchange("news", "topic")
        w.queue("q")
        w.broker.bind("q", "news", "sport.#")
        w.broker.publish("news", "sport.uk", b"Goal! 1-0")
        (m,) = w.broker.queue("q").ready
        assert (m.source, m.key, m.route, m.payload) == (
            "news",
            "sport.uk",
            b"news sport.uk",
            b"Goal! 1-0",
        )
        assert m.deliveries == 0 and m.reason is None

    def test_copies_share_the_payload(self, w: World) -> None:
        w.exchange("x", "fanout")
        for q in ("a", "b"):
            w.queue(q)
            w.broker.bind(q, "x")
        payload = b"p" * 100
        w.broker.publish("x", "", payload)
        (ma,), (mb,) = w.broker.queue("a").ready, w.broker.queue("b").ready
        assert ma is not mb
        assert ma.payload is payload and mb.payload is payload


# --------------------------------------------------------------- BIND / UNBIND


class TestBind:
    def test_unknown_names(self, w: World) -> None:
        b = w.broker
        w.queue("q")
        w.exchange("x")
        for args in [("nope", "x"), ("q", "nope"), ("nope", "nope2")]:
            with pytest.raises(errors.NotFound):
                b.bind(*args)
            with pytest.raises(errors.NotFound):
                b.unbind(*args)

    def test_wrong_kind(self, w: World) -> None:
        b = w.broker
        w.queue("q")
        w.queue("q2")
        w.exchange("x")
        w.exchange("x2")
        for args in [("x", "x2"), ("q", "q2"), ("x", "q")]:
            with pytest.raises(errors.WrongKind):
                b.bind(*args)
            with pytest.raises(errors.WrongKind):
                b.unbind(*args)

    def test_binding_twice_changes_nothing(self, w: World) -> None:
        b = w.broker
        w.queue("q")
        w.exchange("x", "direct")
        assert b.bind("q", "x", "k") is True
        assert b.bind("q", "x", "k") is False
        assert w.info("x") == ExchangeInfo("x", "direct", False, 1)
        assert b.publish("x", "k", b"m") == 1
        assert w.ready("q") == [b"m"]
        b.unbind("q", "x", "k")
        assert b.publish("x", "k", b"m") == 0
        assert w.info("x") == ExchangeInfo("x", "direct", False, 0)

    def test_unbinding_what_is_not_bound(self, w: World) -> None:
        b = w.broker
        w.queue("q")
        w.exchange("x", "topic")
        with pytest.raises(errors.NotFound):
            b.unbind("q", "x")
        b.bind("q", "x", "a.*")
        with pytest.raises(errors.NotFound):
            b.unbind("q", "x", "a.#")
        with pytest.raises(errors.NotFound):
            b.unbind("q", "x")
        b.unbind("q", "x", "a.*")
        with pytest.raises(errors.NotFound):
            b.unbind("q", "x", "a.*")

    def test_unbind_one_of_two_bindings(self, w: World) -> None:
        b = w.broker
        w.queue("q")
        w.exchange("x", "topic")
        b.bind("q", "x", "a.*")
        b.bind("q", "x", "b.*")
        b.unbind("q", "x", "a.*")
        assert b.publish("x", "a.1", b"1") == 0
        assert b.publish("x", "b.1", b"2") == 1
        assert w.ready("q") == [b"2"]

    def test_default_key_is_empty(self, w: World) -> None:
        b = w.broker
        w.queue("q")
        w.exchange("x", "topic")
        b.bind("q", "x")
        assert b.publish("x", "", b"1") == 1
        assert b.publish("x", "a", b"2") == 0
        b.unbind("q", "x", "")
        assert w.stat("x")["bindings"] == "0"


# ---------------------------------------------------------------------- DELETE


class TestDelete:
    def test_unknown(self, w: World) -> None:
        with pytest.raises(errors.NotFound):
            w.broker.delete("nope")

    def test_counts_ready_and_unacked(self, w: World) -> None:
        w.queue("q")
        w.publish("q", *msgs("a", "b", "c", "d", "e"))
        c = w.client()
        c.sub("q", manual=True, prefetch=2)
        assert c.payloads == msgs("a", "b")
        assert w.broker.delete("q") == 5
        with pytest.raises(errors.NotFound):
            w.broker.queue("q")
        assert "q" not in [r.name for r in w.broker.list_objects()]

    def test_counts_nack_delayed_messages(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a", b"b")
        c = w.client()
        c.pull("q", max=1, manual=True)
        c.nack(1, delay=1000)
        assert w.broker.delete("q") == 2
        w.advance_ms(2000)  # the cancelled delay does not come back anywhere

    def test_empty_queue_and_exchange_drop_zero(self, w: World) -> None:
        w.queue("q")
        w.exchange("x")
        assert w.broker.delete("q") == 0
        assert w.broker.delete("x") == 0
        assert w.broker.list_objects() == []

    def test_if_empty(self, w: World) -> None:
        b = w.broker
        w.queue("q")
        assert b.delete("q", if_empty=True) == 0
        w.queue("q")
        w.publish("q", b"a")
        with pytest.raises(errors.NotEmpty):
            b.delete("q", if_empty=True)
        assert w.ready("q") == [b"a"]

    def test_if_empty_counts_unacked(self, w: World) -> None:
        b = w.broker
        w.queue("q")
        w.publish("q", b"a")
        c = w.client()
        assert c.pull("q", manual=True) is not None
        assert w.info("q") == QueueInfo("q", 0, 1, 0, False)
        with pytest.raises(errors.NotEmpty):
            b.delete("q", if_empty=True)
        c.ack(1)
        assert b.delete("q", if_empty=True) == 0

    def test_if_unused_queue_with_consumers(self, w: World) -> None:
        b = w.broker
        w.queue("q")
        c = w.client()
        c.sub("q")
        with pytest.raises(errors.InUse):
            b.delete("q", if_unused=True)
        c.close()
        assert b.delete("q", if_unused=True) == 0

    def test_if_unused_ignores_messages(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        assert w.broker.delete("q", if_unused=True) == 1

    def test_if_unused_exchange_with_bindings(self, w: World) -> None:
        b = w.broker
        w.exchange("x")
        w.queue("q")
        b.bind("q", "x", "#")
        with pytest.raises(errors.InUse):
            b.delete("x", if_unused=True)
        b.unbind("q", "x", "#")
        assert b.delete("x", if_unused=True) == 0

    def test_if_unused_exchange_with_a_subscription(self, w: World) -> None:
        w.exchange("x")
        w.client().sub("x")
        with pytest.raises(errors.InUse):
            w.broker.delete("x", if_unused=True)

    def test_deleting_a_queue_cancels_its_subscriptions(self, w: World) -> None:
        w.queue("q")
        w.queue("other")
        c1, c2 = w.client(), w.client()
        a = c1.sub("q")
        keep = c1.sub("other")
        bb = c2.sub("q", manual=True)
        w.broker.delete("q")
        assert c1.target.cancels == [(a.sid, "deleted")]
        assert c2.target.cancels == [(bb.sid, "deleted")]
        assert list(c1.session.consumers) == [keep.sid]
        assert c2.session.consumers == {}
        with pytest.raises(errors.NotFound):
            w.broker.unsubscribe(c1.session, a.sid)
        w.publish("other", b"x")
        assert c1.payloads == [b"x"]

    def test_no_cancel_to_a_closed_session(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        c.sub("q")
        c.close()
        w.broker.delete("q")
        assert c.target.cancels == []

    def test_acks_of_a_deleted_queues_deliveries_find_nothing(self, w: World) -> None:
        w.queue("q")
        w.queue("r")
        w.publish("q", b"a", b"b")
        w.publish("r", b"c")
        c = w.client()
        c.sub("q", manual=True)
        assert c.tags == [1, 2]
        c.pull("r", manual=True)  # tag 3
        w.broker.delete("q")
        with pytest.raises(errors.NotFound) as e:
            c.ack(1)
        assert e.value.text == "1"
        with pytest.raises(errors.NotFound):
            c.nack(2)
        with pytest.raises(errors.NotFound):
            c.touch(2)
        # a queue of the same name made again does not revive the old tags
        w.queue("q")
        with pytest.raises(errors.NotFound):
            c.ack((1, 2))
        assert c.ack((1, 3)) == 1
        assert w.info("q") == QueueInfo("q", 0, 0, 0, False)
        assert w.info("r") == QueueInfo("r", 0, 0, 0, False)

    def test_closing_a_session_with_deliveries_of_a_deleted_queue(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"a")
        c = w.client()
        c.sub("q", manual=True, ack_timeout=100)
        w.broker.delete("q")
        w.advance_ms(200)  # the ack-timeout of a void delivery does nothing
        c.close()
        w.queue("q")
        assert w.ready("q") == []

    def test_deleting_a_queue_removes_its_bindings(self, w: World) -> None:
        b = w.broker
        w.exchange("x")
        w.exchange("y", "fanout")
        w.queue("q")
        w.queue("r")
        b.bind("q", "x", "#")
        b.bind("q", "x", "a")
        b.bind("q", "y")
        b.bind("r", "x", "#")
        b.delete("q")
        assert w.info("x") == ExchangeInfo("x", "topic", False, 1)
        assert w.info("y") == ExchangeInfo("y", "fanout", False, 0)
        assert b.publish("y", "", b"m") == 0
        assert b.publish("x", "a", b"m") == 1
        # a new queue of that name is not bound
        w.queue("q")
        assert b.publish("y", "", b"m") == 0

    def test_deleting_an_exchange_removes_its_bindings(self, w: World) -> None:
        b = w.broker
        w.exchange("x", "fanout")
        w.queue("q")
        b.bind("q", "x")
        b.publish("x", "", b"m")
        assert b.delete("x") == 0
        assert w.ready("q") == [b"m"]  # the queue and its messages stay
        w.exchange("x", "fanout")
        assert b.publish("x", "", b"m") == 0
        assert w.info("x") == ExchangeInfo("x", "fanout", False, 0)
        # and the queue can be bound again
        assert b.bind("q", "x") is True
        assert b.publish("x", "", b"n") == 1

    def test_deleting_an_exchange_ends_subscriptions_on_it(self, w: World) -> None:
        b = w.broker
        w.exchange("x")
        c = w.client()
        s = c.sub("x", pattern="a.#")
        pq = s.queue.name
        assert pq in [r.name for r in b.list_objects()]
        b.delete("x")
        assert c.target.cancels == [(s.sid, "deleted")]
        assert pq not in [r.name for r in b.list_objects()]
        assert c.session.consumers == {}
        assert c.session.exclusive == []

    def test_if_empty_on_an_exchange_is_ignored(self, w: World) -> None:
        w.exchange("x")
        w.queue("q")
        w.broker.bind("q", "x")
        assert w.broker.delete("x", if_empty=True) == 0

    def test_deleting_a_private_queue_by_name_cancels_its_subscription(self, w: World) -> None:
        w.exchange("x")
        c = w.client()
        s = c.sub("x")
        w.broker.set_writable(c.session, False)
        w.publish("x", b"a")
        assert w.broker.delete(s.queue.name) == 1
        assert c.target.cancels == [(s.sid, "deleted")]
        assert c.session.consumers == {} and c.session.exclusive == []
        assert w.stat("x")["bindings"] == "0"
        c.close()

    def test_deleting_a_queue_ends_a_waiting_pull(self, w: World) -> None:
        w.queue("q")
        c = w.client()
        got: list[Pulled] = []
        assert c.pull("q", wait=1000, on_done=got.append) is None
        w.broker.delete("q")
        assert got == [[]]
        w.advance_ms(2000)
        assert got == [[]]


# ----------------------------------------------------------------------- PURGE


class TestPurge:
    def test_drops_ready_not_unacked(self, w: World) -> None:
        w.queue("q")
        w.publish("q", *msgs("a", "b", "c", "d"))
        c = w.client()
        c.sub("q", manual=True, prefetch=1)
        assert c.payloads == [b"a"]
        assert w.broker.purge("q") == 3
        assert w.ready("q") == []
        assert w.info("q") == QueueInfo("q", 0, 1, 1, False)
        c.nack(1)  # the unacked one comes back
        assert c.payloads == [b"a", b"a"]
        c.ack(2)
        assert w.info("q") == QueueInfo("q", 0, 0, 1, False)

    def test_purge_drops_delayed_messages(self, w: World) -> None:
        # A NACK-delayed message is back in the queue, just not deliverable yet.
        w.queue("q")
        w.publish("q", b"a")
        c = w.client()
        c.pull("q", manual=True)
        c.nack(1, delay=100)
        assert w.info("q") == QueueInfo("q", 1, 0, 0, False)
        assert w.broker.purge("q") == 1
        w.advance_ms(200)
        assert w.ready("q") == []
        assert w.info("q") == QueueInfo("q", 0, 0, 0, False)

    def test_unknown_and_wrong_kind(self, w: World) -> None:
        w.exchange("x")
        with pytest.raises(errors.NotFound):
            w.broker.purge("q")
        with pytest.raises(errors.WrongKind):
            w.broker.purge("x")

    def test_purge_then_publish_with_ttl(self, w: World) -> None:
        w.queue("q", ttl=100)
        w.publish("q", b"a")
        w.broker.purge("q")
        w.publish("q", b"b")
        w.advance_ms(99)
        assert w.ready("q") == [b"b"]
        w.advance_ms(1)
        assert w.ready("q") == []


# ------------------------------------------------------------------ LIST, STATS


class TestReports:
    def test_list_rows(self, w: World) -> None:
        b = w.broker
        b.create(None, "ex", "direct", QueueOptions(durable=True))
        b.create(None, "q", "queue", QueueOptions(durable=True))
        w.queue("r")
        b.bind("q", "ex", "a")
        b.bind("r", "ex", "a")
        b.bind("r", "ex", "b")
        w.publish("q", b"1", b"2", b"3")
        c = w.client()
        c.sub("q", manual=True, prefetch=1)
        w.client().sub("q", manual=True, prefetch=1)
        rows = {r.name: r for r in b.list_objects()}
        assert rows == {
            "ex": ExchangeInfo("ex", "direct", True, 3),
            "q": QueueInfo("q", 1, 2, 2, True),
            "r": QueueInfo("r", 0, 0, 0, False),
        }

    def test_list_shows_private_queues(self, w: World) -> None:
        w.exchange("x")
        c = w.client()
        s = c.sub("x")
        rows = {r.name: r for r in w.broker.list_objects()}
        assert rows[s.queue.name] == QueueInfo(s.queue.name, 0, 0, 1, False)
        assert rows["x"] == ExchangeInfo("x", "topic", False, 1)

    def test_server_stats_keys(self, w: World) -> None:
        st = w.stat()
        for key in (
            "uptime_s",
            "connections",
            "connections_total",
            "exchanges",
            "queues",
            "published",
            "delivered",
            "acked",
            "memory_peak_rss",
        ):
            assert key in st
            assert st[key].isdigit()

    def test_server_counters(self, w: World) -> None:
        w.queue("q")
        w.exchange("x")
        c = w.client()
        w.client().close()
        w.publish("q", b"a", b"b", b"c")
        w.publish("x", b"lost")
        c.sub("q", manual=True)
        c.ack(1)
        c.pull("q")  # nothing left: no delivery
        w.advance_ms(5000)
        st = w.stat()
        assert st["connections"] == "1"
        assert st["connections_total"] == "2"
        assert st["queues"] == "1" and st["exchanges"] == "1"
        assert st["published"] == "4"
        assert st["delivered"] == "3"
        assert st["acked"] == "1"
        assert st["uptime_s"] == "5"

    def test_peak_memory_is_never_below_the_memory_now(
        self, w: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import mbroker.core.reports

        monkeypatch.setattr(mbroker.core.reports, "current_rss", lambda: 1 << 50)
        st = w.stat()
        assert st["memory_rss"] == str(1 << 50)
        assert int(st["memory_peak_rss"]) >= int(st["memory_rss"])

    def test_queue_bytes_count_the_messages_a_nack_delayed(self, w: World) -> None:
        w.queue("q")
        w.publish("q", b"aa", b"bbb", b"c")
        c = w.client()
        c.sub("q", manual=True)
        c.nack(1, 2, 3, delay=60_000)
        st = w.stat("q")
        assert (st["messages"], st["bytes"], st["unacked"]) == ("3", "6", "0")
        w.advance_ms(60_000)
        st = w.stat("q")
        assert (st["messages"], st["bytes"], st["unacked"]) == ("0", "0", "3")

    def test_queue_stats(self, w: World) -> None:
        w.queue("q", max_length=2)
        w.publish("q", *msgs("a", "b", "c"))
        assert w.stat("q") == {
            "type": "queue",
            "durable": "0",
            "messages": "2",
            "bytes": "2",
            "delayed": "0",
            "unacked": "0",
            "consumers": "0",
            "published": "3",
            "delivered": "0",
            "acked": "0",
            "redelivered": "0",
            "expired": "0",
            "dropped": "1",
            "rejected": "0",
            "dead_lettered": "0",
        }
        c = w.client()
        c.sub("q", manual=True)
        c.nack(1)
        c.ack(2, 3)
        st = w.stat("q")
        assert (st["delivered"], st["acked"], st["redelivered"], st["messages"]) == (
            "3",
            "2",
            "1",
            "0",
        )

    def test_exchange_stats(self, w: World) -> None:
        b = w.broker
        b.create(None, "x", "fanout", QueueOptions(durable=True))
        w.queue("q")
        b.bind("q", "x")
        w.publish("x", b"1", b"2")
        b.unbind("q", "x")
        w.publish("x", b"3")
        assert w.stat("x") == {
            "type": "fanout",
            "durable": "1",
            "bindings": "0",
            "published": "3",
            "routed": "2",
            "unroutable": "1",
        }

    def test_stats_unknown(self, w: World) -> None:
        with pytest.raises(errors.NotFound):
            w.broker.stats("nope")
