"""The HTTP listener as a Twisted service, a child of the :class:`BrokerService`.

It listens on each ``--http`` endpoint when the broker service starts, before the
broker's store is recovered (until then ``/healthz`` and the API answer 503), and
stops with it.  A port that cannot be opened fails the start-up, as a ``--listen``
port does.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorCore, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.server.http.rates import Rates
from mbroker.server.http.site import HttpSite, make_site
from mbroker.server.service import BrokerService, ListenError, describe_address, is_local

log = Logger()


class HttpService(Service):
    """Serves the HTTP API, ``/metrics`` and ``/healthz`` of ``broker_service``."""

    def __init__(
        self, reactor: IReactorCore, broker_service: BrokerService, endpoints: list[str]
    ) -> None:
        self.reactor = reactor
        self.broker_service = broker_service
        self.endpoints = list(endpoints)
        self.site: HttpSite | None = None
        self.clock: IReactorTime = IReactorTime(reactor)
        self.rates = Rates(self.clock, self._counters)
        self.ports: list[IListeningPort] = []
        self._starting = False
        self._failures: list[str] = []

    def startService(self) -> None:
        super().startService()
        self.site = site = make_site(self.broker_service, self.clock, self.rates)
        self._starting, self._failures = True, []
        try:
            for description in self.endpoints:
                try:
                    endpoint = serverFromString(self.reactor, description)
                except Exception as e:
                    self._failed(Failure(e), description)
                    continue
                d: Deferred[IListeningPort] = endpoint.listen(site)
                d.addCallbacks(
                    self._listening,
                    self._failed,
                    callbackArgs=(description,),
                    errbackArgs=(description,),
                )
        finally:
            self._starting = False
        if self._failures:
            for port in self.ports:
                port.stopListening()
            self.ports = []
            super().stopService()
            raise ListenError("mbroker cannot listen for HTTP: " + "; ".join(self._failures))
        self.rates.start()

    def _counters(self) -> dict[str, int] | None:
        broker = self.broker_service.broker
        return {k: int(v) for k, v in broker.stats()} if broker is not None else None

    def _listening(self, port: IListeningPort, description: str) -> None:
        if not self.running:
            port.stopListening()
            return
        self.ports.append(port)
        address = port.getHost()
        if not self.broker_service.config.users_file and not is_local(address):
            log.warn(
                "the mbroker HTTP API is open to the network on {address}: without --users "
                "anyone who can reach it may do anything. Listen on loopback or give --users.",
                address=describe_address(address),
            )
        self.reactor.callWhenRunning(
            log.info,
            "mbroker HTTP listening on {address}",
            address=describe_address(address),
            endpoint=description,
        )

    def _failed(self, failure: Failure, description: str) -> None:
        reason = failure.getErrorMessage()
        log.critical(
            "mbroker cannot listen for HTTP on {endpoint}: {reason}",
            endpoint=description,
            reason=reason,
        )
        if self._starting:
            self._failures.append(f"{description}: {reason}")
        elif self.running:  # an endpoint that listens asynchronously failed after start-up
            self.reactor.stop()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        self.rates.stop()
        ports, self.ports = self.ports, []
        return gatherResults([maybeDeferred(port.stopListening) for port in ports])
