"""The frame handlers of one STOMP connection once it is CONNECTED: SEND, SUBSCRIBE,
UNSUBSCRIBE, ACK/NACK, BEGIN/COMMIT/ABORT and DISCONNECT, each turned into calls on the
:class:`~mbroker.core.broker.Broker`, with the logged-in user's permissions checked.

A handler raises :class:`~mbroker.wire.stomp.StompError` or
:class:`~mbroker.errors.BrokerError` to refuse; the connection's dispatch loop
(:mod:`mbroker.server.stomp_protocol`) turns it into an ERROR frame.  What a handler
asks of its connection (a receipt, closing, holding frames while memory is short) is the
small :class:`Connection` interface.  Destinations are parsed by
:mod:`~mbroker.server.stomp_destinations`; subscriptions and transactions are kept by
:mod:`~mbroker.server.stomp_state`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, cast

from mbroker import errors
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.core.model import Consumer, Session
from mbroker.server.auth import Permissions, User
from mbroker.server.stomp_destinations import (
    AMQ_QUEUE,
    QUEUE,
    REPLY_QUEUE,
    TEMP_QUEUE,
    TOPIC,
    TOPIC_EXCHANGE,
    Destination,
    parse_destination,
)
from mbroker.server.stomp_props import NOT_CARRIED, send_props
from mbroker.server.stomp_state import ACK_MODES, Subscription, Transactions, parse_message_id
from mbroker.wire.frames import Props, QueueOptions, TagRanges
from mbroker.wire.stomp import Frame, StompError
from mbroker.wire.tokens import valid_name

#: remembered destinations (per connection) before the caches are emptied
CACHE_MAX = 4096
_DURABLE_VALUES = ("true", "True", "1")
#: a SEND with one of these headers is run on its own, never in a run (send_run)
_ONE_BY_ONE = ("transaction", "receipt", "expiration", "reply-to")
#: the headers a plain SEND may have (its message has no properties, nothing waits for
#: it): its head is remembered, and the next SEND with that head skips the look-ups
_PLAIN = NOT_CARRIED - {"receipt", "transaction", "expiration"}
_ALL = Permissions()


class Connection(Protocol):
    """What the handlers ask of their connection (a ``StompProtocol``)."""

    def receipt(self, frame: Frame, then: Callable[[], None] | None = None) -> None:
        """RECEIPT for ``frame`` if it asks, once the store has its changes; then ``then``."""

    def close(self) -> None:
        """Write nothing after what is queued, and close once it is written."""

    def hold_for_memory(self, frame: Frame) -> None:
        """Keep ``frame`` and what follows until the broker's memory is under its mark."""


class Memory(Protocol):
    """What the handlers read of the broker's memory watch (a ``MemoryWatch``)."""

    @property
    def alarm(self) -> bool:
        """The memory is over its high-water mark: publishers are held."""


