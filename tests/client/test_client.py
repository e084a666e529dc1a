"""The Deferred client against the real broker core, in memory (``mbroker.testing``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mbroker import errors
from mbroker.client.connection import (
    Client,
    ConnectionLost,
    Message,
    NotABroker,
    NotConnected,
    Unconfirmed,
)
from mbroker.client.protocol import ClientProtocol
from mbroker.config import Config
from mbroker.testing import ClientPair, connected_pair, result_of
from mbroker.wire.frames import ExchangeInfo, QueueInfo, QueueOptions
from mbroker.wire.replydata import ok_count


def failure_of(pair: ClientPair, d: Deferred[Any]) -> Any:
    pair.flush()
    return failure_of_now(d)


@pytest.fixture
def pair() -> ClientPair:
    return connected_pair()


# ------------------------------------------------------------------ commands


def test_hello_is_kept(pair: ClientPair) -> None:
    assert pair.client.hello is not None
    assert pair.client.hello.max_payload == Config().max_payload
    assert pair.client.connected


def test_every_command(pair: ClientPair) -> None:
    c = pair.client
    assert pair.successResultOf(c.create("logs", "fanout")) is True
    assert pair.successResultOf(c.create("logs", "fanout")) is False
    assert pair.successResultOf(c.create("q", "queue", max_length=10, ttl=60_000)) is True
    assert pair.successResultOf(c.bind("q", "logs")) is None
    assert pair.successResultOf(c.publish("logs", b"one")) == 1
    assert pair.successResultOf(c.publish("logs", "two", ttl=5000)) == 1
    assert pair.successResultOf(c.publish("q", b"three", "a.key")) == 1
    rows = pair.successResultOf(c.list())
    assert ExchangeInfo("logs", "fanout", False, 1) in rows
    assert QueueInfo("q", 3, 0, 0, False) in rows
    stats = pair.successResultOf(c.stats("q"))
    assert stats["messages"] == 3 and stats["type"] == "queue"
    assert pair.successResultOf(c.stats())["queues"] == 1
    assert pair.successResultOf(c.ping()) == 0.0
    [m1, m2] = pair.successResultOf(c.pull("q", 2, ack="manual"))
    assert (m1.payload, m1.source, m1.routing_key, m1.redelivered) == (b"one", "logs", "", 0)
    assert m2.text == "two" and not m2.settled
    assert pair.successResultOf(c.nack(m2)) == 1
    assert pair.successResultOf(m1.ack()) is None and m1.settled
    [m2] = pair.successResultOf(c.pull("q", ack="manual", ack_timeout=1000))
    assert m2.redelivered == 1
    assert pair.successResultOf(m2.touch()) is None
    assert pair.successResultOf(c.ack([m2.tag])) == 1
    [m3] = pair.successResultOf(c.pull("q"))
    assert (m3.payload, m3.routing_key, m3.settled) == (b"three", "a.key", True)
    assert pair.successResultOf(c.pull("q", 5)) == []
    assert pair.successResultOf(c.publish("q", b"x")) == 1
    assert pair.successResultOf(c.purge("q")) == 1
    assert pair.successResultOf(c.unbind("q", "logs")) is None
    assert pair.successResultOf(c.publish("logs", b"lost")) == 0
    assert pair.successResultOf(c.auth("me", "secret")) is None
    assert pair.successResultOf(c.delete("q")) == 0
    assert pair.successResultOf(c.delete("logs", if_unused=True)) == 0
    assert pair.successResultOf(c.close()) is None
    assert not c.connected


def test_pull_wait_holds_later_commands(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    pulled = c.pull("q", wait=2000)
    ping = c.ping()
    pair.flush()
    assert not pulled.called and not ping.called
    pair.advance(2.0)
    assert result_of(pulled) == [] and ping.called


def test_nack_options_and_tag_ranges(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    for i in range(5):
        c.publish("q", b"%d" % i)
    msgs = pair.successResultOf(c.pull("q", 5, ack="manual"))
    assert [m.tag for m in msgs] == [1, 2, 3, 4, 5]
    assert pair.successResultOf(c.nack([1, 2, msgs[2]], requeue=False)) == 3
    assert pair.successResultOf(c.nack(4, delay=1000)) == 1
    assert pair.successResultOf(c.touch(5)) == 1
    assert pair.successResultOf(c.ack(5)) == 1
    assert pair.successResultOf(c.ack([])) == 0
    assert pair.successResultOf(c.stats("q"))["messages"] == 1  # the delayed one


def test_many_tags_are_split_into_several_commands(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    for _ in range(2500):
        c.publish("q", b"x")
    msgs = pair.successResultOf(c.pull("q", 2500, ack="manual"))
    odd = [m for m in msgs if m.tag % 2]  # 1250 ranges of one tag
    assert pair.successResultOf(c.ack(odd)) == 1250
    failure = failure_of(pair, c.ack([1, 3]))
    assert isinstance(failure, errors.NotFound)


def test_str_payload_is_utf8_and_bad_types_raise(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    pair.successResultOf(c.publish("q", "café"))
    [m] = pair.successResultOf(c.pull("q"))
    assert m.payload == "café".encode()
    with pytest.raises(TypeError):
        c.publish("q", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c.publish("q", "sport.uk", b"goal")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        c.pull("q", ack="sometimes")  # type: ignore[arg-type]


# -------------------------------------------------------------------- errors


def test_broker_errors_are_typed(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue", max_length=1, overflow="reject"))
    pair.successResultOf(c.create("x", "topic"))
    cases: list[tuple[Deferred[Any], type[errors.BrokerError] | None]] = [
        (c.publish("nope", b"x"), errors.NotFound),
        (c.create("q", "fanout"), errors.Exists),
        (c.pull("x"), errors.WrongKind),
        (c.bind("x", "q"), errors.WrongKind),
        (c.unbind("q", "x", "never"), errors.NotFound),
        (c.publish("q", b"1"), None),
        (c.publish("q", b"2"), errors.Overflow),
        (c.delete("q", if_empty=True), errors.NotEmpty),
        (c.ack(99), errors.NotFound),
        (c.create("bad name"), errors.BadArgs),  # refused by the encoder, never sent
        (c.create("q2", "stack"), errors.BadArgs),
        (c.create("x2", "topic", max_length=3), errors.BadArgs),
        (c.publish("q", b"x", "-"), errors.BadArgs),
    ]
    pair.flush()
    for d, expected in cases:
        box: list[Any] = []
        d.addBoth(box.append)
        if expected is None:
            assert box == [1]
        else:
            assert isinstance(box[0].value, expected), (expected, box[0])
            assert isinstance(box[0].value, errors.BrokerError)
    sub = pair.successResultOf(c.subscribe("q", lambda m: None))
    assert isinstance(failure_of(pair, c.delete("q", if_unused=True)), errors.InUse)
    assert sub.active


def test_limit_error(pair: ClientPair) -> None:
    limited = connected_pair(Config(max_subscriptions=1))
    c = limited.client
    limited.successResultOf(c.create("q", "queue"))
    limited.successResultOf(c.subscribe("q", lambda m: None))
    assert isinstance(failure_of(limited, c.subscribe("q", lambda m: None)), errors.Limit)


def test_too_big_is_refused_before_sending() -> None:
    pair = connected_pair(Config(max_payload=10))
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    assert isinstance(failure_of(pair, c.publish("q", b"x" * 11)), errors.TooBig)
    assert pair.successResultOf(c.publish("q", b"x" * 10)) == 1
    assert c.connected


@pytest.mark.parametrize("code", sorted(errors.ERRORS_BY_CODE))
def test_every_wire_code_maps_to_its_class(code: str) -> None:
    proto = ClientProtocol(Clock())
    proto.makeConnection(StringTransport())
    proto.dataReceived(b"HELLO mbroker 1 proto=1 auth=none max-payload=100\r\n")
    d = proto.send(b"PING\r\n", ok_count)
    proto.dataReceived(b"-ERR %s some text\r\n" % code.encode())
    err = failure_of_now(d)
    assert type(err) is errors.ERRORS_BY_CODE[code]
    assert err.code == code and err.text == "some text"


def test_an_unknown_code_is_still_a_broker_error() -> None:
    proto = ClientProtocol(Clock())
    proto.makeConnection(StringTransport())
    proto.dataReceived(b"HELLO mbroker 1\r\n")
    d = proto.send(b"PING\r\n", ok_count)
    proto.dataReceived(b"-ERR NEW_THING later\r\n")
    err = failure_of_now(d)
    assert isinstance(err, errors.BrokerError) and err.code == "NEW_THING"


def test_bad_command_and_bad_frame_from_raw_bytes(pair: ClientPair) -> None:
    proto = pair.protocol
    d = proto.send(b"BOGUS\r\n", ok_count)
    assert isinstance(failure_of(pair, d), errors.BadCommand)
    d = proto.send(b"PUBLISH x 3\r\nabcXY", ok_count)
    later = pair.client.ping()
    assert isinstance(failure_of(pair, d), errors.BadFrame)
    assert isinstance(failure_of(pair, later), Unconfirmed)  # the broker hung up


def test_line_too_long_closes() -> None:
    pair = connected_pair(Config(max_line=100))
    d = pair.protocol.send(b"PING " + b"x" * 200 + b"\r\n", ok_count)
    assert isinstance(failure_of(pair, d), errors.LineTooLong)
    assert not pair.client.connected


def test_greeting_refusal_fails_the_connection() -> None:
    proto = ClientProtocol(Clock())
    proto.makeConnection(StringTransport())
    ready = proto.when_ready()
    proto.dataReceived(b"-ERR LIMIT at most 1 connections\r\n")
    assert isinstance(failure_of_now(ready), errors.Limit)


HELLO = b"HELLO mbroker 1 proto=1 auth=none max-payload=100\r\n"


def screened(greeting_timeout: float | None = 1.0) -> tuple[ClientProtocol, StringTransport, Clock]:
    clock = Clock()
    proto = ClientProtocol(clock, greeting_timeout=greeting_timeout)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 8000))
    proto.makeConnection(transport)
    return proto, transport, clock


def lose(proto: ClientProtocol, transport: StringTransport) -> None:
    """What the reactor does after ``abortConnection``."""
    assert transport.disconnecting or transport.disconnected
    proto.connectionLost(Failure(ConnectionDone()))


def test_a_greeting_in_pieces_passes_the_screen() -> None:
    proto, transport, clock = screened()
    ready = proto.when_ready()
    for i in range(len(HELLO)):
        proto.dataReceived(HELLO[i : i + 1])
    assert result_of(ready) is proto and proto.hello is not None
    clock.advance(10)
    assert transport.value() == b""  # no probe: the greeting came in time


def test_silence_gets_a_probe_then_a_verdict() -> None:
    proto, transport, clock = screened()
    ready = proto.when_ready()
    clock.advance(0.25)
    clock.advance(0)  # the batched write
    assert transport.value() == b"PING\r\n"
    clock.advance(0.75)
    lose(proto, transport)
    err = failure_of_now(ready)
    assert isinstance(err, NotABroker)
    assert str(err) == "10.0.0.7:8000 is not an mbroker server (it said nothing for 1 s)"


def test_a_late_greeting_and_its_pong_make_a_broker() -> None:
    proto, transport, clock = screened(greeting_timeout=5)
    ready = proto.when_ready()
    clock.advance(0.3)
    proto.dataReceived(HELLO + b"+PONG\r\n")  # the probe's answer is consumed in order
    assert result_of(ready) is proto
    d = proto.send(b"PURGE q\r\n", ok_count)
    proto.dataReceived(b"+OK 3\r\n")
    assert result_of(d) == 3
    clock.advance(10)
    assert proto.is_open


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"HELLO redis 7\r\n", "HELLO redis 7"),
        (b"\x16\x03\x01" * 40, "\\x16\\x03\\x01"),
        (b"-NOAUTH Authentication required.\r\n", "-NOAUTH Authentication required."),
        (b"x" * 200 + b"\n", "x" * 80 + "..."),
    ],
)
def test_another_first_line_is_not_a_broker(data: bytes, shown: str) -> None:
    proto, transport, _clock = screened(greeting_timeout=None)
    ready = proto.when_ready()
    proto.dataReceived(data)
    lose(proto, transport)
    err = failure_of_now(ready)
    assert isinstance(err, NotABroker)
    assert str(err).startswith(f"10.0.0.7:8000 is not an mbroker server (it said: {shown}")


def test_part_of_another_line_then_the_end_is_not_a_broker() -> None:
    proto, _transport, _clock = screened(greeting_timeout=None)
    ready = proto.when_ready()
    proto.dataReceived(b"SSH-2.0")
    proto.connectionLost(Failure(ConnectionDone()))
    assert "(it said: SSH-2.0)" in str(failure_of_now(ready))


def failure_of_now(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addErrback(lambda f: box.append(f.value))
    assert box, f"{d!r} did not fail"
    return box[0]


# ------------------------------------------------------- pipelining & cancel


def test_commands_in_one_turn_are_written_once() -> None:
    clock = Clock()
    transport = StringTransport()
    proto = ClientProtocol(clock)
    proto.makeConnection(transport)
    proto.dataReceived(b"HELLO mbroker 1\r\n")
    client = Client(clock)
    result_of(client.link.prepare(proto))
    writes: list[Any] = []
    transport.writeSequence = writes.append  # type: ignore[method-assign]
    ds = [client.publish("q", b"%d" % i) for i in range(3)]
    assert writes == []
    clock.advance(0)
    assert len(writes) == 1 and b"".join(writes[0]).count(b"PUBLISH q") == 3
    proto.dataReceived(b"+OK 1\r\n+OK 2\r\n+OK 3\r\n")
    assert [result_of(d) for d in ds] == [1, 2, 3]
    for _ in range(2000):
        client.publish("q", b"x")
    assert len(writes) == 2  # a full batch goes out at once, without waiting


def test_cancel_keeps_replies_in_step(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("a", "queue"))
    pair.successResultOf(c.create("b", "queue"))
    first = c.publish("a", b"1")
    second = c.publish("nope", b"2")
    third = c.create("a", "queue")
    second.cancel()
    pair.flush()
    assert result_of(first) == 1
    assert isinstance(failure_of(pair, second), CancelledError)
    assert result_of(third) is False


def test_cancelled_manual_pull_gives_messages_back(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    pair.successResultOf(c.publish("q", b"x"))
    d = c.pull("q", ack="manual")
    d.cancel()
    pair.flush()
    assert pair.successResultOf(c.stats("q"))["messages"] == 1
    [m] = pair.successResultOf(c.pull("q"))
    assert m.redelivered == 1


def test_cancelled_subscribe_is_unsubscribed(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    d = c.subscribe("q", lambda m: None)
    d.cancel()
    pair.flush()
    assert pair.successResultOf(c.stats("q"))["consumers"] == 0
    assert c.subscriptions == []


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_replies_split_anywhere_match_their_commands(data: st.DataObject) -> None:
    """Whatever the chunking of the reply stream, every Deferred gets its own reply."""
    clock = Clock()
    proto = ClientProtocol(clock)
    proto.makeConnection(StringTransport())
    client = Client(clock)
    n = data.draw(st.integers(1, 12))
    kinds = data.draw(
        st.lists(st.sampled_from(["pub", "pull", "list", "err"]), min_size=n, max_size=n)
    )
    stream = b"HELLO mbroker 1 proto=1\r\n"
    expected: list[Any] = []
    ds: list[Deferred[Any]] = []
    proto.dataReceived(stream)
    result_of(client.link.prepare(proto))
    stream = b""
    for i, kind in enumerate(kinds):
        if kind == "pub":
            ds.append(client.publish("q", b"m"))
            stream += b"+OK %d\r\n" % i
            expected.append(i)
        elif kind == "pull":
            ds.append(client.pull("q", 2))
            stream += b"MSG 0 %d q k.%d 2\r\n\r\n\r\nMSG 1 9 x - 0\r\n\r\n+OK 1\r\n" % (i, i)
            expected.append((f"k.{i}", b"\r\n"))
        elif kind == "list":
            ds.append(client.list())
            stream += b"QUEUE q%d messages=1 unacked=0 consumers=0 durable=0\r\n+OK 1\r\n" % i
            expected.append([QueueInfo(f"q{i}", 1, 0, 0, False)])
        else:
            ds.append(client.ping())
            stream += b"-ERR NOT_FOUND n%d\r\n" % i
            expected.append(errors.NotFound(f"n{i}"))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=8)))
    start = 0
    for cut in [*cuts, len(stream)]:
        proto.dataReceived(stream[start:cut])
        start = cut
    for d, want in zip(ds, expected):
        box: list[Any] = []
        d.addBoth(box.append)
        got = box[0]
        if isinstance(want, errors.BrokerError):
            assert got.value == want
        elif isinstance(want, tuple):
            [m] = got
            assert (m.routing_key, m.payload) == want
        else:
            assert got == want


# -------------------------------------------------------------- subscriptions


def test_callback_return_acks(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    got: list[Message] = []
    sub = pair.successResultOf(c.subscribe("q", got.append, prefetch=10))
    assert sub.ack == "manual" and sub.sid == 1
    for i in range(3):
        c.publish("q", b"%d" % i)
    pair.flush()
    assert [m.payload for m in got] == [b"0", b"1", b"2"]
    assert all(m.settled for m in got)
    stats = pair.successResultOf(c.stats("q"))
    assert stats["unacked"] == 0 and stats["acked"] == 3
    assert sub.received == 3


def test_callback_raising_requeues(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    seen: list[int] = []

    def flaky(m: Message) -> None:
        seen.append(m.redelivered)
        if m.redelivered == 0:
            raise RuntimeError("not this time")

    pair.successResultOf(c.subscribe("q", flaky))
    pair.successResultOf(c.publish("q", b"x"))
    pair.flush()
    assert seen == [0, 1]
    assert pair.successResultOf(c.stats("q"))["acked"] == 1


def test_nack_delay_after_failure(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    seen: list[int] = []

    def fail_once(m: Message) -> None:
        seen.append(m.redelivered)
        if not m.redelivered:
            raise ValueError("boom")

    pair.successResultOf(c.subscribe("q", fail_once, nack_delay=lambda m: 5000))
    pair.successResultOf(c.publish("q", b"x"))
    assert seen == [0]
    pair.advance(5.0)
    assert seen == [0, 1]


def test_deferred_and_async_callbacks_ack_when_done(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    pending: list[Deferred[None]] = []

    def later(m: Message) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        pending.append(d)
        return d

    sub = pair.successResultOf(c.subscribe("q", later))
    pair.successResultOf(c.publish("q", b"x"))
    assert pair.successResultOf(c.stats("q"))["unacked"] == 1
    pending[0].callback(None)
    assert pair.successResultOf(c.stats("q"))["unacked"] == 0
    pair.successResultOf(sub.unsubscribe())

    gate: Deferred[None] = Deferred()

    async def handler(m: Message) -> None:
        await gate
        if m.payload == b"bad":
            raise ValueError(m.payload)

    pair.successResultOf(c.subscribe("q", handler, prefetch=1))
    pair.successResultOf(c.publish("q", b"bad"))
    assert pair.successResultOf(c.stats("q"))["unacked"] == 1
    gate.callback(None)  # fails: given back, fails again at once, then backs off
    pair.flush()
    stats = pair.successResultOf(c.stats("q"))
    assert (stats["delivered"], stats["messages"], stats["unacked"]) == (3, 1, 0)
    pair.advance(0.1)
    assert pair.successResultOf(c.stats("q"))["delivered"] == 4


def test_callback_may_settle_itself(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    pair.successResultOf(c.create("dlq", "queue"))
    pair.successResultOf(c.delete("q"))
    pair.successResultOf(c.create("q", "queue", dead_letter="dlq"))

    def reject(m: Message) -> None:
        m.nack(requeue=False)

    pair.successResultOf(c.subscribe("q", reject))
    pair.successResultOf(c.publish("q", b"poison"))
    pair.flush()
    [dead] = pair.successResultOf(c.pull("dlq"))
    assert dead.reason == "rejected" and dead.payload == b"poison"
    assert pair.successResultOf(c.stats("q"))["acked"] == 0


def test_auto_ack_subscription_and_patterns(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("news", "topic"))
    got: list[Message] = []
    sub = pair.successResultOf(c.subscribe("news", got.append, "sport.*", ack="auto"))
    pair.successResultOf(c.publish("news", b"goal", "sport.uk"))
    pair.successResultOf(c.publish("news", b"rain", "weather.uk"))
    assert [(m.payload, m.routing_key, m.source) for m in got] == [(b"goal", "sport.uk", "news")]
    assert got[0].settled
    assert pair.successResultOf(got[0].ack()) is None
    assert isinstance(failure_of(pair, got[0].nack()), Exception)
    pair.successResultOf(sub.unsubscribe())
    assert not sub.active
    assert pair.successResultOf(sub.when_ended()) == "unsubscribed"


def test_unsubscribe_waits_for_callbacks_in_progress(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    pending: list[Deferred[None]] = []

    def slow(m: Message) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        pending.append(d)
        return d

    sub = pair.successResultOf(c.subscribe("q", slow, prefetch=1))
    pair.successResultOf(c.publish("q", b"1"))
    pair.successResultOf(c.publish("q", b"2"))
    done = sub.unsubscribe()
    pair.flush()
    assert not done.called and len(pending) == 1
    pending[0].callback(None)
    assert pair.successResultOf(done) is None
    stats = pair.successResultOf(c.stats("q"))
    assert (stats["acked"], stats["messages"], stats["consumers"]) == (1, 1, 0)


def test_broker_cancel_ends_the_subscription(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    sub = pair.successResultOf(c.subscribe("q", lambda m: None))
    ended = sub.when_ended()
    pair.successResultOf(c.delete("q"))
    assert result_of(ended) == "deleted"
    assert c.subscriptions == [] and not sub.active


def test_messages_from_two_subscriptions_are_kept_apart(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("a", "queue"))
    pair.successResultOf(c.create("b", "queue"))
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    pair.successResultOf(c.subscribe("a", lambda m: got["a"].append(m.payload)))
    pair.successResultOf(c.subscribe("b", lambda m: got["b"].append(m.payload)))
    c.publish("a", b"1")
    c.publish("b", b"2")
    c.publish("a", b"3")
    pair.flush()
    assert got == {"a": [b"1", b"3"], "b": [b"2"]}


# ------------------------------------------------------------ connection loss


def test_connection_loss_fails_what_was_unconfirmed(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    sub = pair.successResultOf(c.subscribe("q", lambda m: None))
    ended = sub.when_ended()
    pair.pump.flush = lambda *a, **k: False  # type: ignore[method-assign]
    published = c.publish("q", b"never confirmed")
    pair.clock.advance(0)  # written, not answered
    pair.server.transport.loseConnection()  # type: ignore[union-attr]
    pair.pump.pump()  # the broker's side drops
    pair.pump.pump()
    assert isinstance(failure_of_now(published), Unconfirmed)
    assert isinstance(failure_of_now(ended), ConnectionLost)
    assert not c.connected
    assert isinstance(failure_of_now(c.publish("q", b"x")), NotConnected)
    assert isinstance(failure_of_now(c.when_connected()), NotConnected)
    assert isinstance(failure_of_now(c.subscribe("q", lambda m: None)), NotConnected)
    assert isinstance(failure_of_now(c.pull("q")), NotConnected)


def test_acking_after_the_connection_is_gone(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    pair.successResultOf(c.publish("q", b"x"))
    [m] = pair.successResultOf(c.pull("q", ack="manual"))
    pair.disconnect()
    assert isinstance(failure_of_now(m.ack()), NotConnected)


def test_two_clients_share_a_broker(pair: ClientPair) -> None:
    other = pair.connect_another()
    pair.successResultOf(pair.client.create("q", "queue"))
    got: list[bytes] = []
    other.successResultOf(other.client.subscribe("q", lambda m: got.append(m.payload)))
    pair.successResultOf(pair.client.publish("q", b"hi"))
    other.flush()
    assert got == [b"hi"]


def test_callbacks_style(pair: ClientPair) -> None:
    c = pair.client
    seen: list[object] = []
    c.create("q", "queue").addCallback(seen.append)
    c.publish("q", b"x").addCallback(seen.append)
    c.publish("nope", b"x").addErrback(lambda f: seen.append(f.trap(errors.NotFound)))
    c.pull("q").addCallback(lambda msgs: seen.append([m.payload for m in msgs]))
    pair.flush()
    assert seen == [True, 1, errors.NotFound, [b"x"]]


def test_create_with_queue_lifetime_options(pair: ClientPair) -> None:
    c = pair.client
    assert pair.successResultOf(c.create("r", "queue", expires=1000)) is True
    assert pair.successResultOf(c.create("r", "queue", expires=1000)) is False
    assert isinstance(failure_of(pair, c.create("r", "queue")), errors.Exists)
    assert pair.successResultOf(c.create("a", "queue", auto_delete=True)) is True
    assert pair.broker.queue("a").options == QueueOptions(auto_delete=True)
    assert isinstance(failure_of(pair, c.create("x", "topic", expires=5)), errors.BadArgs)
    pair.clock.advance(1)
    pair.flush()
    assert [i.name for i in pair.successResultOf(c.list())] == ["a"]


# ------------------------------------------------------------------ heartbeats


def test_a_pushed_ping_is_answered_pong_and_is_no_reply() -> None:
    proto, transport, clock = screened()
    proto.dataReceived(HELLO)
    d = proto.send(b"PURGE q\r\n", ok_count)
    clock.advance(0)
    transport.clear()
    # a PING between two replies: answered at once, the pending PURGE still waits
    proto.dataReceived(b"PING\r\n")
    assert transport.value() == b"PONG\r\n" and not d.called
    proto.dataReceived(b"+OK 2\r\nPING\r\n")
    assert result_of(d) == 2
    assert transport.value() == b"PONG\r\nPONG\r\n"
    assert proto.is_open


def test_heartbeat_seconds_are_checked() -> None:
    from mbroker.client.link import heartbeat_ms

    assert heartbeat_ms(None) == 0 and heartbeat_ms(0) == 0
    assert heartbeat_ms(1) == 1000 and heartbeat_ms(30) == 30000 and heartbeat_ms(3600) == 3600000
    for bad in (0.5, 3601, -1):
        with pytest.raises(ValueError, match="heartbeat must be 1 to 3600 seconds"):
            heartbeat_ms(bad)
