"""One :class:`StompProtocol` per STOMP connection: bytes in, frames run in order,
connection life, heart-beats, and the push producer of its own transport.

A thin translation of STOMP 1.0/1.1/1.2 frames onto the one
:class:`~mbroker.core.broker.Broker`, beside the native protocol and never a second
broker: a SEND is a publish, a SUBSCRIBE a subscription, an ACK an ack.  The codec is
:mod:`mbroker.wire.stomp` (sans-IO); the frames after CONNECT are handled by
:mod:`mbroker.server.stomp_commands`; the factory is :mod:`mbroker.server.stomp`.
See ``docs/stomp.rst`` for what users see.

* Every error is an ERROR frame with a ``message`` header (and ``receipt-id`` when the
  failing frame asked for a receipt), after which the connection is closed, as the
  specification says.
* Receipts: a frame with a ``receipt`` header gets its RECEIPT once it is done; when it
  changed durable state, once the store has it.
* Output is queued and written once per read or per reactor turn (at once past 64 KiB),
  by the factory's scheduler: the read that delivers a message to a subscriber writes
  it when it is done, not a reactor turn later, and on plain TCP straight to the
  socket when nothing waits in the transport's buffer
  (:func:`~mbroker.server.output.socket_writer`);
  MESSAGE frames are built by :mod:`~mbroker.server.stomp_messages`.
* Flow control: the protocol is its transport's push producer, as the native one is:
  when the peer stops reading, the broker stops delivering to the connection and we
  stop reading from it.  While a CONNECT's password is checked (in a thread), reading
  stops and frames that came with it wait.  Transactions hold at most
  ``MAX_TX_FRAMES`` frames and ``max_payload * 16`` body bytes per connection
  (:mod:`~mbroker.server.stomp_state` keeps the books).
* Heart-beats: at most two timers per connection (sending, watching), re-armed from
  the time of the last write or read; nothing per message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mbroker import __version__, errors
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.core.model import QueuedMessage, Session
from mbroker.server.auth import User
from mbroker.server.memwatch import MemoryWatch
from mbroker.server.output import FlushScheduler, StreamTransport, socket_writer
from mbroker.server.stomp_commands import StompCommands
from mbroker.server.stomp_messages import MessageFrames
from mbroker.wire.stomp import (
    SUPPORTED_VERSIONS,
    Frame,
    StompDecoder,
    StompError,
    encode,
    heartbeat,
    negotiate_heartbeat,
    negotiate_version,
    parse_heartbeat,
)
from mbroker.wire.stomp import receipt as receipt_frame

log = Logger()

__all__ = ["Listener", "StompProtocol"]

#: queued output past this many bytes is written at once
_FLUSH_AT = 64 * 1024
#: a client is dead after this many of its heart-beat periods without a byte
HEARTBEAT_GRACE = 2.0


class Listener(TypingProtocol):
    """What a connection asks of its factory (a ``StompFactory``), shared by all."""

    broker: Broker
    config: Config
    #: the broker's memory watch
    watch: MemoryWatch
    #: CONNECT needs a login and passcode
    auth_required: bool
    #: the ``sx,sy`` heart-beat the server offers, in milliseconds
    heartbeat: tuple[int, int]
    #: writes output at the end of the read being handled (shared by every connection)
    scheduler: FlushScheduler

    def check_password(self, user: str, password: str) -> Deferred[tuple[User | None, str | None]]:
        """``(user, None)`` for the right password, ``(None, None)`` otherwise."""


@implementer(IPushProducer)
class StompProtocol(Protocol):
    """One STOMP connection; implements the broker's ``DeliveryTarget``."""

    factory: Listener
    session: Session
    _commands: StompCommands

    def __init__(self, factory: Listener) -> None:
        self.factory = factory
        self.broker: Broker = factory.broker
        self.config: Config = factory.config
        self.decoder = StompDecoder(max_body=self.config.max_payload)
        #: the version frames are written in ("1.0", unescaped, until CONNECTED)
        self.version = "1.0"
        self._agreed = "1.0"
        self._journal = self.broker.journal
        self._memory: MemoryWatch = factory.watch
        self._scheduler = factory.scheduler
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_pending = False
        self._reading = False
        self._closing = False
        self._lost = False
        self._producing = False
        self._congested = False
        self._paused_reading = False
        #: frames that came while a CONNECT is checked (reading is paused meanwhile)
        self._held: deque[Any] | None = None
        self._connected = False
        self._connecting = False
        self._pre_bytes = 0
        self.user: User | None = None
        self._handlers: dict[str, Callable[[Frame], None]] = {
            "CONNECT": self._connect,
            "STOMP": self._connect,
        }
        self._commits = 0  # receipts waiting for the store
        self._mark = 0
        self._connect_timer: IDelayedCall | None = None
        self._beat_timer: IDelayedCall | None = None
        self._watch_timer: IDelayedCall | None = None
        self._send_every = 0.0
        self._expect_every = 0.0
        self._last_write = 0.0
        self._last_read = 0.0

    # ------------------------------------------------------------ connection life

    def connectionMade(self) -> None:
        self._tr = cast(StreamTransport, self.transport)
        #: writes straight to the socket where it can (plain TCP), else the output
        #: goes to the transport's writeSequence (whole frames: see stomp_ws)
        self._direct = socket_writer(self.transport)
        self.session = self.broker.open_session(self)
        self._commands = StompCommands(self, self.broker, self.session, self.config, self._memory)
        #: subscriptions by sid (the commands' own dict), read on every delivery
        self._by_sid = self._commands.by_sid
        self._messages = MessageFrames(self.broker, self._commands.is_temp_queue)
        timeout = self.config.auth_timeout
        if timeout > 0:
            self._connect_timer = self.broker.clock.callLater(timeout, self._connect_expired)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = self._lost = True
        if self in self._memory.blocked:
            self._count_held()
            del self._memory.blocked[self]
        self._held = None
        self._commands.end()
        for timer in (self._connect_timer, self._beat_timer, self._watch_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._connect_timer = self._beat_timer = self._watch_timer = None
        self.broker.close_session(self.session)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if not self._producing:
            # (on the first bytes, not in connectionMade: see the native protocol)
            self._producing = True
            self._tr.registerProducer(self, True)
        if self._expect_every:
            self._last_read = self.broker.clock.seconds()
        watch = self._memory
        watch.received += len(data)
        if watch.received > watch.check_after:
            watch.check()
        items = self.decoder.feed(data)
        scheduler = self._scheduler
        nested = scheduler.reading
        scheduler.reading = self._reading = True
        try:
            if self._held is not None:
                self._held.extend(items)
            else:
                self._run(items)
            if not self._connected and not self._connecting:
                # Before CONNECT a few frames' worth, not payloads (bytes that came
                # with a CONNECT being checked do not count: reading stops then).
                self._pre_bytes += len(data)
                if self._pre_bytes > self.config.pre_auth_max_bytes:
                    self._fatal(f"more than {self.config.pre_auth_max_bytes} bytes before CONNECT")
        finally:
            self._reading = False
            # (this connection's output, and what the read delivered to others,
            # goes out now: one write each)
            if not nested:
                scheduler.reading = False
                scheduler.flush_all()

    def _run(self, items: list[Any]) -> None:
        journal = self._journal
        n, end = 0, len(items)
        while n < end:
            item = items[n]
            if self._closing:
                return
            if self._held is not None:
                self._held.extend(items[n:])
                return
            n += 1
            if type(item) is Frame:
                if journal is not None:
                    self._mark = journal.changes
                handler = self._handlers.get(item.command)  # (swapped by CONNECT)
                try:
                    if handler is None:
                        raise StompError(
                            f"{item.command} before CONNECT"
                            if not self._connected
                            else f"{item.command} is a server frame"
                        )
                    if n < end and item.command == "SEND" and self._connected:
                        n += self._commands.send_run(items, n - 1) - 1  # (SENDs, one head)
                    else:
                        handler(item)
                except StompError as e:
                    self._fatal(e.message, item)
                except errors.BrokerError as e:
                    self._fatal(str(e), item)
                except Exception:
                    log.failure("STOMP {command} failed", command=item.command)
                    self._fatal("internal error: see the broker's log", item)
            elif isinstance(item, StompError):
                self._fatal(item.message)
            # (a HeartBeat: the read itself noted that the peer lives)

    # ------------------------------------------------------------------ output

    def _write(self, data: bytes) -> None:
        """Queue ``data``; it goes out at the end of the read or turn (or past 64 KiB)."""
        self._out.append(data)
        self._queued(len(data))

    def _queued(self, size: int) -> None:
        self._out_size += size
        if self._out_size >= _FLUSH_AT:
            self._flush()
        elif not self._flush_pending:
            self._flush_pending = True
            self._scheduler.flush_later(self)

    def write_queued(self) -> None:
        """The scheduler's call, at the end of a read or turn: write what is queued."""
        self._flush_pending = False
        if not self._lost:
            self._flush()

    def _flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            self._out_size = 0
            direct = self._direct
            if direct is not None:
                direct(out[0] if len(out) == 1 else b"".join(out))
            else:
                self._tr.writeSequence(out)
            if self._send_every:
                self._last_write = self.broker.clock.seconds()

    def _frame(self, command: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> None:
        self._write(encode(Frame(command, tuple(headers), body), self.version))

    def _fatal(self, message: str, frame: Frame | None = None) -> None:
        """ERROR with ``message`` (and the failing frame's receipt), then close."""
        if self._closing:
            return
        headers = [("message", message[:400])]
        receipt = frame.header("receipt") if frame is not None else None
        if receipt is not None:
            headers.append(("receipt-id", receipt))
        headers.append(("content-type", "text/plain"))
        body = b""
        if frame is not None:
            body = f"while handling {frame.command}: {message}\n".encode("utf-8", "replace")
        self._frame("ERROR", headers, body)
        self.close()

    def close(self) -> None:
        """Write nothing after what is queued, and close once it is written."""
        if self._closing:
            return
        self._closing = True
        self._held = None
        self.broker.set_writable(self.session, False)
        if self._commits:  # receipts still wait for the store: hang up after them
            return
        self._hang_up()

    def _hang_up(self) -> None:
        self._flush()
        if self._producing:
            self._producing = False
            self._tr.unregisterProducer()
        self._tr.loseConnection()

    def receipt(self, frame: Frame, then: Callable[[], None] | None = None) -> None:
        """RECEIPT for ``frame`` if it asks; once the store has its changes."""
        receipt = frame.header("receipt")
        if receipt is None and then is None:
            return  # (nothing to confirm: no callback per SEND to a durable queue)
        journal = self._journal
        if journal is not None and (journal.changes != self._mark or self._commits):
            self._commits += 1

            def stored(err: errors.BrokerError | None) -> None:
                self._commits -= 1
                if self._lost:
                    return
                if err is not None:
                    if self._closing:  # (a DISCONNECT after it: say why, then go)
                        self._frame("ERROR", [("message", str(err))])
                    else:
                        self._fatal(str(err), frame)
                elif receipt is not None:
                    self._write(receipt_frame(receipt, self.version))
                if then is not None:
                    then()
                if self._closing and not self._commits:
                    self._hang_up()

            journal.on_commit(stored)
            return
        if receipt is not None:
            self._write(receipt_frame(receipt, self.version))
        if then is not None:
            then()

    # ------------------------------------------------------ DeliveryTarget API

    def push(self, sid: int, tag: int, message: QueuedMessage) -> None:
        self.push_many(sid, tag, [message])

    def push_many(self, sid: int, tag: int, messages: list[QueuedMessage]) -> None:
        sub = self._by_sid[sid]
        ack = sub.mode != "auto" and self.version == "1.2"
        self._queued(self._messages.many(self._out, sub, tag, messages, ack, self.version))

    def push_run(self, sid: int, tag: int, route: bytes, payloads: list[bytes]) -> None:
        # (only for ack=auto subscriptions, messages delivered for the first time)
        self._queued(self._messages.run(self._out, self._by_sid[sid], tag, route, payloads))

    def cancelled(self, sid: int, reason: str) -> None:
        sub = self._commands.cancelled(sid)
        if sub is not None:
            self._fatal(f"subscription {sub.id} ended: its queue was {reason}")

    def slow(self, sid: int) -> None:
        self._fatal("slow consumer: the subscription's queue overflowed")

    # ----------------------------------------------------------- IPushProducer

    def pauseProducing(self) -> None:
        self._congested = True
        self.broker.set_writable(self.session, False)
        self._update_reading()

    def resumeProducing(self) -> None:
        self._congested = False
        self._update_reading()
        if not self._closing:
            self.broker.set_writable(self.session, True)
        self._flush()

    def stopProducing(self) -> None:
        self._closing = True

    def _update_reading(self) -> None:
        paused = self._congested or self._held is not None
        if paused != self._paused_reading and not self._lost:
            self._paused_reading = paused
            if paused:
                self._tr.pauseProducing()
            else:
                self._tr.resumeProducing()

    # ------------------------------------------------------------------ timers

    def _connect_expired(self) -> None:
        self._connect_timer = None
        if self._connected or self._closing:
            return
        if self._connecting:  # a password is being checked: its answer decides
            self._connect_timer = self.broker.clock.callLater(1.0, self._connect_expired)
            return
        self._fatal(f"no CONNECT within {self.config.auth_timeout:g} s")

    def _beat(self) -> None:
        """Send a heart-beat if nothing was written for ``_send_every`` seconds."""
        self._beat_timer = None
        if self._closing:
            return
        clock = self.broker.clock
        now = clock.seconds()
        due = self._last_write + self._send_every
        if now >= due - 0.001:
            self._tr.write(heartbeat())
            self._last_write = now
            due = now + self._send_every
        self._beat_timer = clock.callLater(due - now, self._beat)

    def _watch(self) -> None:
        """Close a connection that sent nothing for a few of its heart-beat periods."""
        self._watch_timer = None
        if self._closing:
            return
        clock = self.broker.clock
        now = clock.seconds()
        limit = self._expect_every * HEARTBEAT_GRACE
        if self._congested or self._held is not None:
            self._last_read = now  # (we are not reading: its silence is ours)
        left = self._last_read + limit - now
        if left <= 0:
            self._fatal(f"no heart-beat for {limit:g} s")
            self._flush()
            return
        self._watch_timer = clock.callLater(left, self._watch)

    # --------------------------------------------------------- CONNECT, login

    def _connect(self, f: Frame) -> None:
        version = negotiate_version(f.header("accept-version"))
        if version is None:
            supported = ",".join(SUPPORTED_VERSIONS)
            self._frame(
                "ERROR",
                [("version", supported), ("message", f"supported versions: {supported}")],
            )
            self.close()
            return
        # (frames are written in this version once CONNECTED is: an ERROR before it
        # is written unescaped, as the client cannot know the version yet)
        self._agreed = self.decoder.version = version
        client_hb = parse_heartbeat(f.header("heart-beat"))
        factory = self.factory
        if not factory.auth_required:
            self._logged_in(None, client_hb)
            return
        login, passcode = f.header("login"), f.header("passcode")
        if login is None or passcode is None:
            raise StompError("login and passcode are required")
        self._connecting = True
        self._held = deque()  # what follows waits for the answer
        self._update_reading()
        d = factory.check_password(login, passcode)
        d.addCallback(self._checked, login, client_hb)
        d.addErrback(self._check_crashed)

    def _checked(
        self, result: tuple[User | None, str | None], login: str, client_hb: tuple[int, int]
    ) -> None:
        user, problem = result
        if problem is not None:
            log.error("the users file was not re-read: {problem}", problem=problem)
        if self._lost:
            return
        if user is None:
            log.warn("failed STOMP login as {user!r}", user=login)
            self.broker.clock.callLater(self.config.auth_fail_delay, self._refused)
            return
        log.info("{user} logged in over STOMP", user=user.name)
        self._logged_in(user, client_hb)

    def _refused(self) -> None:
        if not self._lost:
            self._held = None
            self._fatal("login failed: wrong login or passcode")
            self._flush()

    def _check_crashed(self, failure: Failure) -> None:
        log.failure("checking a STOMP password failed", failure=failure)
        if not self._lost:
            self._held = None
            self._fatal("internal error: see the broker's log")
            self._flush()

    def _logged_in(self, user: User | None, client_hb: tuple[int, int]) -> None:
        self.user = user
        self._connected, self._connecting = True, False
        self.version = self._agreed
        self._commands.logged_in(user, self.version)
        self._handlers = {
            **self._commands.handlers(),
            "CONNECT": self._again,
            "STOMP": self._again,
        }
        if self._connect_timer is not None and self._connect_timer.active():
            self._connect_timer.cancel()
        self._connect_timer = None
        server_hb = self.factory.heartbeat
        send, expect = negotiate_heartbeat(client_hb, server_hb)
        headers = [("version", self.version), ("heart-beat", f"{server_hb[0]},{server_hb[1]}")]
        headers += [("server", f"mbroker/{__version__}"), ("session", str(self.session.id))]
        self._frame("CONNECTED", headers)
        clock = self.broker.clock
        now = clock.seconds()
        if send:
            self._send_every = send / 1000.0
            self._last_write = now
            self._beat_timer = clock.callLater(self._send_every, self._beat)
        if expect:
            self._expect_every = expect / 1000.0
            self._last_read = now
            self._watch_timer = clock.callLater(self._expect_every * HEARTBEAT_GRACE, self._watch)
        held, self._held = self._held, None
        if held is not None:
            self._update_reading()
            self._run(list(held))
            if not self._reading:
                self._flush()

    def hold_for_memory(self, frame: Frame) -> None:
        """Over the memory mark: hold ``frame`` and what follows, stop reading, until
        the watch calls :meth:`release` (as the native protocol holds a PUBLISH)."""
        self._held = deque([frame])
        self._memory.hold(self)
        self._update_reading()

    def release(self) -> None:
        """The memory is back under its mark: run what was held, read again."""
        self._count_held()
        held, self._held = self._held, None
        if held is None or self._closing:
            return
        self._update_reading()
        self._run(list(held))
        self._flush()

    def _count_held(self) -> None:
        """Add the SEND frames that waited to the memory watch's count."""
        held = self._held or ()
        self._memory.blocked_publishes += sum(
            [1 for f in held if type(f) is Frame and f.command == "SEND"]
        )

    def _again(self, f: Frame) -> None:
        raise StompError("already connected")
