"""The core's interface for queues whose messages are kept elsewhere (a cluster node's
shared queues): feed, withdraw, enqueue into one queue, and diverted dead letters."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet import task

from mbroker.config import Config
from mbroker.core import records as rec
from mbroker.core.broker import Broker
from mbroker.core.journal import Done, Journal
from mbroker.core.model import Queue, QueuedMessage
from mbroker.wire.frames import QueueOptions
from tests.helpers.world import Target, World


def journaled() -> tuple[Broker, list[rec.Record], task.Clock]:
    clock = task.Clock()
    written: list[rec.Record] = []

    def writer(records: list[rec.Record], done: Done) -> None:
        written.extend(records)
        done(None)

    journal = Journal(clock, writer, lambda: True)
    return Broker(clock, Config(), journal), written, clock


def test_fed_messages_are_delivered_with_their_marks_and_acks_name_their_ids() -> None:
    broker, written, clock = journaled()
    broker.create(None, "q", "queue", QueueOptions())
    target = Target()
    s = broker.open_session(target)
    c = broker.subscribe(s, "q", manual=True)
    broker.activate(c)
    q = broker.queue("q")
    broker.feed(
        q,
        [(7, "q", "", b"a", None, None), (8, "x", "k", b"b", None, None)],
        [(2, None, ()), (0, "expired", ("a", "b"))],
    )
    (_, _, first), (_, _, second) = target.take()
    assert (first.payload, first.deliveries, first.msg_id) == (b"a", 3, 7)
    assert (second.source, second.reason, second.msg_id) == ("x", "expired", 8)
    assert (first.dl_path, second.dl_path) == ((), ("a", "b"))
    broker.ack(s, ((1, 2),))
    clock.advance(0)
    assert rec.MessagesRemoved("q", (7, 8)) in written


def test_withdraw_takes_the_ready_messages_and_records_nothing() -> None:
    broker, written, clock = journaled()
    broker.create(None, "q", "queue", QueueOptions())
    q = broker.queue("q")
    broker.feed(
        q, [(1, "q", "", b"a", None, None), (2, "q", "", b"bb", None, None)], [(0, None, ())] * 2
    )
    out = broker.withdraw(q)
    assert [m.payload for m in out] == [b"a", b"bb"]
    assert (len(q.ready), q.ready_bytes) == (0, 0)
    clock.advance(0)
    assert not [r for r in written if isinstance(r, rec.MessagesRemoved)]


def test_enqueue_puts_a_copy_into_one_queue_only() -> None:
    w = World()
    w.queue("a")
    w.queue("b")
    w.exchange("x", "fanout")
    w.broker.bind("a", "x", "")
    w.broker.bind("b", "x", "")
    assert w.broker.enqueue(w.broker.queue("a"), "x", "k", b"only a")
    assert (w.ready("a"), w.ready("b")) == ([b"only a"], [])
    (m,) = w.broker.queue("a").ready
    assert m.route == b"x k"


def test_dead_letters_go_to_the_sink_when_one_is_set() -> None:
    w = World()
    w.queue("dl")
    w.queue("q", dead_letter="dl")
    got: list[tuple[list[str], bytes, str, tuple[str, ...], int]] = []

    def sink(
        targets: Sequence[Queue], m: QueuedMessage, reason: str, path: tuple[str, ...], depth: int
    ) -> None:
        got.append(([t.name for t in targets], m.payload, reason, path, depth))

    w.broker.divert_dead_letters(sink)
    w.publish("q", b"x")
    a = w.client()
    (tag, _), *_ = w.broker.pull(a.session, "q", manual=True) or []
    a.nack(tag, requeue=False)
    assert got == [(["dl"], b"x", "rejected", (), 0)]
    assert w.ready("dl") == []  # not queued here


def test_a_diverted_dead_letter_carries_its_path_and_never_goes_back_along_it() -> None:
    broker, _, clock = journaled()
    broker.create(None, "a", "queue", QueueOptions(ttl=10, dead_letter="x"))
    for name in ("b", "c"):
        broker.create(None, name, "queue", QueueOptions())
    broker.create(None, "x", "fanout", QueueOptions())
    for name in ("a", "b", "c"):
        broker.bind(name, "x")
    got: list[tuple[list[str], tuple[str, ...], int]] = []

    def sink(
        targets: Sequence[Queue], m: QueuedMessage, reason: str, path: tuple[str, ...], depth: int
    ) -> None:
        got.append(([t.name for t in targets], path, depth))

    broker.divert_dead_letters(sink)
    # fed from a shared queue, having left b by expiry before: it expires from a, and
    # of x's queues only c is not on its path (b, a)
    expires = clock.seconds() + 0.01
    broker.feed(broker.queue("a"), [(1, "a", "", b"m", expires, None)], [(0, "expired", ("b",))])
    clock.advance(0.02)
    assert got == [(["c"], ("b", "a"), 0)]


def test_fed_ttl0_messages_go_to_a_consumer_at_once_or_expire_at_once() -> None:
    broker, written, clock = journaled()
    broker.create(None, "dl", "queue", QueueOptions())
    broker.create(None, "q", "queue", QueueOptions(dead_letter="dl"))
    target = Target()
    s = broker.open_session(target)
    c = broker.subscribe(s, "q", manual=True, prefetch=2)
    broker.activate(c)
    q = broker.queue("q")
    clock.advance(10)
    ready_at = clock.seconds() - 0.5  # (read within its grace: its ttl=0 expiry passed)
    fed: list[rec.StoredMessage] = [(1, "q", "", b"plain", None, None)]
    fed += [(i, "q", "", b"zero%d" % i, ready_at, None) for i in (2, 3)]
    broker.feed(q, fed, [(0, None, ())] * 3, {2, 3})
    # room for two: the plain one ahead, then the first ttl=0 one; the other expires now
    assert [m.payload for _, _, m in target.take()] == [b"plain", b"zero2"]
    assert [m.payload for m in broker.queue("dl").ready] == [b"zero3"]
    assert (len(q.ready), q.ready_bytes, q.expired) == (0, 0, 1)
    clock.advance(0)
    assert rec.MessagesRemoved("q", (3,)) in written
    # a delivered one that comes back has outlived its ttl, as on a publish
    broker.nack(s, ((2, 2),), True)
    assert [m.payload for m in broker.queue("dl").ready] == [b"zero3", b"zero2"]
    assert (len(q.ready), q.expired) == (0, 2)


def test_a_fed_ttl0_message_goes_to_a_waiting_pull() -> None:
    broker, _, clock = journaled()
    broker.create(None, "q", "queue", QueueOptions(ttl=0))
    s = broker.open_session(Target())
    got: list[list[bytes]] = []
    pulled = broker.pull(
        s, "q", 1, 5000, on_done=lambda out: got.append([m.payload for _, m in out])
    )
    assert pulled is None
    q = broker.queue("q")
    now = clock.seconds()
    broker.feed(
        q,
        [(1, "q", "", b"a", now, None), (2, "q", "", b"b", now, None)],
        [(0, None, ())] * 2,
        {1, 2},
    )
    assert got == [[b"a"]]
    assert (len(q.ready), q.expired) == (0, 1)
