"""How a :class:`~mbroker.client.connection.Client` reaches its broker: the connections.

A :class:`Link` makes the client's connections, once or (``reconnect``) again and
again through a :class:`~twisted.application.internet.ClientService`, and prepares
each one before the client uses it: the greeting, the AUTH, the client's
``on_connect``, the subscriptions restored.  It tells the client what happens through
the small :class:`LinkOwner` interface, and knows nothing of the commands.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable
from typing import Any, Protocol, cast

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.client.messages import ClientError, ConnectionLost, NotABroker, NotConnected
from mbroker.client.protocol import ClientProtocol
from mbroker.client.subscription import Subscriptions
from mbroker.wire.frames import Auth, Heartbeat
from mbroker.wire.replydata import ok_count, ok_none
from mbroker.wire.tokens import HEARTBEAT_MAX, HEARTBEAT_MIN

__all__ = ["Greeted", "Link", "LinkOwner"]

log = Logger()


class LinkOwner(Protocol):
    """What a :class:`Link` tells the client it connects."""

    def use_connection(self, proto: ClientProtocol | None) -> None:
        """Send commands on ``proto`` (greeted, still being prepared); None: on none."""

    def connection_lost(self, proto: ClientProtocol, reason: Failure) -> None:
        """``proto`` ended (whether or not it was ever used)."""


class Greeted(Protocol):
    """A new connection: a :class:`ClientProtocol`, or ClientService's proxy of one."""

    def when_ready(self) -> Deferred[ClientProtocol]:
        """Fires with the protocol once the broker greeted it."""


