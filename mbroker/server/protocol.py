"""One :class:`BrokerProtocol` per connection: bytes in, commands run in order, and the push
producer of its own transport.

Bytes go to the sans-IO :class:`~mbroker.wire.commands.CommandDecoder`; each command goes to its
handler in :mod:`mbroker.server.commands`, which calls the :class:`~mbroker.core.broker.Broker`;
replies go out through the connection's :class:`~mbroker.server.output.Output`, which keeps them
in command order.  Exactly one place (:meth:`BrokerProtocol._run`) turns
:class:`~mbroker.errors.BrokerError` into ``-ERR`` lines.

A command that waits holds back the later commands in a backlog; while a PULL waits the socket
is still read (a client gone by FIN or RST is noticed, its PULL takes nothing), until the
backlog holds ``_BACKLOG_MAX`` bytes.

Flow control: the protocol is the push producer of its own transport.  When the transport's
buffer fills (:meth:`pauseProducing`) the broker stops delivering here, we stop reading, and
the commands not yet run wait in the backlog until the output drains; over the memory mark
(:class:`MemoryWatch`) a connection that sends a PUBLISH is held the same way.

Half-close (:class:`~twisted.internet.interfaces.IHalfCloseableProtocol`): a client that shuts
down its sending side still gets the reply to every command it sent, then the broker closes.

Authentication: before AUTH a connection may send ``pre_auth_max_bytes`` within
``auth_timeout``; AUTH holds later commands while argon2 runs in a thread.

Heartbeats (``HEARTBEAT <MS>``): one timer per connection, which compares times when it fires
(see :meth:`BrokerProtocol.heartbeat`); a read notes its time and a write sets
:attr:`Output.wrote`, nothing more on the hot path.
"""

from __future__ import annotations

from collections import deque
from typing import Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mbroker import __version__, errors
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.core.model import QueuedMessage, Session
from mbroker.core.snapshots import ConnectionReport
from mbroker.server.auth import User
from mbroker.server.commands import (
    HANDLERS,
    PRE_AUTH_HANDLERS,
    Commands,
    Publishing,
    command_count,
)
from mbroker.server.memwatch import MemoryWatch
from mbroker.server.output import FlushScheduler, Output, Slot, StreamTransport
from mbroker.wire import frames
from mbroker.wire.commands import CommandDecoder
from mbroker.wire.encode import (
    PING_LINE,
    append_deliveries,
    append_run,
    encode_frame,
    error_line,
    hello_line,
)

log = Logger()


class ConnectionHost(FlushScheduler, TypingProtocol):
    """What a connection asks of the factory that made it (a ``BrokerFactory``)."""

    #: the broker's memory against its mark, shared by every connection
    watch: MemoryWatch
    #: connections must log in
    auth_required: bool
    #: the connections now open (for monitoring: see BrokerProtocol.report)
    protocols: set[BrokerProtocol]

    def closed(self, p: BrokerProtocol) -> None: ...

    def check_password(
        self, user: str, password: str
    ) -> Deferred[tuple[User | None, str | None]]: ...


_OK = b"+OK\r\n"
_AUTH_FAILED = error_line(errors.AuthFailed("wrong user or password"))
#: what the memory watch holds, and counts (see :meth:`BrokerProtocol._count_held`)
_PUBLISHING = (frames.Publish, frames.PublishRun)
#: bytes read behind a waiting PULL before reading stops until it is answered
_BACKLOG_MAX = 64 * 1024


