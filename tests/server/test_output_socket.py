"""socket_writer: output written straight to a TCP socket, in order, with back-pressure.

Over real loopback TCP on the reactor: what the socket takes goes at once, the rest
waits in the transport's buffer (and pauses its producer), and the peer gets every
byte in order.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from mbroker.server.output import socket_writer


@implementer(IPushProducer)
class Server(protocol.Protocol):
    def __init__(self, made: defer.Deferred[Server]) -> None:
        self.made = made
        self.paused = 0

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.made.callback(self)

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class Client(protocol.Protocol):
    def __init__(self, size: int) -> None:
        self.size = size
        self.got: list[bytes] = []
        self.received = 0
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.got.append(data)
        self.received += len(data)
        if self.received >= self.size:
            self.done.callback(b"".join(self.got))


def test_only_plain_tcp_transports_get_one() -> None:
    assert socket_writer(StringTransport()) is None
    assert socket_writer(object()) is None


@pytest_twisted.ensureDeferred
async def test_direct_writes_keep_order_and_fill_the_buffer_when_the_peer_is_slow() -> None:
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol

    made: defer.Deferred[Server] = defer.Deferred()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(lambda: Server(made))
    )
    chunks = [bytes([i % 251]) * (i * 37 % 9000 + 1) for i in range(2000)]
    expected = b"".join(chunks)
    client = Client(len(expected))
    server: Server | None = None
    try:
        host = port.getHost()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", host.port)
        await connectProtocol(endpoint, client)
        server = await made
        tr: Any = server.transport
        write = socket_writer(tr)
        assert write is not None
        client.transport.pauseProducing()  # type: ignore[union-attr]  # (stops reading)
        direct = 0
        for i in range(0, len(chunks), 3):
            if not (tr.dataBuffer or tr._tempDataLen):
                direct += 1
            write(chunks[i : i + 3])
        assert direct > 0  # some went straight to the socket ...
        assert tr.dataBuffer or tr._tempDataLen  # ... the rest waits in the transport,
        assert server.paused  # ... which paused its producer
        client.transport.resumeProducing()  # type: ignore[union-attr]
        got = await client.done
        assert got == expected
    finally:
        if client.transport is not None:
            client.transport.loseConnection()
        if server is not None and server.transport is not None:
            server.transport.loseConnection()
        await port.stopListening()
