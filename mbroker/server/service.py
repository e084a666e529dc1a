"""The broker as a Twisted service: it owns the broker core and listens on endpoints."""

from __future__ import annotations

import gc
import ipaddress
import os
import re
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorCore, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker import errors
from mbroker.config import ClusterConfig, Config
from mbroker.core.broker import Broker
from mbroker.core.journal import Journal
from mbroker.core.records import Recovered
from mbroker.server.factory import BrokerFactory
from mbroker.server.stomp import StompFactory
from mbroker.store.bridge import journal_for
from mbroker.store.logstore import FsyncPolicy, LogStore


class ListenError(Exception):
    """The service could not listen on one of its endpoints."""


#: The listen backlog given to an endpoint that does not set its own ``backlog=``:
#: how many connections the kernel queues before the broker accepts them.  Twisted's
#: default, 50, makes a burst of a few hundred connects wait for SYN retries (a second
#: and more each); Redis queues 511 and nginx 511, and Linux caps the number at
#: ``net.core.somaxconn`` (4096 since 5.4).
DEFAULT_BACKLOG = 1024

#: Endpoint types whose description takes a ``backlog=`` argument.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})
_UNESCAPED_COLON = re.compile(r"(?<!\\):")

#: What to install for TLS, from a checkout (``pip install mbroker[tls]`` needs the
#: package on an index).
TLS_EXTRA_HINT = (
    "an ssl: endpoint needs mbroker's tls extra: pip install '.[tls]' in the mbroker checkout"
)


def with_backlog(description: str, backlog: int) -> str:
    """``description`` with ``:backlog=N`` added, for a TCP, TLS or UNIX endpoint that
    does not set its own; any other description is returned as it is."""
    parts = _UNESCAPED_COLON.split(description)
    kind = parts[0].strip().lower()
    if kind not in _BACKLOG_TYPES and not kind.isdigit():  # ("5555" is old-style TCP)
        return description
    if any(part.strip().startswith("backlog=") for part in parts[1:]):
        return description
    return f"{description}:backlog={backlog}"


def endpoint_problem(failure: Failure) -> str:
    """One line that says why an endpoint description could not be used."""
    if failure.check(ImportError) and "OpenSSL" in failure.getErrorMessage():
        return f"{failure.getErrorMessage()}: {TLS_EXTRA_HINT}"
    if failure.check(CannotListenError, OSError):  # a busy port, a missing key file
        return failure.getErrorMessage()
    return f"bad endpoint description: {failure.getErrorMessage()}"


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


def is_local(address: IAddress) -> bool:
    """True for a loopback address or a UNIX socket: only this machine can connect."""
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, (IPv4Address, IPv6Address)):
        try:
            return ipaddress.ip_address(address.host.split("%", 1)[0]).is_loopback
        except ValueError:
            return False
    return False


#: the start-up line of each kind of listener (``kind`` of ``_listen``)
_LISTENING = {
    "": "mbroker listening on {address}",
    "STOMP ": "mbroker STOMP listening on {address}",
    "STOMP-WS ": "mbroker STOMP-WS listening on {address}",
}


