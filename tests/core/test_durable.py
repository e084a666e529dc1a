"""Durable state through the journal: what is recorded, and replies that wait for it.

The store is replaced by a writer whose confirmations the test releases by hand, so
each test can look at the wire before and after the disk said yes (or no).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mbroker import errors
from mbroker.config import Config
from mbroker.core import records as rec
from mbroker.core.broker import Broker
from mbroker.core.journal import Journal
from mbroker.server.factory import BrokerFactory
from mbroker.server.protocol import BrokerProtocol
from mbroker.wire.frames import QueueOptions
from tests.helpers.conn import broker_protocol

Done = Callable[[Optional[errors.BrokerError]], None]


class HeldWriter:
    """Collects writes; the test confirms or fails them."""

    def __init__(self) -> None:
        self.batches: list[list[rec.Record]] = []
        self.waiting: list[Done] = []
        self.available = True

    def __call__(self, records: list[rec.Record], done: Done) -> None:
        self.batches.append(records)
        self.waiting.append(done)

    def confirm(self, err: errors.BrokerError | None = None) -> None:
        waiting, self.waiting = self.waiting, []
        for done in waiting:
            done(err)

    @property
    def records(self) -> list[rec.Record]:
        return [r for batch in self.batches for r in batch]


class World:
    def __init__(self) -> None:
        self.clock = Clock()
        self.writer = HeldWriter()
        self.journal = Journal(self.clock, self.writer, lambda: self.writer.available)
        self.broker = Broker(self.clock, Config(), self.journal)
        self.factory = BrokerFactory(self.broker, Config(), self.clock)

    def connect(self) -> tuple[BrokerProtocol, StringTransport]:
        p = broker_protocol(self.factory, None)
        t = StringTransport()
        p.makeConnection(t)
        t.clear()
        return p, t

    def turn(self) -> None:
        """End the reactor turn: the journal commits."""
        self.clock.advance(0)


def lines(t: StringTransport) -> list[bytes]:
    out: list[bytes] = t.value().split(b"\r\n")[:-1]
    t.clear()
    return out


def test_publish_to_a_durable_queue_is_answered_after_the_commit() -> None:
    w = World()
    p, t = w.connect()
    p.dataReceived(b"CREATE jobs queue durable\r\nCREATE tmp queue\r\n")
    assert lines(t) == []  # CREATE durable waits; CREATE tmp waits behind it
    w.turn()
    w.writer.confirm()
    assert lines(t) == [b"+OK created", b"+OK created"]
    p.dataReceived(b"PUBLISH jobs :one\r\nPUBLISH tmp :two\r\nPING\r\n")
    w.turn()
    assert lines(t) == []
    assert len(w.writer.batches) == 2  # one write for the whole turn
    w.writer.confirm()
    assert lines(t) == [b"+OK 1", b"+OK 1", b"+PONG"]
    stored = [r for r in w.writer.records if isinstance(r, rec.MessageStored)]
    assert [(r.msg_id, r.queues, r.payload) for r in stored] == [(1, ("jobs",), b"one")]


def test_transient_commands_do_not_wait() -> None:
    w = World()
    p, t = w.connect()
    p.dataReceived(b"CREATE tmp queue\r\nPUBLISH tmp :x\r\nPULL tmp\r\n")
    assert lines(t) == [b"+OK created", b"+OK 1", b"MSG 0 1 tmp - 1", b"x", b"+OK 1"]
    w.turn()
    assert w.writer.batches == []


def test_a_failed_commit_answers_unavailable_and_the_connection_goes_on() -> None:
    w = World()
    p, t = w.connect()
    p.dataReceived(b"CREATE jobs queue durable\r\n")
    w.turn()
    w.writer.confirm()
    lines(t)
    p.dataReceived(b"PUBLISH jobs :one\r\nPING\r\n")
    w.turn()
    w.writer.confirm(errors.Unavailable("disk full"))
    assert lines(t) == [b"-ERR UNAVAILABLE disk full", b"+PONG"]


def test_an_unavailable_store_refuses_durable_publishes_up_front() -> None:
    w = World()
    p, t = w.connect()
    p.dataReceived(b"CREATE jobs queue durable\r\nCREATE tmp queue\r\n")
    w.turn()
    w.writer.confirm()
    lines(t)
    w.writer.available = False
    p.dataReceived(b"PUBLISH jobs :one\r\nPUBLISH tmp :two\r\nCREATE more queue durable\r\n")
    assert lines(t)[:2] == [
        b"-ERR UNAVAILABLE the store cannot take writes; nothing was published",
        b"+OK 1",
    ]
    assert w.broker.queue("jobs").messages == 0
    assert "more" not in [o.name for o in w.broker.list_objects()]


def test_quit_waits_for_the_replies_before_it() -> None:
    w = World()
    p, t = w.connect()
    p.dataReceived(b"CREATE jobs queue durable\r\nPUBLISH jobs :one\r\nQUIT\r\nPING\r\n")
    assert not t.disconnecting
    w.turn()
    w.writer.confirm()
    assert lines(t) == [b"+OK created", b"+OK 1", b"+OK bye"]
    assert t.disconnecting


def test_ack_and_auto_pull_of_durable_messages_wait_for_their_removal() -> None:
    w = World()
    p, t = w.connect()
    p.dataReceived(b"CREATE jobs queue durable\r\nPUBLISH jobs :a\r\nPUBLISH jobs :b\r\n")
    w.turn()
    w.writer.confirm()
    lines(t)
    p.dataReceived(b"PULL jobs ack=manual\r\n")
    assert lines(t) == [b"MSG 0 1 jobs - 1", b"a", b"+OK 1"]  # nothing changed on disk yet
    p.dataReceived(b"ACK 1\r\nPULL jobs\r\n")
    assert lines(t) == []
    w.turn()
    assert w.writer.batches[-1] == [rec.MessagesRemoved("jobs", (1, 2))]
    w.writer.confirm()
    assert lines(t) == [b"+OK 1", b"MSG 0 2 jobs - 1", b"b", b"+OK 1"]


def test_declarations_and_bindings_are_recorded_for_durable_objects_only() -> None:
    w = World()
    b = w.broker
    b.create(None, "ev", "topic", QueueOptions(durable=True))
    b.create(None, "tmpx", "fanout", QueueOptions())
    b.create(None, "q", "queue", QueueOptions(durable=True, ttl=5000))
    b.create(None, "tq", "queue", QueueOptions())
    b.bind("q", "ev", "a.#")
    b.bind("q", "tmpx")
    b.bind("tq", "ev", "#")
    b.unbind("q", "ev", "a.#")
    b.delete("q")
    b.delete("ev")
    w.turn()
    assert w.writer.records == [
        rec.ExchangeDeclared("ev", "topic"),
        rec.QueueDeclared("q", QueueOptions(durable=True, ttl=5000)),
        rec.Bound("q", "ev", "a.#"),
        rec.Unbound("q", "ev", "a.#"),
        rec.QueueDeleted("q"),
        rec.ExchangeDeleted("ev"),
    ]


def test_every_way_a_durable_message_leaves_is_recorded() -> None:
    w = World()
    b = w.broker
    b.create(None, "dlq", "queue", QueueOptions(durable=True))
    opts = QueueOptions(durable=True, max_length=1, dead_letter="dlq")
    b.create(None, "q", "queue", opts)
    b.publish("q", "", b"1")
    b.publish("q", "", b"2")  # drops 1 (maxlen) into dlq, stored there again
    assert b.purge("q") == 1  # 2
    w.turn()
    stored = [r for r in w.writer.records if isinstance(r, rec.MessageStored)]
    # ids grow in log order (the store relies on it), the dead-lettered copy included
    assert [(r.msg_id, r.queues) for r in stored] == [(1, ("q",)), (2, ("q",)), (3, ("dlq",))]
    removed = [r for r in w.writer.records if isinstance(r, rec.MessagesRemoved)]
    assert removed == [rec.MessagesRemoved("q", (1, 2))]


def test_restore_rebuilds_objects_bindings_and_messages() -> None:
    w = World()
    recovered = rec.Recovered(
        exchanges={"ev": "topic"},
        queues={"q": QueueOptions(durable=True)},
        bindings=[("q", "ev", "a.*")],
        messages={"q": [(7, "ev", "a.b", b"hello", None, None), (9, "q", "", b"x", None, None)]},
        next_msg_id=10,
    )
    w.broker.restore(recovered)
    assert w.broker.publish("ev", "a.c", b"new") == 1
    p, t = w.connect()
    p.dataReceived(b"PULL q max=5\r\n")
    w.turn()
    stored = [r for r in w.writer.records if isinstance(r, rec.MessageStored)]
    assert stored[0].msg_id == 10
    w.writer.confirm()
    assert lines(t) == [
        b"MSG 0 1 ev a.b 5",
        b"hello",
        b"MSG 0 2 q - 1",
        b"x",
        b"MSG 0 3 ev a.c 3",
        b"new",
        b"+OK 3",
    ]


def test_an_expired_ttl0_copy_is_journaled_as_removed() -> None:
    # ttl=0 on the queue: nobody takes it, it expires at once, and leaves the store
    w = World()
    b = w.broker
    b.create(None, "q", "queue", QueueOptions(durable=True, ttl=0))
    assert b.publish("q", "", b"a") == 1
    assert list(b.queue("q").ready) == []
    w.turn()
    assert w.writer.records == [
        rec.QueueDeclared("q", QueueOptions(durable=True, ttl=0)),
        rec.MessageStored(1, ("q",), "q", "", b"a", 0.0),
        rec.MessagesRemoved("q", (1,)),
    ]


def test_a_publish_ttl0_on_a_durable_queue_leaves_nothing_stored() -> None:
    w = World()
    b = w.broker
    b.create(None, "q", "queue", QueueOptions(durable=True))
    assert b.publish("q", "", b"a", 0) == 1
    assert list(b.queue("q").ready) == []
    w.turn()
    removed = [r for r in w.writer.records if isinstance(r, rec.MessagesRemoved)]
    assert removed == [rec.MessagesRemoved("q", (1,))]
