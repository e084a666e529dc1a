"""STOMP over WebSocket end to end: Autobahn's own Twisted WebSocket client against
``twistd -n mbroker --stomp-ws tcp:… --stomp-ws ssl:…``, with native clients beside it.

Every wait has a deadline; nothing sleeps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import attrs
import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IPushProducer

from mbroker.wire.stomp import SERVER_COMMANDS, Frame, StompDecoder, encode
from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.lineclient import LineClient
from tests.helpers.tls import Pki, make_pki

WAIT = 10.0
ALL = ["v12.stomp", "v11.stomp", "v10.stomp"]
_WSS_LISTENING = re.compile(rb"mbroker STOMP-WS listening on [^ ]*:(\d+)\s*$")


@attrs.define
class WsBroker:
    process: BrokerProcess
    pki: Pki
    wss_port: int


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WsBroker]:
    tmp = tmp_path_factory.mktemp("stomp-ws")
    pki = make_pki(tmp)
    wss = f"ssl:0:privateKey={pki.server_key}:certKey={pki.server_cert}:interface=127.0.0.1"
    process = start_broker(
        tmp,
        "--stomp-ws",
        "tcp:0:interface=127.0.0.1",
        "--stomp-ws",
        wss,
        memory_only=True,
    )
    try:
        ports = {int(m.group(1)) for m in map(_WSS_LISTENING.search, process.lines) if m}
        deadline = time.monotonic() + 30
        while len(ports) < 2 and time.monotonic() < deadline:
            m = process.wait_for_line(_WSS_LISTENING, deadline - time.monotonic())
            ports.add(int(m.group(1)))
        ports.discard(process.stomp_ws_port)
        yield WsBroker(process, pki, ports.pop())
    finally:
        process.stop()


class WsStomp(WebSocketClientProtocol):
    """A STOMP client over Autobahn's WebSocket client: frames in, frames out."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[None] = Deferred()
        self.decoder = StompDecoder(commands=SERVER_COMMANDS)
        self.frames: list[Frame] = []
        self.waiting: Deferred[None] | None = None
        self.close_code: int | None = None
        self.biggest = 0  # the largest WebSocket message received

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.biggest = max(self.biggest, len(payload))
        self.frames.extend(f for f in self.decoder.feed(payload) if isinstance(f, Frame))
        self._wake()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code = code
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"WebSocket refused: {code} {reason}"))
        self._wake()

    def _wake(self) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.callback(None)

    def send(self, command: str, body: bytes = b"", binary: bool = False, **headers: str) -> None:
        pairs = tuple((k.replace("_", "-"), v) for k, v in headers.items())
        self.sendMessage(encode(Frame(command, pairs, body), "1.2"), isBinary=binary)

    async def frame(self) -> Frame:
        deadline = time.monotonic() + WAIT
        while not self.frames:
            assert self.close_code is None, f"closed ({self.close_code})"
            assert time.monotonic() < deadline, "no frame in time"
            self.waiting = d = Deferred[None]()
            d.addTimeout(deadline - time.monotonic(), reactor)
            await d
        return self.frames.pop(0)

    async def connect(self) -> Frame:
        self.send("CONNECT", accept_version="1.0,1.1,1.2", host="/")
        connected = await self.frame()
        assert connected.command == "CONNECTED", connected
        return connected


async def ws_connect(endpoint: str, url: str, protocols: list[str] = ALL) -> WsStomp:
    factory = WebSocketClientFactory(url, protocols=protocols)
    factory.protocol = WsStomp
    proto = await clientFromString(reactor, endpoint).connect(factory)
    assert isinstance(proto, WsStomp)
    await proto.opened
    return proto


def unique(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns()}"


def ok(c: LineClient, line: str) -> bytes:
    _, status = c.request(line)
    assert status.startswith(b"+"), status
    return status


@pytest_twisted.ensureDeferred
async def test_websocket_stomp_and_native_clients_reach_each_other(broker: WsBroker) -> None:
    port = broker.process.stomp_ws_port
    ws = await ws_connect(f"tcp:127.0.0.1:{port}", f"ws://127.0.0.1:{port}/")
    try:
        assert ws.websocket_protocol_in_use == "v12.stomp"
        assert (await ws.connect()).header("version") == "1.2"
        q, back = unique("wsq"), unique("back")
        ws.send("SUBSCRIBE", destination=f"/queue/{q}", id="0", receipt="sub")
        receipt = await ws.frame()
        assert (receipt.command, receipt.header("receipt-id")) == ("RECEIPT", "sub")
        with broker.process.connect() as native:
            ok(native, f"PUBLISH {q} :from native")  # (the default exchange: key = queue)
            message = await ws.frame()
            assert message.command == "MESSAGE" and message.body == b"from native"
            assert message.header("destination") == f"/queue/{q}"
            ok(native, f"CREATE {back} queue")
            sid = int(ok(native, f"SUBSCRIBE {back}").split()[1])
            ws.send("SEND", b"from the websocket", destination=f"/queue/{back}", receipt="s")
            assert (await ws.frame()).command == "RECEIPT"
            got = native.read_msg(WAIT)
            assert (got.sid, got.payload) == (sid, b"from the websocket")
        ws.send("DISCONNECT", receipt="bye")
        assert (await ws.frame()).header("receipt-id") == "bye"
    finally:
        ws.dropConnection()


