"""A broker protocol on a StringTransport with a fake clock, driven line by line."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.factory import BrokerFactory


class Conn:
    """A protocol on a StringTransport, with helpers to send and read lines."""

    def __init__(self, factory: BrokerFactory) -> None:
        self.proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.greeting = self.take()

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def take(self) -> bytes:
        out = self.transport.value()
        self.transport.clear()
        return out

    def lines(self) -> list[bytes]:
        return self.take().split(b"\r\n")[:-1]

    def close(self) -> None:
        self.proto.connectionLost(None)


def make(config: Config | None = None) -> tuple[Clock, Broker, BrokerFactory]:
    clock = Clock()
    config = config or Config()
    broker = Broker(clock, config)
    return clock, broker, BrokerFactory(broker, config, clock)
