"""Helpers for testing code that uses mbroker: a broker in memory, or on a loopback port.

:func:`connected_pair` joins a :class:`~mbroker.client.connection.Client` to a real broker core
through :mod:`twisted.test.iosim`: no sockets, no reactor, a fake clock.  Call
:meth:`ClientPair.flush` to move the bytes; Deferreds then have their results::

    pair = connected_pair()
    d = pair.client.create("jobs", "queue")
    pair.flush()
    assert pair.successResultOf(d) is True   # or trial's / your own helper

:class:`LoopbackBroker` runs the real :class:`~mbroker.server.factory.BrokerFactory` on a
TCP port of ``127.0.0.1`` in this process, for tests that need real sockets; it can
drop every connection and listen again on the same port, as a restarted broker does.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorTCP,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.test import iosim

from mbroker.client.connection import Client
from mbroker.client.protocol import ClientProtocol
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.factory import BrokerFactory
from mbroker.server.protocol import BrokerProtocol

__all__ = ["ClientPair", "LoopbackBroker", "connected_pair", "result_of"]

T = TypeVar("T")


def result_of(d: Deferred[T]) -> T:
    """The result a Deferred already has; raises its failure, or ``AssertionError``
    when it has none yet (like trial's ``successResultOf``)."""
    results: list[T | Failure] = []
    d.addBoth(results.append)
    if not results:
        raise AssertionError(f"{d!r} has no result yet")
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


class ClientPair:
    """A client and a broker joined in memory; see :func:`connected_pair`."""

    def __init__(
        self,
        client: Client,
        broker: Broker,
        server: BrokerProtocol,
        protocol: ClientProtocol,
        pump: iosim.IOPump,
        clock: Clock,
    ) -> None:
        #: The :class:`~mbroker.client.connection.Client` under test.
        self.client = client
        #: The broker core (:class:`~mbroker.core.broker.Broker`), to look inside.
        self.broker = broker
        #: The broker's side of the connection.
        self.server = server
        #: The client's side of the connection.
        self.protocol = protocol
        #: The :class:`twisted.test.iosim.IOPump` that moves the bytes.
        self.pump = pump
        #: The fake clock of both sides: ``advance`` it to fire timers.
        self.clock = clock

    def flush(self) -> None:
        """Move bytes both ways (and run ``callLater(0)`` calls) until all is quiet."""
        self.pump.flush()

    def advance(self, seconds: float) -> None:
        """Let fake time pass, then :meth:`flush`."""
        self.clock.advance(seconds)
        self.flush()

    def disconnect(self) -> None:
        """Drop the connection from the broker's side, as a crashed broker would."""
        transport = self.server.transport
        assert transport is not None
        transport.loseConnection()
        self.flush()

    def connect_another(self) -> ClientPair:
        """A second client connected to the same broker (same pump clock)."""
        return _join(self.broker, self.clock)

    def successResultOf(self, d: Deferred[T]) -> T:
        """Flush, then the Deferred's result (raises if it has failed or has none)."""
        self.flush()
        return result_of(d)


def connected_pair(config: Config | None = None, clock: Clock | None = None) -> ClientPair:
    """A :class:`ClientPair`: a new broker core and a client greeted by it, in memory."""
    clock = clock if clock is not None else Clock()
    broker = Broker(clock, config if config is not None else Config())
    return _join(broker, clock)


def _join(broker: Broker, clock: Clock) -> ClientPair:
    factory = BrokerFactory(broker, broker.config, clock)
    server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    assert isinstance(server, BrokerProtocol)
    client = Client(clock)
    proto = client.link.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    pump = iosim.connect(
        server,
        iosim.makeFakeServer(server),
        proto,
        iosim.makeFakeClient(proto),
        greet=True,
        clock=clock,
    )
    result_of(client.link.prepare(proto))
    return ClientPair(client, broker, server, proto, pump, clock)


# ------------------------------------------------------------------ loopback


class _Tracking(WrappingFactory, ServerFactory):
    """Knows its open connections, to drop them all at once; a server's factory
    (WrappingFactory is declared for clients only)."""

    def __init__(self, factory: BrokerFactory) -> None:
        super().__init__(factory)
        self._gone: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Protocol) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            gone, self._gone = self._gone, []
            for d in gone:
                d.callback(None)

    def drop_all(self) -> Deferred[None]:
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._gone.append(d)
        for p in list(self.protocols):
            assert isinstance(p, ProtocolWrapper)
            cast(ITCPTransport, p.transport).abortConnection()  # listening on TCP
        return d


class LoopbackBroker:
    """A real broker listening on ``127.0.0.1`` in this process.

    ``await LoopbackBroker.start(reactor)``; ``endpoint`` is the client endpoint
    string to give :func:`mbroker.client.connect`; ``broker`` the core.  The reactor
    listens on TCP and, adapted to ``IReactorTime``, is the broker's clock (Twisted's
    reactors are both).
    """

    def __init__(self, reactor: IReactorTCP, config: Config, port: int = 0) -> None:
        self.reactor = reactor
        self.config = config
        self.port = port
        self.broker: Broker = self._new_broker()
        self._factory: _Tracking | None = None
        self._listening: IListeningPort | None = None

    @classmethod
    def start(
        cls, reactor: IReactorTCP, config: Config | None = None, port: int = 0
    ) -> Deferred[LoopbackBroker]:
        """Listen on ``port`` (default: a free one) of 127.0.0.1."""
        server = cls(reactor, config if config is not None else Config(), port)
        server._listen()
        return succeed(server)

    @property
    def clock(self) -> IReactorTime:
        """The reactor as a clock (what the broker and its connections time with)."""
        return IReactorTime(self.reactor)

    def _new_broker(self) -> Broker:
        # Broker's annotation says Clock; it asks a clock for callLater and seconds only.
        return Broker(cast(Clock, self.clock), self.config)

    def _listen(self) -> None:
        self._factory = _Tracking(BrokerFactory(self.broker, self.config, self.clock))
        self._listening = self.reactor.listenTCP(self.port, self._factory, interface="127.0.0.1")
        address = self._listening.getHost()
        assert isinstance(address, IPv4Address)
        self.port = address.port

    @property
    def endpoint(self) -> str:
        """``tcp:127.0.0.1:<port>``."""
        return f"tcp:127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._factory.protocols) if self._factory is not None else 0

    def stop(self) -> Deferred[None]:
        """Stop listening and drop every connection (their deliveries go back to queues)."""
        port, self._listening = self._listening, None
        factory, self._factory = self._factory, None
        ds: list[Deferred[Any]] = []
        if port is not None:
            ds.append(maybeDeferred(port.stopListening))
        if factory is not None:
            ds.append(factory.drop_all())
        return gatherResults(ds).addCallback(lambda _: None)

    def restart(self, keep_state: bool = False) -> Deferred[None]:
        """:meth:`stop`, then listen again on the same port.

        Without ``keep_state`` the broker core is new and empty, as after a restart of
        a broker that keeps everything in memory; with it, only the connections drop.
        """

        def again(_: object) -> None:
            if not keep_state:
                self.broker = self._new_broker()
            self._listen()

        return self.stop().addCallback(again)
