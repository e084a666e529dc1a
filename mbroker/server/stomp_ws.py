"""STOMP over WebSocket (``--stomp-ws``): Autobahn's WebSocket server in front of the
one :class:`~mbroker.server.stomp.StompProtocol`, for stomp.js in browsers.

There is no second STOMP implementation here.  A :class:`StompWebSocketProtocol` is an
Autobahn server protocol that, once the WebSocket is open, builds a ``StompProtocol``
with the STOMP listener's factory and connects it to a :class:`WebSocketTransport`: the
bytes of every WebSocket message (text or binary) go to its ``dataReceived``, and what it
writes goes out as WebSocket messages.

* Subprotocols: ``v12.stomp``, ``v11.stomp`` and ``v10.stomp``; the newest one the client
  offers is chosen.  A client that offers none gets plain STOMP; one that offers only
  others is refused (HTTP 400).  The STOMP version itself is agreed on CONNECT, as over
  TCP.
* Framing: what the STOMP connection writes goes out as WebSocket messages of whole
  frames, up to ``MESSAGE_BYTES`` of them per message (a bigger frame alone).  Messages
  are text frames while the client sends text, and binary frames once it sent a binary
  one; a text-mode message that is not UTF-8 (a binary body) goes as a binary frame.
* Flow control: the STOMP connection registers itself as the TCP (or TLS) transport's
  push producer through the adapter, so a browser that does not read stops deliveries
  to it, as a native client's socket does; the adapter's ``pauseProducing`` stops
  reading from the socket.  WebSocket frames and messages are limited to the largest
  STOMP frame (``max-payload`` plus the head), the opening handshake to
  ``MAX_HANDSHAKE`` bytes and ``HANDSHAKE_TIMEOUT`` seconds, and at most
  ``--max-connections`` WebSockets (open or opening) are served at once (HTTP 503); the
  broker's own connection limit holds as over TCP.  Per-message compression is not
  offered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast
from typing import Protocol as TypingProtocol

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from mbroker import __version__
from mbroker.server.stomp import StompFactory
from mbroker.wire.stomp import MAX_HEADER_BYTES

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MAX_HANDSHAKE",
    "MESSAGE_BYTES",
    "SUBPROTOCOLS",
    "StompWebSocketFactory",
    "StompWebSocketProtocol",
    "WebSocketTransport",
]

#: the subprotocols spoken, best first (the names stomp.js and RabbitMQ use)
SUBPROTOCOLS = ("v12.stomp", "v11.stomp", "v10.stomp")
#: bytes of an opening handshake (the HTTP request) before the connection is dropped
MAX_HANDSHAKE = 16 * 1024
#: seconds a client has to finish the opening handshake
HANDSHAKE_TIMEOUT = 10.0
#: bytes of frames put in one outgoing WebSocket message (a bigger frame goes alone)
MESSAGE_BYTES = 64 * 1024
#: seconds to wait for the client's answer to our close before dropping the socket
CLOSE_TIMEOUT = 5.0


class _Tcp(TypingProtocol):  # the parts of the socket's transport used here (for mypy)
    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def registerProducer(self, producer: Any, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def getPeer(self) -> Any: ...

    def getHost(self) -> Any: ...


@implementer(IPushProducer)
class WebSocketTransport:
    """What a :class:`StompProtocol` sees as its transport: one open WebSocket.

    Writes become WebSocket messages; producer registration and pausing go to the
    socket's own transport, so back-pressure works exactly as it does over TCP.
    """

    def __init__(self, ws: StompWebSocketProtocol) -> None:
        self.ws = ws
        #: the socket's own transport (TCP or TLS)
        self.tcp = cast(_Tcp, ws.transport)
        #: the client sent a binary frame: answer in binary frames
        self.binary = False
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        if self.disconnecting or not data:
            return
        ws = self.ws
        if ws.state != WebSocketServerProtocol.STATE_OPEN:
            return
        binary = self.binary
        if not binary and not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                binary = True
        ws.sendMessage(data, binary)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """Whole frames in WebSocket messages of up to ``MESSAGE_BYTES`` (or one bigger
        frame): a parser that takes each message alone (stomp.js 2) gets whole frames,
        and a burst of deliveries never makes one message over the size limit.

        A :class:`StompProtocol` writes frames whole, except deliveries, which come as
        three parts: a head ending in a blank line, the body and the NUL.
        """
        parts = data if isinstance(data, list) else list(data)
        n = len(parts)
        chunk: list[bytes] = []
        size = i = 0
        while i < n:
            part = parts[i]
            if part.endswith(b"\n\n"):  # a delivery's head: its body and NUL follow
                frame = parts[i : i + 3]
                i += 3
                length = len(part) + len(frame[1]) + 1 if len(frame) == 3 else len(part)
            else:
                frame = [part]
                i += 1
                length = len(part)
            if size and size + length > MESSAGE_BYTES:
                self.write(b"".join(chunk))
                chunk, size = [], 0
            chunk += frame
            size += length
        if chunk:
            self.write(chunk[0] if len(chunk) == 1 else b"".join(chunk))

    def loseConnection(self) -> None:
        """Close the WebSocket (normal closure) after what was written."""
        if self.disconnecting:
            return
        self.disconnecting = True
        ws = self.ws
        if ws.state == WebSocketServerProtocol.STATE_OPEN:
            ws.sendClose(1000)
        else:
            self.tcp.loseConnection()

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.tcp.abortConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.tcp.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.tcp.unregisterProducer()

    def pauseProducing(self) -> None:
        self.tcp.pauseProducing()

    def resumeProducing(self) -> None:
        self.tcp.resumeProducing()

    def stopProducing(self) -> None:
        self.abortConnection()

    def getPeer(self) -> Any:
        return self.tcp.getPeer()

    def getHost(self) -> Any:
        return self.tcp.getHost()


class StompWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket connection carrying one STOMP connection."""

    factory: StompWebSocketFactory
    stomp: Protocol | None = None
    adapter: WebSocketTransport | None = None

    def dataReceived(self, data: bytes) -> None:
        if (
            self.state == WebSocketServerProtocol.STATE_CONNECTING
            and len(self.data) + len(data) > MAX_HANDSHAKE
        ):
            cast(_Tcp, self.transport).loseConnection()
            return
        super().dataReceived(data)

    def onConnect(self, request: ConnectionRequest) -> str | None:
        offered = request.protocols
        if not offered:
            return None
        for name in SUBPROTOCOLS:
            if name in offered:
                return name
        raise ConnectionDeny(
            ConnectionDeny.BAD_REQUEST,
            "no STOMP subprotocol offered (speaks " + ", ".join(SUBPROTOCOLS) + ")",
        )

    def onOpen(self) -> None:
        stomp = self.factory.stomp_factory.buildProtocol(cast(_Tcp, self.transport).getPeer())
        if stomp is None:
            self.sendClose(1013)  # (try again later)
            return
        self.adapter = adapter = WebSocketTransport(self)
        self.stomp = stomp
        stomp.makeConnection(cast(Any, adapter))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        stomp = self.stomp
        if stomp is not None:
            if isBinary:
                cast(WebSocketTransport, self.adapter).binary = True
            stomp.dataReceived(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        stomp, self.stomp = self.stomp, None
        if stomp is not None:
            cast(WebSocketTransport, self.adapter).disconnecting = True
            stomp.connectionLost(Failure(ConnectionDone()))


class StompWebSocketFactory(WebSocketServerFactory):
    """Serves STOMP over WebSocket with ``stomp_factory``'s protocols (one broker)."""

    protocol = StompWebSocketProtocol  # type: ignore[assignment]

    def __init__(self, stomp_factory: StompFactory) -> None:
        super().__init__(server=f"mbroker/{__version__}", protocols=list(SUBPROTOCOLS))
        self.stomp_factory = stomp_factory
        # the largest STOMP frame: its head, body and NUL (the decoder checks the rest)
        biggest = stomp_factory.config.max_payload + MAX_HEADER_BYTES + 1024
        self.setProtocolOptions(
            maxFramePayloadSize=biggest,
            maxMessagePayloadSize=biggest,
            openHandshakeTimeout=HANDSHAKE_TIMEOUT,
            closeHandshakeTimeout=CLOSE_TIMEOUT,
            autoFragmentSize=0,
            # (WebSockets still in their opening handshake count too)
            maxConnections=stomp_factory.config.max_connections,
            # a protocol error is a close frame with its code and reason, then a close
            failByDrop=False,
        )
