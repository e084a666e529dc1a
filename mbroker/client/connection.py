"""The Deferred client: :func:`connect` gives a :class:`Client`; every command is a method.

::

    from twisted.internet import task
    from mbroker.client.connection import connect

    async def main(reactor):
        client = await connect(reactor, "tcp:localhost:5555")
        await client.create("jobs", "queue")
        await client.publish("jobs", b"hello")
        [message] = await client.pull("jobs")
        await client.close()

    task.react(main)

Every method returns a :class:`~twisted.internet.defer.Deferred` (await it from
``async def`` code, or add callbacks).  The broker's refusals arrive as the
:class:`mbroker.errors.BrokerError` subclass of their wire code (``NotFound``,
``Exists``, …); trouble with the connection arrives as a :class:`ClientError`
(:class:`NotConnected`, :class:`NotABroker`, :class:`ConnectionLost`, :class:`Unconfirmed`,
:class:`BadReply`).

Commands are pipelined: call ``publish`` many times without waiting, the replies are
matched to the commands in order.  Times (``ttl``, ``wait``, ``delay``,
``ack_timeout``) are in milliseconds, as on the wire.

With ``connect(..., reconnect=True)`` a :class:`~twisted.application.internet.ClientService`
reconnects with back-off whenever the connection is lost, runs ``on_connect`` again,
and restores the subscriptions.  Commands that were waiting for a reply when the
connection was lost fail with :class:`Unconfirmed`; commands issued while there is no
connection fail with :class:`NotConnected` (await :meth:`Client.when_connected` first).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal, Union, cast, get_args

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.defer import (
    TimeoutError as DeferredTimeout,
)
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.client.link import Link
from mbroker.client.messages import (
    BadReply,
    ClientError,
    ConnectionLost,
    Message,
    NotABroker,
    NotConnected,
    Tags,
    Unconfirmed,
    first_error,
    tag_ranges,
)
from mbroker.client.protocol import ClientProtocol, PullReply
from mbroker.client.subscription import (
    AckMode,
    Callback,
    NackDelay,
    Subscription,
    Subscriptions,
    backoff,
)
from mbroker.errors import BadArgs, BrokerError, TooBig
from mbroker.wire.encode import publish_head
from mbroker.wire.frames import (
    EXCHANGE_KINDS,
    KINDS,
    Ack,
    Auth,
    Bind,
    Create,
    Delete,
    ExchangeInfo,
    Hello,
    Kind,
    List,
    Nack,
    Ping,
    Props,
    Pull,
    Purge,
    QueueInfo,
    QueueOptions,
    Quit,
    Stats,
    TagRanges,
    Touch,
    Unbind,
)
from mbroker.wire.props import make_props
from mbroker.wire.replydata import ok_count, ok_created, ok_data, ok_none, ok_published, ok_stats

__all__ = [
    "DEFAULT_ENDPOINT",
    "BadReply",
    "Client",
    "ClientError",
    "ConnectionLost",
    "Message",
    "NotABroker",
    "NotConnected",
    "Subscription",
    "Unconfirmed",
    "connect",
    "tcp_endpoint",
]

log = Logger()

#: Where :func:`connect` goes by default.
DEFAULT_ENDPOINT = "tcp:localhost:5555"
#: Most tags or ranges in one ACK/NACK/TOUCH line (the broker's limit).
_MAX_TAG_ITEMS = 1000
#: Most PUBLISH heads kept (one per name, key and ttl in use).
_HEADS_KEPT = 4096

#: The kinds CREATE takes, by name.
_KINDS: dict[str, Kind] = {kind: kind for kind in get_args(Kind)}

Endpoint = Union[str, IStreamClientEndpoint]  # noqa: UP007


def tcp_endpoint(host: str = "localhost", port: int = 5555) -> str:
    """The client endpoint string for ``host:port`` (colons of IPv6 escaped)."""
    escaped = host.replace("\\", "\\\\").replace(":", "\\:")
    return f"tcp:{escaped}:{port}"


# ------------------------------------------------------------------ connect


def connect(
    reactor: IReactorTime | None = None,
    endpoint: Endpoint = DEFAULT_ENDPOINT,
    *,
    reconnect: bool = False,
    retry_policy: Callable[[int], float] | None = None,
    timeout: float | None = 30.0,
    greeting_timeout: float | None = 1.0,
    user: str | None = None,
    password: str | None = None,
    on_connect: Callable[[Client], Any] | None = None,
    heartbeat: float | None = None,
) -> Deferred[Client]:
    """Connect to a broker; the Deferred fires with a :class:`Client` after the greeting.

    ``endpoint`` is a Twisted client endpoint string (``tcp:host:port``,
    ``tls:host:port:trustRoots=DIR``, ``unix:/path``) or an endpoint object.
    ``reactor`` defaults to the global reactor.  With ``user`` and ``password`` the
    client authenticates first.  ``on_connect(client)`` (which may return a Deferred
    or be ``async``) runs after every connection, before subscriptions are restored:
    the place to declare exchanges and queues.

    With ``heartbeat`` (seconds, 1 to 3600) the client sends ``HEARTBEAT`` on every
    connection (after AUTH, before ``on_connect``): the broker then pushes a ``PING``
    whenever it has sent nothing for that long, which the client answers with ``PONG``,
    and closes the connection (``-ERR LIMIT heartbeat``) once it has heard nothing from
    it for three times that long, so a peer that vanished without closing is found on
    both sides; with ``reconnect`` a new connection replaces it.  ``ValueError`` for an
    interval out of range.

    With ``reconnect``, the client reconnects with ``retry_policy`` (default: back-off
    from 0.1 s to 10 s) whenever the connection is lost, until :meth:`Client.close`.
    Fails with :class:`NotConnected` when no connection is ready within ``timeout``
    seconds, with a :class:`~mbroker.errors.BrokerError` when the broker refuses, and
    with :class:`NotABroker` (a :class:`NotConnected`) when the server is not an
    mbroker: its first line was not the greeting (an HTTP server, say, answers the
    client's probe with ``HTTP/1.1 400 …``), or it said nothing at all for
    ``greeting_timeout`` seconds once connected (a broker greets at once; raise it for
    a very slow link, ``None`` waits for ``timeout``).
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = cast(IReactorTime, global_reactor)
    client = Client(
        reactor,
        user=user,
        password=password,
        on_connect=on_connect,
        greeting_timeout=greeting_timeout,
        heartbeat=heartbeat,
    )
    link = client.link
    ep = clientFromString(reactor, endpoint) if isinstance(endpoint, str) else endpoint
    where = endpoint if isinstance(endpoint, str) else repr(endpoint)
    d = link.keep_connected(ep, retry_policy) if reconnect else link.connect_once(ep)
    if timeout is not None:
        d.addTimeout(timeout, reactor)

    def failed(failure: Failure) -> Failure:
        link.abandon()
        if failure.check(DeferredTimeout, CancelledError):
            return Failure(NotConnected(f"no connection to {where} within {timeout} s"))
        if failure.check(ConnectError, DNSLookupError, OverflowError):  # Overflow: port 99999
            return Failure(NotConnected(f"cannot connect to {where}: {failure.getErrorMessage()}"))
        return failure

    return d.addCallbacks(lambda _: client, failed)


# ------------------------------------------------------------------- client


class Client:
    """A connection (or, with ``reconnect``, a succession of them) to one broker.

    Made by :func:`connect`.  ``hello`` is the broker's greeting; ``link`` makes and
    prepares the connections (:class:`~mbroker.client.link.Link`), and tells the client
    through :meth:`use_connection` and :meth:`connection_lost`.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        user: str | None = None,
        password: str | None = None,
        on_connect: Callable[[Client], Any] | None = None,
        greeting_timeout: float | None = None,
        heartbeat: float | None = None,
    ) -> None:
        self._reactor = reactor
        self._proto: ClientProtocol | None = None
        #: why the latest connection ended, for the errors of later commands
        self._lost_why = ""
        #: active subscriptions, in the order they were made (restored in that order)
        self._subscriptions = Subscriptions()
        #: The connections: made once, or again after each loss with ``reconnect``.
        self.link = Link(
            reactor,
            self,
            self._subscriptions,
            user=user,
            password=password,
            on_connect=None if on_connect is None else partial(on_connect, self),
            greeting_timeout=greeting_timeout,
            heartbeat=heartbeat,
        )
        #: (name, key, ttl) -> the encoded start of a PUBLISH line, see _publish_head
        self._heads: dict[tuple[str, str, int | None], bytes] = {}
        #: The broker's greeting on the latest connection.
        self.hello: Hello | None = None

    # ------------------------------------------------------------- connection

    def use_connection(self, proto: ClientProtocol | None) -> None:
        """Send the commands on ``proto`` (a greeted connection); None: on none."""
        self._proto = proto
        if proto is not None:
            self.hello = proto.hello

    def connection_lost(self, proto: ClientProtocol, reason: Failure) -> None:
        """``proto`` ended: later commands say why, until there is another."""
        if self._proto is proto:
            self._proto = None
            self._lost_why = reason.getErrorMessage()

    @property
    def reconnecting(self) -> bool:
        """True when a lost connection will be replaced (``reconnect`` and not closed)."""
        return self.link.reconnecting

    @property
    def connected(self) -> bool:
        """True while there is a connection ready for commands."""
        proto = self._proto
        return proto is not None and proto.is_open

    @property
    def in_flight(self) -> int:
        """Commands sent on the current connection and not answered yet."""
        proto = self._proto
        return proto.in_flight if proto is not None else 0

    def when_connected(self) -> Deferred[None]:
        """Fires once a connection is ready (at once when there is one).

        Without ``reconnect``, fails with :class:`NotConnected` when the connection is gone.
        """
        if self.connected:
            return succeed(None)
        return self.link.when_connected()

    def _not_connected(self) -> NotConnected:
        if self.link.closing:
            return NotConnected("closed")
        why = f" (the connection was lost: {self._lost_why})" if self._lost_why else ""
        return NotConnected(f"not connected to the broker{why}")

    def _conn(self) -> ClientProtocol:
        proto = self._proto
        if proto is None or proto.lost_reason is not None:
            raise self._not_connected()
        return proto

    def _send(self, command: Any, finish: Any, collect: bool = False) -> Deferred[Any]:
        proto = self._proto
        if proto is None:
            return fail(self._not_connected())
        return proto.command(command, finish, collect)

    # ---------------------------------------------------------------- commands

    def create(
        self,
        name: str,
        kind: str = "topic",
        *,
        durable: bool = False,
        max_length: int | None = None,
        max_bytes: int | None = None,
        overflow: Literal["drop-head", "reject"] = "drop-head",
        ttl: int | None = None,
        dead_letter: str | None = None,
        max_deliver: int | None = None,
        exclusive: bool = False,
        auto_delete: bool = False,
        expires: int | None = None,
        dedup_window: int | None = None,
    ) -> Deferred[bool]:
        """CREATE an exchange (``direct``, ``fanout``, ``topic``) or a ``queue``.

        Fires with True when it was made, False when it existed alike; fails with
        ``Exists`` when the name exists with another kind or options.  The queue
        options (``max_length``, ``max_bytes``, ``overflow``, ``ttl`` in ms,
        ``dead_letter``, ``max_deliver``, ``exclusive``, ``auto_delete``: deleted when
        its last subscriber goes, ``expires``: deleted once unused for that many ms)
        only apply to a queue.  ``dedup_window`` (ms, 0: off, None: the broker's): how
        long the ids of PUBLISH commands naming it are remembered (exchanges too).
        """
        known = _KINDS.get(kind)
        if known is None:
            return fail(BadArgs(f"kind must be one of {', '.join(sorted(KINDS))}, not {kind!r}"))
        if overflow not in ("drop-head", "reject"):
            return fail(BadArgs(f"overflow must be drop-head or reject, not {overflow!r}"))
        options = QueueOptions(
            durable,
            max_length,
            max_bytes,
            overflow,
            ttl,
            dead_letter,
            max_deliver,
            exclusive,
            auto_delete,
            expires,
            dedup_window,
        )
        plain = QueueOptions(durable=durable, dedup_window=dedup_window)
        if kind in EXCHANGE_KINDS and options != plain:
            return fail(BadArgs("an exchange takes no queue options"))
        return self._send(Create(name, known, options), ok_created)

    def delete(
        self, name: str, *, if_empty: bool = False, if_unused: bool = False
    ) -> Deferred[int]:
        """DELETE an exchange or a queue; fires with the number of messages dropped."""
        return self._send(Delete(name, if_empty, if_unused), ok_count)

    def bind(self, queue: str, exchange: str, key: str = "") -> Deferred[None]:
        """BIND a queue to an exchange with a routing key or (topic) a pattern."""
        return self._send(Bind(queue, exchange, key), ok_none)

    def unbind(self, queue: str, exchange: str, key: str = "") -> Deferred[None]:
        """UNBIND what :meth:`bind` bound; ``NotFound`` when it was not bound."""
        return self._send(Unbind(queue, exchange, key), ok_none)

    def publish(
        self,
        name: str,
        payload: bytes | str,
        key: str = "",
        *,
        ttl: int | None = None,
        headers: Mapping[str, bytes | str] | None = None,
        id: str | None = None,
        delay: int | None = None,
        priority: int | None = None,
    ) -> Deferred[int]:
        """PUBLISH to an exchange or a queue; fires with the number of queues reached.

        A ``str`` payload is sent as UTF-8.  ``ttl`` is the message's time to live in
        ms.  Does not wait for earlier publishes: many can be in flight.  Properties
        (contract section 7): ``headers`` (``{name: bytes or str}``, str sent as UTF-8),
        ``id``, ``delay`` (ms) and ``priority`` (0-9), checked here as the broker would
        (``BadArgs``, ``Limit``); a publish with any of them fires with a
        :class:`~mbroker.client.messages.Published`, an ``int`` whose ``duplicate``
        says the id was seen before.
        """
        proto = self._proto
        if proto is None:
            return fail(self._not_connected())
        if type(payload) is not bytes:
            payload = _as_bytes(payload)
        if len(payload) > proto.max_payload:
            return fail(TooBig(f"payload of {len(payload)} bytes over {proto.max_payload}"))
        if headers is not None or id is not None or delay is not None or priority is not None:
            try:  # a head with properties is built and checked each time, not kept
                props = make_props(headers, id, priority, delay)
                props_head = self._publish_head(name, key, ttl, props)
            except BrokerError as e:
                return fail(e)
            return proto.send_publish(props_head, payload, ok_published)
        head = self._heads.get((name, key, ttl))
        if head is None:
            try:
                head = self._publish_head(name, key, ttl, None)
            except BrokerError as e:
                return fail(e)
        return proto.send_publish(head, payload)

    def _publish_head(self, name: str, key: str, ttl: int | None, props: Props | None) -> bytes:
        """``PUBLISH <name> [<key>] [ttl=…] `` (:func:`~mbroker.wire.encode.publish_head`),
        checked once and kept (without ``props``): a publish then costs a dict look-up."""
        if type(key) is not str:
            raise TypeError(f"the routing key must be a str, not {type(key).__name__}")
        head = publish_head(name, key, ttl, props)
        if props is None:
            if len(self._heads) >= _HEADS_KEPT:
                self._heads.clear()
            self._heads[(name, key, ttl)] = head
        return head

    def pull(
        self,
        queue: str,
        max: int = 1,
        *,
        wait: int | None = None,
        ack: AckMode = "auto",
        ack_timeout: int | None = None,
    ) -> Deferred[builtins.list[Message]]:
        """PULL up to ``max`` messages from a queue (``[]`` when it is empty).

        ``wait`` (ms) holds the reply until a message comes or the time is up; later
        commands on the connection wait behind it.  With ``ack="manual"`` settle each
        message with :meth:`Message.ack` or :meth:`Message.nack`.
        """
        manual = _manual(ack)
        try:
            proto = self._conn()
        except NotConnected as e:
            return fail(e)
        return proto.command(
            Pull(queue, max, wait, manual, ack_timeout), PullReply(proto, manual), collect=True
        )

    def ack(self, tags: Tags) -> Deferred[int]:
        """ACK delivery tags (ints, messages, or an iterable of either) on this connection.

        Fires with the number acknowledged; ``NotFound`` names tags not outstanding
        (the others are still acknowledged).
        """
        return self._settle(tags, lambda r: Ack(r))

    def nack(self, tags: Tags, *, requeue: bool = True, delay: int | None = None) -> Deferred[int]:
        """NACK delivery tags: back to their queue (``requeue``, after ``delay`` ms), or
        dead-lettered/dropped; fires with the number handled."""
        return self._settle(tags, lambda r: Nack(r, requeue, delay))

    def touch(self, tags: Tags) -> Deferred[int]:
        """TOUCH delivery tags: restart their ack-timeout; fires with the number handled."""
        return self._settle(tags, lambda r: Touch(r))

    def _settle(self, tags: Tags, make: Callable[[TagRanges], Any]) -> Deferred[int]:
        ranges = tag_ranges(tags)
        if not ranges:
            return succeed(0)
        chunks = [ranges[i : i + _MAX_TAG_ITEMS] for i in range(0, len(ranges), _MAX_TAG_ITEMS)]
        ds = [self._send(make(chunk), ok_count) for chunk in chunks]
        if len(ds) == 1:
            return ds[0]
        return gatherResults(ds, consumeErrors=True).addCallbacks(sum, first_error)

    def purge(self, queue: str) -> Deferred[int]:
        """PURGE a queue's ready messages; fires with the number dropped."""
        return self._send(Purge(queue), ok_count)

    def stats(self, name: str | None = None) -> Deferred[dict[str, int | str]]:
        """STATS of the broker, or of one exchange or queue: ``{key: value}``, numbers as ints."""
        return self._send(Stats(name), ok_stats, collect=True)

    def ping(self) -> Deferred[float]:
        """PING; fires with the round-trip time in seconds."""
        start = self._reactor.seconds()
        return self._send(Ping(), ok_none).addCallback(lambda _: self._reactor.seconds() - start)

    def auth(self, user: str, password: str) -> Deferred[None]:
        """AUTH on the current connection (``connect(user=…)`` does it on every one)."""
        return self._send(Auth(user, password), ok_none)

    def subscribe(
        self,
        name: str,
        callback: Callback,
        pattern: str | None = None,
        *,
        ack: AckMode = "manual",
        prefetch: int | None = None,
        ack_timeout: int | None = None,
        nack_delay: NackDelay = backoff,
    ) -> Deferred[Subscription]:
        """SUBSCRIBE to a queue or an exchange; ``callback(message)`` runs for each message.

        With ``ack="manual"`` (the default) a message is acknowledged when the callback
        returns or the Deferred (or coroutine) it returns succeeds, and given back to its
        queue when it raises or fails, unless the callback settled it itself: nothing is
        lost.  ``nack_delay`` is how long (ms) such a message waits before it is
        delivered again: a number, ``None`` (at once) or a function of the message; the
        default, :func:`~mbroker.client.subscription.backoff`, retries at once, then after
        100 ms, doubling up to 30 s.  (A queue's ``max_deliver`` dead-letters a
        message that never succeeds.)  ``prefetch`` bounds how many
        messages are delivered and not yet acknowledged (default: the broker's, 1000
        with ``ack="manual"``); ``prefetch=1`` handles one message at a time.  With
        ``ack="auto"`` the broker forgets each message once it is sent.

        ``pattern`` picks the routing keys of an exchange subscription (topic: a
        pattern, default ``#``; direct: the key).  Fires with a :class:`Subscription`
        once the broker confirmed it.
        """
        manual = _manual(ack)
        sub = Subscription(
            self._subscriptions, name, callback, pattern, manual, prefetch, ack_timeout, nack_delay
        )
        try:
            proto = self._conn()
        except NotConnected as e:
            return fail(e)

        def attached(_: object) -> Subscription:
            self._subscriptions.add(sub)
            return sub

        return sub.attach(proto).addCallback(attached)

    @property
    def subscriptions(self) -> builtins.list[Subscription]:
        """The active subscriptions."""
        return builtins.list(self._subscriptions)

    def close(self) -> Deferred[None]:
        """Wait for the replies to every command sent, say QUIT, and disconnect.

        Ends the subscriptions (their :meth:`~Subscription.when_ended` fires with
        ``"closed"``) and stops reconnecting.
        """
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        if self.link.closing and self._proto is None:
            return
        self.link.start_closing()
        self._subscriptions.halt_all()
        proto = self._proto
        if proto is not None and proto.lost_reason is None:
            try:
                await proto.command(Quit(), ok_none)
            except (ClientError, BrokerError):
                pass
        await self.link.stop()
        self._proto = None
        self._subscriptions.end_all("closed")

    def list(self) -> Deferred[builtins.list[ExchangeInfo | QueueInfo]]:
        """LIST every exchange and queue (:class:`~mbroker.wire.frames.ExchangeInfo`,
        :class:`~mbroker.wire.frames.QueueInfo`)."""
        return self._send(List(), ok_data, collect=True)


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"the payload must be bytes or str, not {type(payload).__name__}")


def _manual(ack: str) -> bool:
    if ack not in ("auto", "manual"):
        raise ValueError(f"ack must be 'auto' or 'manual', not {ack!r}")
    return ack == "manual"
