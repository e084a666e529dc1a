"""STOMP over WebSocket (mbroker.server.stomp_ws) in memory: Autobahn's own client and
the server protocol joined by twisted.test.iosim, the broker on a task.Clock.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any, cast

import pytest
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.types import ConnectionResponse
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python import usage
from twisted.test.iosim import FakeTransport, IOPump, connect

from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.service import BrokerService
from mbroker.server.stomp import StompFactory, StompProtocol
from mbroker.server.stomp_ws import (
    MAX_HANDSHAKE,
    MESSAGE_BYTES,
    StompWebSocketFactory,
    StompWebSocketProtocol,
    WebSocketTransport,
)
from mbroker.server.tap import Options, makeService
from mbroker.wire.stomp import SERVER_COMMANDS, Frame, StompDecoder, encode

ADDR = IPv4Address("TCP", "127.0.0.1", 4242)
ALL = ["v12.stomp", "v11.stomp", "v10.stomp"]


class Client(WebSocketClientProtocol):
    """Autobahn's client, keeping what it was told."""

    def __init__(self) -> None:
        super().__init__()
        self.response: ConnectionResponse | None = None
        self.opened = False
        self.messages: list[tuple[bytes, bool]] = []
        self.closed: tuple[bool, int | None, str | None] | None = None

    def onConnect(self, response: ConnectionResponse) -> None:
        self.response = response

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = (wasClean, code, reason)


class Transport(FakeTransport):
    """iosim's transport, remembering whether reading is paused."""

    reading_paused = False

    def pauseProducing(self) -> None:
        self.reading_paused = True

    def resumeProducing(self) -> None:
        self.reading_paused = False


def reading_paused(t: Transport) -> bool:
    return t.reading_paused


class Conn:
    def __init__(self, setup: Setup, protocols: list[str] | None, path: str = "/") -> None:
        cf = WebSocketClientFactory("ws://127.0.0.1:4242" + path, protocols=protocols or [])
        cf.protocol = Client
        self.server = server = cast(StompWebSocketProtocol, setup.ws.buildProtocol(ADDR))
        self.client = client = cast(Client, cf.buildProtocol(ADDR))
        self.st = Transport(server, isServer=True, hostAddress=ADDR, peerAddress=ADDR)
        self.ct = Transport(client, isServer=False, hostAddress=ADDR, peerAddress=ADDR)
        self.pump: IOPump = connect(server, self.st, client, self.ct, clock=setup.clock)
        self.decoder = StompDecoder(commands=SERVER_COMMANDS)

    def send(self, data: bytes, binary: bool = False) -> None:
        self.client.sendMessage(data, isBinary=binary)
        self.pump.flush()

    def frame(self, command: str, body: bytes = b"", binary: bool = False, **h: str) -> None:
        pairs = tuple((k.replace("_", "-"), v) for k, v in h.items())
        self.send(encode(Frame(command, pairs, body), "1.2"), binary)

    def frames(self) -> list[tuple[Frame, bool]]:
        self.pump.flush()  # (what other connections made it write)
        out: list[tuple[Frame, bool]] = []
        for payload, binary in self.client.messages:
            out.extend((f, binary) for f in self.decoder.feed(payload) if isinstance(f, Frame))
        self.client.messages.clear()
        return out

    def connect(self) -> None:
        self.frame("CONNECT", accept_version="1.2", host="/")
        [(f, _)] = self.frames()
        assert f.command == "CONNECTED" and f.header("version") == "1.2"


class Setup:
    def __init__(self, **config: Any) -> None:
        self.clock = Clock()
        self.config = Config(**config)
        self.broker = Broker(self.clock, self.config)
        self.stomp = StompFactory(self.broker, self.config, self.clock)
        self.stomp.declare_exchanges()
        self.ws = StompWebSocketFactory(self.stomp)

    def conn(self, protocols: list[str] | None = ALL, path: str = "/") -> Conn:
        return Conn(self, protocols, path)


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    # Autobahn's timers run on txaio's loop: the test's clock, not the global reactor.
    s = Setup()
    monkeypatch.setattr("txaio.config.loop", s.clock)
    yield s


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (ALL, "v12.stomp"),
        (["v10.stomp", "v11.stomp"], "v11.stomp"),
        (["x.other", "v10.stomp"], "v10.stomp"),
    ],
)
def test_the_newest_stomp_subprotocol_offered_is_chosen(
    setup: Setup, offered: list[str], chosen: str
) -> None:
    c = setup.conn(offered)
    assert c.client.opened
    assert c.client.response is not None and c.client.response.protocol == chosen
    c.connect()


