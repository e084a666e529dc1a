"""The broker as a Twisted service: it owns the broker core and listens on endpoints."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.config import Config
from mbroker.protocol import BrokerFactory
from mbroker.registry import Broker


class ListenError(Exception):
    """The service could not listen on one of its endpoints."""


def describe_address(address: IAddress) -> str:
    """``host:port`` for TCP (``[host]:port`` for IPv6), the path for UNIX sockets."""
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return str(address)


class BrokerService(MultiService):
    """Creates the broker and its factory on start and listens on each endpoint.

    ``reactor`` must provide ``IReactorTime`` (the broker's clock) and whatever the
    endpoint descriptions need (``IReactorTCP``, ``IReactorUNIX``, ...).
    """

    log = Logger()

    def __init__(
        self, reactor: Any, config: Config, endpoints: list[str], data_dir: str | None
    ) -> None:
        super().__init__()
        self.reactor = reactor
        self.config = config
        self.endpoints = list(endpoints)
        #: Where durable state lives; ``None`` keeps everything in memory.
        self.data_dir = data_dir
        self.broker: Broker | None = None
        self.factory: BrokerFactory | None = None
        self.ports: list[IListeningPort] = []
        self._starting = False
        self._failures: list[str] = []

    def startService(self) -> None:
        broker = Broker(clock=self.reactor, config=self.config)
        factory = BrokerFactory(broker, self.config, self.reactor)
        self.broker, self.factory = broker, factory
        super().startService()
        self._starting, self._failures = True, []
        try:
            for description in self.endpoints:
                self._listen(description, factory)
        finally:
            self._starting = False
        if self._failures:
            # Fail start-up: twistd exits non-zero.  Close what did open first.
            for port in self.ports:
                port.stopListening()
            self.ports = []
            MultiService.stopService(self)
            raise ListenError("mbroker cannot listen: " + "; ".join(self._failures))

    def _listen(self, description: str, factory: BrokerFactory) -> None:
        try:
            endpoint = serverFromString(self.reactor, description)
        except Exception as e:
            self._listen_failed(Failure(e), description)
            return
        d: Deferred[IListeningPort] = endpoint.listen(factory)
        d.addCallbacks(
            self._listening,
            self._listen_failed,
            callbackArgs=(description,),
            errbackArgs=(description,),
        )

    def _listening(self, port: IListeningPort, description: str) -> None:
        if not self.running:  # stopped while this endpoint was still starting
            port.stopListening()
            return
        self.ports.append(port)
        # Said once the reactor runs: from then on connections are served and twistd's
        # signal handlers are in place, so whoever waits for this line may send SIGTERM.
        self.reactor.callWhenRunning(
            self.log.info,
            "mbroker listening on {address}",
            address=describe_address(port.getHost()),
            endpoint=description,
        )

    def _listen_failed(self, failure: Failure, description: str) -> None:
        message = f"{description}: {failure.getErrorMessage()}"
        if failure.check(CannotListenError, ValueError):  # a busy port, a bad description
            self.log.critical(
                "mbroker cannot listen on {endpoint}: {reason}",
                endpoint=description,
                reason=failure.getErrorMessage(),
            )
        else:
            self.log.failure(
                "mbroker cannot listen on {endpoint}", failure=failure, endpoint=description
            )
        if self._starting:
            self._failures.append(message)
        elif self.running:
            # An endpoint that listens asynchronously failed after start-up.
            self.log.critical("mbroker stopping: {message}", message=message)
            self.reactor.stop()

    def stopService(self) -> Deferred[Any]:
        ports, self.ports = self.ports, []
        d: Deferred[Any] = gatherResults([self._stop_listening(port) for port in ports])
        close = getattr(self.broker, "close", None)
        if close is not None:
            d.addCallback(lambda _: close())
        d.addCallback(lambda _: super(BrokerService, self).stopService())
        return d

    def _stop_listening(self, port: IListeningPort) -> Deferred[Any]:
        d: Deferred[Any] = maybeDeferred(port.stopListening)
        d.addErrback(
            lambda f: self.log.failure(
                "mbroker cannot stop listening on {address}",
                failure=f,
                address=describe_address(port.getHost()),
            )
        )
        return d
