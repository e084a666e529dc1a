"""Priorities 0-9 (contract section 7) in the broker core, on a fake clock."""

from __future__ import annotations

from collections import deque

import pytest

from mbroker import errors
from mbroker.core import records as rec
from mbroker.core.model import PriorityReady
from mbroker.wire.frames import Props, QueueOptions
from tests.helpers.world import World, msgs


def pub(w: World, name: str, payload: str, priority: int = 0, ttl: int | None = None) -> int:
    props = Props(priority=priority)
    result = w.broker.publish_props(name, "", payload.encode(), ttl, props)
    assert isinstance(result, tuple)  # (the single broker knows at once)
    n, dup = result
    assert not dup
    return n


def test_higher_first_fifo_within_one() -> None:
    w = World()
    w.queue("q")
    for payload, p in [("a0", 0), ("b5", 5), ("c9", 9), ("d5", 5), ("e0", 0), ("f9", 9)]:
        pub(w, "q", payload, p)
    c = w.client()
    c.sub("q")
    assert c.payloads == msgs("c9", "f9", "b5", "d5", "a0", "e0")
    assert [m.props.priority for _, _, m in c.target.pushed if m.props] == [9, 9, 5, 5, 0, 0]


def test_a_queue_of_priority_0_keeps_its_deque() -> None:
    w = World()
    w.queue("q")
    w.publish("q", b"plain")
    pub(w, "q", "zero", 0)
    assert type(w.broker.queue("q").ready) is deque
    pub(w, "q", "one", 1)
    assert isinstance(w.broker.queue("q").ready, PriorityReady)
    assert w.ready() == msgs("one", "plain", "zero")


def test_pull_and_peek_in_priority_order() -> None:
    w = World()
    w.queue("q")
    for payload, p in [("a", 1), ("b", 3), ("c", 2), ("d", 3)]:
        pub(w, "q", payload, p)
    assert [r.payload for r in w.broker.peek("q", 3)] == msgs("b", "d", "c")
    out = w.client().pull("q", max=3)
    assert out is not None
    assert [m.payload for _, m in out] == msgs("b", "d", "c")
    assert w.ready() == msgs("a")
    assert w.queue_info("q").messages == 1


@pytest.mark.parametrize("how", ["nack", "close", "ack-timeout", "unsubscribe"])
def test_a_requeued_message_goes_to_the_head_of_its_own_priority(how: str) -> None:
    w = World()
    w.queue("q")
    c = w.client()
    pub(w, "q", "x5", 5)
    c.sub("q", manual=True, prefetch=1, ack_timeout=1000)
    assert c.payloads == msgs("x5")
    for payload, p in [("a9", 9), ("b5", 5), ("c0", 0)]:
        pub(w, "q", payload, p)
    if how == "nack":
        assert c.nack(1) == 1
    elif how == "close":
        c.close()
    elif how == "unsubscribe":
        w.broker.unsubscribe(c.session, 1)
    else:
        w.advance_ms(1000)
    if how in ("nack", "ack-timeout"):
        # the consumer's room went to the highest ready one, a9; x5 heads priority 5
        assert c.payloads == msgs("x5", "a9")
        assert w.ready() == msgs("x5", "b5", "c0")
    else:
        assert w.ready() == msgs("a9", "x5", "b5", "c0")
    redelivered = [m for m in w.broker.queue("q").ready if m.deliveries]
    assert [m.payload for m in redelivered] == msgs("x5")


def test_requeue_order_exactly() -> None:
    w = World()
    w.queue("q")
    c = w.client()
    pub(w, "q", "x5", 5)
    pub(w, "q", "y0", 0)
    pull = c.pull("q", max=2, manual=True)
    assert pull is not None and [m.payload for _, m in pull] == msgs("x5", "y0")
    for payload, p in [("a9", 9), ("b5", 5), ("c0", 0)]:
        pub(w, "q", payload, p)
    assert c.nack((1, 2)) == 2
    assert w.ready() == msgs("a9", "x5", "b5", "y0", "c0")


