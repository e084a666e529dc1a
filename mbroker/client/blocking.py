"""A blocking facade over the Deferred client, for scripts with no reactor of their own.

::

    from mbroker.client.blocking import Connection

    with Connection("localhost") as conn:
        conn.create("jobs", "queue")
        conn.publish("jobs", b"hello")
        for message in conn.pull("jobs", 10):
            print(message.text)

It is built on `crochet <https://crochet.readthedocs.io>`_: the reactor runs in a
thread of its own (``crochet.setup()``, done on the first :class:`Connection`), and
every method runs the matching :class:`mbroker.client.Client` method there and waits
for its result, raising the same exceptions (``mbroker.errors.NotFound``, …) or
``TimeoutError`` after ``timeout`` seconds.

Subscription callbacks run in the reactor's thread pool, one at a time per
subscription by default (``concurrency``), so they may block; the message is
acknowledged when the callback returns, given back to its queue when it raises.
:meth:`BlockingSubscription.wait` blocks until the subscription ends, until its own
``timeout`` (then it returns ``None``: that is not the broker's fault), or until
Ctrl-C (then it unsubscribes and returns ``"interrupted"``, with no traceback).

An application that runs the reactor itself calls ``crochet.no_setup()`` first, and
must not call these methods from the reactor thread.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, Union, cast

try:
    import crochet
except ImportError as e:  # pragma: no cover - depends on what was installed
    raise ImportError(
        "the blocking facade needs crochet: pip install 'mbroker[blocking]'"
        " (from a checkout: pip install '.[blocking]')"
    ) from e
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, gatherResults
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from mbroker.client.connection import Client, connect, tcp_endpoint
from mbroker.client.messages import Message, Tags, first_error
from mbroker.client.subscription import AckMode, NackDelay, Subscription, backoff
from mbroker.wire.frames import ExchangeInfo, Hello, QueueInfo

__all__ = ["BlockingMessage", "BlockingSubscription", "Connection"]

T = TypeVar("T")


class FacadeReactor(IReactorTime, IReactorThreads):
    """What the facade asks of crochet's reactor: time-outs, and the thread pool where
    subscription callbacks run."""


class _Runner:
    """Runs functions in the reactor thread and waits for their Deferreds."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout

    def __call__(
        self, fn: Callable[..., Deferred[T]], *args: Any, _wait: float | None = -1.0, **kw: Any
    ) -> T:
        """``fn(*args, **kw)`` in the reactor thread; waits ``_wait`` seconds (default:
        the connection's timeout; ``None``: for ever)."""
        wait = self.timeout if _wait == -1.0 else _wait
        timed_out: builtins.list[bool] = []

        def call() -> Deferred[Any]:
            # Once we gave up waiting, the cancellation is expected: not an error to log.
            d: Deferred[Any] = fn(*args, **kw)
            return d.addErrback(_unless_abandoned, timed_out)

        result = crochet.run_in_reactor(call)()
        try:
            # crochet's stub wants a float; its wait takes None too (no time limit)
            return cast(T, result.wait(wait))  # type: ignore[arg-type]
        except crochet.TimeoutError:
            timed_out.append(True)
            result.cancel()
            raise TimeoutError(f"no answer from the broker within {wait} s") from None


def _unless_abandoned(failure: Failure, timed_out: builtins.list[bool]) -> Failure | None:
    if timed_out and failure.check(CancelledError):
        return None
    return failure


class BlockingMessage:
    """A :class:`mbroker.client.Message` whose ``ack``/``nack``/``touch`` block."""

    def __init__(self, message: Message, run: _Runner) -> None:
        self._message = message
        self._run = run
        self.payload: bytes = message.payload
        self.source: str = message.source
        self.routing_key: str = message.routing_key
        self.redelivered: int = message.redelivered
        self.reason: str | None = message.reason
        self.tag: int = message.tag
        self.headers: dict[str, bytes] = message.headers
        self.id: str | None = message.id
        self.priority: int = message.priority

    @property
    def message(self) -> Message:
        """The :class:`mbroker.client.Message` it wraps (for the reactor thread)."""
        return self._message

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (undecodable bytes replaced)."""
        return self._message.text

    @property
    def settled(self) -> bool:
        """True once acked or nacked (always for an ``ack="auto"`` delivery)."""
        return self._message.settled

    def ack(self) -> None:
        """Acknowledge the message."""
        self._run(self._message.ack)

    def nack(self, requeue: bool = True, delay: int | None = None) -> None:
        """Give the message back (see :meth:`mbroker.client.Message.nack`)."""
        self._run(self._message.nack, requeue, delay)

    def touch(self) -> None:
        """Restart the message's ack-timeout."""
        self._run(self._message.touch)

    def __repr__(self) -> str:
        return f"<Blocking{self._message!r}>"


