"""Heartbeats (contract section 7) on a StringTransport with a fake clock: HEARTBEAT's
reply and limits, the pushed PING after MS of silence, the close after 3 x MS unheard."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from mbroker.config import Config
from mbroker.server.factory import BrokerFactory
from tests.helpers.conn import Conn, make


def _advance(clock: Clock, seconds: float) -> None:
    """Let ``seconds`` pass in steps of 0.05 s, as a real clock does (``Clock.advance``
    runs a call due in the middle of a long step at the step's end)."""
    start = clock.seconds()
    for k in range(1, round(seconds / 0.05) + 1):
        clock.advance(round(start + k * 0.05, 6) - clock.seconds())


def _heartbeat(ms: int = 1000) -> tuple[Clock, BrokerFactory, Conn]:
    clock, _, f = make(Config())
    c = Conn(f)
    c.send(b"HEARTBEAT %d\r\n" % ms)
    assert c.lines() == [b"+OK %d" % ms]
    return clock, f, c


@pytest.mark.parametrize("ms", [b"0", b"1000", b"60000", b"3600000"])
def test_heartbeat_replies_ok_with_its_interval(ms: bytes) -> None:
    _, _, f = make(Config())
    c = Conn(f)
    c.send(b"HEARTBEAT " + ms + b"\r\n")
    assert c.lines() == [b"+OK " + ms]


@pytest.mark.parametrize(
    "args", [b"", b" 1", b" 999", b" 3600001", b" -5", b" x", b" 1000 2000", b" ms=1000"]
)
def test_a_bad_interval_is_bad_args_and_the_connection_goes_on(args: bytes) -> None:
    _, _, f = make(Config())
    c = Conn(f)
    c.send(b"HEARTBEAT" + args + b"\r\nPING\r\n")
    lines = c.lines()
    assert lines[0].startswith(b"-ERR BAD_ARGS"), lines
    assert lines[1:] == [b"+PONG"]


def test_without_heartbeat_nothing_is_pushed() -> None:
    clock, _, f = make(Config())
    c = Conn(f)
    clock.advance(3600 * 5)
    assert c.take() == b"" and not c.transport.disconnecting


def test_ping_is_pushed_after_ms_of_silence_and_pong_gets_no_reply() -> None:
    clock, _, c = _heartbeat(1000)
    _advance(clock, 0.9)
    assert c.take() == b""
    # the +OK went out at 0 s: the first PING comes 1 to 1.5 s after it
    _advance(clock, 0.6)
    assert c.take() == b"PING\r\n"
    c.send(b"PONG\r\n")
    assert c.take() == b""
    # silence from the server since the PING: the next one after exactly 1 s
    _advance(clock, 0.95)
    assert c.take() == b""
    _advance(clock, 0.05)
    assert c.take() == b"PING\r\n"
    assert not c.transport.disconnecting


def test_client_ping_is_still_answered_pong() -> None:
    _, _, c = _heartbeat(1000)
    c.send(b"PING\r\n")
    assert c.lines() == [b"+PONG"]


def test_output_to_the_client_postpones_the_ping() -> None:
    clock, _, c = _heartbeat(2000)
    c.send(b"CREATE q queue\r\nSUBSCRIBE q\r\n")
    c.take()
    for _ in range(10):  # a message every 0.5 s: the server is never silent for 2 s
        _advance(clock, 0.5)
        c.send(b"PUBLISH q :x\r\n")
        assert b"PING" not in c.take()


def test_silence_for_three_intervals_closes_with_limit_heartbeat() -> None:
    clock, _, c = _heartbeat(1000)
    _advance(clock, 2.9)
    assert c.take().count(b"PING\r\n") == 2
    assert not c.transport.disconnecting
    _advance(clock, 0.1)
    assert c.lines() == [b"-ERR LIMIT heartbeat"]
    assert c.transport.disconnecting


def test_any_bytes_count_as_life() -> None:
    clock, _, c = _heartbeat(1000)
    for _ in range(10):
        _advance(clock, 2.5)
        c.send(b"\r\n")  # an empty line: no command, but a sign of life
    assert not c.transport.disconnecting
    _advance(clock, 3.0)
    assert c.take().endswith(b"-ERR LIMIT heartbeat\r\n")


def test_heartbeat_zero_stops_it() -> None:
    clock, _, c = _heartbeat(1000)
    c.send(b"HEARTBEAT 0\r\n")
    assert c.lines() == [b"+OK 0"]
    clock.advance(3600)
    assert c.take() == b"" and not c.transport.disconnecting


def test_a_new_interval_replaces_the_old_one() -> None:
    clock, _, c = _heartbeat(1000)
    c.send(b"HEARTBEAT 10000\r\n")
    assert c.lines() == [b"+OK 10000"]
    _advance(clock, 9)
    assert c.take() == b""
    _advance(clock, 20.9)
    assert not c.transport.disconnecting
    _advance(clock, 0.1)
    assert c.take().endswith(b"-ERR LIMIT heartbeat\r\n")


def test_heartbeat_is_refused_before_auth_but_pong_is_not() -> None:
    clock, _, f = make(Config(auth_required=True))
    c = Conn(f)
    c.send(b"HEARTBEAT 1000\r\nPONG\r\nPING\r\n")
    lines = c.lines()
    assert lines[0].startswith(b"-ERR NO_AUTH") and lines[1:] == [b"+PONG"]


def test_a_peer_that_takes_nothing_is_aborted_after_one_more_interval() -> None:
    clock, _, c = _heartbeat(1000)
    aborted: list[bool] = []
    c.transport.abortConnection = lambda: aborted.append(True)  # type: ignore[method-assign]
    _advance(clock, 3.0)
    assert c.transport.disconnecting and not aborted  # the goodbye is on its way
    _advance(clock, 1.0)  # still not closed (a half-open peer takes nothing)
    assert aborted == [True]


def test_the_unacked_messages_of_a_silent_peer_go_back_to_their_queue() -> None:
    clock, _, f = make(Config())
    c = Conn(f)
    other = Conn(f)
    c.send(b"CREATE q queue\r\nHEARTBEAT 1000\r\nSUBSCRIBE q ack=manual\r\nPUBLISH q :job\r\n")
    assert b"MSG 1 1 q - 3\r\njob\r\n" in c.take()
    _advance(clock, 3.0)
    assert c.take().endswith(b"-ERR LIMIT heartbeat\r\n")
    c.close()  # the transport's loss, as the close ends it
    other.send(b"PULL q\r\n")
    assert other.lines() == [b"MSG 0 1 q - redelivered=1 3", b"job", b"+OK 1"]


def test_a_waiting_pull_of_a_silent_peer_ends_before_the_goodbye() -> None:
    clock, _, f = make(Config())
    c = Conn(f)
    c.send(b"CREATE q queue\r\nHEARTBEAT 1000\r\nPULL q wait=600000\r\n")
    assert c.lines() == [b"+OK created", b"+OK 1000"]
    _advance(clock, 3.0)
    assert c.lines() == [b"PING", b"PING", b"+OK 0", b"-ERR LIMIT heartbeat"]
    assert c.transport.disconnecting


def test_with_an_idle_timeout_a_silent_subscriber_is_still_closed() -> None:
    # the idle timeout spares a subscriber, the heartbeat does not spare a silent one
    clock, _, f = make(Config(idle_timeout=1.0))
    c = Conn(f)
    c.send(b"CREATE q queue\r\nSUBSCRIBE q\r\nHEARTBEAT 1000\r\n")
    c.take()
    _advance(clock, 3.0)
    assert c.take().endswith(b"-ERR LIMIT heartbeat\r\n")


def test_a_write_just_after_a_ping_delays_the_next_by_at_most_half_an_interval() -> None:
    clock, _, c = _heartbeat(1000)
    c.send(b"CREATE q queue\r\n")
    c.take()
    _advance(clock, 1.5)
    assert c.take() == b"PING\r\n"  # 1.5 s after the +OK created
    _advance(clock, 0.05)
    c.send(b"PING\r\n")
    assert c.take() == b"+PONG\r\n"  # a write 0.05 s after the PING
    _advance(clock, 1.4)
    assert c.take() == b""
    _advance(clock, 0.1)  # 1.55 s after the write at most
    assert c.take() == b"PING\r\n"