@pytest.mark.parametrize("path", ["/ws", "/stomp/websocket?x=1"])
def test_any_path_is_served(setup: Setup, path: str) -> None:
    c = setup.conn(path=path)  # (RabbitMQ's Web-STOMP answers on /ws)
    c.connect()


def test_a_client_offering_no_subprotocol_speaks_plain_stomp(setup: Setup) -> None:
    c = setup.conn(None)
    assert c.client.opened
    c.connect()


def test_a_client_offering_only_other_subprotocols_is_refused(setup: Setup) -> None:
    c = setup.conn(["mqtt"])
    assert not c.client.opened
    assert c.client.closed is not None
    assert setup.broker.connections == 0


def test_stomp_in_text_frames_reaches_another_websocket(setup: Setup) -> None:
    sub, pub = setup.conn(), setup.conn()
    sub.connect()
    pub.connect()
    sub.frame("SUBSCRIBE", destination="/queue/x", id="0", receipt="r")
    [(receipt, binary)] = sub.frames()
    assert receipt.command == "RECEIPT" and not binary
    pub.frame("SEND", b"hello", destination="/queue/x")
    [(message, binary)] = sub.frames()
    assert message.command == "MESSAGE" and message.body == b"hello"
    assert message.header("destination") == "/queue/x"
    assert not binary  # a text client is answered in text frames


def test_frames_split_over_messages_and_many_in_one_message(setup: Setup) -> None:
    c = setup.conn()
    connect = encode(Frame("CONNECT", (("accept-version", "1.2"), ("host", "/"))), "1.2")
    c.send(connect[:5])
    c.send(connect[5:])
    assert [f.command for f, _ in c.frames()] == ["CONNECTED"]
    both = encode(Frame("SUBSCRIBE", (("destination", "/queue/y"), ("id", "1"))), "1.2")
    for body in (b"a", b"b", b"c"):
        both += encode(Frame("SEND", (("destination", "/queue/y"),), body), "1.2")
    c.send(both)
    assert [f.body for f, _ in c.frames()] == [b"a", b"b", b"c"]


def test_binary_bodies_travel_in_binary_frames(setup: Setup) -> None:
    text_sub, bin_pub = setup.conn(), setup.conn()
    text_sub.connect()
    bin_pub.frame("CONNECT", binary=True, accept_version="1.2", host="/")
    [(connected, binary)] = bin_pub.frames()
    assert connected.command == "CONNECTED" and binary  # it spoke binary: so do we
    text_sub.frame("SUBSCRIBE", destination="/queue/b", id="0")
    body = bytes(range(256))
    bin_pub.frame("SEND", body, binary=True, destination="/queue/b", receipt="r")
    [(message, binary)] = text_sub.frames()
    assert message.body == body
    assert binary  # not UTF-8: a text frame would kill the browser's socket
    [(receipt, binary)] = bin_pub.frames()
    assert receipt.command == "RECEIPT" and binary


def test_a_stomp_error_is_sent_then_the_websocket_is_closed(setup: Setup) -> None:
    c = setup.conn()
    c.send(b"NOPE\n\n\0")
    [(error, _)] = c.frames()
    assert error.command == "ERROR" and error.header("message")
    assert c.client.closed is not None and c.client.closed[1] == 1000
    assert setup.broker.connections == 0


def test_a_message_bigger_than_the_largest_frame_is_refused(monkeypatch: Any) -> None:
    s = Setup(max_payload=1024)
    monkeypatch.setattr("txaio.config.loop", s.clock)
    c = s.conn()
    c.connect()
    c.send(b"x" * (s.ws.maxMessagePayloadSize + 1))
    assert c.client.closed is not None
    assert c.client.closed[1] == 1009  # (message too big)
    assert s.broker.connections == 0


def test_a_body_over_max_payload_gets_a_stomp_error(monkeypatch: Any) -> None:
    s = Setup(max_payload=1024)
    monkeypatch.setattr("txaio.config.loop", s.clock)
    c = s.conn()
    c.connect()
    c.frame("SEND", b"x" * 2000, destination="/queue/big")
    [(error, _)] = c.frames()
    assert error.command == "ERROR"
    assert c.client.closed is not None