def test_drop_head_drops_the_oldest_of_the_lowest_priority() -> None:
    w = World()
    w.queue("q", max_length=3, dead_letter="dl")
    w.queue("dl")
    pub(w, "q", "a5", 5)
    pub(w, "q", "b1", 1)
    pub(w, "q", "c1", 1)
    pub(w, "q", "d9", 9)  # full: drops b1, the oldest of priority 1
    assert w.ready() == msgs("d9", "a5", "c1")
    pub(w, "q", "e0", 0)  # the new one is the lowest: it goes itself
    assert w.ready() == msgs("d9", "a5", "c1")
    assert w.ready("dl") == msgs("b1", "e0")
    assert [m.reason for m in w.broker.queue("dl").ready] == ["maxlen", "maxlen"]
    # a dead-lettered copy keeps its priority
    assert [m.props.priority for m in w.broker.queue("dl").ready if m.props] == [1, 0]
    assert w.stat("q")["dropped"] == "2"


def test_drop_head_by_bytes() -> None:
    w = World()
    w.queue("q", max_bytes=4)
    pub(w, "q", "aa", 2)
    pub(w, "q", "bb", 1)
    pub(w, "q", "cc", 3)
    assert w.ready() == msgs("cc", "aa")


def test_reject_refuses_whatever_the_priority() -> None:
    w = World()
    w.queue("q", max_length=2, overflow="reject")
    pub(w, "q", "a", 1)
    pub(w, "q", "b", 0)
    with pytest.raises(errors.Overflow):
        pub(w, "q", "c", 9)
    assert w.ready() == msgs("a", "b")
    assert w.stat("q")["rejected"] == "1"


def test_ttl_expires_in_a_priority_queue() -> None:
    w = World()
    w.queue("q", dead_letter="dl")
    w.queue("dl")
    pub(w, "q", "short9", 9, ttl=100)
    pub(w, "q", "long0", 0, ttl=1000)
    pub(w, "q", "short5", 5, ttl=200)
    pub(w, "q", "never1", 1)
    w.advance_ms(100)
    assert w.ready() == msgs("short5", "never1", "long0")
    w.advance_ms(100)
    assert w.ready() == msgs("never1", "long0")
    w.advance_ms(800)
    assert w.ready() == msgs("never1")
    assert w.ready("dl") == msgs("short9", "short5", "long0")
    # an expired one at the head is not delivered
    pub(w, "q", "dead", 9, ttl=10)
    w.clock.advance(0.01)
    c = w.client()
    c.sub("q")
    assert c.payloads == msgs("never1")


def test_ttl0_with_a_priority() -> None:
    w = World()
    w.queue("q", dead_letter="dl")
    w.queue("dl")
    pub(w, "q", "waits", 1)
    pub(w, "q", "now", 9, ttl=0)  # nobody takes it at once: expires
    assert w.ready() == msgs("waits")
    assert w.ready("dl") == msgs("now")


def test_purge_and_delete_a_priority_queue() -> None:
    w = World()
    w.queue("q")
    pub(w, "q", "a", 3)
    pub(w, "q", "b", 0)
    assert w.broker.purge("q") == 2
    assert w.ready() == []
    pub(w, "q", "c", 0)
    pub(w, "q", "d", 4)
    assert w.ready() == msgs("d", "c")
    assert w.broker.delete("q") == 2


def test_publish_runs_into_a_priority_queue() -> None:
    w = World()
    w.queue("q")
    pub(w, "q", "hi", 2)
    w.broker.publish_many("q", "", msgs("r1", "r2"))
    pub(w, "q", "hi2", 2)
    assert w.ready() == msgs("hi", "hi2", "r1", "r2")


def test_restore_places_by_priority() -> None:
    w = World()
    opts = QueueOptions(durable=True)
    p3, p7 = Props(priority=3), Props(priority=7)
    recovered = rec.Recovered(
        queues={"q": opts},
        messages={
            "q": [
                (1, "q", "", b"a", None, None),
                (2, "q", "", b"b", None, p3),
                (3, "q", "", b"c", None, p7),
                (4, "q", "", b"d", None, p3),
            ]
        },
        next_msg_id=5,
    )
    w.broker.restore(recovered)
    assert w.ready() == msgs("c", "b", "d", "a")


def test_levels_report() -> None:
    ready = PriorityReady()
    w = World()
    w.queue("q")
    pub(w, "q", "a", 2)
    pub(w, "q", "b", 2)
    pub(w, "q", "c", 0)
    q = w.broker.queue("q")
    assert isinstance(q.ready, PriorityReady)
    assert q.ready.levels() == [(2, 2), (0, 1)]
    assert q.ready[0].payload == b"a" and q.ready[-1].payload == b"c"
    assert not ready and len(ready) == 0
    with pytest.raises(IndexError):
        ready.popleft()
