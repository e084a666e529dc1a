"""The Twisted glue: one :class:`BrokerProtocol` per connection, and its factory.

Bytes go to the sans-IO :class:`~mbroker.wire.codec.CommandDecoder`; each command goes to
one small handler that calls the :class:`~mbroker.core.broker.Broker` and encodes the
reply.  Exactly one place (:meth:`BrokerProtocol._run`) turns
:class:`~mbroker.errors.BrokerError` into ``-ERR`` lines.

Replies keep command order through a queue of reply slots: a reply that is not ready
yet (a PULL that waits) holds back the replies after it.  A command that waits also
holds back the *execution* of later commands (the contract: "later commands on the
connection queue behind it"): they go to a backlog.  While a PULL waits the socket is
still read (so that a client that goes away, by FIN or RST, is noticed and its PULL
takes nothing), until the backlog holds ``_BACKLOG_MAX`` bytes.

Flow control: the protocol is the push producer of its own transport.  When the
transport's buffer fills, Twisted calls :meth:`pauseProducing`; the broker then stops
delivering to this connection (its messages stay queued or go to competing consumers),
we stop reading from the peer, and the commands of the read being handled that have
not run yet wait in the backlog until the output drains: a client that does not read
its replies cannot make us buffer them without bound, whatever it sends.  When the
broker's memory is over its high-water mark (:class:`MemoryWatch`), a connection that
sends a PUBLISH is held the same way until the memory is back under the mark.

Half-close (:class:`~twisted.internet.interfaces.IHalfCloseableProtocol`): a client
that shuts down its sending side still gets the reply to every command it sent (a
PULL that waits ends at once with what it has, nothing); then the broker closes.

Authentication (when the factory has an :class:`~mbroker.server.auth.Authenticator`): before
a successful AUTH every command but AUTH, PING, PONG, HELP and QUIT gets
``-ERR NO_AUTH`` (a handler table swapped on login: no per-command test), a connection
may send only ``pre_auth_max_bytes`` and has ``auth_timeout`` seconds to log in.  AUTH
holds later commands like a waiting PULL while argon2 runs in a thread; a failed one is
answered only after ``auth_fail_delay``.  Once logged in, each handler checks the user's
:class:`~mbroker.server.auth.Permissions` (PUBLISH through a per-connection cache).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, DeferredSemaphore, maybeDeferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorThreads,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mbroker import __version__, errors
from mbroker.config import Config
from mbroker.core.broker import Broker, Pulled
from mbroker.core.model import Message, Session
from mbroker.core.snapshots import ConnectionReport
from mbroker.server.auth import Authenticator, Permissions, User
from mbroker.server.memwatch import NO_WATCH, MemoryWatch
from mbroker.wire.codec import (
    CommandDecoder,
    encode_frame,
    error_line,
    frames,
    hello_line,
    help_reply,
    msg_header,
)

log = Logger()


class _Transport(TypingProtocol):  # the parts of ITCPTransport + IPushProducer we use
    def write(self, data: bytes) -> None: ...

    def writeSequence(self, data: Iterable[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def getPeer(self) -> object: ...


_CRLF = b"\r\n"
#: queued output past this many bytes is written at once (Twisted's own buffer size)
_FLUSH_AT = 64 * 1024
#: a payload up to this size is copied into its MSG frame's bytes (one piece to
#: queue instead of three; the transport joins them all before writing anyway)
_JOIN_MAX = 1024
_OK = b"+OK\r\n"
_NO_AUTH = error_line(errors.NoAuth("log in first: AUTH <user> <password>"))
_AUTH_FAILED = error_line(errors.AuthFailed("wrong user or password"))
#: most names a connection remembers it may (or may not) publish to
_WRITE_CACHE_MAX = 4096
#: bytes read behind a waiting PULL before reading stops until it is answered
_BACKLOG_MAX = 64 * 1024


class _Slot:
    """One reply not written yet, in command order (``count``: how many commands it
    answers, so how many status lines a refusal of the whole slot must give)."""

    __slots__ = ("data", "after", "count")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.after: Callable[[], None] | None = None
        self.count = 1


@implementer(IPushProducer, IHalfCloseableProtocol)
class BrokerProtocol(Protocol):
    factory: BrokerFactory
    session: Session

    def __init__(self, broker: Broker, config: Config) -> None:
        self.broker = broker
        self.config = config
        self.decoder = CommandDecoder(config.max_line, config.max_payload)
        self._slots: deque[_Slot] = deque()
        #: bytes for the peer, written once per read or per reactor turn (_flush)
        self._out: list[bytes] = []
        self._out_size = 0
        self._dirty = False
        self._journal = broker.journal
        #: the journal's change count before the command being run
        self._mark = 0
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
        #: closing waits for replies that are not written yet
        self._close_pending = False
        #: the transport's buffer is full (it paused us as its producer)
        self._congested = False
        self._paused_reading = False
        self._producing = False
        #: the logged-in user (None: nobody yet, or an open broker)
        self.user: User | None = None
        #: the user's rights; None: everything is allowed (an open broker)
        self._perms: Permissions | None = None
        self._may_write: dict[str, bool] = {}
        self._handlers = _HANDLERS
        self._auth_required = False
        self._auth_busy = False
        self._pre_auth_bytes = 0
        self._auth_timer: IDelayedCall | None = None
        self._idle_timer: IDelayedCall | None = None
        self._last_read = 0.0
        self._lost = False
        self._watch: MemoryWatch = NO_WATCH

    # ------------------------------------------------------------ connection life

    def connectionMade(self) -> None:
        self._tr = cast(_Transport, self.transport)
        self.session = self.broker.open_session(self)
        config = self.config
        clock = self.broker.clock
        self.since = clock.seconds()
        factory: BrokerFactory | None = getattr(self, "factory", None)
        if factory is not None:
            factory.protocols.add(self)
            self._watch = factory.watch
            self._auth_required = factory.auth_required
        else:
            self._auth_required = config.auth_required or config.users_file is not None
        if self._auth_required:
            self._handlers = _PRE_AUTH_HANDLERS
            if config.auth_timeout > 0:
                self._auth_timer = clock.callLater(config.auth_timeout, self._auth_expired)
        if config.idle_timeout > 0:
            self._last_read = clock.seconds()
            self._idle_timer = clock.callLater(config.idle_timeout, self._idle_check)
        self._tr.write(hello_line(__version__, self._auth_required, config.max_payload))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = self._stop = True
        self._lost = True
        self._backlog.clear()
        for timer in (self._auth_timer, self._idle_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._auth_timer = self._idle_timer = None
        self._watch.blocked.pop(self, None)
        self.broker.close_session(self.session)
        factory: BrokerFactory | None = getattr(self, "factory", None)
        if factory is not None:
            factory.protocols.discard(self)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if not self._producing:
            # Registered on the first bytes, not in connectionMade: a TLS transport
            # pauses its producer until its handshake is done, and pausing us stops
            # reading, so a producer registered before the handshake deadlocks it.
            self._producing = True
            self._tr.registerProducer(self, True)
        if self._idle_timer is not None:
            self._last_read = self.broker.clock.seconds()
        watch = self._watch
        watch.received += len(data)
        if watch.received > watch.check_after:
            watch.check()
        items = self.decoder.feed(data)
        factory = self.factory
        factory.reading = True  # (output queued meanwhile is written just below)
        try:
            if self._waiting or self._backlog:
                self._backlog.extend(items)
                if self._pull_waiting:
                    self._backlog_bytes += len(data)
                    if self._backlog_bytes > _BACKLOG_MAX:
                        self._update_reading()
            else:
                self._run(items)
        finally:
            factory.reading = False
            # what this read delivered to subscribers goes out now, in one write each
            factory.flush_all()
        if self._handlers is _PRE_AUTH_HANDLERS and not self._auth_busy:
            # Before login a connection may send a few lines, not payloads: bytes
            # that came with an AUTH being checked do not count (reading stops then).
            self._pre_auth_bytes += len(data)
            if self._pre_auth_bytes > self.config.pre_auth_max_bytes:
                self._limit(f"more than {self.config.pre_auth_max_bytes} bytes before AUTH")

    # ------------------------------------------------------- the dispatch loop

    def _run(self, items: Any) -> None:
        journal = self._journal
        for n, item in enumerate(items):
            if self._stop:  # closing, waiting or congested
                if not self._closing:
                    self._backlog.extend(items[n:])
                return
            if journal is not None:
                self._mark = journal.changes
            if isinstance(item, errors.BrokerError):
                self._reply(error_line(item))
                if item.fatal:
                    self._close()
                    return
                continue
            try:
                # (not a local: a successful AUTH changes the table mid-loop)
                self._handlers[type(item)](self, item)
            except errors.BrokerError as e:
                k = _commands(item)
                self._reply(error_line(e) * k, count=k)
            except Exception:
                log.failure("command {command!r} failed", command=item, peer=self._peer())
                internal = error_line(errors.Internal("see the broker's log"))
                k = _commands(item)
                self._reply(internal * k, count=k)
        if not self.factory.reading:
            self._flush()
        # (else the read's flush_all writes everyone's output in the order it was
        # queued: the deliveries a publish made go out before its own +OK)

    def _reply(self, data: bytes, after: Callable[[], None] | None = None, count: int = 1) -> None:
        """Write a reply now, or queue it behind replies that are not ready.

        A command that changed durable state is answered only once the journal's
        commit stored the change, or, if it could not, with one ``-ERR UNAVAILABLE``
        per command the reply stands for (``count``: a run of PUBLISH is many)."""
        journal = self._journal
        if journal is not None and journal.changes != self._mark:
            slot = self._later()
            slot.count = count
            slot.after = after
            journal.on_commit(partial(self._committed, slot, data))
            return
        if not self._slots:
            self._send(data)
            if after is not None:
                after()
            return
        slot = _Slot()
        slot.data = data
        slot.after = after
        self._slots.append(slot)

    def _send(self, data: bytes) -> None:
        """Queue ``data`` for the peer.  It is written at the end of the read being
        handled, or of the reactor turn, or at once past ``_FLUSH_AT`` bytes (so the
        transport still tells us, as its producer, when the peer stops reading)."""
        self._out.append(data)
        self._queued(len(data))

    def _queued(self, size: int) -> None:
        """``size`` more bytes are in ``_out``: write now past ``_FLUSH_AT``, else
        make sure they are written at the end of this read or turn."""
        self._out_size += size
        if self._out_size >= _FLUSH_AT:
            self._flush()
        elif not self._dirty:
            self._dirty = True
            self.factory.flush_later(self)

    def _flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            self._out_size = 0
            self._tr.writeSequence(out)

    def _committed(self, slot: _Slot, data: bytes, err: errors.BrokerError | None) -> None:
        if err is not None:
            slot.after = None
            data = error_line(err) * slot.count
        self._fill(slot, data)

    def _later(self) -> _Slot:
        slot = _Slot()
        self._slots.append(slot)
        return slot

    def _fill(self, slot: _Slot, data: bytes) -> None:
        slot.data = data
        slots = self._slots
        write = self._send
        while slots:
            ready = slots[0].data
            if ready is None:
                break
            done = slots.popleft()
            write(ready)
            if done.after is not None and not self._closing:
                done.after()
        if self._close_pending and not slots:
            self._hang_up()
        else:
            self._flush()

    def _close(self) -> None:
        """Write nothing more after the last reply, and close once it is sent.

        The broker stops delivering to this connection at once (else a MSG could follow
        ``+OK bye`` or a fatal ``-ERR``), and the producer is unregistered: Twisted
        closes a transport with a registered producer only once it is unregistered, so a
        connection whose output had been paused would otherwise stay open for ever.
        """
        if self._closing:
            return
        self._closing = self._stop = True
        self._backlog.clear()
        self.broker.set_writable(self.session, False)
        if self._slots:  # replies still wait (for the disk): hang up once they are out
            self._close_pending = True
        else:
            self._hang_up()

    def _say(self, data: bytes) -> None:
        """A reply of the broker's own (not to a command): after the pending ones."""
        if not self._slots:
            self._send(data)
        else:
            slot = _Slot()
            slot.data = data
            self._slots.append(slot)

    def _limit(self, text: str) -> None:
        """A connection limit was hit: ``-ERR LIMIT <text>``, then close."""
        if self._closing:
            return
        log.info("closing {peer}: {limit}", peer=self._peer(), limit=text)
        self._say(error_line(errors.Limit(text)))
        self._close()

    def _hang_up(self) -> None:
        self._flush()
        self._close_pending = False
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

    # ------------------------------------------------------ DeliveryTarget API

    def push(self, sid: int, tag: int, message: Message) -> None:
        self.push_many(sid, tag, [message])

    def push_many(self, sid: int, tag: int, messages: list[Message]) -> None:
        out = self._out
        append = out.append
        size = 0
        for m in messages:
            payload = m.payload
            n = len(payload)
            size += n
            if m.deliveries != 1 or m.reason is not None:
                append(_msg_head(sid, tag, m))
                append(payload)
                append(_CRLF)
            elif n <= _JOIN_MAX:  # one piece: cheaper than three, and joined anyway
                append(b"MSG %d %d %s %d\r\n%s\r\n" % (sid, tag, m.route, n, payload))
            else:
                append(b"MSG %d %d %s %d\r\n" % (sid, tag, m.route, n))
                append(payload)
                append(_CRLF)
            tag += 1
        self._queued(size + 32 * len(messages))

    def push_run(self, sid: int, tag: int, route: bytes, payloads: list[bytes]) -> None:
        # (a name or key never holds "%": the route can go into the format)
        whole = b"MSG %d %%d %s %%d\r\n%%s\r\n" % (sid, route)
        head = b"MSG %d %%d %s %%d\r\n" % (sid, route)
        out = self._out
        append = out.append
        size = 0
        for payload in payloads:
            n = len(payload)
            size += n
            if n <= _JOIN_MAX:
                append(whole % (tag, n, payload))
            else:
                append(head % (tag, n))
                append(payload)
                append(_CRLF)
            tag += 1
        self._queued(size + 32 * len(payloads))

    def cancelled(self, sid: int, reason: str) -> None:
        self._send(encode_frame(frames.Cancel(sid, reason)))

    def slow(self, sid: int) -> None:
        if not self._closing:
            self._send(error_line(errors.Limit("slow consumer")))
            self._close()

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
        self._flush()  # the transport has room: what that let through goes now

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
        if self._closing or self._handlers is not _PRE_AUTH_HANDLERS:
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
            self._last_read = now
        left = self._last_read + timeout - now
        if left <= 0:
            self._limit(f"idle for {timeout:g} s")
            return
        self._idle_timer = clock.callLater(left, self._idle_check)

    # ---------------------------------------------------------- memory watch

    def _hold_for_memory(self, f: frames.Publish | frames.PublishRun) -> None:
        """The broker is over its memory mark: keep this PUBLISH and what follows,
        and stop reading, until :meth:`MemoryWatch.check` releases us."""
        self._backlog.append(f)
        self._watch.blocked[self] = None
        self._wait()

    def _release(self) -> None:
        if not self._closing:
            self._drain_backlog()

    # ------------------------------------------------------------ permissions

    def _forbid(self, what: str, name: str) -> errors.Forbidden:
        user = self.user.name if self.user is not None else "?"
        return errors.Forbidden(f"{user} may not {what} {name}")

    def _check(self, may: Callable[[str], bool], what: str, name: str) -> None:
        if not may(name):
            raise self._forbid(what, name)

    def _own_private(self, name: str) -> bool:
        return name.startswith(f"mbroker.sub.{self.session.id}.")

    # --------------------------------------------------------------- handlers

    def _create(self, f: frames.Create) -> None:
        perms = self._perms
        if perms is not None:
            self._check(perms.may_configure, "configure", f.name)
            dead_letter = f.options.dead_letter
            if dead_letter is not None:
                self._check(perms.may_write, "write to", dead_letter)
        made = self.broker.create(self.session, f.name, f.kind, f.options)
        self._reply(b"+OK created\r\n" if made else b"+OK exists\r\n")

    def _delete(self, f: frames.Delete) -> None:
        if self._perms is not None:
            self._check(self._perms.may_configure, "configure", f.name)
        self._reply(b"+OK %d\r\n" % self.broker.delete(f.name, f.if_empty, f.if_unused))

    def _binding(self, queue: str, exchange: str) -> None:
        perms = self._perms
        if perms is not None:
            self._check(perms.may_configure, "configure", queue)
            self._check(perms.may_read, "read from", exchange)

    def _bind(self, f: frames.Bind) -> None:
        self._binding(f.queue, f.exchange)
        self.broker.bind(f.queue, f.exchange, f.key)
        self._reply(_OK)

    def _unbind(self, f: frames.Unbind) -> None:
        self._binding(f.queue, f.exchange)
        self.broker.unbind(f.queue, f.exchange, f.key)
        self._reply(_OK)

    def _may_publish(self, name: str) -> None:
        assert self._perms is not None
        may = self._may_write.get(name)
        if may is None:
            if len(self._may_write) >= _WRITE_CACHE_MAX:
                self._may_write.clear()
            may = self._may_write[name] = self._perms.may_write(name)
        if not may:
            raise self._forbid("write to", name)

    def _publish(self, f: frames.Publish) -> None:
        if self._watch.alarm:
            self._hold_for_memory(f)
            return
        if self._perms is not None:
            self._may_publish(f.name)
        self._reply(b"+OK %d\r\n" % self.broker.publish(f.name, f.key, f.payload, f.ttl))

    def _publish_run(self, f: frames.PublishRun) -> None:
        """Many PUBLISH, one reply each (see :class:`~mbroker.wire.frames.PublishRun`)."""
        if self._watch.alarm:
            self._hold_for_memory(f)
            return
        if self._perms is not None:
            self._may_publish(f.name)
        # (a refusal of the whole run is answered once per publish by _run)
        reached, refused = self.broker.publish_many(f.name, f.key, f.payloads, f.ttl)
        n = len(f.payloads)
        ok = b"+OK %d\r\n" % reached
        if not refused:
            self._reply(ok * n, count=n)
        else:
            self._reply(
                b"".join([error_line(refused[i]) if i in refused else ok for i in range(n)]),
                count=n,
            )

    def _subscribe(self, f: frames.Subscribe) -> None:
        if self._perms is not None:
            self._check(self._perms.may_read, "read from", f.name)
        c = self.broker.subscribe(
            self.session, f.name, f.pattern, f.prefetch, f.manual, f.ack_timeout
        )
        broker = self.broker
        self._reply(b"+OK %d\r\n" % c.sid, lambda: broker.activate(c))

    def _unsubscribe(self, f: frames.Unsubscribe) -> None:
        self.broker.unsubscribe(self.session, f.sid)
        self._reply(_OK)

    def _pull(self, f: frames.Pull) -> None:
        if self._perms is not None:
            self._check(self._perms.may_read, "read from", f.queue)
        slot: list[_Slot] = []

        def done(pulled: Pulled) -> None:
            # May run inside another connection's publish: write the reply now (or
            # once the removal of auto-acked durable messages is stored), but run
            # the commands that queued behind it on a later reactor turn.
            data = self._encode_pulled(pulled)
            if self._journal is not None and not f.manual and any(m.msg_id for _, m in pulled):
                self._journal.on_commit(partial(self._committed, slot[0], data))
            else:
                self._fill(slot[0], data)
            if not self._closing:
                self.broker.clock.callLater(0, self._drain_backlog)

        # (a client that has shut down its sending side waits for nothing more)
        wait = None if self._eof else f.wait
        out = self.broker.pull(
            self.session, f.queue, f.max, wait, f.manual, f.ack_timeout, on_done=done
        )
        if out is not None:
            self._reply(self._encode_pulled(out))
            return
        slot.append(self._later())
        self._wait(pull=True)

    def _wait(self, pull: bool = False) -> None:
        """Hold later commands until :meth:`_drain_backlog`; a PULL keeps reading."""
        self._waiting = self._stop = True
        self._pull_waiting = pull
        self._backlog_bytes = 0
        self._update_reading()

    def _drain_backlog(self) -> None:
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
            self._close()  # (once the replies still waiting for the disk are out)

    def _encode_pulled(self, pulled: Pulled) -> bytes:
        parts = []
        for tag, m in pulled:
            parts.append(_msg_head(0, tag, m))
            parts.append(m.payload)
            parts.append(_CRLF)
        parts.append(b"+OK %d\r\n" % len(pulled))
        return b"".join(parts)

    def _ack(self, f: frames.Ack) -> None:
        self._reply(b"+OK %d\r\n" % self.broker.ack(self.session, f.tags))

    def _nack(self, f: frames.Nack) -> None:
        self._reply(b"+OK %d\r\n" % self.broker.nack(self.session, f.tags, f.requeue, f.delay))

    def _touch(self, f: frames.Touch) -> None:
        self._reply(b"+OK %d\r\n" % self.broker.touch(self.session, f.tags))

    def _purge(self, f: frames.Purge) -> None:
        if self._perms is not None:
            self._check(self._perms.may_read, "read from", f.queue)
        self._reply(b"+OK %d\r\n" % self.broker.purge(f.queue))

    def _ping(self, f: frames.Ping) -> None:
        self._reply(b"+PONG\r\n")

    def _pong(self, f: frames.Pong) -> None:
        pass  # the answer to a pushed PING gets no reply

    def _help(self, f: frames.Help) -> None:
        self._reply(help_reply(f.command))

    def _quit(self, f: frames.Quit) -> None:
        self._reply(b"+OK bye\r\n")
        self._close()

    def _auth(self, f: frames.Auth) -> None:
        if not self._auth_required:  # an open broker accepts anyone
            self._reply(_OK)
            return
        if self.user is not None:
            raise errors.Forbidden(f"already logged in as {self.user.name}")
        # Later commands depend on the answer: hold them (and reading) meanwhile.
        slot = self._later()
        self._auth_busy = True
        self._wait()
        d = self.factory.check_password(f.user, f.password)
        d.addCallback(self._auth_checked, slot, f.user)
        d.addErrback(self._auth_crashed, slot)

    def _auth_checked(self, result: tuple[User | None, str | None], slot: _Slot, name: str) -> None:
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

    def _auth_answer(self, slot: _Slot, user: User | None) -> None:
        if self._lost:
            return
        self._auth_busy = False
        if user is not None:
            self.user = user
            self._perms = None if user.permissions == _ALL else user.permissions
            self._may_write.clear()
            self._handlers = _HANDLERS
            if self._auth_timer is not None and self._auth_timer.active():
                self._auth_timer.cancel()
            self._auth_timer = None
        self._fill(slot, _OK if user is not None else _AUTH_FAILED)
        self._drain_backlog()

    def _auth_crashed(self, failure: Failure, slot: _Slot) -> None:
        log.failure("checking a password failed", failure=failure, peer=self._peer())
        if not self._lost:
            self._auth_busy = False
            self._fill(slot, error_line(errors.Internal("see the broker's log")))
            self._drain_backlog()

    def _no_auth(self, f: Any) -> None:
        self._reply(_NO_AUTH * _commands(f))

    def _list(self, f: frames.List) -> None:
        rows = self.broker.list_objects()
        perms = self._perms
        if perms is not None:
            rows = [r for r in rows if perms.may_see(r.name) or self._own_private(r.name)]
        self._reply(b"".join([encode_frame(r) for r in rows]) + b"+OK %d\r\n" % len(rows))

    def _stats(self, f: frames.Stats) -> None:
        perms = self._perms
        if perms is not None:
            if f.name is None:
                if not perms.may_see_broker():
                    raise self._forbid("see", "the broker's figures (no right on any name)")
            elif not (perms.may_see(f.name) or self._own_private(f.name)):
                raise self._forbid("see", f.name)
        pairs = self.broker.stats(f.name)
        if f.name is None:
            watch = self._watch
            pairs += [
                ("memory_high_water", str(watch.high_water)),
                ("memory_alarm", str(int(watch.alarm))),
                ("connections_blocked", str(len(watch.blocked))),
            ]
        self._reply(b"".join([encode_frame(frames.Stat(k, v)) for k, v in pairs]) + _OK)

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
        )

    def disconnect(self, reason: str) -> None:
        """Close this connection from outside (an operator, through the HTTP API):
        ``-ERR LIMIT <reason>`` after the replies already due, then hang up."""
        self._limit(reason)


