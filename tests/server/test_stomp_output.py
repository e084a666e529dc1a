"""When a STOMP connection's output is written, and how much work a frame costs.

A read that delivers messages to other connections (STOMP or native) writes them when
it is done, in one write each, not a reactor turn later: the latency of one message at
a time depends on it.
"""

from __future__ import annotations

import pytest

from tests.helpers.stomp import Setup


@pytest.mark.parametrize("shared", [True, False])
def test_a_send_is_written_to_the_subscriber_by_the_end_of_the_read(shared: bool) -> None:
    setup = Setup(shared=shared)
    sub, pub = setup.peer(), setup.peer()
    sub.send("SUBSCRIBE", id="s", destination="/queue/q")
    pub.send("SEND", b"one", destination="/queue/q")  # no clock.advance: within the read
    assert [f.body for f in sub.frames()] == [b"one"]
    pub.raw(b"SEND\ndestination:/queue/q\n\ntwo\x00SEND\ndestination:/queue/q\n\nthree\x00")
    assert [f.body for f in sub.frames()] == [b"two", b"three"]


def test_a_native_publish_reaches_a_stomp_subscriber_by_the_end_of_its_read() -> None:
    setup = Setup()
    sub = setup.peer()
    sub.send("SUBSCRIBE", id="s", destination="/queue/q")
    native = setup.native()
    native.send(b"PUBLISH q :hello\n")
    assert native.lines() == [b"+OK 1"]
    assert [f.body for f in sub.frames()] == [b"hello"]


def test_a_stomp_send_reaches_a_native_subscriber_by_the_end_of_its_read() -> None:
    setup = Setup()
    native = setup.native()
    native.send(b"CREATE q queue\nSUBSCRIBE q\n")
    assert native.lines() == [b"+OK created", b"+OK 1"]
    pub = setup.peer()
    pub.send("SEND", b"hi", destination="/queue/q")
    assert native.lines() == [b"MSG 1 1 q - 2", b"hi"]


@pytest.mark.parametrize("shared", [True, False])
def test_output_queued_outside_a_read_waits_for_the_end_of_the_turn(shared: bool) -> None:
    setup = Setup(shared=shared)
    sub = setup.peer()
    sub.send("SUBSCRIBE", id="s", destination="/queue/q")
    setup.broker.publish("q", "", b"from a timer")
    assert sub.transport.value() == b""
    setup.clock.advance(0)
    assert [f.body for f in sub.frames()] == [b"from a timer"]


def test_a_queue_deleted_between_sends_is_made_again() -> None:
    setup = Setup()
    pub = setup.peer()
    pub.send("SEND", b"1", destination="/queue/q")
    setup.broker.delete("q")
    pub.send("SEND", b"2", destination="/queue/q", receipt="r")
    assert pub.one("RECEIPT").header("receipt-id") == "r"
    assert setup.broker.queue("q").durable and setup.messages("q") == 1


def test_a_send_to_a_queue_name_held_by_an_exchange_goes_to_the_exchange() -> None:
    setup = Setup()
    native = setup.native()
    native.send(b"CREATE x fanout\nCREATE q queue\nBIND q x\n")
    pub = setup.peer()
    pub.send("SEND", b"via x", destination="/queue/x", receipt="r")
    assert pub.one("RECEIPT").header("receipt-id") == "r"
    assert setup.messages("q") == 1
