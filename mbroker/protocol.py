"""The Twisted glue: one :class:`BrokerProtocol` per connection, and its factory.

Bytes go to the sans-IO :class:`~mbroker.wire.CommandDecoder`; each command goes to
one small handler that calls the :class:`~mbroker.registry.Broker` and encodes the
reply.  Exactly one place (:meth:`BrokerProtocol._run`) turns
:class:`~mbroker.errors.BrokerError` into ``-ERR`` lines.

Replies keep command order through a queue of reply slots: a reply that is not ready
yet (a PULL that waits) holds back the replies after it.  A command that waits also
holds back the *execution* of later commands (the contract: "later commands on the
connection queue behind it"), and reading from the socket is paused meanwhile so
that the backlog stays small.

Flow control: the protocol is the push producer of its own transport.  When the
transport's buffer fills, Twisted calls :meth:`pauseProducing`; the broker then stops
delivering to this connection (its messages stay queued or go to competing consumers)
and we stop reading from the peer, so a client that does not read its replies cannot
make us buffer them without bound.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mbroker import __version__, errors, frames
from mbroker.config import Config
from mbroker.model import Message, Session
from mbroker.registry import Broker, Pulled
from mbroker.wire import CommandDecoder, encode_frame, error_line, hello_line, msg_header

log = Logger()


class _Transport(TypingProtocol):  # the parts of ITCPTransport + IPushProducer we use
    def write(self, data: bytes) -> None: ...

    def writeSequence(self, data: Iterable[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def getPeer(self) -> object: ...


_CRLF = b"\r\n"
_OK = b"+OK\r\n"


class _Slot:
    """One reply not written yet, in command order."""

    __slots__ = ("data", "after")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.after: Callable[[], None] | None = None


@implementer(IPushProducer)
class BrokerProtocol(Protocol):
    factory: BrokerFactory
    session: Session

    def __init__(self, broker: Broker, config: Config) -> None:
        self.broker = broker
        self.config = config
        self.decoder = CommandDecoder(config.max_line, config.max_payload)
        self._slots: deque[_Slot] = deque()
        #: commands decoded while an earlier one waits (PULL wait)
        self._backlog: deque[Any] = deque()
        self._waiting = False
        self._closing = False
        #: the transport's buffer is full (it paused us as its producer)
        self._congested = False
        self._paused_reading = False

    # ------------------------------------------------------------ connection life

    def connectionMade(self) -> None:
        self._tr = cast(_Transport, self.transport)
        self.session = self.broker.open_session(self)
        self._tr.registerProducer(self, True)
        self._tr.write(hello_line(__version__, self.config.auth_required, self.config.max_payload))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._backlog.clear()
        self.broker.close_session(self.session)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        items = self.decoder.feed(data)
        if self._waiting:
            self._backlog.extend(items)
            return
        self._run(items)

    # ------------------------------------------------------- the dispatch loop

    def _run(self, items: Any) -> None:
        handlers = _HANDLERS
        for n, item in enumerate(items):
            if self._closing:
                return
            if self._waiting:
                self._backlog.extend(items[n:] if isinstance(items, list) else items)
                return
            if isinstance(item, errors.BrokerError):
                self._reply(error_line(item))
                if item.fatal:
                    self._close()
                    return
                continue
            try:
                handlers[type(item)](self, item)
            except errors.BrokerError as e:
                self._reply(error_line(e))
            except Exception:
                log.failure("command {command!r} failed", command=item, peer=self._peer())
                self._reply(error_line(errors.Internal("see the broker's log")))

    def _reply(self, data: bytes, after: Callable[[], None] | None = None) -> None:
        """Write a reply now, or queue it behind replies that are not ready."""
        if not self._slots:
            self._tr.write(data)
            if after is not None:
                after()
            return
        slot = _Slot()
        slot.data = data
        slot.after = after
        self._slots.append(slot)

    def _later(self) -> _Slot:
        slot = _Slot()
        self._slots.append(slot)
        return slot

    def _fill(self, slot: _Slot, data: bytes) -> None:
        slot.data = data
        slots = self._slots
        write = self._tr.write
        while slots:
            ready = slots[0].data
            if ready is None:
                break
            done = slots.popleft()
            write(ready)
            if done.after is not None and not self._closing:
                done.after()

    def _close(self) -> None:
        self._closing = True
        self._backlog.clear()
        self._tr.loseConnection()

    def _peer(self) -> str:
        try:
            return str(self._tr.getPeer())
        except Exception:
            return "?"

    # ------------------------------------------------------ DeliveryTarget API

    def push(self, sid: int, tag: int, message: Message) -> None:
        payload = message.payload
        redelivered = message.deliveries - 1
        reason = message.reason
        self._tr.writeSequence(
            (
                msg_header(
                    sid,
                    tag,
                    message.route,
                    len(payload),
                    redelivered,
                    reason.encode() if reason is not None else None,
                ),
                payload,
                _CRLF,
            )
        )

    def cancelled(self, sid: int, reason: str) -> None:
        self._tr.write(encode_frame(frames.Cancel(sid, reason)))

    def slow(self, sid: int) -> None:
        if not self._closing:
            self._tr.write(error_line(errors.Limit("slow consumer")))
            self._close()

    # ----------------------------------------------------------- IPushProducer

    def pauseProducing(self) -> None:
        self._congested = True
        self.broker.set_writable(self.session, False)
        self._update_reading()

    def resumeProducing(self) -> None:
        self._congested = False
        self._update_reading()
        self.broker.set_writable(self.session, True)

    def _update_reading(self) -> None:
        """Read from the peer unless our output is congested or a command waits."""
        paused = self._congested or self._waiting
        if paused != self._paused_reading and not self._closing:
            self._paused_reading = paused
            if paused:
                self._tr.pauseProducing()
            else:
                self._tr.resumeProducing()

    def stopProducing(self) -> None:
        self._closing = True

    # --------------------------------------------------------------- handlers

    def _create(self, f: frames.Create) -> None:
        made = self.broker.create(self.session, f.name, f.kind, f.options)
        self._reply(b"+OK created\r\n" if made else b"+OK exists\r\n")

    def _delete(self, f: frames.Delete) -> None:
        self._reply(b"+OK %d\r\n" % self.broker.delete(f.name, f.if_empty, f.if_unused))

    def _bind(self, f: frames.Bind) -> None:
        self.broker.bind(f.queue, f.exchange, f.key)
        self._reply(_OK)

    def _unbind(self, f: frames.Unbind) -> None:
        self.broker.unbind(f.queue, f.exchange, f.key)
        self._reply(_OK)

    def _publish(self, f: frames.Publish) -> None:
        self._reply(b"+OK %d\r\n" % self.broker.publish(f.name, f.key, f.payload, f.ttl))

    def _subscribe(self, f: frames.Subscribe) -> None:
        c = self.broker.subscribe(
            self.session, f.name, f.pattern, f.prefetch, f.manual, f.ack_timeout
        )
        broker = self.broker
        self._reply(b"+OK %d\r\n" % c.sid, lambda: broker.activate(c))

    def _unsubscribe(self, f: frames.Unsubscribe) -> None:
        self.broker.unsubscribe(self.session, f.sid)
        self._reply(_OK)

    def _pull(self, f: frames.Pull) -> None:
        slot: list[_Slot] = []

        def done(pulled: Pulled) -> None:
            # May run inside another connection's publish: write the reply now, but
            # run the commands that queued behind it on a later reactor turn.
            self._fill(slot[0], self._encode_pulled(pulled))
            if not self._closing:
                self.broker.clock.callLater(0, self._drain_backlog)

        out = self.broker.pull(
            self.session, f.queue, f.max, f.wait, f.manual, f.ack_timeout, on_done=done
        )
        if out is not None:
            self._reply(self._encode_pulled(out))
            return
        slot.append(self._later())
        self._waiting = True
        self._update_reading()

    def _drain_backlog(self) -> None:
        self._waiting = False
        if self._closing:
            return
        self._update_reading()
        backlog, self._backlog = self._backlog, deque()
        self._run(list(backlog))

    def _encode_pulled(self, pulled: Pulled) -> bytes:
        parts = []
        for tag, m in pulled:
            reason = m.reason
            parts.append(
                msg_header(
                    0,
                    tag,
                    m.route,
                    len(m.payload),
                    m.deliveries - 1,
                    reason.encode() if reason is not None else None,
                )
            )
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
        self._reply(b"+OK %d\r\n" % self.broker.purge(f.queue))

    def _ping(self, f: frames.Ping) -> None:
        self._reply(b"+PONG\r\n")

    def _quit(self, f: frames.Quit) -> None:
        self._reply(b"+OK bye\r\n")
        self._close()

    def _auth(self, f: frames.Auth) -> None:
        # Authentication comes with the security issue; an open broker accepts anyone.
        self._reply(_OK)

    def _list(self, f: frames.List) -> None:
        rows = self.broker.list_objects()
        self._reply(b"".join([encode_frame(r) for r in rows]) + b"+OK %d\r\n" % len(rows))

    def _stats(self, f: frames.Stats) -> None:
        pairs = self.broker.stats(f.name)
        self._reply(b"".join([encode_frame(frames.Stat(k, v)) for k, v in pairs]) + _OK)


_HANDLERS: dict[type, Callable[[BrokerProtocol, Any], None]] = {
    frames.Create: BrokerProtocol._create,
    frames.Delete: BrokerProtocol._delete,
    frames.Bind: BrokerProtocol._bind,
    frames.Unbind: BrokerProtocol._unbind,
    frames.Publish: BrokerProtocol._publish,
    frames.Subscribe: BrokerProtocol._subscribe,
    frames.Unsubscribe: BrokerProtocol._unsubscribe,
    frames.Pull: BrokerProtocol._pull,
    frames.Ack: BrokerProtocol._ack,
    frames.Nack: BrokerProtocol._nack,
    frames.Touch: BrokerProtocol._touch,
    frames.Purge: BrokerProtocol._purge,
    frames.Ping: BrokerProtocol._ping,
    frames.Quit: BrokerProtocol._quit,
    frames.Auth: BrokerProtocol._auth,
    frames.List: BrokerProtocol._list,
    frames.Stats: BrokerProtocol._stats,
}


class BrokerFactory(Factory):
    """Makes a :class:`BrokerProtocol` per connection, all sharing one broker."""

    protocol = BrokerProtocol  # type: ignore[assignment]

    def __init__(self, broker: Broker, config: Config, reactor: IReactorTime | None = None) -> None:
        self.broker = broker
        self.config = config
        self.reactor = reactor

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if self.broker.connections >= self.config.max_connections:
            return _Refuse(f"at most {self.config.max_connections} connections")
        p = BrokerProtocol(self.broker, self.config)
        p.factory = self
        return p


class _Refuse(Protocol):
    """Says ``-ERR LIMIT …`` and hangs up: the connection limit was reached."""

    def __init__(self, text: str) -> None:
        self.text = text

    def connectionMade(self) -> None:
        self._tr = cast(_Transport, self.transport)
        self._tr.write(error_line(errors.Limit(self.text)))
        self._tr.loseConnection()
