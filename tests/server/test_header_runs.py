"""Runs of PUBLISH lines that carry the same headers (and no id, delay or priority) are
routed once, as plain runs are, and every message keeps its headers: in a queue, to a
subscriber (never the straight-through path, which writes no headers), and in the one
store record of a durable run."""

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
from mbroker.store import codec
from mbroker.wire.frames import Props
from tests.helpers.conn import broker_protocol

Done = Callable[[Optional[errors.BrokerError]], None]
HEAD = b"PUBLISH jobs h.ct=text%2Fplain h.n=1 1\r\n"


class Recorder:
    def __init__(self) -> None:
        self.records: list[rec.Record] = []

    def __call__(self, records: list[rec.Record], done: Done) -> None:
        self.records += records
        done(None)


def connect(durable: bool) -> tuple[Broker, StringTransport, Recorder, Clock, list[int]]:
    clock = Clock()
    writer = Recorder()
    broker = Broker(clock, Config(), Journal(clock, writer, lambda: True))
    calls: list[int] = []
    many = broker.publish_many

    def counted(*args: object, **kw: object) -> tuple[int, dict[int, errors.BrokerError]]:
        calls.append(len(args[2]))  # type: ignore[arg-type]
        return many(*args, **kw)  # type: ignore[arg-type]

    broker.publish_many = counted
    p = broker_protocol(BrokerFactory(broker, Config(), clock), None)
    t = StringTransport()
    p.makeConnection(t)
    p.dataReceived(b"CREATE jobs queue" + (b" durable" if durable else b"") + b"\r\n")
    p.dataReceived(HEAD + b"a\r\n")  # (remembered: the next identical heads form a run)
    clock.advance(0)
    t.clear()
    p.dataReceived(b"".join(HEAD + b"%d\r\n" % i for i in range(5)))
    clock.advance(0)
    return broker, t, writer, clock, calls


def test_a_run_with_headers_is_routed_once_and_each_message_keeps_them() -> None:
    broker, t, _, _, calls = connect(durable=False)
    assert t.value() == b"+OK 1\r\n" * 5
    assert calls == [5]
    ready = list(broker.queue("jobs").ready)
    assert [m.payload for m in ready] == [b"a", b"0", b"1", b"2", b"3", b"4"]
    assert {m.props for m in ready} == {Props((("ct", b"text/plain"), ("n", b"1")))}


def test_a_lone_subscriber_gets_the_headers_too() -> None:
    clock = Clock()
    broker = Broker(clock, Config(), None)
    p = broker_protocol(BrokerFactory(broker, Config(), clock), None)
    t = StringTransport()
    p.makeConnection(t)
    p.dataReceived(b"CREATE jobs queue\r\nSUBSCRIBE jobs\r\n" + HEAD + b"a\r\n")
    clock.advance(0)
    t.clear()
    p.dataReceived((HEAD + b"b\r\n") * 3)
    clock.advance(0)
    out = t.value()
    assert out.count(b"MSG 1 ") == 3
    assert out.count(b" jobs - h.ct=text/plain h.n=1 1\r\nb\r\n") == 3


def test_a_durable_run_is_one_record_whose_frames_keep_the_headers() -> None:
    _, _, writer, _, _ = connect(durable=True)
    [run] = [r for r in writer.records if isinstance(r, rec.MessagesStored)]
    assert run.props == Props((("ct", b"text/plain"), ("n", b"1")))
    data, sizes = codec.encode_batch([run])
    pos = 0
    for size, expected in zip(sizes, run.messages()):
        body = data[pos + codec.HEADER_SIZE : pos + size]
        assert codec.decode_message(body) == expected
        pos += size
    assert [m.props for m in run.messages()] == [run.props] * 5


def test_ids_delays_and_priorities_still_go_one_by_one() -> None:
    clock = Clock()
    broker = Broker(clock, Config(), None)
    p = broker_protocol(BrokerFactory(broker, Config(), clock), None)
    t = StringTransport()
    p.makeConnection(t)
    head = b"PUBLISH jobs id=same 1\r\n"
    p.dataReceived(b"CREATE jobs queue\r\n" + head + b"a\r\n")
    clock.advance(0)
    t.clear()
    p.dataReceived((head + b"b\r\n") * 3)
    clock.advance(0)
    assert t.value() == b"+OK 1 duplicate\r\n" * 3
    assert [m.payload for m in broker.queue("jobs").ready] == [b"a"]
