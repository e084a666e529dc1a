"""The STOMP listener: :class:`StompFactory`, one per listening port, makes a
:class:`~mbroker.server.stomp_protocol.StompProtocol` per connection, all on one broker,
and refuses connections past the limit; it checks passwords for them all.

Each connection is :mod:`mbroker.server.stomp_protocol` (bytes in, connection life,
heart-beats, flow control), its frame handlers :mod:`mbroker.server.stomp_commands`.
Both names are importable from here.  See ``docs/stomp.rst`` for what users see.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.internet.protocol import Factory, Protocol

from mbroker import errors
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.auth import Authenticator, User
from mbroker.server.login import PasswordChecks
from mbroker.server.memwatch import MemoryWatch
from mbroker.server.output import Flusher, FlushScheduler
from mbroker.server.stomp_destinations import AMQ_EXCHANGES
from mbroker.server.stomp_protocol import StompProtocol
from mbroker.wire.frames import QueueOptions
from mbroker.wire.stomp import Frame, encode

__all__ = ["DEFAULT_HEARTBEAT", "StompFactory", "StompProtocol"]

#: the heart-beat the server offers (``sx,sy`` in ms): it can send every second, and
#: wants to hear from the client at least every second (each side may ask for less)
DEFAULT_HEARTBEAT = (1000, 1000)


class StompFactory(Factory):
    """Makes a :class:`StompProtocol` per connection, all on one broker.

    ``auth`` (or ``config.users_file``) makes CONNECT need a login and passcode, checked
    by ``password_checks`` (give the native factory's, so that the broker's bound on
    concurrent checks holds across its front doors; else one of its own).
    ``heartbeat`` is the ``sx,sy`` the server offers, in milliseconds; ``watch`` the
    memory watch that holds publishers over the high-water mark; ``scheduler`` the
    :class:`~mbroker.server.output.FlushScheduler` that writes output at the end of a
    read (the native factory's, to share it).
    """

    def __init__(
        self,
        broker: Broker,
        config: Config,
        reactor: IReactorTime | None = None,
        auth: Authenticator | None = None,
        heartbeat: tuple[int, int] = DEFAULT_HEARTBEAT,
        check_in_thread: bool = True,
        watch: MemoryWatch | None = None,
        password_checks: PasswordChecks | None = None,
        scheduler: FlushScheduler | None = None,
    ) -> None:
        self.broker = broker
        self.config = config
        self.reactor = reactor
        if auth is None and config.users_file is not None:
            auth = Authenticator(config.users_file)
        self.auth = auth
        self.auth_required = config.auth_required or auth is not None
        self.heartbeat = heartbeat
        #: the broker's memory watch (the native factory's: one per broker); without
        #: one (tests), a watch with no mark, which never holds anything
        self.watch = watch if watch is not None else MemoryWatch(broker.clock, 0)
        if password_checks is None:
            password_checks = PasswordChecks(auth, reactor, check_in_thread)
        self.password_checks = password_checks
        #: writes the connections' output at the end of a read (give the native
        #: factory, so that a read on either front door writes what it delivered to
        #: both; without one, a scheduler of its own)
        self.scheduler: FlushScheduler = (
            scheduler if scheduler is not None else Flusher(broker.clock)
        )

    def declare_exchanges(self) -> None:
        """Make ``amq.direct``, ``amq.fanout`` and ``amq.topic`` (durable) if missing."""
        for name, kind in AMQ_EXCHANGES.items():
            try:
                self.broker.get(name)
            except errors.NotFound:
                self.broker.create(None, name, kind, QueueOptions(durable=True))

    def check_password(self, user: str, password: str) -> Deferred[tuple[User | None, str | None]]:
        """``(user, None)`` for the right password, ``(None, None)`` otherwise; the
        second item says why a changed users file could not be re-read."""
        return self.password_checks.check(user, password)

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if self.broker.connections >= self.config.max_connections:
            return _Refuse(f"at most {self.config.max_connections} connections")
        return StompProtocol(self)


class _Refuse(Protocol):
    """Says ERROR and hangs up: the connection limit was reached."""

    def __init__(self, text: str) -> None:
        self.text = text

    def connectionMade(self) -> None:
        tr = cast(ITransport, self.transport)
        tr.write(encode(Frame("ERROR", (("message", self.text),))))
        tr.loseConnection()