def test_an_endless_opening_handshake_is_dropped(setup: Setup) -> None:
    server = cast(StompWebSocketProtocol, setup.ws.buildProtocol(ADDR))
    t = Transport(server, isServer=True, hostAddress=ADDR, peerAddress=ADDR)
    server.makeConnection(t)
    server.dataReceived(b"GET / HTTP/1.1\r\n")
    for _ in range(MAX_HANDSHAKE // 1000 + 1):
        if t.disconnecting:
            break
        server.dataReceived(b"X-Junk: " + b"j" * 990 + b"\r\n")
    assert t.disconnecting
    assert len(server.data) <= MAX_HANDSHAKE


def test_closing_the_websocket_closes_the_stomp_session(setup: Setup) -> None:
    c = setup.conn()
    c.connect()
    assert setup.broker.connections == 1
    c.client.sendClose(1000)
    c.pump.flush()
    assert setup.broker.connections == 0
    assert c.server.stomp is None


def test_the_connection_limit_holds_for_websockets(monkeypatch: Any) -> None:
    s = Setup(max_connections=1)
    monkeypatch.setattr("txaio.config.loop", s.clock)
    first, second = s.conn(), s.conn()
    first.connect()
    assert not second.client.opened  # (refused in the handshake: 503)
    assert second.client.closed is not None


def test_the_broker_wide_connection_limit_is_a_stomp_error(monkeypatch: Any) -> None:
    s = Setup(max_connections=1)
    monkeypatch.setattr("txaio.config.loop", s.clock)
    tcp = s.stomp.buildProtocol(ADDR)  # a STOMP client over TCP holds the one slot
    assert tcp is not None
    tcp.makeConnection(StringTransport())
    c = s.conn()
    [(error, _)] = c.frames()
    assert error.command == "ERROR" and "at most 1" in (error.header("message") or "")
    assert c.client.closed is not None


def test_a_websocket_that_does_not_read_stops_deliveries(setup: Setup) -> None:
    sub, pub = setup.conn(), setup.conn()
    sub.connect()
    pub.connect()
    sub.frame("SUBSCRIBE", destination="/queue/slow", id="0")
    stomp = cast(StompProtocol, sub.server.stomp)
    assert isinstance(cast(object, stomp.transport), WebSocketTransport)
    # the STOMP connection is the socket's push producer, as over TCP
    assert (cast(object, sub.st.producer), sub.st.streamingProducer) == (stomp, True)
    stomp.pauseProducing()  # (what the socket does when its buffer is full)
    assert reading_paused(sub.st)  # and we stop reading from it
    for n in range(50):
        pub.frame("SEND", b"m%d" % n, destination="/queue/slow")
    assert sub.frames() == []
    assert setup.broker.queue("slow").messages == 50  # held by the broker, not in buffers
    stomp.resumeProducing()
    sub.pump.flush()
    assert not reading_paused(sub.st)
    assert [f.body for f, _ in sub.frames()] == [b"m%d" % n for n in range(50)]


def test_stomp_ws_option_is_repeatable_and_shares_the_stomp_factory() -> None:
    options = Options()
    options.parseOptions(
        ["--memory", "--stomp", "tcp:0", "--stomp-ws", "tcp:0", "--stomp-ws", "ssl:0"]
    )
    assert options["stomp-ws"] == ["tcp:0", "ssl:0"]
    service = makeService(options)
    assert isinstance(service, BrokerService)
    assert service.stomp_ws_endpoints == ["tcp:0", "ssl:0"]
    # (made on start: here on a memory reactor)
    service = BrokerService(MemoryReactorClock(), Config(), [], None, stomp_ws_endpoints=["x"])
    service._make_broker(None)
    assert isinstance(service.stomp_ws_factory, StompWebSocketFactory)
    assert service.stomp_ws_factory.stomp_factory is service.stomp_factory


def test_stomp_ws_without_autobahn_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "autobahn" else real(name)
    )
    with pytest.raises(usage.UsageError, match=r"mbroker\[ws\]"):
        Options().parseOptions(["--memory", "--stomp-ws", "tcp:0"])
    Options().parseOptions(["--memory"])  # (without --stomp-ws, Autobahn is not needed)


def test_a_burst_goes_in_messages_of_whole_frames(setup: Setup) -> None:
    sub, pub = setup.conn(), setup.conn()
    sub.connect()
    pub.connect()
    sub.frame("SUBSCRIBE", destination="/queue/burst", id="0")
    stomp = cast(StompProtocol, sub.server.stomp)
    stomp.pauseProducing()
    body = b"\0" + b"b" * (16 * 1024) + b"\n\n"  # (NULs and blank lines in a body too)
    for _ in range(100):
        pub.frame("SEND", body, binary=True, destination="/queue/burst")
    stomp.resumeProducing()
    sub.pump.flush()
    messages = [payload for payload, _ in sub.client.messages]
    assert len(messages) > 10  # not one 1.6 MB message
    count = 0
    for payload in messages:
        assert len(payload) <= MESSAGE_BYTES + len(body) + 200
        assert payload.endswith(b"\0")
        # each message alone holds whole frames (as stomp.js 2 parses them)
        frames = StompDecoder(commands=SERVER_COMMANDS).feed(payload)
        assert all(isinstance(f, Frame) and f.body == body for f in frames), frames
        count += len(frames)
    assert count == 100
