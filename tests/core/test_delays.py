"""Delayed delivery, ``PUBLISH … delay=MS`` (contract section 7), on a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import pytest
from twisted.internet.task import Clock

from mbroker import errors
from mbroker.config import Config
from mbroker.core import records as rec
from mbroker.core.broker import Broker
from mbroker.core.journal import Journal
from mbroker.store.state import StoreState
from mbroker.wire.frames import Props, QueueOptions
from tests.helpers.world import World, msgs

Done = Callable[[Optional[errors.BrokerError]], None]


def pub(
    w: World | Broker,
    name: str,
    payload: str,
    delay: int | None,
    priority: int = 0,
    ttl: int | None = None,
    key: str = "",
) -> int:
    b = w.broker if isinstance(w, World) else w
    result = b.publish_props(
        name, key, payload.encode(), ttl, Props(priority=priority, delay=delay)
    )
    assert isinstance(result, tuple)  # (the single broker knows at once)
    n, dup = result
    assert not dup
    return n


def test_ready_exactly_delay_ms_later() -> None:
    w = World()
    w.queue("q")
    c = w.client()
    c.sub("q")
    w.advance_ms(3)
    assert pub(w, "q", "later", 1000) == 1
    w.advance_ms(999)
    assert c.payloads == []
    w.advance_ms(1)
    assert c.payloads == msgs("later")
    assert round(w.clock.seconds(), 6) == 1.003


def test_delay_0_is_at_once() -> None:
    w = World()
    w.queue("q")
    pub(w, "q", "now", 0)
    assert w.ready() == msgs("now")


def test_copies_due_in_the_same_millisecond_keep_publish_order() -> None:
    w = World()
    w.exchange("ex", "fanout")
    w.queue("a")
    w.queue("b")
    w.broker.bind("a", "ex")
    w.broker.bind("b", "ex")
    assert pub(w, "ex", "1st", 100) == 2  # the reply counts the queues at once
    w.advance_ms(40)
    assert pub(w, "ex", "2nd", 60) == 2
    assert pub(w, "ex", "3rd", 60) == 2
    assert pub(w, "ex", "early", 59) == 2
    w.advance_ms(59)
    assert w.ready("a") == msgs("early")
    w.advance_ms(1)
    assert w.ready("a") == w.ready("b") == msgs("early", "1st", "2nd", "3rd")


def test_joins_the_tail_of_its_priority() -> None:
    w = World()
    w.queue("q")
    pub(w, "q", "late5", 100, priority=5)
    pub(w, "q", "a5", None, priority=5)
    pub(w, "q", "b0", None)
    pub(w, "q", "c9", None, priority=9)
    w.advance_ms(100)
    assert w.ready() == msgs("c9", "a5", "late5", "b0")


def test_not_counted_until_due_but_in_stat_delayed() -> None:
    w = World()
    w.queue("q", max_length=1, overflow="reject")
    pub(w, "q", "d1", 500)
    pub(w, "q", "d2", 500)  # max-length does not see delayed copies
    w.publish("q", b"r")
    assert w.queue_info("q").messages == 1
    st = w.stat("q")
    assert (st["messages"], st["delayed"], st["bytes"]) == ("1", "2", "1")
    (report,) = w.broker.queue_reports("q")
    assert (report.ready, report.delayed) == (1, 2)
    assert w.broker.purge("q") == 1  # PURGE leaves them
    assert w.stat("q")["delayed"] == "2"
    c = w.client()
    c.sub("q")
    assert c.payloads == []
    pull = c.pull("q")
    assert pull == []


def test_overflow_reject_on_release_dead_letters_with_maxlen() -> None:
    w = World()
    w.queue("dl")
    w.queue("q", max_length=1, overflow="reject", dead_letter="dl")
    pub(w, "q", "late", 100, priority=2)
    w.publish("q", b"full")
    w.advance_ms(100)
    assert w.ready() == msgs("full")
    assert w.ready("dl") == msgs("late")
    (m,) = w.broker.queue("dl").ready
    assert m.reason == "maxlen" and m.props is not None and m.props.priority == 2
    assert w.stat("q")["delayed"] == "0"
    assert w.stat("q")["rejected"] == "1"


def test_overflow_reject_without_dead_letter_drops() -> None:
    w = World()
    w.queue("q", max_length=1, overflow="reject")
    pub(w, "q", "late", 100)
    w.publish("q", b"full")
    w.advance_ms(100)
    assert w.ready() == msgs("full")
    assert w.stat("q")["delayed"] == "0"


def test_overflow_drop_head_on_release() -> None:
    w = World()
    w.queue("q", max_length=2)
    pub(w, "q", "late1", 100, priority=1)
    w.publish("q", b"old0")
    pub(w, "q", "hi", None, priority=3)
    w.advance_ms(100)  # full: the oldest of the lowest priority goes
    assert w.ready() == msgs("hi", "late1")


def test_ttl_counts_from_ready() -> None:
    w = World()
    w.queue("dl")
    w.queue("q", dead_letter="dl")
    pub(w, "q", "t", 1000, ttl=500)
    w.clock.advance(1.0)  # ready now (a fake clock runs a call at the time it stops)
    w.clock.advance(0.375)  # (binary fractions: exact in floating point)
    assert w.ready() == msgs("t")
    w.clock.advance(0.125)
    assert w.ready() == []
    assert w.ready("dl") == msgs("t")


def test_queue_ttl_counts_from_ready() -> None:
    w = World()
    w.queue("q", ttl=250)
    pub(w, "q", "t", 1000)
    w.clock.advance(1.0)
    w.clock.advance(0.125)
    assert w.ready() == msgs("t")
    w.clock.advance(0.125)
    assert w.ready() == []
    assert w.stat("q")["expired"] == "1"


def test_ttl0_on_release_goes_only_to_a_taker() -> None:
    w = World()
    w.queue("q")
    pub(w, "q", "lost", 10, ttl=0)
    pub(w, "q", "taken", 20, ttl=0)
    w.advance_ms(10)
    assert w.ready() == [] and w.stat("q")["expired"] == "1"
    c = w.client()
    c.sub("q")
    w.advance_ms(10)
    assert c.payloads == msgs("taken")


def test_delete_drops_and_counts_them_and_if_empty_sees_them() -> None:
    w = World()
    w.queue("q")
    pub(w, "q", "a", 1000)
    pub(w, "q", "b", 2000)
    w.publish("q", b"r")
    with pytest.raises(errors.NotEmpty):
        w.broker.delete("q", if_empty=True)
    assert w.broker.delete("q") == 3
    assert len(w.broker.timers) == 0
    w.queue("q")  # a new queue of the name gets nothing of the old one
    w.advance_ms(3000)
    assert w.ready() == []


def test_auto_delete_drops_delayed_copies() -> None:
    w = World()
    w.queue("q", auto_delete=True)
    c = w.client()
    c.sub("q")
    pub(w, "q", "a", 1000)
    c.close()
    with pytest.raises(errors.NotFound):
        w.broker.queue("q")
    w.advance_ms(1000)
    assert c.payloads == []


def test_a_million_cost_one_clock_call() -> None:
    w = World()
    w.queue("q")
    for i in range(2000):
        pub(w, "q", str(i), 1000 + i % 13)
    c = w.client()
    c.sub("q", manual=True, prefetch=1)
    pub(w, "q", "x", None)
    assert c.nack(1, delay=50) == 1  # a NACK delay shares the structure
    assert len(w.clock.getDelayedCalls()) == 1
    w.advance_ms(1100)
    assert w.stat("q")["delayed"] == "0"


# ---------------------------------------------------------------- durability


class Disk:
    """A store that keeps every record and confirms at once."""

    def __init__(self) -> None:
        self.records: list[rec.Record] = []

    def __call__(self, records: list[rec.Record], done: Done) -> None:
        self.records += records
        done(None)

    def recovered(self) -> rec.Recovered:
        state = StoreState()
        state.apply_all(self.records)
        return state.recovered()


class Wall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def durable(disk: Disk, wall: Wall) -> tuple[Clock, Broker]:
    clock = Clock()
    clock.advance(50.0)  # each run's clock starts somewhere else
    b = Broker(clock, Config(), Journal(clock, disk, lambda: True), wall=wall)
    return clock, b


def test_durable_delayed_copies_keep_their_wall_clock_due_time() -> None:
    disk, wall = Disk(), Wall(1_000_000.0)
    clock, b = durable(disk, wall)
    b.create(None, "q", "queue", QueueOptions(durable=True))
    pub(b, "q", "in10s", 10_000, priority=4)
    pub(b, "q", "in2s", 2_000, ttl=10_000)
    b.publish("q", "", b"plain")
    clock.advance(0)  # the journal's commit
    stored = [r for r in disk.records if isinstance(r, rec.MessageStored)]
    assert [r.props.due if r.props else None for r in stored] == [1_000_010.0, 1_000_002.0, None]
    assert stored[1].expires_at == 1_000_012.0

    # the broker stops after 1 s and comes back 3 s later (wall clock)
    wall.now += 4.0
    clock2, b2 = durable(disk, wall)
    b2.restore(disk.recovered())
    q = b2.queue("q")
    assert [m.payload for m in q.ready] == [b"plain"]
    assert dict(b2.stats("q"))["delayed"] == "2"
    clock2.advance(0)  # "in2s" was due while the broker was down: ready at once
    assert [m.payload for m in q.ready] == [b"plain", b"in2s"]
    clock2.advance(5.875)
    assert [m.payload for m in q.ready] == [b"plain", b"in2s"]
    clock2.advance(0.125)  # the wall due time of "in10s"
    assert [m.payload for m in q.ready] == [b"in10s", b"plain", b"in2s"]
    (m,) = [m for m in q.ready if m.payload == b"in10s"]
    assert m.props is not None and m.props.priority == 4 and m.props.due is None
    # the ttl of "in2s" counts from when it became ready (at the restart)
    (m2,) = [m for m in q.ready if m.payload == b"in2s"]
    assert m2.expires_at == 60.0


def test_a_past_due_copy_is_ready_on_restart() -> None:
    disk, wall = Disk(), Wall(5000.0)
    clock, b = durable(disk, wall)
    b.create(None, "q", "queue", QueueOptions(durable=True))
    pub(b, "q", "soon", 100)
    clock.advance(0)
    wall.now += 60
    clock2, b2 = durable(disk, wall)
    b2.restore(disk.recovered())
    clock2.advance(0)
    assert [m.payload for m in b2.queue("q").ready] == [b"soon"]
    # delivered with ack=auto, it leaves the store
    out = b2.pull(b2.open_session(_Sink()), "q")
    assert out is not None and len(out) == 1
    clock2.advance(0)
    assert disk.recovered().messages["q"] == []


def test_delete_of_a_durable_queue_with_delayed_copies() -> None:
    disk, wall = Disk(), Wall(5000.0)
    clock, b = durable(disk, wall)
    b.create(None, "q", "queue", QueueOptions(durable=True))
    pub(b, "q", "later", 100)
    assert b.delete("q") == 1
    clock.advance(0.2)
    assert "q" not in disk.recovered().queues


class _Sink:
    def push(self, *a: object) -> None: ...

    def push_many(self, *a: object) -> None: ...

    def push_run(self, *a: object) -> None: ...

    def cancelled(self, *a: object) -> None: ...

    def slow(self, *a: object) -> None: ...


# ------------------------------------------------ NACK delays, on the same timers


def test_a_purged_nack_delay_does_not_come_back() -> None:
    w = World()
    w.queue("q")
    c = w.client()
    w.publish("q", b"a", b"b")
    out = c.pull("q", max=2, manual=True)
    assert out is not None and len(out) == 2
    assert c.nack((1, 2), delay=100) == 2
    assert w.queue_info("q").messages == 2  # (a NACK delay is counted, as before)
    assert w.stat("q")["delayed"] == "2"
    assert w.broker.purge("q") == 2
    w.advance_ms(100)
    assert w.ready() == [] and w.stat("q")["delayed"] == "0"
    assert len(w.broker.timers) == 0


def test_a_nack_delay_comes_back_to_the_head_of_its_priority() -> None:
    w = World()
    w.queue("q")
    c = w.client()
    pub(w, "q", "x3", None, priority=3)
    out = c.pull("q", manual=True)
    assert out is not None
    assert c.nack(1, delay=100) == 1
    pub(w, "q", "a9", None, priority=9)
    pub(w, "q", "b3", None, priority=3)
    pub(w, "q", "c0", None)
    w.advance_ms(100)
    assert w.ready() == msgs("a9", "x3", "b3", "c0")


def test_nack_delays_of_a_deleted_queue_are_dropped() -> None:
    w = World()
    w.queue("q")
    c = w.client()
    w.publish("q", b"a")
    c.pull("q", manual=True)
    c.nack(1, delay=100)
    pub(w, "q", "later", 50)
    assert w.broker.delete("q") == 2
    w.queue("q")
    w.advance_ms(100)
    assert w.ready() == []


def test_held_copies_share_their_route() -> None:
    w = World()
    w.queue("q")
    pub(w, "q", "a", 10)
    pub(w, "q", "b", 10)
    w.advance_ms(10)
    a, b = w.broker.queue("q").ready
    assert a.route == b"q -" and a.route is b.route  # (memory: one per name and key)
