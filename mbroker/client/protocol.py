"""The client's side of one connection: commands out, replies matched in order.

:class:`ClientProtocol` feeds what it reads to :class:`~mbroker.wire.replies.ReplyDecoder` and
keeps a deque of pending commands, one entry per command sent: ``(deferred, finish,
data)``.  The broker answers commands in order with exactly one status line each, so a
status line (``+…`` or ``-ERR …``) always completes the command at the head of the
deque.  Data lines (``MSG 0 …`` of a PULL, ``EXCHANGE``/``QUEUE`` of a LIST, ``STAT``)
are collected in the head's ``data`` list; ``MSG`` with a sid other than 0 and
``CANCEL`` go to the subscription that owns the sid.  A pushed ``PING`` (heartbeats,
asked for with ``HEARTBEAT``) is no reply: it is answered ``PONG`` at once.

Cancelling the Deferred of a pending command keeps its slot: its reply is still
consumed in order, only its result is dropped (a cancelled PULL with ``ack=manual``
gives its messages back with a NACK; a cancelled SUBSCRIBE is unsubscribed).

Writes are batched: commands issued during one reactor turn are written with one
``writeSequence`` on the next (``callLater(0)``), or at once when many are waiting.
The per-command cost is one Deferred, one deque append and one list append.

Until the greeting, the bytes are screened: a first line that is not ``HELLO mbroker …``
(or a ``-ERR`` refusal) means the server is something else, and the connection fails
with :class:`~mbroker.client.messages.NotABroker` naming what it said.  A broker greets at
once; a server still silent after a moment gets a ``PING`` (an HTTP server answers it
``HTTP/1.1 400 …``, and so names itself), and one silent for ``greeting_timeout``
seconds is taken for something else.  After the greeting, a line that answers no
command closes the connection with :class:`~mbroker.client.messages.BadReply`.

This module holds no policy about reconnection or subscriptions: :mod:`mbroker.client.link`
and :mod:`mbroker.client.subscription` do; what a reply's text means is
:mod:`mbroker.wire.replydata`'s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Optional, TypeVar
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.client.messages import (
    BadReply,
    ClientError,
    ConnectionLost,
    Message,
    NotABroker,
    NotConnected,
    Unconfirmed,
)
from mbroker.errors import BadFrame, BrokerError, error_for_code
from mbroker.wire import ReplyDecoder, encode_command
from mbroker.wire.encode import append_publish
from mbroker.wire.frames import (
    Cancel,
    Command,
    Error,
    Hello,
    Msg,
    Nack,
    Ok,
    PingPush,
    Pong,
    Unsubscribe,
)
from mbroker.wire.replydata import Finish, ok_count, ok_none

__all__ = ["ClientProtocol", "PullReply", "Sink", "SubscribeReply"]

log = Logger()

T = TypeVar("T")

#: Commands waiting in one turn are written at once when this many are buffered.
_WRITE_BATCH = 1024
#: Seconds of silence before the greeting after which the client sends a probe PING.
_PROBE_AFTER = 0.25
#: Most bytes of a first line screened for the greeting.
_GREETING_MAX = 4096
#: How the first line of each kind of server this client talks to begins.
_GREETING_STARTS = (b"HELLO mbroker ", b"-ERR")
#: the answer to a pushed PING
_PONG = encode_command(Pong())


class PullReply:
    """The finish of a PULL: its ``MSG 0`` lines become :class:`Message` objects."""

    __slots__ = ("conn", "manual")

    def __init__(self, conn: ClientProtocol, manual: bool) -> None:
        self.conn = conn
        self.manual = manual

    def __call__(self, text: str, data: list[Any] | None) -> list[Message]:
        conn, manual = self.conn, self.manual
        return [Message(f, conn, manual) for f in data or ()]

    def discard(self, text: str, data: list[Any] | None) -> None:
        """The PULL was cancelled: give manual deliveries back at once."""
        if self.manual and data:
            tags = tuple((f.tag, f.tag) for f in data)
            self.conn.send_quietly(Nack(tags))


class Sink(TypingProtocol):
    """What a subscription looks like to the protocol."""

    def deliver(self, conn: ClientProtocol, frame: Msg) -> None:
        """A ``MSG`` frame of this subscription arrived on ``conn``."""

    def cancelled(self, conn: ClientProtocol, reason: str) -> None:
        """The broker ended the subscription (``CANCEL <sid> <reason>``)."""

    def lost(self, conn: ClientProtocol, reason: Failure) -> None:
        """``conn`` is gone, and the subscription's sid with it."""