#: Delivery tags for :meth:`Connection.ack`: ints, messages, or an iterable of either.
BlockingTags = Union[int, Message, BlockingMessage, Iterable[Union[int, Message, BlockingMessage]]]  # noqa: UP007


class BlockingSubscription:
    """A subscription made by :meth:`Connection.subscribe`."""

    def __init__(self, subscription: Subscription, run: _Runner, reactor: FacadeReactor) -> None:
        self._subscription = subscription
        self._run = run
        self._reactor = reactor

    @property
    def name(self) -> str:
        """The queue or exchange subscribed to."""
        return self._subscription.name

    @property
    def active(self) -> bool:
        """True until the subscription ends."""
        return self._subscription.active

    @property
    def received(self) -> int:
        """Messages given to the callback so far."""
        return self._subscription.received

    def unsubscribe(self) -> None:
        """Stop; waits for the callbacks in progress (see
        :meth:`mbroker.client.Subscription.unsubscribe`)."""
        self._run(self._subscription.unsubscribe, _wait=None)

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until the subscription ends, and return why (``"unsubscribed"``,
        ``"closed"``, ``"deleted"``…); raises :class:`mbroker.client.ConnectionLost` when
        the connection was lost.

        Returns ``None`` once ``timeout`` seconds passed with the subscription still
        active (it goes on: wait again, or :meth:`unsubscribe`).  Ctrl-C ends the
        subscription as :meth:`unsubscribe` does (the callback in progress finishes)
        and returns ``"interrupted"``, so that a script ends without a traceback.
        """
        reactor, subscription = self._reactor, self._subscription

        def ended() -> Deferred[str | None]:
            d = subscription.when_ended().addCallback(_why)
            if timeout is not None:
                d.addTimeout(timeout, reactor, onTimeoutCancel=_still_active)
            return d

        try:
            return self._run(ended, _wait=None)
        except KeyboardInterrupt:
            self.unsubscribe()  # a second Ctrl-C interrupts this too
            return "interrupted"


def _why(reason: str) -> str | None:
    """The reason a subscription ended, as :meth:`BlockingSubscription.wait` returns it."""
    return reason


def _still_active(result: object, timeout: float) -> None:
    """``addTimeout``'s verdict for :meth:`BlockingSubscription.wait`: no end yet."""
    return None


