"""The factory of broker connections: one :class:`BrokerProtocol` per connection, all
sharing one broker, the memory watch, the password checks and the batched writes.

Output is written once per read: while a connection handles what it read
(``reading``), every connection it queued bytes for (deliveries to subscribers) is
noted, and all are written when it is done (:meth:`BrokerFactory.flush_all`); output
queued at any other time (a timer, a store commit) is written at the end of the reactor
turn.  Past the connection limit a :class:`RefusingProtocol` says ``-ERR LIMIT`` and
hangs up.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IReactorTime, ITransport
from twisted.internet.protocol import Factory, Protocol

from mbroker import errors
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.auth import Authenticator, User
from mbroker.server.login import PasswordChecks
from mbroker.server.memwatch import MemoryWatch
from mbroker.server.output import Flusher
from mbroker.server.protocol import BrokerProtocol
from mbroker.wire.encode import error_line


class BrokerFactory(Factory, Flusher):
    """Makes a :class:`BrokerProtocol` per connection, all sharing one broker; it is the
    broker's :class:`~mbroker.server.output.Flusher` (the STOMP listener's too).

    With ``config.users_file`` it checks passwords (``auth``) through
    :class:`~mbroker.server.login.PasswordChecks` (``password_checks``, which the
    broker's other front doors share): in the reactor's thread pool, or inline with
    ``check_in_thread=False``.
    """

    def __init__(
        self,
        broker: Broker,
        config: Config,
        reactor: IReactorTime | None = None,
        auth: Authenticator | None = None,
        check_in_thread: bool = True,
    ) -> None:
        self.broker = broker
        self.config = config
        self.reactor = reactor
        if auth is None and config.users_file is not None:
            auth = Authenticator(config.users_file)
        self.auth = auth
        self.auth_required = config.auth_required or auth is not None
        #: every front door of this broker checks passwords through these
        self.password_checks = PasswordChecks(auth, reactor, check_in_thread)
        self.watch = MemoryWatch(
            broker.clock, config.memory_high_water, config.memory_check_interval
        )
        Flusher.__init__(self, broker.clock)
        #: the connections now open (for monitoring: see BrokerProtocol.report)
        self.protocols: set[BrokerProtocol] = set()
        #: bytes read from and written to the connections already closed
        self.closed_bytes_in = 0
        self.closed_bytes_out = 0

    def closed(self, p: BrokerProtocol) -> None:
        """``p``'s connection is gone: forget it, keep its byte counts."""
        self.protocols.discard(p)
        self.closed_bytes_in += p.bytes_in
        self.closed_bytes_out += p.output.bytes_out

    def bytes_totals(self) -> tuple[int, int]:
        """Bytes read from and written to every connection since start (for /metrics)."""
        protocols = list(self.protocols)
        return (
            self.closed_bytes_in + sum([p.bytes_in for p in protocols]),
            self.closed_bytes_out + sum([p.output.bytes_out for p in protocols]),
        )

    def startFactory(self) -> None:
        self.watch.start()

    def stopFactory(self) -> None:
        self.watch.stop()

    def check_password(self, user: str, password: str) -> Deferred[tuple[User | None, str | None]]:
        """``(user, None)`` for the right password, ``(None, None)`` otherwise; the
        second item says why a changed users file could not be re-read."""
        return self.password_checks.check(user, password)

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        if self.broker.connections >= self.config.max_connections:
            return RefusingProtocol(f"at most {self.config.max_connections} connections")
        p = BrokerProtocol(self.broker, self.config, self)
        p.factory = self
        return p


class RefusingProtocol(Protocol):
    """Says ``-ERR LIMIT …`` and hangs up: the connection limit was reached."""

    def __init__(self, text: str) -> None:
        self.text = text

    def connectionMade(self) -> None:
        transport = cast(ITransport, self.transport)
        transport.write(error_line(errors.Limit(self.text)))
        transport.loseConnection()