@implementer(IPushProducer, IHalfCloseableProtocol)
class BrokerProtocol(Protocol):
    session: Session
    #: the replies' and deliveries' way out (made when the connection is)
    output: Output
    #: the handlers of this connection's commands and its user's permissions
    commands: Commands

    def __init__(self, broker: Broker, config: Config, host: ConnectionHost) -> None:
        self.broker = broker
        self.config = config
        self._host = host
        self.decoder = CommandDecoder(config.max_line, config.max_payload)
        self._journal = broker.journal
        #: commands decoded while an earlier one waits (PULL wait, AUTH, memory) or
        #: while the output is congested, to run in order later
        self._backlog: deque[Any] = deque()
        #: bytes read while a PULL waits (reading stops past _BACKLOG_MAX)
        self._backlog_bytes = 0
        self._waiting = False
        #: the command that waits is a PULL: the socket is still read meanwhile
        self._pull_waiting = False
        self._closing = False
        #: commands are not run now: closing, waiting or congested (one test per command)
        self._stop = False
        #: the peer shut down its sending side: close once every reply is out
        self._eof = False
        #: the transport's buffer is full (it paused us as its producer)
        self._congested = False
        self._paused_reading = False
        self._producing = False
        self._handlers = HANDLERS
        self._auth_required = host.auth_required
        self._auth_busy = False
        self._pre_auth_bytes = 0
        self._auth_timer: IDelayedCall | None = None
        self._idle_timer: IDelayedCall | None = None
        self._last_read = 0.0
        #: when the idle check last found the connection busy (subscribed, waiting)
        self._busy_at = 0.0
        #: note the time of each read (idle timeout or heartbeats on)
        self._note_reads = False
        #: the heartbeat interval in seconds (0: off), its timer, and since when (at
        #: the latest) nothing was sent
        self._heartbeat = 0.0
        self._heartbeat_timer: IDelayedCall | None = None
        self._quiet_since = 0.0
        self._lost = False
        self._watch = host.watch
        #: bytes read from the peer (one add per read, for monitoring)
        self.bytes_in = 0

    @property
    def user(self) -> User | None:
        """The logged-in user (None: nobody yet, or an open broker)."""
        return self.commands.user

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def eof(self) -> bool:
        return self._eof

    # ------------------------------------------------------------ connection life

    def connectionMade(self) -> None:
        self._tr = cast(StreamTransport, self.transport)
        self.session = self.broker.open_session(self)
        self.output = output = Output(self._tr, self._journal, self._host)
        self.commands = Commands(self, self.broker, self.session, output, self._watch)
        config = self.config
        clock = self.broker.clock
        self.since = clock.seconds()
        self._host.protocols.add(self)
        if self._auth_required:
            self._handlers = PRE_AUTH_HANDLERS
            if config.auth_timeout > 0:
                self._auth_timer = clock.callLater(config.auth_timeout, self._auth_expired)
        if config.idle_timeout > 0:
            self._note_reads = True
            self._last_read = clock.seconds()
            self._idle_timer = clock.callLater(config.idle_timeout, self._idle_check)
        hello = hello_line(__version__, self._auth_required, config.max_payload)
        output.bytes_out = len(hello)
        self._tr.write(hello)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = self._stop = True
        self._lost = True
        self.output.closing = self.output.lost = True
        if self in self._watch.blocked:
            self._count_held()
        self._backlog.clear()
        for timer in (self._auth_timer, self._idle_timer, self._heartbeat_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._auth_timer = self._idle_timer = self._heartbeat_timer = None
        self.broker.close_session(self.session)
        self._host.closed(self)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if not self._producing:
            # Registered on the first bytes, not in connectionMade: a TLS transport
            # pauses its producer until its handshake is done, and pausing us stops
            # reading, so a producer registered before the handshake deadlocks it.
            self._producing = True
            self._tr.registerProducer(self, True)
        if self._note_reads:
            self._last_read = self.broker.clock.seconds()
        size = len(data)
        self.bytes_in += size
        watch = self._watch
        watch.received += size
        if watch.received > watch.check_after:
            watch.check()
        items = self.decoder.feed(data)
        host = self._host
        host.reading = True  # (output queued meanwhile is written just below)
        try:
            if self._waiting or self._backlog:
                self._backlog.extend(items)
                if self._pull_waiting:
                    self._backlog_bytes += size
                    if self._backlog_bytes > _BACKLOG_MAX:
                        self._update_reading()
            else:
                self._run(items)
        finally:
            host.reading = False
            # what this read delivered to subscribers goes out now, in one write each
            host.flush_all()
        if self._handlers is PRE_AUTH_HANDLERS and not self._auth_busy:
            # Before login a connection may send a few lines, not payloads: bytes
            # that came with an AUTH being checked do not count (reading stops then).
            self._pre_auth_bytes += size
            if self._pre_auth_bytes > self.config.pre_auth_max_bytes:
                self._limit(f"more than {self.config.pre_auth_max_bytes} bytes before AUTH")

    # ------------------------------------------------------- the dispatch loop

    def _run(self, items: Any) -> None:
        """Run decoded commands (and refusals) in order, until one waits."""
        journal = self._journal
        output = self.output
        commands = self.commands
        for n, item in enumerate(items):
            if self._stop:  # closing, waiting or congested
                if not self._closing:
                    self._backlog.extend(items[n:])
                return
            if journal is not None:
                output.mark = journal.changes
            if isinstance(item, errors.BrokerError):
                output.reply(error_line(item))
                if item.fatal:
                    self.close()
                    return
                continue
            try:
                # (not a local: a successful AUTH changes the table mid-loop)
                self._handlers[type(item)](commands, item)
            except errors.BrokerError as e:
                k = command_count(item)
                output.reply(error_line(e) * k, count=k)
            except Exception:
                log.failure("command {command!r} failed", command=item, peer=self._peer())
                internal = error_line(errors.Internal("see the broker's log"))
                k = command_count(item)
                output.reply(internal * k, count=k)
        if not self._host.reading:
            output.flush()
        # (else the read's flush_all writes everyone's output in the order it was
        # queued: the deliveries a publish made go out before its own +OK)

    def close(self) -> None:
        """Write nothing more after the last reply, and close once it is sent.

        The broker stops delivering to this connection at once (else a MSG could follow
        ``+OK bye`` or a fatal ``-ERR``), and the producer is unregistered: Twisted
        closes a transport with a registered producer only once it is unregistered, so a
        connection whose output had been paused would otherwise stay open for ever.
        """
        if self._closing:
            return
        self._closing = self._stop = True
        self.output.closing = True
        self._backlog.clear()
        self.broker.set_writable(self.session, False)
        # (replies may still wait for the disk: hang up once they are out)
        self.output.when_replied(self._hang_up)

    def _limit(self, text: str) -> None:
        """A connection limit was hit: ``-ERR LIMIT <text>``, then close."""
        if self._closing:
            return
        log.info("closing {peer}: {limit}", peer=self._peer(), limit=text)
        self.output.say(error_line(errors.Limit(text)))
        self.close()

    def _hang_up(self) -> None:
        self.output.flush()
        if self._producing:
            self._producing = False
            self._tr.unregisterProducer()
        self._tr.loseConnection()

    def _peer(self) -> str:
        """``host:port`` of the peer (``[host]:port`` for IPv6), for the log."""
        try:
            peer = self._tr.getPeer()
        except Exception:
            return "?"
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        if host is None or port is None:
            return str(peer)
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"

    # ------------------------------------------------------------ waiting

    def wait(self, pull: bool = False) -> None:
        """Hold later commands until :meth:`drain_backlog`; a PULL keeps reading."""
        self._waiting = self._stop = True
        self._pull_waiting = pull
        self._backlog_bytes = 0
        self._update_reading()

    def drain_backlog(self) -> None:
        """The command that waited is answered: run what queued behind it."""
        self._waiting = self._pull_waiting = False
        self._backlog_bytes = 0
        self._stop = self._closing or self._congested
        if self._closing:
            return
        self._run_backlog()

    def _run_backlog(self) -> None:
        """Run the commands that queued (until one waits or the output congests
        again), read again once there are none, and close after a half-close."""
        if self._backlog and not self._stop:
            backlog, self._backlog = self._backlog, deque()
            self._run(list(backlog))
        self._update_reading()
        if self._eof and not (self._waiting or self._backlog or self._closing):
            self.close()  # (once the replies still waiting for the disk are out)

    # ------------------------------------------------------ DeliveryTarget API

    def push(self, sid: int, tag: int, message: QueuedMessage) -> None:
        output = self.output
        output.queued(append_deliveries(output.out, sid, tag, (message,)) + 32)

    def push_many(self, sid: int, tag: int, messages: list[QueuedMessage]) -> None:
        output = self.output
        output.queued(append_deliveries(output.out, sid, tag, messages) + 32 * len(messages))

    def push_run(self, sid: int, tag: int, route: bytes, payloads: list[bytes]) -> None:
        output = self.output
        output.queued(append_run(output.out, sid, tag, route, payloads) + 32 * len(payloads))

    def cancelled(self, sid: int, reason: str) -> None:
        self.output.send(encode_frame(frames.Cancel(sid, reason)))

    def slow(self, sid: int) -> None:
        if not self._closing:
            self.output.send(error_line(errors.Limit("slow consumer")))
            self.close()

    # ----------------------------------------------------------- IPushProducer

    def pauseProducing(self) -> None:
        self._congested = self._stop = True
        self.broker.set_writable(self.session, False)
        self._update_reading()

    def resumeProducing(self) -> None:
        self._congested = False
        self._stop = self._closing or self._waiting
        if self._backlog and not self._stop:
            # commands a congested read left: run them on the next turn (not inside
            # the transport's write), reading stays paused until they have run
            self.broker.clock.callLater(0, self._resume_backlog)
        else:
            self._update_reading()
        self.broker.set_writable(self.session, True)
        self.output.flush()  # the transport has room: what that let through goes now

    def _resume_backlog(self) -> None:
        if not self._closing:
            self._run_backlog()

    def _update_reading(self) -> None:
        """Read from the peer unless our output is congested, a command other than a
        PULL waits, the commands behind a waiting PULL pass ``_BACKLOG_MAX`` bytes,
        or commands a congested read left are still to run."""
        if self._waiting:
            paused = self._congested or not self._pull_waiting or self._backlog_bytes > _BACKLOG_MAX
        else:
            paused = self._congested or bool(self._backlog)
        # (after a half-close the transport reads no more: resuming would re-read EOF)
        if paused != self._paused_reading and not (self._closing or self._eof):
            self._paused_reading = paused
            if paused:
                self._tr.pauseProducing()
            else:
                self._tr.resumeProducing()

    def stopProducing(self) -> None:
        self._closing = self._stop = True
        self.output.closing = True

    # -------------------------------------------------- IHalfCloseableProtocol

    def readConnectionLost(self) -> None:
        """The peer will send nothing more: answer what it sent, then close.  A PULL
        that waits ends at once and takes nothing (its client may be gone)."""
        if self._closing:
            return
        self._eof = True
        self.broker.end_waits(self.session)
        if not self._waiting:
            self._run_backlog()
        # (else the drain that follows the command that waits closes)

    def writeConnectionLost(self) -> None:
        pass

    # ------------------------------------------------------------------ timers

    def _auth_expired(self) -> None:
        self._auth_timer = None
        if self._closing or self._handlers is not PRE_AUTH_HANDLERS:
            return
        if self._auth_busy:  # an AUTH is being checked: its answer decides
            self._auth_timer = self.broker.clock.callLater(1.0, self._auth_expired)
            return
        self._limit(f"no AUTH within {self.config.auth_timeout:g} s")

    def _idle_check(self) -> None:
        """Close a connection that sent nothing for ``idle_timeout`` seconds.

        One timer per connection, re-armed from the time of the last read (a read
        only notes the time).  Not idle: a connection with subscriptions (it listens),
        one whose command waits (PULL, AUTH, memory) or whose output is congested."""
        self._idle_timer = None
        if self._closing:
            return
        clock = self.broker.clock
        timeout = self.config.idle_timeout
        now = clock.seconds()
        if self.session.consumers or self._waiting or self._congested:
            self._busy_at = now  # (not _last_read: heartbeats count only what was read)
        left = max(self._last_read, self._busy_at) + timeout - now
        if left <= 0:
            self._limit(f"idle for {timeout:g} s")
            return
        self._idle_timer = clock.callLater(left, self._idle_check)

    # -------------------------------------------------------------- heartbeats

    def heartbeat(self, ms: int) -> None:
        """``HEARTBEAT <ms>``: start (or restart, or with 0 stop) the heartbeat timer.  It
        pushes ``PING`` once nothing was sent for MS (up to MS / 2 late: it looks every
        MS / 2 and sees a write only as a flag) and closes with ``-ERR LIMIT heartbeat``
        once nothing came for 3 x MS, aborting MS later a peer that cannot take it."""
        timer = self._heartbeat_timer
        if timer is not None and timer.active():
            timer.cancel()
        self._heartbeat_timer = None
        self._heartbeat = ms / 1000
        if not ms:
            self._note_reads = self.config.idle_timeout > 0
            return
        clock = self.broker.clock
        now = clock.seconds()
        self._note_reads = True
        self._last_read = self._quiet_since = now
        self.output.wrote = False  # (the +OK about to go counts as sent now)
        self._heartbeat_timer = clock.callLater(self._heartbeat / 2, self._heartbeat_check)

    def _heartbeat_check(self) -> None:
        """Push ``PING`` after MS of silence; close after 3 x MS heard nothing."""
        self._heartbeat_timer = None
        interval = self._heartbeat
        if self._closing or not interval:
            return
        clock = self.broker.clock
        now = clock.seconds()
        if self._paused_reading and not self._congested:
            self._last_read = now  # we stopped reading (a command waits), not the peer
        # (a thousandth of a second of slack for the clock's rounding)
        if now - self._last_read >= 3 * interval - 0.001:
            self.broker.end_waits(self.session)  # a waiting PULL ends now, taking nothing
            self._limit("heartbeat")
            # a peer that vanished may never take the goodbye: abort if still open
            clock.callLater(interval, self._abort)
            return
        output = self.output
        if output.wrote:  # something went out since the last check (at most MS / 2 ago)
            output.wrote = False
            self._quiet_since = now
        elif now - self._quiet_since >= interval - 0.001:
            output.send(PING_LINE)
            output.flush()
            output.wrote = False
            self._quiet_since = now
        # every MS / 2 at most: a PING comes MS to 1.5 x MS after the last write
        due = min(self._quiet_since + interval, now + interval / 2, self._last_read + 3 * interval)
        self._heartbeat_timer = clock.callLater(max(due - now, 0.001), self._heartbeat_check)

    def _abort(self) -> None:
        if not self._lost:
            self._tr.abortConnection()

    # ---------------------------------------------------------- memory watch

    def hold_for_memory(self, f: Publishing) -> None:
        """The broker is over its memory mark: keep this PUBLISH and what follows,
        and stop reading, until :meth:`MemoryWatch.check` releases us."""
        self._backlog.append(f)
        self._watch.hold(self)
        self.wait()

    def release(self) -> None:
        """The memory is under its mark again: go on (see :meth:`hold_for_memory`)."""
        self._count_held()
        if not self._closing:
            self.drain_backlog()

    def _count_held(self) -> None:
        """Add the publishes that waited in the backlog to the watch's count."""
        self._watch.blocked.pop(self, None)
        held = [command_count(i) for i in self._backlog if type(i) in _PUBLISHING]
        self._watch.blocked_publishes += sum(held)

    # ------------------------------------------------------------------ login

    def login(self, f: frames.Auth) -> None:
        """Check an AUTH off the reactor thread; later commands (and reading) wait."""
        if not self._auth_required:  # an open broker accepts anyone
            self.output.reply(_OK)
            return
        slot = self.output.later()
        self._auth_busy = True
        self.wait()
        d = self._host.check_password(f.user, f.password)
        d.addCallback(self._auth_checked, slot, f.user)
        d.addErrback(self._auth_crashed, slot)

    def _auth_checked(self, result: tuple[User | None, str | None], slot: Slot, name: str) -> None:
        user, problem = result
        if problem is not None:
            log.error("the users file was not re-read: {problem}", problem=problem)
        if self._lost:
            return
        if user is None:
            log.warn("failed AUTH as {user!r} from {peer}", user=name, peer=self._peer())
            self.broker.clock.callLater(self.config.auth_fail_delay, self._auth_answer, slot, None)
            return
        log.info("{user} logged in from {peer}", user=user.name, peer=self._peer())
        self._auth_answer(slot, user)

    def _auth_answer(self, slot: Slot, user: User | None) -> None:
        if self._lost:
            return
        self._auth_busy = False
        if user is not None:
            self.commands.logged_in(user)
            self._handlers = HANDLERS
            if self._auth_timer is not None and self._auth_timer.active():
                self._auth_timer.cancel()
            self._auth_timer = None
        self.output.fill(slot, _OK if user is not None else _AUTH_FAILED)
        self.drain_backlog()

    def _auth_crashed(self, failure: Failure, slot: Slot) -> None:
        log.failure("checking a password failed", failure=failure, peer=self._peer())
        if not self._lost:
            self._auth_busy = False
            self.output.fill(slot, error_line(errors.Internal("see the broker's log")))
            self.drain_backlog()

    def report(self) -> ConnectionReport:
        """This connection, for monitoring (the HTTP API's ``/api/connections``)."""
        s, user = self.session, self.user
        return ConnectionReport(
            s.id,
            self._peer(),
            user.name if user is not None else None,
            self.since,
            len(s.consumers),
            len(s.outstanding),
            self.bytes_in,
            self.output.bytes_out,
        )

    def disconnect(self, reason: str) -> None:
        """Close this connection from outside (an operator, through the HTTP API):
        ``-ERR LIMIT <reason>`` after the replies already due, then hang up."""
        self._limit(reason)