class StompCommands:
    """The handlers of one connection: ``handlers()[frame.command](frame)``."""

    def __init__(
        self, conn: Connection, broker: Broker, session: Session, config: Config, watch: Memory
    ) -> None:
        self._conn = conn
        self._broker = broker
        self._session = session
        self._config = config
        self._memory = watch
        self._version = "1.0"
        self._user: User | None = None
        self._perms: Permissions | None = None
        #: subscriptions by the client's id, and by the broker's sid (read on delivery)
        self.subs: dict[str, Subscription] = {}
        self.by_sid: dict[int, Subscription] = {}
        self._sends: dict[str, tuple[str, str, str]] = {}
        self._temp: dict[str, str] = {}  # client's temp-queue NAME -> queue name
        self._tx = Transactions(config.max_payload * 16)
        #: the header tuple of the last plain SEND, and where it publishes
        self._plain_head: object = None
        self._plain_target: tuple[str, str, str] = ("", "", "")

    def handlers(self) -> dict[str, Callable[[Frame], None]]:
        """The handler of each client frame but CONNECT and STOMP."""
        return {
            "SEND": self.send,
            "SUBSCRIBE": self.subscribe,
            "UNSUBSCRIBE": self.unsubscribe,
            "ACK": self.ack,
            "NACK": self.ack,
            "BEGIN": self.begin,
            "COMMIT": self.commit,
            "ABORT": self.abort,
            "DISCONNECT": self.disconnect,
        }

    def logged_in(self, user: User | None, version: str) -> None:
        """CONNECTED as ``user`` (``None``: no login) in STOMP ``version``."""
        self._user = user
        self._perms = None if user is None or user.permissions == _ALL else user.permissions
        self._version = version

    def end(self) -> None:
        """The connection is gone: drop what open transactions hold."""
        self._tx.clear()

    def cancelled(self, sid: int) -> Subscription | None:
        """The broker ended subscription ``sid``: forget it; ``None`` if unknown."""
        sub = self.by_sid.pop(sid, None)
        if sub is not None:
            self.subs.pop(sub.id, None)
        return sub

    def is_temp_queue(self, queue: str) -> bool:
        """``queue`` is one of this connection's ``/temp-queue/`` queues."""
        return queue in self._temp.values()

    def _check(self, may: Callable[[str], bool], what: str, name: str) -> None:
        if not may(name):
            user = self._user.name if self._user is not None else "?"
            raise errors.Forbidden(f"{user} may not {what} {name}")

    def _ensure_queue(self, name: str) -> None:
        """``/queue/NAME``: a durable queue, made on first use (any existing one does)."""
        try:
            self._broker.get(name)
            return
        except errors.NotFound:
            pass
        if self._perms is not None:
            self._check(self._perms.may_configure, "configure", name)
        self._broker.create(self._session, name, "queue", QueueOptions(durable=True))

    def _temp_queue(self, name: str) -> str:
        """The connection's queue for ``/temp-queue/NAME``, made (and subscribed to, with
        the subscription id ``/temp-queue/NAME``) on first use."""
        queue = self._temp.get(name)
        if queue is not None:
            return queue
        if len(self._temp) >= self._config.max_subscriptions:
            raise errors.Limit(f"at most {self._config.max_subscriptions} temp queues")
        queue = "amq.gen-" + secrets.token_urlsafe(16)
        self._broker.create(self._session, queue, "queue", QueueOptions(exclusive=True))
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
        if len(self._sends) >= CACHE_MAX:
            self._sends.clear()
        self._sends[text] = found
        return found

    def send(self, f: Frame) -> None:
        if self._memory.alarm:
            # Over the memory mark: hold this SEND and what follows, stop reading,
            # until the watch releases us (as the native protocol holds a PUBLISH).
            self._conn.hold_for_memory(f)
            return
        if f.headers is self._plain_head:
            # The head of the last plain SEND again (the decoder gives a repeated head
            # the same header tuple): no header to look at, no receipt to write.
            self._publish(self._plain_target, f.body)
            return
        headers = f.index
        if headers is None:
            headers = f.header_map()
        tx = headers.get("transaction")
        if tx is not None:
            self._tx.hold(tx, f)
        else:
            self._do_send(f, headers)
            text = headers.get("destination")
            if (
                f.index is not None
                and text is not None
                and not text.startswith("/temp-queue/")
                and all(h in _PLAIN for h in headers)
            ):
                self._plain_head, self._plain_target = f.headers, self._target(text)
        self._conn.receipt(f)

    def _publish(self, target: tuple[str, str, str], body: bytes) -> None:
        """A plain SEND's publish to ``target`` (``_target``'s answer for its head)."""
        kind, name, key = target
        if self._perms is not None:
            self._check(self._perms.may_write, "write to", name)
        try:
            self._broker.publish(name, key, body, None)
        except errors.NotFound:
            if kind != QUEUE:
                raise
            self._ensure_queue(name)  # (as in _do_send)
            self._broker.publish(name, key, body, None)

    def send_run(self, items: Sequence[object], start: int) -> int:
        """The SEND ``items[start]`` and the SENDs right after it with the same head (the
        decoder gives them one header tuple), as one run: one destination look-up, one
        permission check, one ``publish_many``; returns how many frames it took.

        What a run does is what its SENDs one by one do: a head with a ``transaction``,
        ``receipt``, ``expiration`` or ``reply-to`` header, or a memory alarm, or a
        missing destination, takes the one-by-one way; publishing stops at the first
        refusal, which is raised (the connection then closes, as after that SEND)."""
        first = items[start]
        assert type(first) is Frame
        headers = first.headers
        end = start + 1
        n = len(items)
        while end < n:
            f = items[end]
            if type(f) is not Frame or f.headers is not headers or f.command != "SEND":
                break
            end += 1
        index = first.index if first.index is not None else first.header_map()
        text = index.get("destination")
        if (
            end - start < 2
            or text is None
            or self._memory.alarm
            or any(h in index for h in _ONE_BY_ONE)
            or any(h not in NOT_CARRIED for h in index)  # headers of its own
        ):
            self.send(first)
            return 1
        kind, name, key = self._target(text)
        if self._perms is not None:
            self._check(self._perms.may_write, "write to", name)
        bodies = [f.body for f in cast("list[Frame]", items[start:end])]
        publish_many = self._broker.publish_many
        try:
            refused = publish_many(name, key, bodies, None, stop_at_refusal=True)[1]
        except errors.NotFound:
            if kind != QUEUE:
                raise
            self._ensure_queue(name)  # (as in _do_send)
            refused = publish_many(name, key, bodies, None, stop_at_refusal=True)[1]
        if refused:
            raise next(iter(refused.values()))
        return end - start

    def _do_send(
        self, f: Frame, headers: Mapping[str, str] | None = None, committing: bool = False
    ) -> None:
        if headers is None:
            headers = f.index if f.index is not None else f.header_map()
        text = headers.get("destination")
        if text is None:
            raise StompError("SEND needs a destination header")
        kind, name, key = self._target(text)
        if self._perms is not None:
            self._check(self._perms.may_write, "write to", name)
        expiration = headers.get("expiration")
        ttl = None
        if expiration is not None:
            if not (expiration.isascii() and expiration.isdigit() and len(expiration) < 13):
                raise StompError(f"bad expiration {expiration[:40]!r}: whole milliseconds")
            ttl = int(expiration)
        for header in headers:
            if header not in NOT_CARRIED:  # the message has headers of its own (rare)
                props = self._props(f)
                if props is not None:
                    self._send_props(kind, name, key, f.body, ttl, props)
                    if not committing and "receipt" not in headers:
                        # (no reply waits for what the store says of it: a cluster
                        # node's verdicts on its copies must reach no other reply)
                        self._broker.unawaited()
                    return
                break
        try:
            self._broker.publish(name, key, f.body, ttl)
        except errors.NotFound:
            if kind != QUEUE:
                raise
            # /queue/NAME: made on first use, or again if deleted since (publishing
            # raises NOT_FOUND before it changes anything)
            self._ensure_queue(name)
            self._broker.publish(name, key, f.body, ttl)

    def _props(self, f: Frame) -> Props | None:
        """What a SEND with headers of its own gives its message: a ``reply-to`` naming a
        temp queue makes that queue first (see :mod:`~mbroker.server.stomp_props`)."""
        reply_to = f.header("reply-to")
        temp = None
        if reply_to is not None and reply_to.startswith("/temp-queue/"):
            temp = self._temp_queue(parse_destination(reply_to).name)
        return send_props(f, temp)

    def _send_props(
        self, kind: str, name: str, key: str, body: bytes, ttl: int | None, props: Props
    ) -> None:
        """A SEND whose message has properties (see :mod:`~mbroker.server.stomp_props`)."""
        if kind == QUEUE:
            self._ensure_queue(name)
            try:
                self._broker.publish_props(name, key, body, ttl, props)
                return
            except errors.NotFound:  # deleted since: made again
                self._ensure_queue(name)
        self._broker.publish_props(name, key, body, ttl, props)

    def subscribe(self, f: Frame) -> None:
        text = f.header("destination")
        if text is None:
            raise StompError("SUBSCRIBE needs a destination header")
        sub_id = f.header("id")
        if sub_id is None:
            if self._version != "1.0":
                raise StompError("SUBSCRIBE needs an id header")
            sub_id = text
        if sub_id in self.subs:
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
        self._conn.receipt(f, lambda: self._broker.activate(consumer))

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
            self._broker.create(self._session, queue, "queue", QueueOptions(durable=True))
            self._broker.bind(queue, TOPIC_EXCHANGE, d.key or "#")
            return queue, None
        if perms is not None:
            self._check(perms.may_read, "read from", d.name)
        if d.kind in (QUEUE, AMQ_QUEUE):
            self._broker.queue(d.name)  # (an exchange of that name is refused here)
            return d.name, None
        self._broker.exchange(d.name)
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
        limit = prefetch if manual else None
        c = self._broker.subscribe(self._session, name, pattern, limit, manual)
        sub = Subscription(sub_id, c.sid, mode, self._version, name)
        self.subs[sub_id] = sub
        self.by_sid[c.sid] = sub
        if activate:
            self._broker.activate(c)
        return sub, c

    def unsubscribe(self, f: Frame) -> None:
        sub_id = f.header("id")
        if sub_id is None and self._version == "1.0":
            sub_id = f.header("destination")
        if sub_id is None:
            raise StompError("UNSUBSCRIBE needs an id header")
        sub = self.subs.pop(sub_id, None)
        if sub is None:
            raise StompError(f"no subscription {sub_id!r}")
        del self.by_sid[sub.sid]
        self._broker.unsubscribe(self._session, sub.sid)
        if sub.durable and (
            f.header("durable") in _DURABLE_VALUES or f.header("persistent") in _DURABLE_VALUES
        ):
            self._broker.delete(sub.queue)  # (as RabbitMQ: only when told durable again)
        self._conn.receipt(f)

    def ack(self, f: Frame) -> None:
        tx = f.header("transaction")
        if tx is not None:
            self._tx.hold(tx, f)
        else:
            self._do_ack(f)
        self._conn.receipt(f)

    def _do_ack(self, f: Frame) -> None:
        sub, tags, cumulative = self._acked(f)
        requeue = f.header("requeue", "true") != "false"
        try:
            if f.command == "ACK":
                self._broker.ack(self._session, tags)
            else:
                self._broker.nack(self._session, tags, requeue)
        except errors.NotFound:
            if not cumulative:
                mid = f.header("id") or f.header("message-id")
                raise errors.NotFound(f"message {mid!r} is not outstanding") from None
            # (some of a cumulative range was already void: the rest is done)

    def _acked(self, f: Frame) -> tuple[Subscription, TagRanges, bool]:
        """The subscription, tags and kind (cumulative or not) an ACK or NACK names."""
        mid = f.header("id") if self._version == "1.2" else None
        if mid is None:
            mid = f.header("message-id")
        if mid is None:
            raise StompError(f"{f.command} needs an id header")
        sid, tag = parse_message_id(f.command, mid)
        sub = self.by_sid.get(sid)
        if sub is None:
            raise StompError(f"{f.command}: no subscription for message {mid!r}")
        if sub.mode == "auto":
            raise StompError(f"{f.command}: subscription {sub.id!r} is ack:auto")
        tags, cumulative = sub.acked(tag)
        return sub, tags, cumulative

    def begin(self, f: Frame) -> None:
        self._tx.begin(_transaction(f))
        self._conn.receipt(f)

    def commit(self, f: Frame) -> None:
        for held in self._tx.end(_transaction(f)):
            if held.command == "SEND":
                self._do_send(held, committing=True)
            else:
                self._do_ack(held)
        self._conn.receipt(f)

    def abort(self, f: Frame) -> None:
        self._tx.end(_transaction(f))
        self._conn.receipt(f)

    def disconnect(self, f: Frame) -> None:
        self._tx.clear()
        self._conn.receipt(f, self._conn.close)


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