class Connection:
    """A blocking connection to a broker at ``host:port`` (or any client ``endpoint``).

    ``timeout`` bounds every call, in seconds.  ``reconnect``, ``greeting_timeout``,
    ``user``, ``password`` and ``heartbeat`` are those of :func:`mbroker.client.connect`
    (the reactor thread answers the broker's PINGs, even while no call runs).  Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 5555,
        *,
        endpoint: str | None = None,
        timeout: float = 30.0,
        reconnect: bool = False,
        greeting_timeout: float | None = 1.0,
        user: str | None = None,
        password: str | None = None,
        heartbeat: float | None = None,
    ) -> None:
        crochet.setup()
        from twisted.internet import reactor

        self._reactor = cast(FacadeReactor, reactor)
        self._run = _Runner(timeout)
        target = endpoint if endpoint is not None else tcp_endpoint(host, port)
        self._client: Client = self._run(
            connect,
            reactor,
            target,
            reconnect=reconnect,
            timeout=timeout,
            greeting_timeout=greeting_timeout,
            user=user,
            password=password,
            heartbeat=heartbeat,
        )

    @property
    def client(self) -> Client:
        """The underlying :class:`mbroker.client.Client` (use it in the reactor thread only)."""
        return self._client

    @property
    def hello(self) -> Hello | None:
        """The broker's greeting."""
        return self._client.hello

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the replies to every command sent, then disconnect."""
        self._run(self._client.close)

    # ------------------------------------------------------------ commands

    def create(self, name: str, kind: str = "topic", **options: Any) -> bool:
        """CREATE; True when made, False when it existed alike (options as
        :meth:`mbroker.client.Client.create`)."""
        return self._run(self._client.create, name, kind, **options)

    def delete(self, name: str, *, if_empty: bool = False, if_unused: bool = False) -> int:
        """DELETE; returns the number of messages dropped."""
        return self._run(self._client.delete, name, if_empty=if_empty, if_unused=if_unused)

    def bind(self, queue: str, exchange: str, key: str = "") -> None:
        """BIND a queue to an exchange."""
        self._run(self._client.bind, queue, exchange, key)

    def unbind(self, queue: str, exchange: str, key: str = "") -> None:
        """UNBIND a queue from an exchange."""
        self._run(self._client.unbind, queue, exchange, key)

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
    ) -> int:
        """PUBLISH one message and wait for its confirmation; returns the queues reached.

        ``headers``, ``id``, ``delay`` and ``priority`` as for
        :meth:`mbroker.client.Client.publish` (with any of them the result is a
        :class:`~mbroker.wire.replydata.Published`, an int with ``duplicate``)."""
        return self._run(
            self._client.publish,
            name,
            payload,
            key,
            ttl=ttl,
            headers=headers,
            id=id,
            delay=delay,
            priority=priority,
        )

    def publish_many(
        self,
        name: str,
        payloads: Iterable[bytes | str],
        key: str = "",
        *,
        ttl: int | None = None,
        headers: Mapping[str, bytes | str] | None = None,
        delay: int | None = None,
        priority: int | None = None,
    ) -> builtins.list[int]:
        """PUBLISH many messages pipelined, then wait for every confirmation; each gets
        the same ``headers``, ``delay`` and ``priority``, if given."""

        def send() -> Deferred[builtins.list[int]]:
            client = self._client
            kw: dict[str, Any] = {"ttl": ttl}
            if headers is not None or delay is not None or priority is not None:
                kw.update(headers=headers, delay=delay, priority=priority)
            return gatherResults(
                [client.publish(name, p, key, **kw) for p in payloads], consumeErrors=True
            ).addErrback(first_error)

        return self._run(send)

    def pull(
        self,
        queue: str,
        max: int = 1,
        *,
        wait: int | None = None,
        ack: AckMode = "auto",
        ack_timeout: int | None = None,
    ) -> builtins.list[BlockingMessage]:
        """PULL up to ``max`` messages (``wait`` in ms); see :meth:`mbroker.client.Client.pull`."""
        extra = (wait or 0) / 1000.0
        timeout = None if self._run.timeout is None else self._run.timeout + extra
        messages = self._run(
            self._client.pull,
            queue,
            max,
            wait=wait,
            ack=ack,
            ack_timeout=ack_timeout,
            _wait=timeout,
        )
        return [BlockingMessage(m, self._run) for m in messages]

    def ack(self, tags: BlockingTags) -> int:
        """ACK delivery tags or messages; returns the number acknowledged."""
        return self._run(self._client.ack, _unwrap(tags))

    def nack(self, tags: BlockingTags, *, requeue: bool = True, delay: int | None = None) -> int:
        """NACK delivery tags or messages; returns the number handled."""
        return self._run(self._client.nack, _unwrap(tags), requeue=requeue, delay=delay)

    def purge(self, queue: str) -> int:
        """PURGE a queue; returns the number of messages dropped."""
        return self._run(self._client.purge, queue)

    def list(self) -> builtins.list[ExchangeInfo | QueueInfo]:
        """LIST every exchange and queue."""
        return self._run(self._client.list)

    def stats(self, name: str | None = None) -> dict[str, int | str]:
        """STATS of the broker or of one object."""
        return self._run(self._client.stats, name)

    def ping(self) -> float:
        """PING; returns the round-trip time in seconds."""
        return self._run(self._client.ping)

    def subscribe(
        self,
        name: str,
        callback: Callable[[BlockingMessage], object],
        pattern: str | None = None,
        *,
        ack: AckMode = "manual",
        prefetch: int | None = None,
        ack_timeout: int | None = None,
        nack_delay: NackDelay = backoff,
        concurrency: int = 1,
    ) -> BlockingSubscription:
        """SUBSCRIBE; ``callback(message)`` runs in a worker thread for each message.

        At most ``concurrency`` callbacks of this subscription run at once (in the
        order the messages came); other arguments are those of
        :meth:`mbroker.client.Client.subscribe`.  Returns at once; call
        :meth:`BlockingSubscription.wait` to block until it ends.
        """
        reactor, run = self._reactor, self._run
        limit = DeferredSemaphore(concurrency)

        def in_thread(message: Message) -> Deferred[object]:
            wrapped = BlockingMessage(message, run)
            return limit.run(deferToThreadPool, reactor, reactor.getThreadPool(), callback, wrapped)

        sub = self._run(
            self._client.subscribe,
            name,
            in_thread,
            pattern,
            ack=ack,
            prefetch=prefetch,
            ack_timeout=ack_timeout,
            nack_delay=nack_delay,
        )
        return BlockingSubscription(sub, run, reactor)


def _unwrap(tags: BlockingTags) -> Tags:
    if isinstance(tags, BlockingMessage):
        return tags.message
    if isinstance(tags, (int, Message)):
        return tags
    return [t.message if isinstance(t, BlockingMessage) else t for t in tags]
