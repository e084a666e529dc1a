"""socket_writer: output written straight to a TCP socket, in order, with back-pressure.

On a ``tcp.Connection`` over a fake socket: one ``send`` when the transport holds
nothing, the rest (or everything, after an error) to the transport's buffer; the native
protocol's :class:`Output` writes through it.  Over real loopback TCP on the reactor:
what the socket takes goes at once, the rest waits in the transport's buffer (and
pauses its producer), and the peer gets every byte in order.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, tcp
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import MemoryReactor, StringTransport
from zope.interface import implementer

from mbroker.server.output import Output, socket_writer


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


class FakeSocket:
    """What ``tcp.Connection`` uses of a socket; ``send`` answers from ``results`` (how
    many bytes it takes, or an error to raise)."""

    def __init__(self, *results: int | OSError) -> None:
        self.results = list(results)
        self.sent: list[bytes] = []

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def send(self, data: bytes) -> int:
        r = self.results.pop(0)
        if isinstance(r, OSError):
            raise r
        self.sent.append(bytes(data[:r]))
        return r


def connection(sock: FakeSocket) -> Any:
    tr = tcp.Connection(sock, protocol.Protocol(), MemoryReactor())  # type: ignore[arg-type]
    tr.connected = True
    return tr


def test_one_send_when_the_transport_holds_nothing() -> None:
    sock = FakeSocket(6)
    tr = connection(sock)
    write = socket_writer(tr)
    assert write is not None
    write(b"abcdef")
    assert sock.sent == [b"abcdef"]
    assert not tr.dataBuffer and not tr._tempDataLen


def test_what_the_socket_does_not_take_goes_to_the_transport_in_order() -> None:
    sock = FakeSocket(2)
    tr = connection(sock)
    write = socket_writer(tr)
    assert write is not None
    write(b"abcdef")
    write(b"gh")  # (the transport holds bytes: these queue behind them)
    assert sock.sent == [b"ab"] and sock.results == []
    assert tr.dataBuffer + b"".join(tr._tempDataBuffer) == b"cdefgh"


class Later:
    """A FlushScheduler that writes when told to."""

    reading = False

    def __init__(self) -> None:
        self.dirty: list[Any] = []

    def flush_later(self, output: Any) -> None:
        self.dirty.append(output)

    def flush_all(self) -> None:
        dirty, self.dirty = self.dirty, []
        for o in dirty:
            o.write_queued()


def test_the_native_output_sends_straight_to_the_socket() -> None:
    sock = FakeSocket(100)
    tr = connection(sock)
    scheduler = Later()
    output = Output(tr, None, scheduler)
    output.send(b"MSG 1 1 q 2\r\nhi\r\n")
    output.send(b"+OK\r\n")
    assert sock.sent == []  # (queued until the end of the read)
    scheduler.flush_all()
    assert sock.sent == [b"MSG 1 1 q 2\r\nhi\r\n+OK\r\n"]
    assert not tr.dataBuffer and not tr._tempDataBuffer
    assert output.bytes_out == len(sock.sent[0])


def test_the_native_output_of_other_transports_goes_through_write() -> None:
    tr = StringTransport()
    output = Output(tr, None, Later())
    output.send(b"+OK\r\n")
    output.flush()
    assert tr.value() == b"+OK\r\n"


@pytest.mark.parametrize("err", [errno.EAGAIN, errno.EPIPE, errno.ECONNRESET])
def test_a_send_error_leaves_the_bytes_to_the_transport(err: int) -> None:
    sock = FakeSocket(OSError(err, "no"))
    tr = connection(sock)
    write = socket_writer(tr)
    assert write is not None
    write(b"abc")  # (no exception: Twisted's own write finds out what it was)
    assert sock.sent == [] and tr.dataBuffer + b"".join(tr._tempDataBuffer) == b"abc"


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
            write(b"".join(chunks[i : i + 3]))
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
