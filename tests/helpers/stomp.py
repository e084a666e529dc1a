"""A STOMP connection on a StringTransport with a task.Clock, seen from the client's side.

:class:`Setup` is a broker and a STOMP listener on a fake clock; :class:`Peer` one
connection to it, driven with the bytes a client would send, whose output is decoded by
a client-side :class:`~mbroker.wire.stomp.StompDecoder`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.factory import BrokerFactory
from mbroker.server.stomp import StompFactory, StompProtocol
from mbroker.wire.stomp import SERVER_COMMANDS, Frame, StompDecoder, encode
from tests.helpers.conn import Conn


class Peer:
    """A StompProtocol on a StringTransport, seen from the client's side."""

    def __init__(self, factory: StompFactory) -> None:
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert isinstance(proto, StompProtocol)
        self.proto = proto
        self.transport = StringTransport()
        proto.makeConnection(self.transport)
        self.decoder = StompDecoder(commands=SERVER_COMMANDS)
        self.version = "1.2"

    def send(self, command: str, body: bytes = b"", **headers: str) -> None:
        pairs = tuple((k.replace("_", "-"), v) for k, v in headers.items())
        self.proto.dataReceived(encode(Frame(command, pairs, body), self.version))

    def raw(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def items(self) -> list[Any]:
        data = self.transport.value()
        self.transport.clear()
        return self.decoder.feed(data)

    def frames(self) -> list[Frame]:
        return [i for i in self.items() if isinstance(i, Frame)]

    def one(self, command: str) -> Frame:
        got = self.frames()
        assert [f.command for f in got] == [command], got
        return got[0]

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def connect(self, version: str = "1.2", **headers: str) -> Frame:
        self.version = version
        self.send("CONNECT", b"", accept_version=version, host="/", **headers)
        frame = self.one("CONNECTED")
        assert frame.header("version") == version
        return frame

    def lose(self) -> None:
        self.proto.connectionLost(None)  # type: ignore[arg-type]


class Setup:
    """A broker (in memory) and its STOMP listener on a ``task.Clock``."""

    def __init__(
        self, heartbeat: tuple[int, int] = (1000, 1000), shared: bool = True, **config: Any
    ) -> None:
        self.clock = Clock()
        self.config = Config(**config)
        self.broker = Broker(self.clock, self.config)
        #: the native listener of the same broker (its connections are made with
        #: :meth:`native`); the STOMP listener shares its flush scheduler, as in the
        #: service, unless ``shared`` is false (then it makes its own)
        self.native_factory = BrokerFactory(self.broker, self.config, self.clock)
        scheduler = self.native_factory if shared else None
        self.factory = StompFactory(
            self.broker, self.config, self.clock, heartbeat=heartbeat, scheduler=scheduler
        )
        self.factory.declare_exchanges()

    def peer(self, connect: bool = True, version: str = "1.2") -> Peer:
        p = Peer(self.factory)
        if connect:
            p.connect(version)
        return p

    def native(self) -> Conn:
        """A native-protocol connection to the same broker."""
        return Conn(self.native_factory)

    def messages(self, queue: str) -> int:
        return self.broker.queue(queue).messages

    def unacked(self, queue: str) -> int:
        return self.broker.queue(queue).unacked
