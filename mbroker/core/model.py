"""The broker's entities: messages, queues, exchanges, consumers, sessions.

Plain Python, no Twisted.  These are the nouns; the broker's collaborators hold the
verbs (:mod:`~mbroker.core.namespace`, :mod:`~mbroker.core.publishing`,
:mod:`~mbroker.core.dispatch`, :mod:`~mbroker.core.consuming`, composed by
:mod:`~mbroker.core.broker`).

The hot-path entities (:class:`QueuedMessage`, :class:`Delivery`) are hand-slotted classes
rather than attrs classes: they are created once per message and per delivery, and a
plain ``__slots__`` class with a positional ``__init__`` is the cheapest object
CPython makes.  Everything else uses ``attrs.define``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, Union

import attrs

from mbroker.core.routing import Matcher
from mbroker.wire.frames import Props, QueueOptions


class DelayedCall(Protocol):
    """What :meth:`Clock.callLater` returns (Twisted's ``IDelayedCall``)."""

    def cancel(self) -> None: ...

    def reset(self, secondsFromNow: float) -> None: ...

    def active(self) -> bool: ...


class Clock(Protocol):
    """The injected clock: Twisted's ``IReactorTime`` (the reactor, or ``task.Clock``)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Call ``callable(*args, **kw)`` in ``delay`` seconds; returns a
        :class:`DelayedCall` (typed loosely so that Twisted's ``IDelayedCall`` fits)."""


class DeliveryTarget(Protocol):
    """Where a session's deliveries go: the connection (see :mod:`mbroker.server.protocol`).

    The broker calls these synchronously; the target writes frames.  It never calls
    back into the broker from inside them.
    """

    def push(self, sid: int, tag: int, message: QueuedMessage) -> None:
        """Send ``MSG sid tag …`` for a subscription."""

    def push_many(self, sid: int, tag: int, messages: list[QueuedMessage]) -> None:
        """Send ``messages`` for a subscription, tagged ``tag``, ``tag + 1``, …"""

    def push_run(self, sid: int, tag: int, route: bytes, payloads: list[bytes]) -> None:
        """Send new messages with one route (``b"<source> <key>"``), delivered for the
        first time, tagged ``tag``, ``tag + 1``, … (a run of publishes passed straight
        through)."""

    def cancelled(self, sid: int, reason: str) -> None:
        """Send ``CANCEL sid reason``: the broker ended the subscription."""

    def slow(self, sid: int) -> None:
        """The subscription's private queue overflowed and the broker is configured to
        disconnect slow consumers: close the connection with ``-ERR LIMIT``."""


class QueuedMessage:
    """One copy of a message in one queue (the client's received message is
    :class:`mbroker.client.Message`, another thing).

    A message routed to three queues is three :class:`QueuedMessage` objects sharing one
    payload ``bytes`` (never copied).  ``route`` is the pre-encoded
    ``b"<source> <key-or->"`` part of the MSG header, built once per publish.
    """

    __slots__ = (
        "source",
        "key",
        "route",
        "payload",
        "expires_at",
        "deliveries",
        "reason",
        "msg_id",
        "dl_path",
        "props",
    )

    def __init__(
        self,
        source: str,
        key: str,
        route: bytes,
        payload: bytes,
        expires_at: float | None = None,
        msg_id: int = 0,
        props: Props | None = None,
    ) -> None:
        self.source = source
        self.key = key
        self.route = route
        self.payload = payload
        #: clock time after which the message is dead (None: never)
        self.expires_at = expires_at
        #: how many times this copy was delivered
        self.deliveries = 0
        #: dead-letter reason (``expired``, ``maxlen``, ``rejected``, ``delivery-limit``)
        self.reason: str | None = None
        #: the store's id for a message in a durable queue; 0 when transient
        self.msg_id = msg_id
        #: the queues this copy left by expiry or overflow dead-lettering since its
        #: last rejection: reaching one of them again is a cycle, and is dropped
        self.dl_path: tuple[str, ...] = ()
        #: headers, id and priority (contract section 7); None for a message with none
        self.props = props

    def __repr__(self) -> str:
        size = len(self.payload)
        return f"<QueuedMessage {self.source} {self.key!r} {size}B d={self.deliveries}>"


class Delivery:
    """One outstanding delivery attempt (ack=manual), named by its tag."""

    __slots__ = ("tag", "message", "queue", "consumer", "timeout", "timer")

    def __init__(
        self,
        tag: int,
        message: QueuedMessage,
        queue: Queue,
        consumer: Consumer | None,
        timeout: float | None = None,
    ) -> None:
        self.tag = tag
        self.message = message
        self.queue = queue
        #: None for a PULL delivery
        self.consumer = consumer
        #: the ack-timeout in seconds, and its timer
        self.timeout = timeout
        self.timer: DelayedCall | None = None


@attrs.define(eq=False)
class Exchange:
    name: str
    kind: str
    matcher: Matcher[Queue]
    durable: bool = False
    published: int = 0
    routed: int = 0
    unroutable: int = 0
    deleted: bool = False
    #: its CREATE's ``dedup-window`` (ms); None: the server's default
    dedup_window: int | None = None


@attrs.define(eq=False)
class Consumer:
    """A subscription: a session consuming from a queue."""

    session: Session
    sid: int
    queue: Queue
    manual: bool
    #: 0: unlimited
    prefetch: int
    #: seconds, or None
    ack_timeout: float | None
    #: the subscription made the queue (SUBSCRIBE on an exchange): it dies with it
    private: bool = False
    #: unacknowledged deliveries now out
    in_flight: int = 0
    #: deliveries start once the SUBSCRIBE reply is written
    active: bool = False
    delivered: int = 0


@attrs.define(eq=False)
class PullWaiter:
    """A PULL with ``wait`` that found its queue empty."""

    session: Session
    queue: Queue
    max: int
    manual: bool
    ack_timeout: float | None
    on_done: Callable[[Pulled], None]
    timer: DelayedCall | None = None

    def finish(self, out: Pulled) -> None:
        """Answer the PULL with ``out`` (empty: nothing came) and stop waiting.  The
        caller has taken the waiter out of its queue's ``waiters``."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if self in self.session.waiters:
            self.session.waiters.remove(self)
        self.on_done(out)


@attrs.define(eq=False)
class Queue:
    name: str
    options: QueueOptions
    ready: deque[QueuedMessage] = attrs.Factory(deque)
    ready_bytes: int = 0
    unacked: int = 0
    consumers: list[Consumer] = attrs.Factory(list)
    rr: int = 0
    waiters: deque[PullWaiter] = attrs.Factory(deque)
    #: messages NACKed with a delay, waiting to come back: timer -> message
    delayed: dict[DelayedCall, QueuedMessage] = attrs.Factory(dict)
    #: exchanges this queue is bound to (their matchers hold the bindings)
    bound_to: dict[str, Exchange] = attrs.Factory(dict)
    owner: Session | None = None
    private: bool = False
    expiry_timer: DelayedCall | None = None
    expiry_at: float = 0.0
    #: ready messages' expiry times never decrease from head to tail, so the head
    #: is the next to expire (False after a mix or a requeue: the sweep scans)
    expiry_ordered: bool = True
    last_expiry: float = 0.0
    #: for a queue with ``expires``: its one idle timer, and when it was last used
    #: (set on use; the timer checks it when it fires)
    idle_timer: DelayedCall | None = None
    last_used: float = 0.0
    deleted: bool = False
    # statistics
    published: int = 0
    delivered: int = 0
    acked: int = 0
    dropped: int = 0
    expired: int = 0
    dead_lettered: int = 0
    rejected: int = 0
    redelivered: int = 0

    @property
    def durable(self) -> bool:
        return self.options.durable

    @property
    def messages(self) -> int:
        """Messages in the queue and not out for delivery (ready and delayed)."""
        return len(self.ready) + len(self.delayed)


@attrs.define(eq=False)
class Session:
    """One client connection's state in the broker."""

    id: int
    target: DeliveryTarget
    #: False while the transport's buffer is full (producer paused)
    writable: bool = True
    next_tag: int = 1
    next_sid: int = 1
    outstanding: dict[int, Delivery] = attrs.Factory(dict)
    consumers: dict[int, Consumer] = attrs.Factory(dict)
    waiters: list[PullWaiter] = attrs.Factory(list)
    exclusive: list[Queue] = attrs.Factory(list)
    closed: bool = False


#: what the namespace holds under a name (exchanges and queues share it)
Obj = Union[Exchange, Queue]


class Published:
    """What a PUBLISH with an id reached, known only once the store answered (a
    cluster node asks Redis whether the id is new): ``reached`` and ``duplicate`` are
    set before the journal's commit callbacks run, which write the reply."""

    __slots__ = ("reached", "duplicate")

    def __init__(self, reached: int = 0) -> None:
        self.reached = reached
        self.duplicate = False


#: PUBLISH with properties: ``(reached, duplicate)``, or told later
PublishResult = Union[tuple[int, bool], Published]

#: the deliveries of a PULL: ``(tag, message)`` in tag order
Pulled = list[tuple[int, QueuedMessage]]