class Link(Factory):
    """The connections of one client; also the factory of their protocols.

    ``on_connect`` runs on every connection after the AUTH (``user``, ``password``)
    and the ``HEARTBEAT`` (``heartbeat`` seconds, when given), before ``subscriptions``
    are restored; ``greeting_timeout`` is how long a server may
    stay silent once connected (see :func:`~mbroker.client.connection.connect`).
    """

    noisy = False

    def __init__(
        self,
        reactor: IReactorTime,
        owner: LinkOwner,
        subscriptions: Subscriptions,
        *,
        user: str | None = None,
        password: str | None = None,
        on_connect: Callable[[], Any] | None = None,
        greeting_timeout: float | None = None,
        heartbeat: float | None = None,
    ) -> None:
        self._reactor = reactor
        self._heartbeat = heartbeat_ms(heartbeat)
        self._owner = owner
        self._subscriptions = subscriptions
        self._user = user
        self._password = password
        self._on_connect = on_connect
        self._greeting_timeout = greeting_timeout
        self._service: ClientService | None = None
        #: with ``reconnect``: what :func:`connect` waits for, until it fired
        self._first: Deferred[Any] | None = None
        #: the connection being prepared or in use
        self._proto: ClientProtocol | None = None
        self._closing = False

    def buildProtocol(self, addr: IAddress | None) -> ClientProtocol:
        """A protocol that tells the owner when it ends."""
        return ClientProtocol(
            self._reactor, on_lost=self._lost, greeting_timeout=self._greeting_timeout
        )

    @property
    def closing(self) -> bool:
        """True once the client closes (or gave up on its first connection)."""
        return self._closing

    @property
    def reconnecting(self) -> bool:
        """True when a lost connection will be replaced (``reconnect`` and not closed)."""
        return self._service is not None and not self._closing

    # ------------------------------------------------------------ connecting

    def connect_once(self, endpoint: IStreamClientEndpoint) -> Deferred[None]:
        """One connection; fires once it is prepared."""
        return Deferred.fromCoroutine(self._connect_once(endpoint))

    async def _connect_once(self, endpoint: IStreamClientEndpoint) -> None:
        proto = await endpoint.connect(self)
        await self._prepare(proto)

    def keep_connected(
        self, endpoint: IStreamClientEndpoint, retry_policy: Callable[[int], float] | None
    ) -> Deferred[Any]:
        """Connect, and again whenever the connection is lost (with back-off), until
        :meth:`stop`; fires once the first connection is prepared."""
        policy = retry_policy or backoffPolicy(initialDelay=0.1, maxDelay=10.0, factor=2.0)
        self._service = ClientService(
            endpoint,
            self,
            retryPolicy=policy,
            clock=self._reactor,
            prepareConnection=self.prepare,
        )
        self._service.startService()
        connected = self._service.whenConnected()
        # The first connection, or a first server that is not a broker (retrying will not
        # make it one; a refused connection is retried: the broker may start later).
        first: Deferred[Any] = Deferred(lambda _: connected.cancel())
        self._first = first

        def settle(outcome: object) -> None:
            if first.called:
                return  # cancelled, or the first server was not a broker
            if isinstance(outcome, Failure):
                first.errback(outcome)
            else:
                first.callback(outcome)

        connected.addBoth(settle)
        return first

    def when_connected(self) -> Deferred[None]:
        """With ``reconnect``: fires at the next connection; else fails at once."""
        if self._service is None or self._closing:
            return fail(NotConnected("not connected"))
        return self._service.whenConnected().addCallback(lambda _: None)

    def _not_a_broker(self, error: NotABroker) -> None:
        first = self._first
        if first is not None and not first.called:
            # Not from inside ClientService's state machine, which the errback stops.
            self._reactor.callLater(0, _fail_unless_called, first, error)

    def prepare(self, protocol: IProtocol) -> Deferred[None]:
        """Get a new connection ready for the client: greeting, AUTH, ``on_connect``,
        subscriptions; the connection is closed if any of it fails.

        """
        return Deferred.fromCoroutine(self._prepare(protocol))

    async def _prepare(self, protocol: IProtocol) -> None:
        try:
            # this factory's protocol, or ClientService's proxy of one
            proto = await cast(Greeted, protocol).when_ready()
        except NotABroker as e:
            self._not_a_broker(e)
            raise
        try:
            if self._closing:
                raise NotConnected("the client is closed")
            self._proto = proto
            self._owner.use_connection(proto)
            if self._user is not None:
                await proto.command(Auth(self._user, self._password or ""), ok_none)
            if self._heartbeat:
                await proto.command(Heartbeat(self._heartbeat), ok_count)
            if self._on_connect is not None:
                result = self._on_connect()
                if isawaitable(result):
                    await result
            await self._subscriptions.restore(proto)
        except BaseException as e:
            if self._proto is proto:
                self._proto = None
                self._owner.use_connection(None)
            proto.close()
            if self.reconnecting and not isinstance(e, ClientError):
                # ClientService only retries: say why this connection was dropped.
                log.failure("preparing the connection to the broker failed", Failure())
            raise

    def _lost(self, proto: ClientProtocol, reason: Failure) -> None:
        if self._proto is proto:
            self._proto = None
        self._owner.connection_lost(proto, reason)
        if not self.reconnecting:
            why = reason.getErrorMessage()
            self._subscriptions.end_all(Failure(ConnectionLost(f"connection lost: {why}")))

    # -------------------------------------------------------------- stopping

    def abandon(self) -> None:
        """The first connection never came: stop trying."""
        self._closing = True
        if self._service is not None:
            self._service.stopService()
        if self._proto is not None:
            self._proto.close()

    def start_closing(self) -> None:
        """The client is closing: make no new connection."""
        self._closing = True

    def stop(self) -> Deferred[None]:
        """Close the connection and make no other; fires once it is gone."""
        self._closing = True
        if self._service is not None:
            return self._service.stopService()
        proto = self._proto
        if proto is None:
            return succeed(None)
        proto.close()
        return proto.when_lost()


def heartbeat_ms(seconds: float | None) -> int:
    """``connect(heartbeat=)`` in seconds as HEARTBEAT's milliseconds (0: none); a
    ``ValueError`` outside 1 to 3600 seconds."""
    if not seconds:
        return 0
    ms = round(seconds * 1000)
    if not HEARTBEAT_MIN <= ms <= HEARTBEAT_MAX:
        raise ValueError(f"heartbeat must be 1 to 3600 seconds (or None), not {seconds!r}")
    return ms


def _fail_unless_called(d: Deferred[Any], error: Exception) -> None:
    if not d.called:
        d.errback(Failure(error))
