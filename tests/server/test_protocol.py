"""BrokerProtocol over StringTransport: ordering, greeting, errors, flow control."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import StringTransport

from mbroker import __version__
from mbroker.config import Config
from mbroker.server.protocol import BrokerProtocol
from mbroker.wire import encode_frame
from tests.helpers.conn import Conn, broker_protocol, make
from tests.helpers.logs import logged
from tests.helpers.state import now


def test_greeting() -> None:
    _, _, f = make(Config(max_payload=5000))
    c = Conn(f)
    assert (
        c.greeting == f"HELLO mbroker {__version__} proto=1 auth=none max-payload=5000\r\n".encode()
    )


def test_pipelined_commands_answered_in_order() -> None:
    _, _, f = make()
    c = Conn(f)
    c.send(
        b"CREATE q queue\r\nCREATE q queue\nPUBLISH q 3\r\nabc\r\nPUBLISH nope :x\n"
        b"\r\n   \nPING\nBOGUS\nPULL q\n"
    )
    assert c.lines() == [
        b"+OK created",
        b"+OK exists",
        b"+OK 1",
        b"-ERR NOT_FOUND nope",
        b"+PONG",
        b"-ERR BAD_COMMAND unknown command 'BOGUS'",
        b"MSG 0 1 q - 3",
        b"abc",
        b"+OK 1",
    ]


def test_split_at_every_byte_gives_the_same_replies() -> None:
    script = (
        b"CREATE x fanout\r\nCREATE q queue\r\nBIND q x\r\n"
        b"PUBLISH x k 5\r\nhello\r\nPULL q max=5\r\n"
    )
    _, _, f = make()
    whole = Conn(f)
    whole.send(script)
    expected = whole.take()
    for i in range(len(script)):
        _, _, f = make()
        c = Conn(f)
        for b in (script[:i], script[i:]):
            c.send(b)
        assert c.take() == expected, i


def test_subscribe_reply_comes_before_its_messages() -> None:
    _, _, f = make()
    c = Conn(f)
    c.send(b"CREATE q queue\nPUBLISH q :one\nPUBLISH q :two\n")
    c.take()
    c.send(b"SUBSCRIBE q\n")
    assert c.lines() == [b"+OK 1", b"MSG 1 1 q - 3", b"one", b"MSG 1 2 q - 3", b"two"]


def test_pull_wait_holds_later_commands_until_it_is_answered() -> None:
    clock, _, f = make()
    c = Conn(f)
    p = Conn(f)
    c.send(b"CREATE q queue\n")
    c.take()
    c.send(b"PULL q wait=1000\nPING\n")
    assert c.take() == b""
    # reading goes on while a PULL waits (to notice a client that goes away) ...
    assert c.transport.producerState == "producing"
    c.send(b"PING\n" * 8000)
    assert c.take() == b""
    assert c.transport.producerState == "producing"
    # ... until what queued behind it passes 64 KiB
    c.send(b"PING\n" * 6000)
    assert c.transport.producerState == "paused"
    p.send(b"PUBLISH q :late\n")
    assert c.lines() == [b"MSG 0 1 q - 4", b"late", b"+OK 1"]
    clock.advance(0)  # the backlog runs on the next turn
    assert c.lines() == [b"+PONG"] * 14001
    assert c.transport.producerState == "producing"


def test_pull_wait_times_out_with_zero() -> None:
    clock, _, f = make()
    c = Conn(f)
    c.send(b"CREATE q queue\nPULL q wait=500\nPING\n")
    assert c.lines() == [b"+OK created"]
    clock.advance(0.5)
    assert c.lines() == [b"+OK 0", b"+PONG"]


def test_fatal_framing_error_closes_and_nothing_after_is_run() -> None:
    _, broker, f = make(Config(max_payload=10))
    c = Conn(f)
    c.send(b"CREATE q queue\nPUBLISH q 11\nCREATE r queue\n")
    lines = c.lines()
    assert lines[0] == b"+OK created"
    assert lines[1].startswith(b"-ERR TOO_BIG")
    assert len(lines) == 2
    assert c.transport.disconnecting
    assert [o.name for o in broker.list_objects()] == ["q"]


def test_bad_frame_does_not_publish() -> None:
    _, broker, f = make()
    c = Conn(f)
    c.send(b"CREATE q queue\nPUBLISH q 3\nabcX\n")
    lines = c.lines()
    assert lines[1].startswith(b"-ERR BAD_FRAME")
    assert c.transport.disconnecting
    assert broker.queue("q").messages == 0


def test_line_too_long_closes() -> None:
    _, _, f = make(Config(max_line=64))
    c = Conn(f)
    c.send(b"PING " + b"x" * 100)
    assert c.lines()[0].startswith(b"-ERR LINE_TOO_LONG")
    assert c.transport.disconnecting


def test_errors_keep_the_connection_open() -> None:
    _, _, f = make()
    c = Conn(f)
    c.send(b"DELETE nope\nCREATE q queue\nCREATE q fanout\nACK 5\nPING\n")
    lines = c.lines()
    assert [line.split()[1] if line.startswith(b"-") else line for line in lines] == [
        b"NOT_FOUND",
        b"+OK created",
        b"EXISTS",
        b"NOT_FOUND",
        b"+PONG",
    ]
    assert not c.transport.disconnecting


def test_quit() -> None:
    _, _, f = make()
    c = Conn(f)
    c.send(b"QUIT\nPING\n")
    assert c.lines() == [b"+OK bye"]
    assert c.transport.disconnecting


def test_paused_consumer_is_skipped_and_resumed() -> None:
    _, _, f = make()
    a, b, p = Conn(f), Conn(f), Conn(f)
    p.send(b"CREATE q queue\n")
    p.take()
    a.send(b"SUBSCRIBE q\n")
    b.send(b"SUBSCRIBE q\n")
    a.take(), b.take()
    a.server.pauseProducing()  # a's socket buffer is full
    assert a.transport.producerState == "paused"
    for i in range(4):
        p.send(b"PUBLISH q :m%d\n" % i)
    assert a.take() == b""
    assert b.lines()[1::2] == [b"m0", b"m1", b"m2", b"m3"]
    p.send(b"PUBLISH q :m4\n")
    b.server.pauseProducing()
    p.send(b"PUBLISH q :m5\nPUBLISH q :m6\n")
    assert a.take() == b"" and b.lines()[1::2] == [b"m4"]
    a.server.resumeProducing()
    assert a.lines()[1::2] == [b"m5", b"m6"]
    assert a.transport.producerState == "producing"


def test_connection_loss_requeues_unacked_as_redelivered() -> None:
    _, _, f = make()
    a, p = Conn(f), Conn(f)
    p.send(b"CREATE q queue\nPUBLISH q :x\n")
    a.send(b"SUBSCRIBE q ack=manual\n")
    assert a.lines() == [b"+OK 1", b"MSG 1 1 q - 1", b"x"]
    a.close()
    p.take()
    p.send(b"PULL q\n")
    assert p.lines() == [b"MSG 0 1 q - redelivered=1 1", b"x", b"+OK 1"]


def test_connection_limit() -> None:
    _, _, f = make(Config(max_connections=1))
    Conn(f)
    second = Conn(f)
    assert second.greeting.startswith(b"-ERR LIMIT")
    assert second.transport.disconnecting


def test_deleting_a_queue_cancels_its_subscriptions() -> None:
    _, _, f = make()
    a, p = Conn(f), Conn(f)
    p.send(b"CREATE q queue\n")
    a.send(b"SUBSCRIBE q\n")
    a.take()
    p.send(b"DELETE q\n")
    assert a.lines() == [b"CANCEL 1 deleted"]


def test_protocol_class_is_the_factory_product() -> None:
    _, _, f = make()
    assert isinstance(Conn(f).proto, BrokerProtocol)


# ------------------------------------------------------------- runs of PUBLISH


def run_of(frame: bytes, n: int) -> bytes:
    """``n`` copies of a sized PUBLISH frame: the decoder makes a run of them."""
    return frame * n


def test_a_run_gets_one_reply_per_publish_each_in_its_place() -> None:
    _, _, f = make()
    c = Conn(f)
    c.send(b"CREATE q queue max-length=3 overflow=reject\r\n")
    c.send(b"PUBLISH q 1\r\nx\r\n" + run_of(b"PUBLISH q 1\r\ny\r\n", 4) + b"PING\r\n")
    assert c.lines() == [b"+OK created", b"+OK 1", b"+OK 1", b"+OK 1"] + [
        b"-ERR OVERFLOW q is full"
    ] * 2 + [b"+PONG"]
    c.send(run_of(b"PUBLISH nope 1\r\nx\r\n", 3) + b"PING\r\n")
    assert c.lines() == [b"-ERR NOT_FOUND nope"] * 3 + [b"+PONG"]


def test_a_run_is_delivered_with_consecutive_tags_and_redelivery_marks() -> None:
    _, _, f = make()
    pub, first, second = Conn(f), Conn(f), Conn(f)
    pub.send(b"CREATE q queue\r\n" + run_of(b"PUBLISH q 2\r\nab\r\n", 3))
    assert pub.lines() == [b"+OK created"] + [b"+OK 1"] * 3
    first.send(b"SUBSCRIBE q ack=manual prefetch=1\r\n")
    assert first.lines() == [b"+OK 1", b"MSG 1 1 q - 2", b"ab"]
    second.send(b"SUBSCRIBE q\r\n")
    assert second.lines() == [b"+OK 1", b"MSG 1 1 q - 2", b"ab", b"MSG 1 2 q - 2", b"ab"]
    first.close()  # its unacked message goes back, and on to the other consumer
    pub.send(run_of(b"PUBLISH q 3\r\nxyz\r\n", 3))
    assert second.lines() == [b"MSG 1 3 q - redelivered=1 2", b"ab"] + [
        b"MSG 1 %d q - 3" % tag if i % 2 == 0 else b"xyz" for tag in (4, 5, 6) for i in (0, 1)
    ]


def test_a_large_payload_in_a_run_is_written_as_is() -> None:
    _, _, f = make()
    pub, sub = Conn(f), Conn(f)
    big = bytes(range(256)) * 20
    pub.send(b"CREATE q queue\r\n")
    sub.send(b"SUBSCRIBE q\r\n")
    sub.take()
    pub.send(run_of(b"PUBLISH q %d\r\n%s\r\n" % (len(big), big), 3))
    assert sub.take() == b"".join(
        b"MSG 1 %d q - %d\r\n%s\r\n" % (t, len(big), big) for t in (1, 2, 3)
    )


def test_a_run_that_crashes_answers_each_publish() -> None:
    _, broker, f = make()
    c = Conn(f)
    c.send(b"CREATE q queue\r\nPUBLISH q 1\r\nx\r\n")
    c.take()

    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("boom")

    broker.publish_many = boom  # type: ignore[assignment]
    with logged() as events:
        c.send(run_of(b"PUBLISH q 1\r\nx\r\n", 2) + b"PING\r\n")
    assert c.lines() == [b"-ERR INTERNAL see the broker's log"] * 2 + [b"+PONG"]
    (failed,) = [e for e in events if "log_failure" in e]
    assert failed["log_failure"].check(RuntimeError)


class Recording(StringTransport):
    """A transport that also notes, in a list shared by several, who wrote what."""

    def __init__(self, name: str, log: list[tuple[str, bytes]]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def write(self, data: bytes) -> None:
        self.log.append((self.name, data))
        super().write(data)

    def writeSequence(self, seq: Any) -> None:
        self.write(b"".join(seq))


def test_a_read_is_answered_without_a_timer_deliveries_first() -> None:
    clock, _, f = make()
    log: list[tuple[str, bytes]] = []
    conns = {}
    for name in ("pub", "sub"):
        p = broker_protocol(f)
        p.makeConnection(Recording(name, log))
        conns[name] = p
    conns["pub"].dataReceived(b"CREATE q queue\r\n")
    conns["sub"].dataReceived(b"SUBSCRIBE q\r\n")
    del log[:]
    conns["pub"].dataReceived(b"PUBLISH q :hi\r\n")
    # written within the read (no callLater(0) per read), the MSG before the +OK
    assert log == [("sub", b"MSG 1 1 q - 2\r\nhi\r\n"), ("pub", b"+OK 1\r\n")]
    assert clock.getDelayedCalls() == []


# ---------------------------------------------------- a client that goes away


def test_a_waiting_pull_whose_client_resets_takes_nothing() -> None:
    for ack in (b"auto", b"manual"):
        _, broker, f = make()
        c, p = Conn(f), Conn(f)
        c.send(b"CREATE q queue\nPULL q wait=30000 ack=" + ack + b"\nPING\n")
        assert c.lines() == [b"+OK created"]
        assert c.transport.producerState == "producing"  # so the RST is seen
        c.close()  # connectionLost: the peer reset the connection
        p.send(b"PUBLISH q :kept\nPULL q\n")
        assert p.lines() == [b"+OK 1", b"MSG 0 1 q - 4", b"kept", b"+OK 1"]  # no redelivered=


def test_a_half_close_ends_a_waiting_pull_with_nothing_and_answers_the_rest() -> None:
    for ack in (b"auto", b"manual"):
        clock, broker, f = make()
        c, p = Conn(f), Conn(f)
        c.send(b"CREATE q queue\nPULL q wait=30000 ack=" + ack + b"\nPING\nPULL q wait=5000\n")
        assert c.lines() == [b"+OK created"]
        c.server.readConnectionLost()  # FIN: the client sends no more
        assert c.lines() == [b"+OK 0"]
        clock.advance(0)
        # the PULL after the EOF does not wait either; then the broker closes
        assert c.lines() == [b"+PONG", b"+OK 0"]
        assert c.transport.disconnecting
        c.close()
        p.send(b"PUBLISH q :kept\nPULL q\n")
        assert p.lines() == [b"+OK 1", b"MSG 0 1 q - 4", b"kept", b"+OK 1"]


def test_a_half_closed_client_gets_every_reply_then_the_broker_closes() -> None:
    _, _, f = make()
    c = Conn(f)
    c.send(b"PING\r\nCREATE q queue\r\nPUBLISH q :x\r\n")
    c.server.readConnectionLost()
    assert c.lines() == [b"+PONG", b"+OK created", b"+OK 1"]
    assert c.transport.disconnecting


def test_a_half_close_behind_an_auth_being_checked_waits_for_its_answer() -> None:
    clock, _, f = make(Config(auth_required=True, auth_fail_delay=1.0))
    c = Conn(f)
    c.send(b"AUTH bob nope\r\nPING\r\n")
    c.server.readConnectionLost()
    assert not c.transport.disconnecting
    clock.advance(1.0)
    assert c.lines() == [b"-ERR AUTH wrong user or password", b"+PONG"]
    assert now(lambda: c.transport.disconnecting)
    # reading is not resumed after the EOF (the transport would only read EOF again)
    assert c.transport.producerState == "paused"


# ------------------------------------------------------- reply amplification


class FillingTransport(StringTransport):
    """A StringTransport that, like a TCP transport, pauses its producer once more
    than ``limit`` bytes wait to be sent (nobody reads them until :meth:`drain`)."""

    limit = 64 * 1024
    full = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self._maybe_pause()

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        self._maybe_pause()

    def _maybe_pause(self) -> None:
        if self.producer is not None and len(self.io.getvalue()) > self.limit:
            if not self.full:
                self.full = True
                self.producer.pauseProducing()

    def drain(self) -> bytes:
        """The peer reads everything; the transport resumes its producer."""
        out: bytes = self.value()
        self.clear()
        if self.producer is not None and self.full:
            self.full = False
            self.producer.resumeProducing()
        return out


def test_replies_that_back_up_stop_the_reading_and_the_running_of_commands() -> None:
    clock, broker, f = make()
    c = Conn(f)
    c.transport = t = FillingTransport()
    c.proto.makeConnection(t)
    t.clear()
    c.send(b"".join(b"CREATE q%03d queue\n" % i for i in range(300)))
    t.drain()
    clock.advance(0)
    t.clear()
    one_list = len(b"".join(encode_frame(r) for r in broker.list_objects())) + len(b"+OK 300\r\n")
    assert one_list > 10_000
    c.send(b"LIST\n" * 2000 + b"PING\n")  # 10 KB asking for 30 MB
    assert t.producerState == "paused"  # stopped being read ...
    # ... and stopped running the LISTs: what is buffered is bounded
    assert len(t.value()) < 64 * 1024 + 2 * one_list
    out = bytearray()
    while True:
        out += t.drain()
        clock.advance(0)
        if out.endswith(b"+PONG\r\n"):
            break
        assert len(t.value()) < 64 * 1024 + 2 * one_list
    assert out.count(b"+OK 300\r\n") == 2000
    assert t.producerState == "producing"
    c.send(b"PING\n")
    assert t.value() == b"+PONG\r\n"


def test_a_half_close_behind_congested_replies_answers_them_all_then_closes() -> None:
    clock, broker, f = make()
    c = Conn(f)
    c.transport = t = FillingTransport()
    c.proto.makeConnection(t)
    t.clear()
    c.send(b"".join(b"CREATE q%03d queue\n" % i for i in range(300)))
    t.drain()
    clock.advance(0)
    t.clear()
    c.send(b"LIST\n" * 50 + b"PING\n")
    c.server.readConnectionLost()
    assert not t.disconnecting
    out = bytearray()
    while not now(lambda: t.disconnecting):
        out += t.drain()
        clock.advance(0)
    out += t.value()
    assert out.count(b"+OK 300\r\n") == 50
    assert out.endswith(b"+PONG\r\n")


def test_the_connection_counts_its_bytes_in_and_out() -> None:
    _, _, f = make()
    c = Conn(f)
    sent = b"CREATE q queue\r\nSUBSCRIBE q\r\n"
    c.send(sent)
    c.send(b"PUBLISH q 5\r\nhel")
    c.send(b"lo\r\nPUBLISH q :x\r\nPING\r\n")
    sent += b"PUBLISH q 5\r\nhello\r\nPUBLISH q :x\r\nPING\r\n"
    written = c.greeting + c.take()
    assert b"MSG 1 2 q - 1" in written
    report = c.server.report()
    assert (report.bytes_in, report.bytes_out) == (len(sent), len(written))