class BrokerService(MultiService):
    """Creates the broker and its factory on start and listens on each endpoint.

    ``reactor`` must provide ``IReactorCore`` and ``IReactorTime`` and whatever the endpoint
    descriptions need (``IReactorTCP``, ``IReactorUNIX``, ...).
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorCore,
        config: Config,
        endpoints: list[str],
        data_dir: str | None,
        fsync: FsyncPolicy = "always",
        backlog: int = DEFAULT_BACKLOG,
        stomp_endpoints: list[str] | None = None,
        stomp_ws_endpoints: list[str] | None = None,
        cluster: ClusterConfig | None = None,
    ) -> None:
        super().__init__()
        #: ``--cluster``: the broker is a node of a cluster on Redis (no data dir)
        self.cluster = cluster
        self.cluster_node: Any = None
        self.reactor = reactor
        #: the reactor as a clock (every reactor is one): the broker's and the store's time
        self.clock: IReactorTime = IReactorTime(reactor)
        self.config = config
        self.endpoints = list(endpoints)
        #: Where durable state lives; ``None`` keeps everything in memory.
        self.data_dir = data_dir
        self.fsync: FsyncPolicy = fsync
        #: The listen backlog of endpoints whose description does not give one.
        self.backlog = backlog
        self.store: LogStore | None = None
        self.journal: Journal | None = None
        self.broker: Broker | None = None
        self.factory: BrokerFactory | None = None
        #: STOMP listeners (``--stomp``), served by ``stomp_factory``
        self.stomp_endpoints = list(stomp_endpoints or ())
        self.stomp_factory: StompFactory | None = None
        #: STOMP-over-WebSocket listeners (``--stomp-ws``), on ``stomp_factory`` too
        self.stomp_ws_endpoints = list(stomp_ws_endpoints or ())
        self.stomp_ws_factory: Factory | None = None
        self.ports: list[IListeningPort] = []
        self._starting = False
        self._failures: list[str] = []
        self._unannounced: list[tuple[IListeningPort, str, str]] = []

    def startService(self) -> None:
        super().startService()
        # No cyclic GC while the state is rebuilt: a million recovered messages would
        # otherwise be traversed again and again as they are made (see _settle_gc).
        # What start-up left so far is collected now, while it is small.
        gc.collect()
        gc.disable()
        if self.cluster is not None:
            self._start_cluster(self.cluster)
            return
        if self.data_dir is None:
            self.log.warn("mbroker runs in memory only: durable queues do not survive a restart")
            self._make_broker(None)
            _settle_gc()
            self._start_listening()
            return
        # Open (and replay) the store first, off the reactor thread; listen once the
        # durable state is back, so that no client sees a half-recovered broker.
        self.store = LogStore(self.clock, self.data_dir, fsync=self.fsync)
        started = self.clock.seconds()
        d = self.store.open()
        d.addCallback(self._recovered, started)
        d.addErrback(self._fatal)

    def _recovered(self, recovered: Recovered, started: float) -> None:
        store = self.store
        assert store is not None
        self.journal = journal_for(store, self.clock)
        broker = self._make_broker(self.journal)
        broker.restore(recovered)
        _settle_gc(collect=False)
        self.log.info(
            "mbroker recovered {messages} messages in {queues} durable queues from "
            "{data_dir} in {seconds:.2f} s",
            messages=recovered.message_count(),
            queues=len(recovered.queues),
            data_dir=self.data_dir,
            seconds=self.clock.seconds() - started,
        )
        if self.running:
            self._start_listening()

    def _start_cluster(self, cluster: ClusterConfig) -> None:
        """A cluster node: its queues and namespace live in Redis Cluster; listen once
        it has read the namespace (see mbroker.cluster, docs/cluster.rst)."""
        from mbroker.cluster.startup import ClusterNode  # (imports redis: only with --cluster)

        self.cluster_node = node = ClusterNode(self.reactor, self.config, cluster)

        def ready(broker: Broker) -> None:
            self.journal = broker.journal
            self._make_broker(broker.journal, broker)
            _settle_gc()
            self.log.info(
                "mbroker cluster node {node} on Redis Cluster {url}",
                node=cluster.node_name,
                url=cluster.url,
            )
            if self.running:
                self._start_listening()

        d = node.start()
        d.addCallback(ready)
        d.addErrback(self._fatal)

    def _fatal(self, failure: Failure) -> None:
        """The broker cannot run (its store will not open, it cannot listen): say why
        in one line, stop, and make twistd exit with status 1.

        Only an unexpected error (a bug) is logged with its traceback."""
        gc.enable()
        if failure.check(ListenError, errors.Unavailable, OSError):
            self.log.critical("mbroker cannot start: {reason}", reason=_reason(failure))
        else:
            self.log.failure("mbroker cannot start", failure=failure)
        self.reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    def _make_broker(self, journal: Journal | None, broker: Broker | None = None) -> Broker:
        if broker is None:
            broker = Broker(clock=self.clock, config=self.config, journal=journal)
        self.broker = broker
        self.factory = factory = BrokerFactory(broker, self.config, self.clock)
        factory.noisy = False  # no "Starting factory <... at 0x7f...>" at start-up
        if self.stomp_endpoints or self.stomp_ws_endpoints:
            self.stomp_factory = StompFactory(
                broker,
                self.config,
                self.clock,
                auth=factory.auth,
                watch=factory.watch,
                password_checks=factory.password_checks,
                scheduler=factory,
            )
            self.stomp_factory.noisy = False
        if self.stomp_ws_endpoints:
            from mbroker.server.stomp_ws import StompWebSocketFactory  # (needs autobahn)

            assert self.stomp_factory is not None
            self.stomp_ws_factory = StompWebSocketFactory(self.stomp_factory)
            self.stomp_ws_factory.noisy = False
        if factory.auth is not None:
            self.log.info(
                "mbroker requires AUTH: {users} users in {users_file}",
                users=len(factory.auth.users),
                users_file=factory.auth.path,
            )
        elif not factory.auth_required:
            self.log.warn(
                "mbroker is open: no --users file, so anyone who can connect may do anything"
            )
        return broker

    def _start_listening(self) -> None:
        factory = self.factory
        assert factory is not None
        self._starting, self._failures, self._unannounced = True, [], []
        try:
            for description in self.endpoints:
                self._listen(description, factory)
            if self.stomp_factory is not None:  # (after recovery: amq.* may be back)
                self.stomp_factory.declare_exchanges()
                for description in self.stomp_endpoints:
                    self._listen(description, self.stomp_factory, "STOMP ")
            if self.stomp_ws_factory is not None:
                for description in self.stomp_ws_endpoints:
                    self._listen(description, self.stomp_ws_factory, "STOMP-WS ")
        finally:
            self._starting = False
        if self._failures:
            # Fail start-up (one line, twistd exits 1); close what did open first.  No
            # exception out of startService: twistd would print it as a traceback.
            for port in self.ports:
                port.stopListening()
            self.ports = []
            self._fatal(Failure(ListenError("; ".join(self._failures))))
            return
        for port, description, kind in self._unannounced:
            self.reactor.callWhenRunning(self._announce, port, description, kind)

    def _listen(self, description: str, factory: Factory, kind: str = "") -> None:
        try:
            endpoint = serverFromString(self.reactor, with_backlog(description, self.backlog))
        except Exception as e:
            self._listen_failed(Failure(e), description)
            return
        d: Deferred[IListeningPort] = endpoint.listen(factory)
        d.addCallbacks(
            self._listening,
            self._listen_failed,
            callbackArgs=(description, kind),
            errbackArgs=(description,),
        )

    def _listening(self, port: IListeningPort, description: str, kind: str = "") -> None:
        if not self.running:  # stopped while this endpoint was still starting
            port.stopListening()
            return
        self.ports.append(port)
        factory = self.factory
        address = port.getHost()
        if factory is not None and not factory.auth_required and not is_local(address):
            self.log.warn(
                "mbroker is open to the network on {address}: it has no --users file, so "
                "anyone who can reach that address may do anything. Listen on loopback "
                "(tcp:5555:interface=127.0.0.1) or give --users FILE.",
                address=describe_address(address),
                endpoint=description,
            )
        if self._starting:  # said once every endpoint listens (_start_listening)
            self._unannounced.append((port, description, kind))
        else:
            self.reactor.callWhenRunning(self._announce, port, description, kind)

    def _announce(self, port: IListeningPort, description: str, kind: str = "") -> None:
        # Said once the reactor runs: from then on connections are served and twistd's
        # signal handlers are in place, so whoever waits for this line may send SIGTERM.
        if port in self.ports:
            self.log.info(
                _LISTENING[kind],
                address=describe_address(port.getHost()),
                endpoint=description,
            )

    def _listen_failed(self, failure: Failure, description: str) -> None:
        message = f"cannot listen on {description}: {endpoint_problem(failure)}"
        if self._starting:  # said once, by _fatal, with every other endpoint's failure
            self._failures.append(message)
            return
        if failure.check(CannotListenError, ValueError, ImportError, OSError):
            self.log.critical("mbroker {message}", message=message)
        else:
            self.log.failure(
                "mbroker cannot listen on {endpoint}", failure=failure, endpoint=description
            )
        if self.running:
            # An endpoint that listens asynchronously failed after start-up.
            self.log.critical("mbroker stopping: {message}", message=message)
            self.reactor.stop()

    def stopService(self) -> Deferred[Any]:
        gc.enable()  # (stopped before the store had opened)
        ports, self.ports = self.ports, []
        d: Deferred[Any] = gatherResults([self._stop_listening(port) for port in ports])
        d.addCallback(lambda _: self._close_store())
        d.addCallback(lambda _: super(BrokerService, self).stopService())
        return d

    def _close_store(self) -> Deferred[Any] | None:
        """Graceful stop: hand the last records to the store, then flush, fsync, close."""
        if self.cluster_node is not None:
            stopped: Deferred[Any] = self.cluster_node.stop()
            return stopped
        if self.store is None:
            return None
        if self.journal is not None:
            self.journal.commit()
        d: Deferred[Any] = self.store.close()
        d.addErrback(lambda f: self.log.failure("closing the store failed", failure=f))
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


#: the cyclic collector's youngest-generation threshold once the broker runs
#: (CPython's default is 700 allocations)
GC_THRESHOLD = 10_000


def _settle_gc(collect: bool = True) -> None:
    """Start the cyclic garbage collector for a running broker.

    Everything alive now (the modules, and the recovered messages) is moved out of
    the collector's sight with ``gc.freeze``: it would otherwise be traversed by every
    full collection for as long as it lives.  The broker allocates a few objects per
    message (the message, its delivery, its store record), almost none of them in
    cycles, and frees them by reference counting; collecting the youngest generation
    every 700 allocations cost 10-20 % of the durable path's CPU (measured in-process),
    so it runs every ``GC_THRESHOLD`` instead.

    After recovery (``collect=False``) there is no collection first: it would
    traverse every recovered message (0.4 s for a million) to find no garbage, as
    recovery frees what it drops by reference counting, and ``startService``
    collected just before."""
    if collect:
        gc.collect()
    if hasattr(gc, "freeze"):  # (CPython's collector; PyPy's is another design)
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(GC_THRESHOLD, older, oldest)
    gc.enable()


def _reason(failure: Failure) -> str:
    """The one-line reason of a start-up failure (an errors.BrokerError without its code)."""
    value = failure.value
    if isinstance(value, errors.BrokerError) and value.text:
        return value.text
    return failure.getErrorMessage()


def exit_failed() -> None:
    """End the process with status 1 after a failed start (a shutdown trigger)."""
    # twistd has no exit status of its own for "stopped because it could not start"
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
