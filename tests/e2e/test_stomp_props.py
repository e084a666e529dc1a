"""Message properties across STOMP and the native protocol, end to end: the real
``stomp.py`` client against ``twistd -n mbroker --stomp``, with a native
:class:`~tests.helpers.lineclient.LineClient` on the same broker (contract section 7;
the mapping is :mod:`mbroker.server.stomp_props`)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stomp  # type: ignore[import-untyped]

from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.lineclient import LineClient, ok

STOMP = ("--stomp", "tcp:0:interface=127.0.0.1")
WAIT = 10.0
_names = iter(range(10**9))


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}-{time.monotonic_ns()}"


class Frames(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.errors: queue.Queue[Any] = queue.Queue()
        self.receipts: queue.Queue[str] = queue.Queue()

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_error(self, frame: Any) -> None:
        self.errors.put(frame)

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])


def connect(broker: BrokerProcess, version: str = "1.2") -> tuple[Any, Frames]:
    cls = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}
    conn = cls[version]([(broker.host, broker.stomp_port)], auto_decode=False)
    frames = Frames()
    conn.set_listener("t", frames)
    conn.connect(wait=True)
    return conn, frames


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = start_broker(tmp_path_factory.mktemp("stomp-props"), *STOMP, memory_only=True)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def native(broker: BrokerProcess) -> Iterator[LineClient]:
    with broker.connect() as c:
        yield c


def test_stomp_headers_reach_a_native_subscriber(broker: BrokerProcess, native: LineClient) -> None:
    q = unique("q")
    ok(native, f"CREATE {q} queue")
    ok(native, f"SUBSCRIBE {q}")
    conn, frames = connect(broker)
    conn.send(
        f"/queue/{q}",
        b"hello",
        content_type="text/plain",
        headers={
            "correlation-id": "c 1",
            "x-trace": "a:b%c",
            "my key": "v",
            "priority": "4",
            "amqp-message-id": "m-1",
            "receipt": "r1",
        },
    )
    assert frames.receipts.get(timeout=WAIT) == "r1"
    m = native.read_msg(WAIT)
    assert m.payload == b"hello"
    words = m.header.split()[5:-1]
    assert words[:2] == [b"id=m-1", b"priority=4"]
    assert sorted(words[2:]) == sorted(
        [
            b"h.content-type=text/plain",
            b"h.correlation-id=c%201",
            b"h._." + b"my key".hex().encode() + b"=v",
            b"h.x-trace=a:b%25c",
        ]
    )
    conn.disconnect()


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_native_headers_reach_a_stomp_subscriber(
    broker: BrokerProcess, native: LineClient, version: str
) -> None:
    ex = unique("x")
    ok(native, f"CREATE {ex} fanout")
    conn, frames = connect(broker, version)
    kw = {} if version == "1.0" else {"id": "s"}
    conn.subscribe(f"/exchange/{ex}", ack="auto", headers={"receipt": "sub"}, **kw)
    assert frames.receipts.get(timeout=WAIT) == "sub"
    ok(
        native,
        f"PUBLISH {ex} id=n-1 priority=2 h.reply-to=/queue/r h.note=a%0Ab h.destination=x :body",
    )
    msg = frames.messages.get(timeout=WAIT)
    assert msg.body == b"body"
    h = msg.headers
    assert (h["amqp-message-id"], h["priority"], h["reply-to"]) == ("n-1", "2", "/queue/r")
    assert h["destination"] == f"/exchange/{ex}"  # the frame's own, not the message's
    if version == "1.0":
        assert "note" not in h  # a newline cannot be written in STOMP 1.0
    else:
        assert h["note"] == "a\nb"
    conn.disconnect()


def test_stomp_to_stomp_keeps_headers(broker: BrokerProcess) -> None:
    q = unique("q")
    conn, frames = connect(broker)
    conn.subscribe(f"/queue/{q}", id="s", ack="client-individual")
    conn.send(f"/queue/{q}", b"x", headers={"x-a": "1", "x b/c": "2", "priority": "9"})
    msg = frames.messages.get(timeout=WAIT)
    assert (msg.headers["x-a"], msg.headers["x b/c"], msg.headers["priority"]) == ("1", "2", "9"), (
        msg.headers
    )
    conn.nack(msg.headers["ack"])  # redelivered keeps them
    again = frames.messages.get(timeout=WAIT)
    assert again.headers["x-a"] == "1" and again.headers["redelivered"] == "true"
    conn.ack(again.headers["ack"])
    conn.disconnect()


def test_a_bad_priority_is_an_error_and_nothing_is_sent(
    broker: BrokerProcess, native: LineClient
) -> None:
    q = unique("q")
    ok(native, f"CREATE {q} queue")
    conn, frames = connect(broker)
    conn.send(f"/queue/{q}", b"x", headers={"priority": "10"})
    err = frames.errors.get(timeout=WAIT)
    assert "bad priority" in err.headers["message"]
    data, status = native.request(f"STATS {q}")
    assert b"STAT messages 0" in data, data


def test_request_reply_through_a_temp_queue(broker: BrokerProcess, native: LineClient) -> None:
    """A STOMP requester's reply-to reaches the responder as a /reply-queue/ it can
    answer, from STOMP as from the native protocol."""
    requests = unique("requests")
    responder, rframes = connect(broker)
    responder.subscribe(f"/queue/{requests}", id="r", ack="auto", headers={"receipt": "s"})
    assert rframes.receipts.get(timeout=WAIT) == "s"
    requester, qframes = connect(broker)
    requester.send(
        f"/queue/{requests}",
        b"what time is it?",
        headers={"reply-to": "/temp-queue/t", "correlation-id": "c-7"},
    )
    request = rframes.messages.get(timeout=WAIT)
    reply_to = request.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/amq.gen-"), request.headers
    assert request.headers["correlation-id"] == "c-7"
    responder.send(reply_to, b"noon", headers={"correlation-id": "c-7"})
    answer = qframes.messages.get(timeout=WAIT)
    assert (answer.body, answer.headers["correlation-id"]) == (b"noon", "c-7")
    assert answer.headers["subscription"] == "/temp-queue/t"
    # a native responder answers the same queue by its name
    queue_name = reply_to.removeprefix("/reply-queue/")
    ok(native, f"PUBLISH {queue_name} h.correlation-id=c-8 :one")
    answer = qframes.messages.get(timeout=WAIT)
    assert (answer.body, answer.headers["correlation-id"]) == (b"one", "c-8")
    requester.disconnect()
    responder.disconnect()
