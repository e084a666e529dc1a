"""The STOMP listener: one :class:`StompProtocol` per connection, and its factory.

A thin translation of STOMP 1.0/1.1/1.2 frames onto the one
:class:`~mbroker.core.broker.Broker`, beside the native protocol and never a second
broker: a SEND is a publish, a SUBSCRIBE a subscription, an ACK an ack.  The codec is
:mod:`mbroker.wire.stomp` (sans-IO); destinations are mapped by
:mod:`mbroker.server.stomp_destinations`.  See ``docs/stomp.rst`` for what users see.

* Every error is an ERROR frame with a ``message`` header (and ``receipt-id`` when the
  failing frame asked for a receipt), after which the connection is closed, as the
  specification says.
* Receipts: a frame with a ``receipt`` header gets its RECEIPT once it is done; when it
  changed durable state, once the store has it.
* Output is queued and written once per read or per reactor turn (at once past 64 KiB);
  a MESSAGE head is built with one ``%`` format from parts cached per subscription.
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

import secrets
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred, DeferredSemaphore, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorThreads
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mbroker import __version__, errors
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.core.model import Consumer, Queue, QueuedMessage, Session
from mbroker.server.auth import Authenticator, Permissions, User
from mbroker.server.memwatch import MemoryWatch
from mbroker.server.stomp_destinations import (
    AMQ_EXCHANGES,
    AMQ_QUEUE,
    QUEUE,
    REPLY_QUEUE,
    TEMP_QUEUE,
    TOPIC,
    TOPIC_EXCHANGE,
    Destination,
    message_destination,
    parse_destination,
)
from mbroker.server.stomp_state import (
    ACK_MODES,
    Subscription,
    Transactions,
    parse_message_id,
)
from mbroker.wire.frames import QueueOptions, TagRanges
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
from mbroker.wire.tokens import valid_name

log = Logger()

__all__ = ["StompFactory", "StompProtocol"]

#: queued output past this many bytes is written at once
_FLUSH_AT = 64 * 1024
#: the heart-beat the server offers (``sx,sy`` in ms): it can send every second, and
#: wants to hear from the client at least every second (each side may ask for less)
DEFAULT_HEARTBEAT = (1000, 1000)
#: a client is dead after this many of its heart-beat periods without a byte
HEARTBEAT_GRACE = 2.0
#: remembered destinations (per connection) before the caches are emptied
_CACHE_MAX = 4096
_DURABLE_VALUES = ("true", "True", "1")
_ALL = Permissions()


class _Transport(TypingProtocol):  # the parts of ITCPTransport + IConsumer used here (for mypy)
    def write(self, data: bytes) -> None: ...

    def writeSequence(self, data: Iterable[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def getPeer(self) -> object: ...


@implementer(IPushProducer)
class StompProtocol(Protocol):
    """One STOMP connection; implements the broker's ``DeliveryTarget``."""

    factory: StompFactory
    session: Session

    def __init__(self, factory: StompFactory) -> None:
        self.factory = factory
        self.broker: Broker = factory.broker
        self.config: Config = factory.config
        self.decoder = StompDecoder(max_body=self.config.max_payload)
        #: the version frames are written in ("1.0", unescaped, until CONNECTED)
        self.version = "1.0"
        self._agreed = "1.0"
        self._journal = self.broker.journal
        self._memory: MemoryWatch = factory.watch
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
        self._perms: Permissions | None = None
        self._subs: dict[str, Subscription] = {}
        self._by_sid: dict[int, Subscription] = {}
        self._routes: dict[bytes, bytes] = {}
        self._sends: dict[str, tuple[str, str, str]] = {}
        self._temp: dict[str, str] = {}  # client's temp-queue NAME -> queue name
        self._tx = Transactions(self.config.max_payload * 16)
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
        self._tr = cast(_Transport, self.transport)
        self.session = self.broker.open_session(self)
        timeout = self.config.auth_timeout
        if timeout > 0:
            self._connect_timer = self.broker.clock.callLater(timeout, self._connect_expired)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = self._lost = True
        self._held = None
        self._tx.clear()
        self._memory.blocked.pop(self, None)
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
        self._reading = True
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
            self._flush()

    def _run(self, items: list[Any]) -> None:
        journal = self._journal
        for n, item in enumerate(items):
            if self._closing:
                return
            if self._held is not None:
                self._held.extend(items[n:])
                return
            if type(item) is Frame:
                if journal is not None:
                    self._mark = journal.changes
                handler = (_HANDLERS if self._connected else _PRE_CONNECT).get(item.command)
                try:
                    if handler is None:
                        raise StompError(
                            f"{item.command} before CONNECT"
                            if not self._connected
                            else f"{item.command} is a server frame"
                        )
                    handler(self, item)
                except StompError as e:
                    self._fatal(e.message, item)
                except errors.BrokerError as e:
                    self._fatal(_describe(e), item)
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
        elif not self._flush_pending and not self._reading:
            self._flush_pending = True
            self.broker.clock.callLater(0, self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_pending = False
        if not self._lost:
            self._flush()

    def _flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            self._out_size = 0
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
        self._close()

    def _close(self) -> None:
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

    def _receipt(self, frame: Frame, then: Callable[[], None] | None = None) -> None:
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
                        self._frame("ERROR", [("message", _describe(err))])
                    else:
                        self._fatal(_describe(err), frame)
                elif receipt is not None:
                    self._frame("RECEIPT", [("receipt-id", receipt)])
                if then is not None:
                    then()
                if self._closing and not self._commits:
                    self._hang_up()

            journal.on_commit(stored)
            return
        if receipt is not None:
            self._frame("RECEIPT", [("receipt-id", receipt)])
        if then is not None:
            then()

    # ------------------------------------------------------ DeliveryTarget API

    def push(self, sid: int, tag: int, message: QueuedMessage) -> None:
        self.push_many(sid, tag, [message])

    def push_many(self, sid: int, tag: int, messages: list[QueuedMessage]) -> None:
        sub = self._by_sid[sid]
        append = self._out.append
        prefix, mid, pending = sub.prefix, sub.mid, sub.pending
        ack = sub.mode != "auto" and self.version == "1.2"
        routes = self._routes
        size = 0
        for m in messages:
            dest = routes.get(m.route)
            if dest is None:
                dest = self._destination(m.route, m.source, m.key)
            payload = m.payload
            n = len(payload)
            size += n
            extra = b"redelivered:true\n" if m.deliveries > 1 else b""
            if ack:
                extra += b"ack:%s%d\n" % (mid, tag)
            append(
                b"%sdestination:%s\nmessage-id:%s%d\n%scontent-length:%d\n\n"
                % (prefix, dest, mid, tag, extra, n)
            )
            append(payload)
            append(b"\0")
            if pending is not None:
                pending.append(tag)
            tag += 1
        self._queued(size + 100 * len(messages))

    def push_run(self, sid: int, tag: int, route: bytes, payloads: list[bytes]) -> None:
        # (only for ack=auto subscriptions, messages delivered for the first time)
        sub = self._by_sid[sid]
        dest = self._routes.get(route)
        if dest is None:
            source, _, key = route.decode().partition(" ")
            dest = self._destination(route, source, "" if key == "-" else key)
        head = b"%sdestination:%s\nmessage-id:%s%%d\ncontent-length:%%d\n\n" % (
            sub.prefix,
            dest,
            sub.mid,
        )
        append = self._out.append
        size = 0
        for payload in payloads:
            n = len(payload)
            size += n
            append(head % (tag, n))
            append(payload)
            append(b"\0")
            tag += 1
        self._queued(size + 100 * len(payloads))

    def _destination(self, route: bytes, source: str, key: str) -> bytes:
        try:
            obj = self.broker.get(source)
        except errors.NotFound:
            obj = None
        is_queue = isinstance(obj, Queue)
        if is_queue and source in self._temp.values():
            text = f"/reply-queue/{source}"
        else:
            text = message_destination(source, key, is_queue)
        if len(self._routes) >= _CACHE_MAX:
            self._routes.clear()
        dest = self._routes[route] = text.encode()
        return dest

    def cancelled(self, sid: int, reason: str) -> None:
        sub = self._by_sid.pop(sid, None)
        if sub is not None:
            self._subs.pop(sub.id, None)
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
            self._close()
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
        self._perms = None if user is None or user.permissions == _ALL else user.permissions
        self._connected, self._connecting = True, False
        self.version = self._agreed
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

    def release(self) -> None:
        """The memory is back under its mark: run what was held, read again."""
        held, self._held = self._held, None
        if held is None or self._closing:
            return
        self._update_reading()
        self._run(list(held))
        self._flush()

    def _again(self, f: Frame) -> None:
        raise StompError("already connected")

    # ---------------------------------------------------------------- handlers

    def _check(self, may: Callable[[str], bool], what: str, name: str) -> None:
        if not may(name):
            user = self.user.name if self.user is not None else "?"
            raise errors.Forbidden(f"{user} may not {what} {name}")

    def _ensure_queue(self, name: str) -> None:
        """``/queue/NAME``: a durable queue, made on first use (any existing one does)."""
        try:
            self.broker.get(name)
            return
        except errors.NotFound:
            pass
        if self._perms is not None:
            self._check(self._perms.may_configure, "configure", name)
        self.broker.create(self.session, name, "queue", QueueOptions(durable=True))

    def _temp_queue(self, name: str) -> str:
        """The connection's queue for ``/temp-queue/NAME``, made (and subscribed to, with
        the subscription id ``/temp-queue/NAME``) on first use."""
        queue = self._temp.get(name)
        if queue is not None:
            return queue
        if len(self._temp) >= self.config.max_subscriptions:
            raise errors.Limit(f"at most {self.config.max_subscriptions} temp queues")
        queue = "amq.gen-" + secrets.token_urlsafe(16)
        self.broker.create(self.session, queue, "queue", QueueOptions(exclusive=True))
        self._temp[name] = queue
        self._add_sub(f"/temp-queue/{name}", queue, None, "auto", None)
        return queue

    def _target(self, text: str) -> tuple[str, str, str]:
        """Where a SEND to ``text`` publishes: ``(kind, name, key)``."""
        found = self._sends.get(text)
        if found is not None:
            return found
        d = parse_destination(text)
        if d.kind == TEMP_QUEUE:  # (not cached: the queue is the connection's)
            return (QUEUE, self._temp_queue(d.name), "")
        if d.kind in (QUEUE, AMQ_QUEUE, REPLY_QUEUE):
            found = (d.kind, d.name, "")
        else:
            found = (d.kind, d.name, d.key or "")
        if len(self._sends) >= _CACHE_MAX:
            self._sends.clear()
        self._sends[text] = found
        return found

    def _send(self, f: Frame) -> None:
        if self._memory.alarm:
            # Over the memory mark: hold this SEND and what follows, stop reading,
            # until the watch releases us (as the native protocol holds a PUBLISH).
            self._held = deque([f])
            self._memory.blocked[self] = None
            self._update_reading()
            return
        tx = f.header("transaction")
        if tx is not None:
            self._tx.hold(tx, f)
        else:
            self._do_send(f)
        self._receipt(f)

    def _do_send(self, f: Frame) -> None:
        text = f.header("destination")
        if text is None:
            raise StompError("SEND needs a destination header")
        kind, name, key = self._target(text)
        reply_to = f.header("reply-to")
        if reply_to is not None and reply_to.startswith("/temp-queue/"):
            self._temp_queue(parse_destination(reply_to).name)
        if self._perms is not None:
            self._check(self._perms.may_write, "write to", name)
        expiration = f.header("expiration")
        ttl = None
        if expiration is not None:
            if not (expiration.isascii() and expiration.isdigit() and len(expiration) < 13):
                raise StompError(f"bad expiration {expiration[:40]!r}: whole milliseconds")
            ttl = int(expiration)
        if kind == QUEUE:
            self._ensure_queue(name)
            try:
                self.broker.publish(name, key, f.body, ttl)
            except errors.NotFound:  # deleted since: made again
                self._ensure_queue(name)
                self.broker.publish(name, key, f.body, ttl)
        else:
            self.broker.publish(name, key, f.body, ttl)

    def _subscribe(self, f: Frame) -> None:
        text = f.header("destination")
        if text is None:
            raise StompError("SUBSCRIBE needs a destination header")
        sub_id = f.header("id")
        if sub_id is None:
            if self.version != "1.0":
                raise StompError("SUBSCRIBE needs an id header")
            sub_id = text
        if sub_id in self._subs:
            raise StompError(f"subscription id {sub_id!r} is already in use")
        mode = f.header("ack", "auto")
        if mode not in ACK_MODES:
            raise StompError(f"bad ack {mode!r}: auto, client or client-individual")
        prefetch = None
        count = f.header("prefetch-count")
        if count is not None:
            if not (count.isascii() and count.isdigit() and len(count) < 10):
                raise StompError(f"bad prefetch-count {count[:40]!r}: a whole number")
            prefetch = int(count)
        d = parse_destination(text, pattern=True)
        durable = (
            f.header("durable") in _DURABLE_VALUES or f.header("persistent") in _DURABLE_VALUES
        )
        name, pattern = self._source(d, sub_id, durable)
        sub, consumer = self._add_sub(sub_id, name, pattern, mode, prefetch, activate=False)
        sub.durable = durable and d.kind == TOPIC
        self._receipt(f, lambda: self.broker.activate(consumer))

    def _source(self, d: Destination, sub_id: str, durable: bool) -> tuple[str, str | None]:
        """What a SUBSCRIBE to ``d`` consumes from: ``(name, pattern)``."""
        perms = self._perms
        if d.kind == QUEUE:
            self._ensure_queue(d.name)
        elif d.kind in (TEMP_QUEUE, REPLY_QUEUE):
            raise StompError(f"{d.kind} destinations cannot be subscribed to")
        elif d.kind == TOPIC and durable:
            # A durable topic subscription: a durable queue bound to amq.topic, named
            # after the subscription id, that outlives the connection.
            queue = _durable_queue_name(sub_id)
            if perms is not None:
                self._check(perms.may_configure, "configure", queue)
                self._check(perms.may_read, "read from", TOPIC_EXCHANGE)
            self.broker.create(self.session, queue, "queue", QueueOptions(durable=True))
            self.broker.bind(queue, TOPIC_EXCHANGE, d.key or "#")
            return queue, None
        if perms is not None:
            self._check(perms.may_read, "read from", d.name)
        if d.kind in (QUEUE, AMQ_QUEUE):
            self.broker.queue(d.name)  # (an exchange of that name is refused here)
            return d.name, None
        self.broker.exchange(d.name)
        return d.name, d.key

    def _add_sub(
        self,
        sub_id: str,
        name: str,
        pattern: str | None,
        mode: str,
        prefetch: int | None,
        activate: bool = True,
    ) -> tuple[Subscription, Consumer]:
        manual = mode != "auto"
        c = self.broker.subscribe(self.session, name, pattern, prefetch if manual else None, manual)
        sub = Subscription(sub_id, c.sid, mode, self.version, name)
        self._subs[sub_id] = sub
        self._by_sid[c.sid] = sub
        if activate:
            self.broker.activate(c)
        return sub, c

    def _unsubscribe(self, f: Frame) -> None:
        sub_id = f.header("id")
        if sub_id is None and self.version == "1.0":
            sub_id = f.header("destination")
        if sub_id is None:
            raise StompError("UNSUBSCRIBE needs an id header")
        sub = self._subs.pop(sub_id, None)
        if sub is None:
            raise StompError(f"no subscription {sub_id!r}")
        del self._by_sid[sub.sid]
        self.broker.unsubscribe(self.session, sub.sid)
        if sub.durable and (
            f.header("durable") in _DURABLE_VALUES or f.header("persistent") in _DURABLE_VALUES
        ):
            self.broker.delete(sub.queue)  # (as RabbitMQ: only when told durable again)
        self._receipt(f)

    def _ack(self, f: Frame) -> None:
        tx = f.header("transaction")
        if tx is not None:
            self._tx.hold(tx, f)
        else:
            self._do_ack(f)
        self._receipt(f)

    def _do_ack(self, f: Frame) -> None:
        sub, tags, cumulative = self._acked(f)
        requeue = f.header("requeue", "true") != "false"
        try:
            if f.command == "ACK":
                self.broker.ack(self.session, tags)
            else:
                self.broker.nack(self.session, tags, requeue)
        except errors.NotFound:
            if not cumulative:
                mid = f.header("id") or f.header("message-id")
                raise errors.NotFound(f"message {mid!r} is not outstanding") from None
            # (some of a cumulative range was already void: the rest is done)

    def _acked(self, f: Frame) -> tuple[Subscription, TagRanges, bool]:
        """The subscription, tags and kind (cumulative or not) an ACK or NACK names."""
        mid = f.header("id") if self.version == "1.2" else None
        if mid is None:
            mid = f.header("message-id")
        if mid is None:
            raise StompError(f"{f.command} needs an id header")
        sid, tag = parse_message_id(f.command, mid)
        sub = self._by_sid.get(sid)
        if sub is None:
            raise StompError(f"{f.command}: no subscription for message {mid!r}")
        if sub.mode == "auto":
            raise StompError(f"{f.command}: subscription {sub.id!r} is ack:auto")
        tags, cumulative = sub.acked(tag)
        return sub, tags, cumulative

    def _begin(self, f: Frame) -> None:
        self._tx.begin(_transaction(f))
        self._receipt(f)

    def _commit(self, f: Frame) -> None:
        for held in self._tx.end(_transaction(f)):
            if held.command == "SEND":
                self._do_send(held)
            else:
                self._do_ack(held)
        self._receipt(f)

    def _abort(self, f: Frame) -> None:
        self._tx.end(_transaction(f))
        self._receipt(f)

    def _disconnect(self, f: Frame) -> None:
        self._tx.clear()
        self._receipt(f, self._close)


def _transaction(f: Frame) -> str:
    tx = f.header("transaction")
    if tx is None:
        raise StompError(f"{f.command} needs a transaction header")
    return tx


def _durable_queue_name(sub_id: str) -> str:
    """The queue of a durable topic subscription: ``stomp-subscription-<id>``, the id
    with characters a name cannot hold replaced by ``_`` (the id must be a valid name
    otherwise, so that two ids never share a queue)."""
    name = "stomp-subscription-" + sub_id
    if not valid_name(name):
        raise StompError(
            f"a durable subscription's id {sub_id[:40]!r} must be characters of "
            "A-Z a-z 0-9 _ - . (it names its queue)"
        )
    return name


def _describe(e: errors.BrokerError) -> str:
    return str(e)


_Handler = Callable[[StompProtocol, Frame], None]
_PRE_CONNECT: dict[str, _Handler] = {
    "CONNECT": StompProtocol._connect,
    "STOMP": StompProtocol._connect,
}
_HANDLERS: dict[str, _Handler] = {
    "CONNECT": StompProtocol._again,
    "STOMP": StompProtocol._again,
    "SEND": StompProtocol._send,
    "SUBSCRIBE": StompProtocol._subscribe,
    "UNSUBSCRIBE": StompProtocol._unsubscribe,
    "ACK": StompProtocol._ack,
    "NACK": StompProtocol._ack,
    "BEGIN": StompProtocol._begin,
    "COMMIT": StompProtocol._commit,
    "ABORT": StompProtocol._abort,
    "DISCONNECT": StompProtocol._disconnect,
}


class StompFactory(Factory):
    """Makes a :class:`StompProtocol` per connection, all on one broker.

    ``auth`` (or ``config.users_file``) makes CONNECT need a login and passcode, checked
    in the reactor's thread pool, at most ``MAX_CONCURRENT_CHECKS`` at a time (inline
    with a reactor that has no threads, or with ``check_in_thread=False``).
    ``heartbeat`` is the ``sx,sy`` the server offers, in milliseconds; ``watch`` the
    memory watch that holds publishers over the high-water mark.
    """

    MAX_CONCURRENT_CHECKS = 2

    def __init__(
        self,
        broker: Broker,
        config: Config,
        reactor: object | None = None,
        auth: Authenticator | None = None,
        heartbeat: tuple[int, int] = DEFAULT_HEARTBEAT,
        check_in_thread: bool = True,
        watch: MemoryWatch | None = None,
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
        self._threads = check_in_thread and IReactorThreads.providedBy(reactor)
        self._checks = DeferredSemaphore(self.MAX_CONCURRENT_CHECKS)

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
        auth = self.auth
        if auth is None:  # (auth required, but no users file: nobody gets in)
            return succeed((None, None))

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
        return StompProtocol(self)


class _Refuse(Protocol):
    """Says ERROR and hangs up: the connection limit was reached."""

    def __init__(self, text: str) -> None:
        self.text = text

    def connectionMade(self) -> None:
        tr = cast(_Transport, self.transport)
        tr.write(encode(Frame("ERROR", (("message", self.text),))))
        tr.loseConnection()
