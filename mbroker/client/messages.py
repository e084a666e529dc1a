"""What the client hands its users: delivered messages and its own errors.

:class:`Message` is a delivery (pushed to a subscription, or returned by PULL) with
``ack``/``nack``/``touch``; :class:`ClientError` and its subclasses are the errors
that come from the connection rather than from the broker (those are
:class:`mbroker.errors.BrokerError`).  The small helpers at the end are shared by
:mod:`mbroker.client.connection` and :mod:`mbroker.client.blocking`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol as TypingProtocol
from typing import Union

from twisted.internet.defer import Deferred, FirstError, fail, succeed
from twisted.python.failure import Failure

from mbroker.wire.frames import Ack, Command, Msg, Nack, TagRanges, Touch
from mbroker.wire.props import msg_attrs
from mbroker.wire.replydata import Published

__all__ = [
    "BadReply",
    "ClientError",
    "ConnectionLost",
    "Message",
    "NotABroker",
    "NotConnected",
    "Published",
    "Tags",
    "Unconfirmed",
    "first_error",
    "tag_ranges",
]


# ---------------------------------------------------------------------- errors


class ClientError(Exception):
    """Base of the errors that come from the client's side rather than from a ``-ERR`` line.

    Errors the broker reports are :class:`mbroker.errors.BrokerError` subclasses, one
    per wire code (``NotFound``, ``Exists``, …).
    """


class NotConnected(ClientError):
    """There is no connection to send this command on (never made, closed or lost)."""


class NotABroker(NotConnected):
    """The server at the other end is not an mbroker: its first line was not the greeting
    (an HTTP server answers the client's probe ``PING`` with ``HTTP/1.1 400 …``), or it
    said nothing at all for ``greeting_timeout`` seconds (a broker greets at once).
    """


class ConnectionLost(ClientError):
    """The connection to the broker was lost."""


class BadReply(ConnectionLost):
    """The broker sent a line that answers no command (a stray ``+OK``), or a reply that
    does not fit its command: the replies are out of step, so the client closed the
    connection.  Commands waiting for a reply fail with :class:`Unconfirmed`, which
    says the same."""


class Unconfirmed(ConnectionLost):
    """The connection was lost after this command was sent and before the broker answered.

    The broker may or may not have carried it out: a PUBLISH that fails with this
    error may have been delivered.  Publish it again if a duplicate is better than a
    loss.
    """


# --------------------------------------------------------------------- messages


class _Settler(TypingProtocol):
    def settle(self, command: Command) -> Deferred[int]: ...


class Message:
    """A message delivered by the broker, to a subscription or by :meth:`pull`.

    ``payload`` is the body (bytes), ``source`` the exchange or queue it was published
    to, ``routing_key`` its routing key (``""`` when it had none), ``redelivered`` how
    many times it was delivered before, ``reason`` why it was dead-lettered (``None``
    normally), ``tag`` its delivery tag on its connection, ``sid`` its subscription id
    (0 for a PULL), and ``attrs`` the other attributes of its MSG line, as they came.

    Its properties (contract section 7): ``headers`` (``{name: bytes}``, in the order
    they were published; empty when it has none), ``id`` (its message id, or None) and
    ``priority`` (0-9).

    With ``ack="manual"``, settle it once with :meth:`ack` or :meth:`nack`; a message
    that arrived with ``ack="auto"`` was acknowledged on delivery.
    """

    __slots__ = (
        "payload",
        "source",
        "routing_key",
        "redelivered",
        "reason",
        "attrs",
        "headers",
        "id",
        "priority",
        "tag",
        "sid",
        "manual",
        "_conn",
        "_settled",
    )

    def __init__(self, frame: Msg, conn: _Settler | None, manual: bool) -> None:
        self.payload: bytes = frame.payload
        self.source: str = frame.source
        self.routing_key: str = frame.key
        self.redelivered: int = frame.redelivered
        self.reason: str | None = frame.reason
        attrs = frame.attrs
        self.attrs: tuple[tuple[str, str], ...] = attrs
        self.headers: dict[str, bytes]
        self.id: str | None
        self.priority: int
        if attrs:
            self.headers, self.id, self.priority = msg_attrs(attrs)
        else:
            self.headers, self.id, self.priority = {}, None, 0
        self.tag: int = frame.tag
        self.sid: int = frame.sid
        #: True when the broker waits for an ack (``ack="manual"``)
        self.manual: bool = manual
        self._conn = conn
        self._settled = not manual

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (undecodable bytes replaced)."""
        return self.payload.decode("utf-8", "replace")

    @property
    def settled(self) -> bool:
        """True once acked or nacked (always true for an ``ack="auto"`` delivery)."""
        return self._settled

    def ack(self) -> Deferred[None]:
        """Acknowledge: the broker drops the message.  A no-op if already settled."""
        if self._settled:
            return succeed(None)
        return self._settle(Ack(((self.tag, self.tag),)))

    def nack(self, requeue: bool = True, delay: int | None = None) -> Deferred[None]:
        """Give the message back: to the head of its queue (``requeue``, after ``delay``
        milliseconds if given), else dead-lettered or dropped."""
        if not self.manual:
            return fail(ClientError("this message was acknowledged on delivery (ack=auto)"))
        if self._settled:
            return succeed(None)
        return self._settle(Nack(((self.tag, self.tag),), requeue, delay))

    def touch(self) -> Deferred[None]:
        """Restart the message's ack-timeout: it is still being worked on."""
        if self._settled:
            return succeed(None)
        conn = self._conn
        if conn is None:
            return fail(NotConnected("this message has no connection"))
        return conn.settle(Touch(((self.tag, self.tag),))).addCallback(_none)

    def _settle(self, command: Command) -> Deferred[None]:
        conn = self._conn
        if conn is None:
            return fail(NotConnected("this message has no connection"))
        self._settled = True
        return conn.settle(command).addCallback(_none)

    def __repr__(self) -> str:
        return (
            f"<Message {self.source}/{self.routing_key or '-'} tag={self.tag} "
            f"redelivered={self.redelivered} {self.payload[:40]!r}>"
        )


def _none(_: object) -> None:
    return None


def first_error(failure: Failure) -> Failure:
    """For ``gatherResults(...).addErrback``: the first failure itself, not a FirstError."""
    error = failure.value
    if isinstance(error, FirstError):
        sub: Failure = error.subFailure
        return sub
    return failure


#: Delivery tags: an int, a message, or an iterable of either.
Tags = Union[int, Message, Iterable[Union[int, Message]]]  # noqa: UP007


def tag_ranges(tags: Tags) -> TagRanges:
    """Tags, messages or an iterable of either as sorted, merged ``(first, last)`` ranges.

    Messages named are marked settled.  Adjacent tags become one range, which the
    broker applies to the tags in it that are still outstanding.
    """
    items: Iterable[int | Message] = (tags,) if isinstance(tags, (int, Message)) else tags
    numbers = set()
    for item in items:
        if isinstance(item, Message):
            item._settled = True  # this module's own class: settling is not a user's call
            numbers.add(item.tag)
        else:
            numbers.add(int(item))
    ranges: list[tuple[int, int]] = []
    for tag in sorted(numbers):
        if ranges and ranges[-1][1] == tag - 1:
            ranges[-1] = (ranges[-1][0], tag)
        else:
            ranges.append((tag, tag))
    return tuple(ranges)
