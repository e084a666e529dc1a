"""The broker's entities: messages, queues, exchanges, consumers, sessions.

Plain Python, no Twisted.  These are the nouns (with :class:`PriorityReady`, the
ready messages of a queue that has seen priorities); the broker's collaborators hold the
verbs (:mod:`~mbroker.core.namespace`, :mod:`~mbroker.core.publishing`,
:mod:`~mbroker.core.dispatch`, :mod:`~mbroker.core.consuming`, composed by
:mod:`~mbroker.core.broker`).

The hot-path entities (:class:`QueuedMessage`, :class:`Delivery`) are hand-slotted classes
rather than attrs classes: they are created once per message and per delivery, and a
plain ``__slots__`` class with a positional ``__init__`` is the cheapest object
CPython makes.  Everything else uses ``attrs.define``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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


class PriorityReady:
    """The ready messages of a queue that has seen a priority: one FIFO per priority.

    A queue starts with a plain ``collections.deque`` as ``Queue.ready`` and keeps it
    for as long as every message it gets has priority 0 (contract section 7: such a
    queue pays nothing for priorities).  The first message with priority 1-9 turns it
    into a :class:`PriorityReady` (``Dispatcher.admit`` does it), which answers the
    calls the broker makes on a deque -- ``append``, ``appendleft``, ``extend``,
    ``popleft``, ``pop``, ``remove``, ``clear``, ``len``, truth, iteration, ``[0]`` and
    ``[-1]`` -- in priority order: iteration and ``popleft`` go from the highest
    priority down, FIFO within one; ``append`` joins the tail of the message's priority
    and ``appendleft`` its head (a requeued message).  :meth:`pop_lowest` is what
    overflow with ``drop-head`` takes: the oldest message of the lowest priority present.

    The levels are a short list of deques, highest priority first, one per priority
    seen (at most ten): a call costs with the number of priorities in use, not of
    messages.
    """

    __slots__ = ("_prios", "_levels", "_len")

    def __init__(self, messages: Iterable[QueuedMessage] = ()) -> None:
        #: the priorities with a level, highest first, and their deques
        self._prios: list[int] = []
        self._levels: list[deque[QueuedMessage]] = []
        self._len = 0
        self.extend(messages)

    def _level(self, priority: int) -> deque[QueuedMessage]:
        prios = self._prios
        for i, p in enumerate(prios):
            if p == priority:
                return self._levels[i]
            if p < priority:
                break
        else:
            i = len(prios)
        d: deque[QueuedMessage] = deque()
        prios.insert(i, priority)
        self._levels.insert(i, d)
        return d

    def levels(self) -> list[tuple[int, int]]:
        """``(priority, count)`` for each priority holding messages, highest first."""
        return [(p, len(d)) for p, d in zip(self._prios, self._levels) if d]

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[QueuedMessage]:
        return itertools.chain.from_iterable(list(self._levels))

    def __getitem__(self, index: int) -> QueuedMessage:
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("ready index out of range")
        for d in self._levels:
            if index < len(d):
                return d[index]
            index -= len(d)
        raise IndexError("ready index out of range")  # pragma: no cover

    def append(self, m: QueuedMessage) -> None:
        props = m.props
        self._level(props.priority if props is not None else 0).append(m)
        self._len += 1

    def appendleft(self, m: QueuedMessage) -> None:
        props = m.props
        self._level(props.priority if props is not None else 0).appendleft(m)
        self._len += 1

    def extend(self, messages: Iterable[QueuedMessage]) -> None:
        for m in messages:
            self.append(m)

    def popleft(self) -> QueuedMessage:
        for d in self._levels:
            if d:
                self._len -= 1
                return d.popleft()
        raise IndexError("pop from an empty queue")

    def pop(self) -> QueuedMessage:
        """The last message in iteration order (the newest of the lowest priority)."""
        for d in reversed(self._levels):
            if d:
                self._len -= 1
                return d.pop()
        raise IndexError("pop from an empty queue")

    def pop_lowest(self) -> QueuedMessage:
        """The oldest message of the lowest priority present (overflow's drop-head)."""
        for d in reversed(self._levels):
            if d:
                self._len -= 1
                return d.popleft()
        raise IndexError("pop from an empty queue")

    def remove(self, m: QueuedMessage) -> None:
        for d in self._levels:
            try:
                d.remove(m)
            except ValueError:
                continue
            self._len -= 1
            return
        raise ValueError("message not ready in this queue")

    def clear(self) -> None:
        for d in self._levels:
            d.clear()
        self._len = 0


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
    #: a deque while every message it got had priority 0; a :class:`PriorityReady`
    #: from its first priority 1-9 on
    ready: deque[QueuedMessage] | PriorityReady = attrs.Factory(deque)
    ready_bytes: int = 0
    unacked: int = 0
    consumers: list[Consumer] = attrs.Factory(list)
    rr: int = 0
    waiters: deque[PullWaiter] = attrs.Factory(deque)
    #: messages NACKed with a delay, waiting to come back (their timers are entries
    #: of :class:`~mbroker.core.timers.Timers`); counted in ``messages``
    delayed: dict[QueuedMessage, None] = attrs.Factory(dict)
    #: copies published with ``delay=MS`` not yet due (held in the timers, not here);
    #: not counted in ``messages`` (contract section 7)
    scheduled: int = 0
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

    @property
    def held(self) -> int:
        """Messages waiting for a time to become ready: NACK delays and published
        delays (``STAT delayed``)."""
        return len(self.delayed) + self.scheduled


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