@pytest_twisted.ensureDeferred
async def test_stomp_over_secure_websocket(broker: WsBroker) -> None:
    port = broker.wss_port
    endpoint = f"tls:localhost:{port}:trustRoots={broker.pki.ca_dir}"
    ws = await ws_connect(endpoint, f"wss://localhost:{port}/", ["v11.stomp"])
    try:
        assert ws.websocket_protocol_in_use == "v11.stomp"
        await ws.connect()
        q = unique("wss")
        ws.send("SUBSCRIBE", destination=f"/queue/{q}", id="a", receipt="r")
        assert (await ws.frame()).command == "RECEIPT"
        body = bytes(range(256)) * 4  # (not UTF-8: it travels in binary frames)
        ws.send("SEND", body, binary=True, destination=f"/queue/{q}")
        message = await ws.frame()
        assert (message.command, message.body) == ("MESSAGE", body)
    finally:
        ws.dropConnection()


@pytest_twisted.ensureDeferred
async def test_a_client_without_a_stomp_subprotocol_is_refused(broker: WsBroker) -> None:
    port = broker.process.stomp_ws_port
    with pytest.raises(ConnectionError):
        await ws_connect(f"tcp:127.0.0.1:{port}", f"ws://127.0.0.1:{port}/", ["mqtt"])
    # and the broker serves on
    ws = await ws_connect(f"tcp:127.0.0.1:{port}", f"ws://127.0.0.1:{port}/")
    try:
        await ws.connect()
    finally:
        ws.dropConnection()


def kernel_buffers() -> int:
    """The most bytes the kernel may hold in one loopback TCP connection: the
    receiving socket's buffer and the sending one's, at their autotuning maxima (this
    machine's ``tcp_rmem`` goes to 32 MiB)."""
    rmem = Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()
    wmem = Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()
    return int(rmem[2]) + int(wmem[2])


def queue_messages(native: LineClient, name: str) -> int:
    data, status = native.request("LIST")
    assert status.startswith(b"+OK"), status
    for line in data:
        if isinstance(line, bytes) and line.split()[:2] == [b"QUEUE", name.encode()]:
            fields = dict(f.split(b"=", 1) for f in line.split()[2:])
            return int(fields[b"messages"])
    raise AssertionError(f"no queue {name}")


@pytest_twisted.ensureDeferred
async def test_a_websocket_that_does_not_read_leaves_the_messages_in_the_queue(
    broker: WsBroker,
) -> None:
    port = broker.process.stomp_ws_port
    ws = await ws_connect(f"tcp:127.0.0.1:{port}", f"ws://127.0.0.1:{port}/")
    try:
        await ws.connect()
        # The kernel's buffers, and the broker's own (Twisted's 64 KiB and the
        # WebSocket frame being made), can hold ``held`` bytes; 1000 messages more
        # than fit there are sent.
        size = 16 * 1024
        held = kernel_buffers() + 1024 * 1024
        q, n = unique("stalled"), held // size + 1000
        ws.send("SUBSCRIBE", destination=f"/queue/{q}", id="0", receipt="r")
        assert (await ws.frame()).command == "RECEIPT"
        socket = cast(IPushProducer, ws.transport)
        socket.pauseProducing()  # the client stops reading its socket
        with broker.process.connect() as native:
            for i in range(n):
                payload = b"%05d" % i + b"x" * (size - 5)
                _, status = native.request(b"PUBLISH %s %d\r\n%s" % (q.encode(), size, payload))
                assert status.startswith(b"+OK"), status
            # The broker stopped delivering: what the buffers cannot hold waits in the
            # queue (a broker buffering without bound would have none left).
            left = queue_messages(native, q)
            assert n - left <= held // size, (n, left)
            socket.resumeProducing()
            got = 0
            while got < n:
                frame = await ws.frame()
                assert frame.command == "MESSAGE" and frame.body[:5] == b"%05d" % got
                got += 1
            assert queue_messages(native, q) == 0
            # the burst after the stall went in messages of whole frames, 64 KiB or so
            assert ws.biggest <= 64 * 1024 + size + 1024, ws.biggest
    finally:
        ws.dropConnection()
