"""A broker protocol on a StringTransport with a fake clock, driven line by line."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.factory import BrokerFactory
from mbroker.server.protocol import BrokerProtocol

PEER = IPv4Address("TCP", "127.0.0.1", 1)


def build(factory: BrokerFactory, addr: IAddress | None = PEER) -> Protocol:
    """``factory.buildProtocol``, asserting that it built one (a refusal is a protocol too)."""
    proto = factory.buildProtocol(addr)
    assert proto is not None
    return proto


def broker_protocol(factory: BrokerFactory, addr: IAddress | None = PEER) -> BrokerProtocol:
    """``factory.buildProtocol``, asserting that the factory accepted: a BrokerProtocol."""
    proto = factory.buildProtocol(addr)
    assert isinstance(proto, BrokerProtocol)
    return proto


class Conn:
    """A protocol on a StringTransport, with helpers to send and read lines."""

    def __init__(self, factory: BrokerFactory) -> None:
        self.proto = build(factory)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.greeting = self.take()

    @property
    def server(self) -> BrokerProtocol:
        """The broker's side of an accepted connection (asserts it was not refused)."""
        assert isinstance(self.proto, BrokerProtocol)
        return self.proto

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def take(self) -> bytes:
        out: bytes = self.transport.value()
        self.transport.clear()
        return out

    def lines(self) -> list[bytes]:
        return self.take().split(b"\r\n")[:-1]

    def close(self) -> None:
        self.proto.connectionLost(connectionDone)


def make(config: Config | None = None) -> tuple[Clock, Broker, BrokerFactory]:
    clock = Clock()
    config = config or Config()
    broker = Broker(clock, config)
    return clock, broker, BrokerFactory(broker, config, clock)
