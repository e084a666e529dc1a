"""Subscriptions of the Deferred client: a callback per message, acks, and restoration.

A :class:`Subscription` is made by :meth:`mbroker.client.Client.subscribe`.  It is the
sink that :class:`~mbroker.client.protocol.ClientProtocol` hands the ``MSG`` and ``CANCEL``
frames of its sid to, and it outlives connections: when the client reconnects it sends
its SUBSCRIBE again on the new connection (:meth:`Subscription.attach`).  A client keeps
its subscriptions in a :class:`Subscriptions`, which restores them and ends them; a
subscription asks of it only what :class:`SubscriptionOwner` says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from inspect import iscoroutine
from typing import Any, Literal, Optional, Protocol, Union, cast

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker.client.messages import ClientError, Message
from mbroker.client.protocol import ClientProtocol, SubscribeReply
from mbroker.errors import BrokerError
from mbroker.wire.frames import Msg, Subscribe, Unsubscribe
from mbroker.wire.replydata import ok_none

__all__ = [
    "AckMode",
    "Callback",
    "NackDelay",
    "Subscription",
    "SubscriptionOwner",
    "Subscriptions",
    "backoff",
]

log = Logger()

AckMode = Literal["auto", "manual"]
#: A subscription callback: gets a message, may return a Deferred or be ``async``.
Callback = Callable[[Message], Any]
#: How long (ms) a message whose callback failed waits before it is delivered again:
#: a number, ``None`` for at once, or a function of the message.
NackDelay = Union[int, None, Callable[[Message], Optional[int]]]


def backoff(message: Message) -> int | None:
    """The default :data:`NackDelay`: at once after a first failure, then 100 ms,
    doubling up to 30 s, so that a message that always fails does not spin."""
    if not message.redelivered:
        return None
    return int(min(100 * 2 ** (message.redelivered - 1), 30_000))


class SubscriptionOwner(Protocol):
    """What a subscription asks of the client that made it."""

    def forget(self, subscription: Subscription) -> None:
        """``subscription`` is ending: do not restore it any more."""


class Subscription:
    """One subscription made by :meth:`Client.subscribe`; survives reconnections.

    ``sid`` is its id on the current connection (``None`` while disconnected);
    ``received`` counts the messages given to the callback.
    """

    def __init__(
        self,
        owner: SubscriptionOwner,
        name: str,
        callback: Callback,
        pattern: str | None,
        manual: bool,
        prefetch: int | None,
        ack_timeout: int | None,
        nack_delay: NackDelay,
    ) -> None:
        self.name = name
        self.pattern = pattern
        self.ack: AckMode = "manual" if manual else "auto"
        self.prefetch = prefetch
        self.ack_timeout = ack_timeout
        self.sid: int | None = None
        self.received = 0
        self._owner = owner
        self._callback = callback
        self._manual = manual
        self._nack_delay = nack_delay
        self._command = Subscribe(name, pattern, prefetch, manual, ack_timeout)
        self._proto: ClientProtocol | None = None
        self._in_flight = 0
        self._idle: list[Deferred[None]] = []
        self._stopping = False
        self._ended: str | Failure | None = None
        self._end_waiters: list[Deferred[str]] = []

    def __repr__(self) -> str:
        return f"<Subscription {self.name} {self.pattern or ''} sid={self.sid} ack={self.ack}>"

    @property
    def active(self) -> bool:
        """True until the subscription ends (unsubscribed, cancelled, closed or lost)."""
        return self._ended is None

    # -------------------------------------------------------------- wiring

    @property
    def detached(self) -> bool:
        """True while it is to be restored: no connection, and not ending."""
        return self._proto is None and not self._stopping

    def attach(self, proto: ClientProtocol) -> Deferred[None]:
        """Send SUBSCRIBE on ``proto`` (for the client); the sink is registered as its
        ``+OK`` arrives."""

        def subscribed(sid: int) -> None:
            self.sid = sid
            self._proto = proto

        return proto.command(self._command, SubscribeReply(proto, self)).addCallback(subscribed)

    def deliver(self, conn: ClientProtocol, frame: Msg) -> None:
        """A message for this subscription (called by the protocol)."""
        if self._stopping and self._manual:
            return  # unsubscribing: the broker gives it back to the queue
        msg = Message(frame, conn, self._manual)
        self.received += 1
        self._in_flight += 1
        try:
            result = self._callback(msg)
        except Exception:
            self._done(Failure(), msg)
            return
        if isinstance(result, Deferred):
            result.addBoth(self._done, msg)
        elif iscoroutine(result):
            Deferred.fromCoroutine(result).addBoth(self._done, msg)
        else:
            self._done(result, msg)

    def _done(self, result: object, msg: Message) -> None:
        self._in_flight -= 1
        if isinstance(result, Failure):
            log.failure(
                "subscription to {name}: the callback failed on {message!r}"
                + ("; the message goes back to its queue" if self._manual else ""),
                failure=result,
                name=self.name,
                message=msg,
            )
            if not msg.settled:
                delay = self._nack_delay
                if callable(delay):
                    delay = delay(msg)
                msg.nack(True, delay).addErrback(_settle_failed, self.name)
        elif not msg.settled:
            msg.ack().addErrback(_settle_failed, self.name)
        if not self._in_flight and self._idle:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _wait_idle(self) -> Deferred[None]:
        if not self._in_flight:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def cancelled(self, conn: ClientProtocol, reason: str) -> None:
        """The broker ended the subscription (``CANCEL <sid> <reason>``)."""
        log.info(
            "the broker cancelled the subscription to {name}: {reason}",
            name=self.name,
            reason=reason,
        )
        self._owner.forget(self)
        self._proto = self.sid = None
        self.end(reason)

    def lost(self, conn: ClientProtocol, reason: Failure) -> None:
        """The connection ended; the client restores the subscription if it reconnects."""
        if self._proto is conn:
            self._proto = self.sid = None

    def halt(self) -> None:
        """The client is closing: deliver nothing more (for the client)."""
        self._stopping = True

    def end(self, reason: str | Failure) -> None:
        """The subscription is over (for the client): tell :meth:`when_ended`."""
        if self._ended is not None:
            return
        self._ended = reason
        self._stopping = True
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            d.callback(reason) if isinstance(reason, str) else d.errback(reason)

    # ------------------------------------------------------------- public

    def when_ended(self) -> Deferred[str]:
        """Fires with why the subscription ended: ``"unsubscribed"``, ``"closed"``, or
        the broker's reason (``"deleted"``); fails with :class:`ConnectionLost` when the
        connection was lost without ``reconnect``, or with the broker's error when a
        reconnection could not restore it."""
        ended = self._ended
        if isinstance(ended, str):
            return succeed(ended)
        if isinstance(ended, Failure):
            return fail(ended)
        d: Deferred[str] = Deferred()
        self._end_waiters.append(d)
        return d

    def unsubscribe(self) -> Deferred[None]:
        """Stop the subscription.

        With ``ack="manual"``, messages not yet given to the callback go back to the
        queue; the callbacks in progress finish and their messages are settled
        before the UNSUBSCRIBE is sent.  Fires once the broker confirmed it.
        """
        return Deferred.fromCoroutine(self._unsubscribe())

    async def _unsubscribe(self) -> None:
        if self._stopping:
            if self._ended is None:
                await self.when_ended()
            return
        self._stopping = True
        self._owner.forget(self)
        if self._manual:
            await self._wait_idle()
        proto, sid = self._proto, self.sid
        if proto is not None and sid is not None and proto.lost_reason is None:
            try:
                await proto.command(Unsubscribe(sid), ok_none)
            except (ClientError, BrokerError) as e:
                log.info("unsubscribe from {name}: {error}", name=self.name, error=str(e))
            proto.subscriptions.pop(sid, None)
        await self._wait_idle()
        self._proto = self.sid = None
        self.end("unsubscribed")


class Subscriptions:
    """A client's active subscriptions, in the order they were made (restored in that
    order); the :class:`SubscriptionOwner` of each."""

    def __init__(self) -> None:
        self._active: dict[Subscription, None] = {}

    def add(self, subscription: Subscription) -> None:
        """``subscription`` was confirmed by the broker: keep it."""
        self._active[subscription] = None

    def forget(self, subscription: Subscription) -> None:
        """``subscription`` is ending: do not restore it any more."""
        self._active.pop(subscription, None)

    def __iter__(self) -> Iterator[Subscription]:
        return iter(list(self._active))

    async def restore(self, proto: ClientProtocol) -> None:
        """Subscribe again on a new connection; a subscription the broker now refuses
        ends with its error (logged), a failing connection fails the whole."""
        subs = [s for s in self._active if s.detached]
        if not subs:
            return
        results = await DeferredList([s.attach(proto) for s in subs], consumeErrors=True)
        for sub, (ok, outcome) in zip(subs, results):
            result = cast(Failure, outcome)
            if ok:
                log.info("subscription to {name} restored", name=sub.name)
                continue
            if result.check(ClientError):
                result.raiseException()
            log.error(
                "subscription to {name} could not be restored: {error}",
                name=sub.name,
                error=result.getErrorMessage(),
            )
            self._active.pop(sub, None)
            sub.end(result)

    def halt_all(self) -> None:
        """The client is closing: no subscription delivers any more."""
        for sub in self._active:
            sub.halt()

    def end_all(self, reason: str | Failure) -> None:
        """End every subscription with ``reason`` and forget them."""
        for sub in list(self._active):
            sub.end(reason)
        self._active.clear()


def _settle_failed(failure: Failure, name: str) -> None:
    if failure.check(ClientError):
        # The connection is gone: the broker gives the message back by itself.
        log.debug("subscription to {name}: {error}", name=name, error=failure.getErrorMessage())
        return
    log.failure("subscription to {name}: settling a message failed", failure=failure, name=name)