def _msg_head(sid: int, tag: int, m: Message) -> bytes:
    """The MSG line of a delivery of ``m``, with its redelivery count and reason."""
    reason = m.reason
    return msg_header(
        sid,
        tag,
        m.route,
        len(m.payload),
        m.deliveries - 1,
        reason.encode() if reason is not None else None,
    )


def _commands(item: object) -> int:
    """How many commands, so replies, a decoded item stands for (a run of PUBLISH is
    many: each gets its own refusal when the run is refused)."""
    return len(item.payloads) if type(item) is frames.PublishRun else 1


_HANDLERS: dict[type, Callable[[BrokerProtocol, Any], None]] = {
    frames.Create: BrokerProtocol._create,
    frames.Delete: BrokerProtocol._delete,
    frames.Bind: BrokerProtocol._bind,
    frames.Unbind: BrokerProtocol._unbind,
    frames.Publish: BrokerProtocol._publish,
    frames.PublishRun: BrokerProtocol._publish_run,
    frames.Subscribe: BrokerProtocol._subscribe,
    frames.Unsubscribe: BrokerProtocol._unsubscribe,
    frames.Pull: BrokerProtocol._pull,
    frames.Ack: BrokerProtocol._ack,
    frames.Nack: BrokerProtocol._nack,
    frames.Touch: BrokerProtocol._touch,
    frames.Purge: BrokerProtocol._purge,
    frames.Ping: BrokerProtocol._ping,
    frames.Pong: BrokerProtocol._pong,
    frames.Quit: BrokerProtocol._quit,
    frames.Help: BrokerProtocol._help,
    frames.Auth: BrokerProtocol._auth,
    frames.List: BrokerProtocol._list,
    frames.Stats: BrokerProtocol._stats,
}
#: before a successful AUTH: AUTH, PING, PONG, HELP and QUIT, and ``-ERR NO_AUTH`` for the rest
_PRE_AUTH_HANDLERS: dict[type, Callable[[BrokerProtocol, Any], None]] = {
    cls: BrokerProtocol._no_auth for cls in _HANDLERS
}
_PRE_AUTH_HANDLERS.update(
    {
        cls: _HANDLERS[cls]
        for cls in (frames.Auth, frames.Ping, frames.Pong, frames.Help, frames.Quit)
    }
)
_ALL = Permissions()