class SubscribeReply:
    """The finish of a SUBSCRIBE: registers the sink under its sid before any MSG."""

    __slots__ = ("conn", "sink")

    def __init__(self, conn: ClientProtocol, sink: Sink) -> None:
        self.conn = conn
        self.sink = sink

    def __call__(self, text: str, data: list[Any] | None) -> int:
        sid = ok_count(text, data)
        self.conn.subscriptions[sid] = self.sink
        return sid

    def discard(self, text: str, data: list[Any] | None) -> None:
        """The SUBSCRIBE was cancelled: end the subscription it made."""
        self.conn.send_quietly(Unsubscribe(ok_count(text, data)))


# ---------------------------------------------------------------- the protocol

Pending = tuple[Deferred[Any], Finish, Optional[list[Any]]]


class ClientProtocol(Protocol):
    """One connection to a broker, speaking protocol v1 with pipelining.

    ``clock`` schedules the batched writes; ``on_lost`` is told when the connection
    ends.  :meth:`when_ready` fires with the protocol once the greeting arrived; it
    fails with :class:`NotABroker` when the server says something else first or, with
    ``greeting_timeout`` (seconds), nothing at all for that long.
    """

    #: A stream transport: TCP, TLS, UNIX or in memory.  Each has ``abortConnection``,
    #: which Twisted's interfaces declare on ITCPTransport only.
    transport: ITCPTransport | None

    def __init__(
        self,
        clock: IReactorTime,
        on_lost: Callable[[ClientProtocol, Failure], None] | None = None,
        greeting_timeout: float | None = None,
    ) -> None:
        self._clock = clock
        self._on_lost = on_lost
        self._greeting_timeout = greeting_timeout
        #: The start of the first line while it is being screened; None once it passed.
        self._first: bytes | None = b""
        self._timers: list[IDelayedCall] = []
        #: Why this client closed the connection: not a broker, or replies out of step.
        self._fatal: ClientError | None = None
        self._decoder = ReplyDecoder()
        self._pending: deque[Pending] = deque()
        self._out: list[bytes] = []
        self._flush_call: IDelayedCall | None = None
        self._ready: list[Deferred[ClientProtocol]] = []
        self._lost_waiters: list[Deferred[None]] = []
        #: sid -> subscription, filled in as ``+OK <sid>`` replies arrive
        self.subscriptions: dict[int, Sink] = {}
        #: The greeting, once it arrived.
        self.hello: Hello | None = None
        #: Why the connection ended, once it did.
        self.lost_reason: Failure | None = None
        #: A ``-ERR`` line that came with no command waiting (``LIMIT slow consumer``).
        self.server_error: BrokerError | None = None
        self.max_payload = Hello("").max_payload

    # ----------------------------------------------------------- connection life

    def connectionMade(self) -> None:
        """Turn Nagle off: writes are batched per reactor turn already."""
        # Writes are batched per reactor turn already: Nagle would only add delay.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:  # not a TCP socket after all
                pass
        wait = self._greeting_timeout
        if wait is not None and self.hello is None:
            clock = self._clock
            self._timers = [
                clock.callLater(min(_PROBE_AFTER, wait / 2), self._probe),
                clock.callLater(wait, self._silent),
            ]

    def _stop_timers(self) -> None:
        timers, self._timers = self._timers, []
        for call in timers:
            if call.active():
                call.cancel()

    def _probe(self) -> None:
        """No greeting yet: send a PING, which makes many other servers say what they are
        (a broker that is merely slow answers it ``+PONG`` after its greeting)."""
        if self._first == b"" and self.lost_reason is None:
            self.send(b"PING\r\n", ok_none).addErrback(lambda _: None)

    def _silent(self) -> None:
        if self._first == b"" and self.lost_reason is None:
            self._not_a_broker(f"it said nothing for {self._greeting_timeout:g} s")

    def _peer(self) -> str:
        peer = self.transport.getPeer() if self.transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        if host is not None and port is not None:
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        name = getattr(peer, "name", None)
        return str(name.decode() if isinstance(name, bytes) else name) if name else "the server"

    def _not_a_broker(self, why: str, abort: bool = True) -> None:
        self._stop_timers()
        self._first = None
        self._fatal = NotABroker(f"{self._peer()} is not an mbroker server ({why})")
        if abort and self.transport is not None:
            self.transport.abortConnection()

    def _screen(self, data: bytes) -> bytes | None:
        """Bytes before the greeting: what to decode once the first line looks like a
        broker's, None while it is incomplete or when it was not a broker's."""
        seen = (self._first or b"") + data
        line, lf, _ = seen.partition(b"\n")
        if _greeting_like(line):
            if lf:
                self._first = None
                self._stop_timers()
                return seen
            if len(seen) <= _GREETING_MAX:
                self._first = seen
                return None
        elif not lf and len(seen) < 80:  # wait for the rest of the line to show it
            self._first = seen
            return None
        self._not_a_broker(f"it said: {_shown(line)}")
        return None

    def when_ready(self) -> Deferred[ClientProtocol]:
        """Fires with this protocol once the greeting arrived; fails if it never does."""
        if self.hello is not None:
            return succeed(self)
        if self.lost_reason is not None:
            return fail(self.lost_reason)
        d: Deferred[ClientProtocol] = Deferred()
        self._ready.append(d)
        return d

    def when_lost(self) -> Deferred[None]:
        """Fires once the connection has ended."""
        if self.lost_reason is not None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._lost_waiters.append(d)
        return d

    @property
    def is_open(self) -> bool:
        """True from the greeting until the connection ends or starts closing."""
        return self.lost_reason is None and self.hello is not None and self.connected == 1

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail the commands still waiting (:class:`Unconfirmed`), tell the subscriptions."""
        if self.lost_reason is not None:
            return
        self._stop_timers()
        if self._first and not _greeting_like(self._first):  # part of another line, then the end
            self._not_a_broker(f"it said: {_shown(self._first)}", abort=False)
        if self._fatal is not None:
            reason = Failure(self._fatal)
        elif self.server_error is not None:
            reason = Failure(self.server_error)
        self.lost_reason = reason
        self.connected = 0
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._out = []
        pending, self._pending = self._pending, deque()
        if pending:
            text = f"the connection was lost before the broker answered: {reason.getErrorMessage()}"
            for d, _finish, _data in pending:
                if not d.called:
                    d.errback(Failure(Unconfirmed(text)))
        ready, self._ready = self._ready, []
        for w in ready:
            w.errback(self._lost_failure())
        subscriptions, self.subscriptions = self.subscriptions, {}
        for sink in subscriptions.values():
            sink.lost(self, reason)
        if self._on_lost is not None:
            self._on_lost(self, reason)
        lost, self._lost_waiters = self._lost_waiters, []
        for d in lost:
            d.callback(None)

    def _lost_failure(self) -> Failure:
        reason = self.lost_reason
        if reason is not None and isinstance(reason.value, (BrokerError, NotABroker)):
            return reason
        message = reason.getErrorMessage() if reason is not None else "not connected"
        return Failure(ConnectionLost(f"connection lost before the greeting: {message}"))

    def close(self) -> None:
        """Drop the connection now (what was written so far is still sent)."""
        self._write_out()
        if self.transport is not None:
            self.transport.loseConnection()

    # ------------------------------------------------------------------ sending

    def send(self, data: bytes, finish: Finish, collect: bool = False) -> Deferred[Any]:
        """Send one encoded command; the Deferred fires with ``finish(text, data)``.

        ``collect`` gives the command a list for the data lines before its status.
        """
        if self.lost_reason is not None:
            return fail(NotConnected(f"not connected: {self.lost_reason.getErrorMessage()}"))
        d: Deferred[Any] = Deferred()
        self._pending.append((d, finish, [] if collect else None))
        out = self._out
        out.append(data)
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)
        elif len(out) >= _WRITE_BATCH:
            self._write_out()
        return d

    def send_publish(self, head: bytes, payload: bytes, finish: Finish = ok_count) -> Deferred[int]:
        """Send a PUBLISH whose line starts with ``head`` (``PUBLISH name key ``); the
        hot path of :meth:`send`, which the payload is not copied into when large.
        ``finish`` reads the reply (``ok_published`` for one with properties)."""
        if self.lost_reason is not None:
            return fail(NotConnected(f"not connected: {self.lost_reason.getErrorMessage()}"))
        d: Deferred[int] = Deferred()
        self._pending.append((d, finish, None))
        out = self._out
        append_publish(out, head, payload)
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self._flush)
        elif len(out) >= _WRITE_BATCH:
            self._write_out()
        return d

    def command(self, command: Command, finish: Finish, collect: bool = False) -> Deferred[Any]:
        """Encode and send a command (encoding errors fail the Deferred)."""
        try:
            data = encode_command(command)
        except BrokerError as e:
            return fail(e)
        return self.send(data, finish, collect)

    def settle(self, command: Command) -> Deferred[int]:
        """ACK, NACK or TOUCH on this connection; ``+OK <n>`` -> n."""
        if self.lost_reason is not None:
            return fail(
                NotConnected(
                    "the connection this message arrived on is closed; "
                    "the broker will deliver the message again"
                )
            )
        return self.command(command, ok_count)

    def send_quietly(self, command: Command) -> None:
        """Send a command whose reply nobody awaits; failures are logged."""
        self.command(command, ok_none).addErrback(_log_quiet, command)

    def _flush(self) -> None:
        self._flush_call = None
        self._write_out()

    def _write_out(self) -> None:
        out = self._out
        if out and self.transport is not None:
            self._out = []
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writeSequence(out)

    @property
    def in_flight(self) -> int:
        """Commands sent and not answered yet."""
        return len(self._pending)

    # ---------------------------------------------------------------- receiving

    def dataReceived(self, data: bytes) -> None:
        """Decode replies and pushes; complete commands in order, dispatch deliveries."""
        if self._fatal is not None:
            return  # closing: the rest is out of step
        if self._first is not None:
            screened = self._screen(data)
            if screened is None:
                return
            data = screened
        try:
            frames = self._decoder.feed(data)
        except BadFrame as e:
            if self.hello is None:
                self._not_a_broker(str(e))
                return
            log.error("bad data from the broker, closing: {error}", error=str(e))
            self.server_error = e
            if self.transport is not None:
                self.transport.abortConnection()
            return
        pending = self._pending
        for f in frames:
            if isinstance(f, Ok):
                if not pending:
                    self._protocol_error(f"a reply no command was waiting for: '+{f.text}'")
                    return
                d, finish, collected = pending.popleft()
                if d.called:  # cancelled: consume the reply, drop the result
                    self._discard(finish, f.text, collected)
                    continue
                try:
                    result = finish(f.text, collected)
                except (ValueError, IndexError, TypeError, AssertionError):
                    # ``+PONG`` to a PUBLISH, say: the replies are out of step.
                    pending.appendleft((d, finish, collected))
                    self._protocol_error(f"a reply that does not fit its command: '+{f.text}'")
                    return
                d.callback(result)
            elif isinstance(f, Msg):
                if f.sid:
                    sink = self.subscriptions.get(f.sid)
                    if sink is not None:
                        sink.deliver(self, f)
                    # else: unsubscribed meanwhile; the broker gives it back
                elif pending and pending[0][2] is not None:
                    pending[0][2].append(f)
                else:
                    self._protocol_error(f"a MSG 0 with no PULL waiting (tag {f.tag})")
                    return
            elif isinstance(f, Error):
                err = error_for_code(f.code, f.text)
                if not pending:
                    self._unsolicited(err)
                    continue
                d, _finish, _collected = pending.popleft()
                if not d.called:
                    d.errback(Failure(err))
            elif isinstance(f, Cancel):
                cancelled = self.subscriptions.pop(f.sid, None)
                if cancelled is not None:
                    cancelled.cancelled(self, f.reason)
            elif isinstance(f, PingPush):
                self._pong()
            elif isinstance(f, Hello):
                if self.hello is not None:
                    self._protocol_error("a second greeting")
                    return
                self._greeted(f)
            elif pending and pending[0][2] is not None:  # EXCHANGE, QUEUE, STAT
                pending[0][2].append(f)
            else:
                self._protocol_error(f"a data line no command was waiting for: {f!r}")
                return
            if self.lost_reason is not None:
                return

    def _pong(self) -> None:
        """Answer a pushed ``PING`` (the broker's heartbeat): ``PONG`` gets no reply."""
        if self.transport is not None:
            self._out.append(_PONG)
            self._write_out()

    def _greeted(self, hello: Hello) -> None:
        self.hello = hello
        self.max_payload = hello.max_payload
        ready, self._ready = self._ready, []
        for d in ready:
            d.callback(self)

    def _discard(self, finish: Finish, text: str, collected: list[Any] | None) -> None:
        discard = getattr(finish, "discard", None)
        if discard is not None:
            discard(text, collected)

    def _unsolicited(self, err: BrokerError) -> None:
        """A ``-ERR`` with no command waiting: the broker is about to hang up."""
        log.warn("the broker says: {error}", error=str(err))
        self.server_error = err
        if self.hello is None:
            ready, self._ready = self._ready, []
            for d in ready:
                d.errback(Failure(err))

    def _protocol_error(self, text: str) -> None:
        """The replies are out of step: close, and fail everything with one clear error
        (logged at info level only: every command waiting, every subscription and the
        next command are told)."""
        error = BadReply(f"the broker sent {text}; the connection was closed")
        log.info("{error}", error=str(error))
        self._fatal = error
        if self.transport is not None:
            self.transport.abortConnection()


def _greeting_like(line: bytes) -> bool:
    """True when ``line`` (or as much of it as came) starts as a broker's first line."""
    return any(line[: len(start)] == start[: len(line)] for start in _GREETING_STARTS)


def _shown(line: bytes) -> str:
    """A line a server sent, fit to quote in one line of an error message."""
    text = line.rstrip(b"\r").decode("utf-8", "replace")
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:80])
    return (shown + ("..." if len(text) > 80 else "")) or "an empty line"


def _log_quiet(failure: Failure, command: Command) -> None:
    if failure.check(ClientError):
        return  # the connection is gone: the broker undoes it anyway
    log.failure("{command!r} failed", failure=failure, command=command)
