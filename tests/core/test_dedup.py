"""Message ids and dedup windows (contract section 7), on the fake clock.

Every exchange and queue remembers the ids of the PUBLISH commands that named it for
its window (CREATE ``dedup-window=MS``, else the server's default), counted from the
first PUBLISH; a PUBLISH whose id it remembers is accepted and not routed again, and
answered with what the first reached.  A refused PUBLISH leaves no id behind.  A
window holds a bounded number of ids; past it the oldest are forgotten early and
counted in STATS.  Durable objects keep their ids across a restart.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.testing import StringTransport

from mbroker import errors
from mbroker.config import Config
from mbroker.core import records as rec
from mbroker.core.broker import Broker
from mbroker.core.dedup import SWEEP_INTERVAL
from mbroker.core.journal import Done, Journal
from mbroker.server.factory import BrokerFactory
from mbroker.server.protocol import BrokerProtocol
from mbroker.store.bridge import journal_for
from mbroker.store.memory import MemoryStore
from mbroker.wire.frames import Props, QueueOptions
from tests.helpers.conn import broker_protocol
from tests.helpers.store import result
from tests.helpers.world import World


def props(msg_id: str | None = "a") -> Props:
    return Props(id=msg_id)


def pub(w: World, name: str, msg_id: str | None = "a", key: str = "") -> tuple[int, bool]:
    result = w.broker.publish_props(name, key, b"x", None, props(msg_id))
    assert isinstance(result, tuple)  # (the single broker knows at once)
    return result


@pytest.fixture
def w() -> World:
    return World(Config(dedup_window=10_000, dedup_max_ids=5))


class TestWindow:
    def test_a_second_publish_with_the_id_is_a_duplicate_and_not_routed(self, w: World) -> None:
        w.queue("q")
        assert pub(w, "q") == (1, False)
        assert pub(w, "q") == (1, True)
        assert pub(w, "q", "b") == (1, False)
        assert w.ready("q") == [b"x", b"x"]
        st = w.stat("q")
        assert (st["published"], st["dedup_ids"], st["duplicates"]) == ("2", "2", "1")
        assert w.stat()["duplicates"] == "1" and w.stat()["published"] == "2"

    def test_a_delayed_publish_remembers_its_id_too(self, w: World) -> None:
        w.queue("q")
        later = Props(id="d", delay=500)
        assert w.broker.publish_props("q", "", b"x", None, later) == (1, False)
        assert w.broker.publish_props("q", "", b"x", None, later) == (1, True)
        w.advance_ms(500)
        assert w.ready("q") == [b"x"]

    def test_remembered_for_the_window_from_the_first_publish(self, w: World) -> None:
        w.queue("q", dedup_window=1000)
        pub(w, "q")
        w.advance_ms(999)
        assert pub(w, "q") == (1, True)  # (a duplicate does not restart the window)
        w.advance_ms(1)
        assert pub(w, "q") == (1, False)
        assert w.ready("q") == [b"x", b"x"]

    def test_the_server_default_applies_without_dedup_window(self, w: World) -> None:
        w.queue("q")
        pub(w, "q")
        w.advance_ms(9_999)
        assert pub(w, "q")[1] is True
        w.advance_ms(1)
        assert pub(w, "q")[1] is False

    def test_window_zero_remembers_nothing(self, w: World) -> None:
        w.queue("q", dedup_window=0)
        assert pub(w, "q") == (1, False)
        assert pub(w, "q") == (1, False)
        assert "dedup_ids" not in w.stat("q")
        assert w.stat()["dedup_ids"] == "0"

    def test_server_window_zero_turns_it_off(self) -> None:
        w = World(Config(dedup_window=0))
        w.queue("q")
        w.queue("on", dedup_window=50)
        assert pub(w, "q") == pub(w, "q") == (1, False)
        assert pub(w, "on") == (1, False) and pub(w, "on") == (1, True)

    def test_no_id_no_dedup(self, w: World) -> None:
        w.queue("q")
        assert pub(w, "q", None) == pub(w, "q", None) == (1, False)
        w.publish("q", b"plain", b"plain")
        assert len(w.ready("q")) == 4

    def test_sweep_forgets_expired_ids_of_idle_objects(self, w: World) -> None:
        w.queue("q", dedup_window=1000)
        for i in range(3):
            pub(w, "q", str(i))
        assert w.broker._dedup.windows["q"].seen  # (nothing looked since)
        w.clock.advance(SWEEP_INTERVAL)
        assert not w.broker._dedup.windows["q"].seen
        assert w.stat("q")["dedup_ids"] == "0"

    def test_a_duplicate_is_a_use_of_an_expiring_queue(self, w: World) -> None:
        w.queue("q", expires=1000)
        pub(w, "q")
        w.advance_ms(900)
        assert pub(w, "q") == (1, True)
        w.advance_ms(900)
        assert w.broker._namespace.find("q") is not None
        w.advance_ms(200)
        assert w.broker._namespace.find("q") is None

    def test_a_deleted_object_forgets_its_ids(self, w: World) -> None:
        w.queue("q")
        pub(w, "q")
        w.broker.delete("q")
        w.queue("q")
        assert pub(w, "q") == (1, False)
        w.broker.delete("q")
        w.clock.advance(SWEEP_INTERVAL)
        assert "q" not in w.broker._dedup.windows
        assert w.stat()["duplicates"] == "0"


class TestScope:
    def test_the_same_id_to_an_exchange_and_to_its_queue_are_apart(self, w: World) -> None:
        w.queue("q")
        w.exchange("ex", "fanout")
        w.broker.bind("q", "ex")
        assert pub(w, "ex") == (1, False)
        assert pub(w, "q") == (1, False)  # copies routed in through ex do not count
        assert pub(w, "ex") == (1, True)
        assert pub(w, "q") == (1, True)
        assert w.ready("q") == [b"x", b"x"]

    def test_ids_are_per_name(self, w: World) -> None:
        w.queue("a")
        w.queue("b")
        assert pub(w, "a") == (1, False)
        assert pub(w, "b") == (1, False)

    def test_an_exchange_that_reached_no_queue_says_0_duplicate(self, w: World) -> None:
        w.exchange("ex", "direct")
        assert pub(w, "ex", key="k") == (0, False)
        w.queue("q")
        w.broker.bind("q", "ex", "k")
        assert pub(w, "ex", key="k") == (0, True)  # what the first reached, not routed
        assert w.ready("q") == []
        st = w.stat("ex")
        assert (st["published"], st["unroutable"], st["duplicates"]) == ("1", "1", "1")

    def test_n_is_what_the_first_reached(self, w: World) -> None:
        w.exchange("ex", "fanout")
        for name in ("q1", "q2", "q3"):
            w.queue(name)
            w.broker.bind(name, "ex")
        assert pub(w, "ex") == (3, False)
        w.broker.unbind("q3", "ex")
        assert pub(w, "ex") == (3, True)

    def test_exchange_dedup_window(self, w: World) -> None:
        assert w.broker.create(None, "ex", "topic", QueueOptions(dedup_window=100))
        pub(w, "ex")
        w.advance_ms(100)
        assert pub(w, "ex")[1] is False
        # the same options: +OK exists; another window: EXISTS
        assert w.broker.create(None, "ex", "topic", QueueOptions(dedup_window=100)) is False
        with pytest.raises(errors.Exists):
            w.broker.create(None, "ex", "topic", QueueOptions())


class TestRefused:
    def test_not_found_leaves_nothing(self, w: World) -> None:
        with pytest.raises(errors.NotFound):
            pub(w, "q")
        w.queue("q")
        assert pub(w, "q") == (1, False)

    def test_overflow_leaves_no_id(self, w: World) -> None:
        w.queue("q", max_length=1, overflow="reject")
        assert pub(w, "q") == (1, False)
        with pytest.raises(errors.Overflow):
            pub(w, "q", "b")
        w.broker.purge("q")
        assert pub(w, "q", "b") == (1, False)  # not a duplicate: b was refused
        assert w.ready("q") == [b"x"]

    def test_an_unavailable_store_leaves_no_id(self) -> None:
        store = MemoryStore()
        clock = task.Clock()
        result(store.open())
        b = Broker(clock, Config(), journal_for(store, clock))
        b.create(None, "q", "queue", QueueOptions(durable=True))
        b.create(None, "ex", "fanout", QueueOptions(durable=True))
        clock.advance(0)
        store.available = False
        for name in ("q", "ex"):
            with pytest.raises(errors.Unavailable):
                b.publish_props(name, "", b"x", None, props())
        store.available = True
        assert b.publish_props("q", "", b"x", None, props()) == (1, False)
        assert b.publish_props("ex", "", b"x", None, props()) == (0, False)


class TestBound:
    def test_past_the_bound_the_oldest_are_forgotten_and_counted(self, w: World) -> None:
        w.queue("q")
        for i in range(7):
            assert pub(w, "q", str(i)) == (1, False)
        st = w.stat("q")
        assert (st["dedup_ids"], st["dedup_forgotten"]) == ("5", "2")
        assert w.stat()["dedup_forgotten"] == "2"
        assert pub(w, "q", "0") == (1, False)  # forgotten early
        assert pub(w, "q", "6") == (1, True)
        assert w.stat("q")["dedup_forgotten"] == "3"

    def test_bound_across_expiry_buckets(self, w: World) -> None:
        w.queue("q")
        for i in range(12):
            pub(w, "q", str(i))
            w.advance_ms(1)
        seen = w.broker._dedup.windows["q"].seen
        assert list(seen) == [str(i) for i in range(7, 12)]
        w.advance_ms(10_000)
        assert w.stat("q")["dedup_ids"] == "0"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 700), st.sampled_from("abcdefg")), max_size=60))
def test_a_window_is_a_fifo_of_ids_with_a_lifetime(steps: list[tuple[int, str]]) -> None:
    """Against a reference model in whole milliseconds: a window of 1000 ms holding
    at most 5 ids, the oldest forgotten first."""
    w = World(Config(dedup_window=1000, dedup_max_ids=5))
    w.queue("q")
    model: OrderedDict[str, int] = OrderedDict()  # id -> expiry (ms)
    now = forgotten = 0
    for advance, msg_id in steps:
        w.advance_ms(advance)
        now += advance
        for old in [i for i, expiry in model.items() if expiry <= now]:
            del model[old]
        duplicate = msg_id in model
        assert pub(w, "q", msg_id) == (1, duplicate)
        if not duplicate:
            model[msg_id] = now + 1000
            if len(model) > 5:
                model.popitem(last=False)
                forgotten += 1
        st_q = w.stat("q")
        assert (st_q["dedup_ids"], st_q["dedup_forgotten"]) == (str(len(model)), str(forgotten))


class TestWire:
    """Through the connection: the replies, one by one for a run of lines."""

    def connect(self, w: World) -> tuple[StringTransport, BrokerProtocol]:
        factory = BrokerFactory(w.broker, w.broker.config, w.clock)
        p = broker_protocol(factory, None)
        t = StringTransport()
        p.makeConnection(t)
        t.clear()
        return t, p

    def test_a_run_of_identical_lines_with_an_id(self, w: World) -> None:
        t, p = self.connect(w)
        p.dataReceived(
            b"CREATE q queue\r\n" + b"PUBLISH q k id=order-1 :x\r\n" * 4 + b"PUBLISH q k :x\r\n"
        )
        assert t.value().split(b"\r\n")[:-1] == [
            b"+OK created",
            b"+OK 1",
            b"+OK 1 duplicate",
            b"+OK 1 duplicate",
            b"+OK 1 duplicate",
            b"+OK 1",
        ]
        assert w.ready("q") == [b"x", b"x"]

    def test_create_dedup_window_on_the_wire(self, w: World) -> None:
        t, p = self.connect(w)
        p.dataReceived(
            b"CREATE ex fanout dedup-window=0\r\nCREATE q queue dedup-window=5\r\n"
            b"CREATE ex fanout max-length=1\r\n"
        )
        out = t.value().split(b"\r\n")[:-1]
        assert out[:2] == [b"+OK created", b"+OK created"]
        assert out[2].startswith(b"-ERR BAD_ARGS 'max-length' is for queues")
        assert w.broker.queue("q").options.dedup_window == 5
        assert w.broker.exchange("ex").dedup_window == 0


class TestDurable:
    """Ids of durable objects go to the store with the message, and come back."""

    def start(self, store: MemoryStore, clock: task.Clock) -> Broker:
        b = Broker(clock, Config(dedup_window=60_000), journal_for(store, clock))
        b.restore(result(store.open()))
        return b

    def test_ids_survive_a_restart_for_their_window(self) -> None:
        store, clock = MemoryStore(), task.Clock()
        b = self.start(store, clock)
        b.create(None, "q", "queue", QueueOptions(durable=True))
        b.create(None, "ex", "fanout", QueueOptions(durable=True, dedup_window=5000))
        b.create(None, "tmp", "queue", QueueOptions())
        b.bind("q", "ex")
        assert b.publish_props("q", "", b"1", None, props("a")) == (1, False)
        assert b.publish_props("ex", "", b"2", None, props("a")) == (1, False)
        assert b.publish_props("tmp", "", b"3", None, props("a")) == (1, False)
        clock.advance(0)
        # the id went in the batch of its message
        (batch,) = [
            batch for batch in store.written if any(isinstance(r, rec.MessageStored) for r in batch)
        ]
        kinds = [
            type(r).__name__ for r in batch if isinstance(r, (rec.MessageStored, rec.IdRemembered))
        ]
        assert kinds == ["MessageStored", "IdRemembered", "MessageStored", "IdRemembered"]
        assert all(r.name != "tmp" for r in batch if isinstance(r, rec.IdRemembered))
        result(store.close())
        clock.advance(4.0)
        b = self.start(store, clock)
        assert b.publish_props("q", "", b"1", None, props("a")) == (1, True)
        assert b.publish_props("ex", "", b"2", None, props("a")) == (1, True)
        assert [m.payload for m in b.queue("q").ready] == [b"1", b"2"]
        result(store.close())
        clock.advance(1.0)  # ex's window (5 s) has ended, q's (60 s) not
        b = self.start(store, clock)
        assert b.publish_props("ex", "", b"2", None, props("a")) == (1, False)
        assert b.publish_props("q", "", b"1", None, props("a")) == (1, True)

    def test_a_deleted_durable_object_forgets_its_stored_ids(self) -> None:
        store, clock = MemoryStore(), task.Clock()
        b = self.start(store, clock)
        b.create(None, "q", "queue", QueueOptions(durable=True))
        b.publish_props("q", "", b"1", None, props("a"))
        b.delete("q")
        b.create(None, "q", "queue", QueueOptions(durable=True))
        clock.advance(0)
        result(store.close())
        b = self.start(store, clock)
        assert b.publish_props("q", "", b"1", None, props("a")) == (1, False)


class HeldWriter:
    """A store writer whose writes the test confirms (or fails) by hand."""

    def __init__(self) -> None:
        self.waiting: list[Done] = []

    def __call__(self, records: list[rec.Record], done: Done) -> None:
        self.waiting.append(done)

    def confirm(self, err: errors.BrokerError | None = None) -> None:
        waiting, self.waiting = self.waiting, []
        for done in waiting:
            done(err)


class TestDuplicateWaitsForTheFirst:
    """``+OK <n> duplicate`` says the first PUBLISH is stored: on a durable object it is
    not written before the first one's write is confirmed."""

    def connect(self, factory: BrokerFactory) -> tuple[BrokerProtocol, StringTransport]:
        p = broker_protocol(factory, None)
        t = StringTransport()
        p.makeConnection(t)
        t.clear()
        return p, t

    def setup(self) -> tuple[task.Clock, HeldWriter, BrokerFactory]:
        clock, writer = task.Clock(), HeldWriter()
        journal = Journal(clock, writer, lambda: True)
        broker = Broker(clock, Config(), journal)
        factory = BrokerFactory(broker, Config(), clock)
        broker.create(None, "q", "queue", QueueOptions(durable=True))
        broker.create(None, "t", "queue", QueueOptions())
        clock.advance(0)
        writer.confirm()
        return clock, writer, factory

    def test_in_the_same_turn(self) -> None:
        clock, writer, factory = self.setup()
        (a, ta), (b, tb) = self.connect(factory), self.connect(factory)
        a.dataReceived(b"PUBLISH q id=x :1\r\n")
        b.dataReceived(b"PUBLISH q id=x :1\r\nPUBLISH t id=x :1\r\n")
        clock.advance(0)
        assert ta.value() == tb.value() == b""
        writer.confirm()
        assert ta.value() == b"+OK 1\r\n"
        assert tb.value() == b"+OK 1 duplicate\r\n+OK 1\r\n"

    def test_while_the_first_write_is_in_flight(self) -> None:
        clock, writer, factory = self.setup()
        (a, ta), (b, tb) = self.connect(factory), self.connect(factory)
        a.dataReceived(b"PUBLISH q id=x :1\r\n")
        clock.advance(0)  # the write is handed to the store
        b.dataReceived(b"PUBLISH q id=x :1\r\n")
        clock.advance(0)
        assert tb.value() == b""
        writer.confirm(errors.Unavailable("disk full"))
        assert ta.value() == tb.value() == b"-ERR UNAVAILABLE disk full\r\n"

    def test_once_stored_a_duplicate_is_answered_at_once(self) -> None:
        clock, writer, factory = self.setup()
        (a, ta) = self.connect(factory)
        a.dataReceived(b"PUBLISH q id=x :1\r\n")
        clock.advance(0)
        writer.confirm()
        a.dataReceived(b"PUBLISH q id=x :1\r\n")
        assert ta.value() == b"+OK 1\r\n+OK 1 duplicate\r\n"