class BrokerFactory(Factory):
    """Makes a :class:`BrokerProtocol` per connection, all sharing one broker.

    With ``config.users_file`` it checks passwords (``auth``) in the reactor's
    thread pool, at most ``MAX_CONCURRENT_CHECKS`` at a time (argon2 takes tens of
    milliseconds and 64 MiB each); with a reactor that has no threads (a test's
    ``Clock``), or with ``check_in_thread=False``, it checks them inline.
    """

    protocol = BrokerProtocol  # type: ignore[assignment]
    MAX_CONCURRENT_CHECKS = 2

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
        self._threads = check_in_thread and IReactorThreads.providedBy(reactor)
        self._checks = DeferredSemaphore(self.MAX_CONCURRENT_CHECKS)
        self.watch = MemoryWatch(
            broker.clock, config.memory_high_water, config.memory_check_interval
        )
        self._dirty: list[BrokerProtocol] = []
        self._flush_scheduled = False
        #: a connection is handling what it read (see flush_later)
        self.reading = False
        #: the connections now open (for monitoring: see BrokerProtocol.report)
        self.protocols: set[BrokerProtocol] = set()

    def flush_later(self, p: BrokerProtocol) -> None:
        """``p`` has output queued: write it at the end of this read or turn.

        Within a read (``reading``) the reading connection flushes everyone when it is
        done; anything else (a timer, a store commit) schedules one flush for the end
        of the reactor turn.  No timer per read: it would delay every reply."""
        self._dirty.append(p)
        if not self._flush_scheduled and not self.reading:
            self._flush_scheduled = True
            self.broker.clock.callLater(0, self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_scheduled = False
        self.flush_all()

    def flush_all(self) -> None:
        """Write every connection's queued output (deliveries made for others)."""
        dirty, self._dirty = self._dirty, []
        for p in dirty:
            p._dirty = False
            if not p._lost:
                p._flush()

    def startFactory(self) -> None:
        self.watch.start()

    def stopFactory(self) -> None:
        self.watch.stop()

    def check_password(self, user: str, password: str) -> Deferred[tuple[User | None, str | None]]:
        """``(user, None)`` for the right password, ``(None, None)`` otherwise; the
        second item says why a changed users file could not be re-read."""
        auth = self.auth
        if auth is None:
            return Deferred.fromCoroutine(_nobody())

        def check() -> tuple[User | None, str | None]:
            problem = auth.refresh()
            return auth.check(user, password), problem

        def run() -> Deferred[tuple[User | None, str | None]]:
            if self._threads:
                threads = cast(IReactorThreads, self.reactor)
                return deferToThreadPool(threads, threads.getThreadPool(), check)
            return maybeDeferred(check)

        return self._checks.run(run)

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if self.broker.connections >= self.config.max_connections:
            return _Refuse(f"at most {self.config.max_connections} connections")
        p = BrokerProtocol(self.broker, self.config)
        p.factory = self
        return p


async def _nobody() -> tuple[User | None, str | None]:
    return None, None


class _Refuse(Protocol):
    """Says ``-ERR LIMIT …`` and hangs up: the connection limit was reached."""

    def __init__(self, text: str) -> None:
        self.text = text

    def connectionMade(self) -> None:
        self._tr = cast(_Transport, self.transport)
        self._tr.write(error_line(errors.Limit(self.text)))
        self._tr.loseConnection()
