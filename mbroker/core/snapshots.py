"""Read-only snapshots of the domain, for monitoring (the HTTP API and ``/metrics``).

The broker builds these when asked (a scrape, an API call) from the state and the
counters it keeps anyway: nothing here runs per message.  They are frozen values, so
a reader may hold one while the broker changes, and they name no entity: whoever
reads them never reaches into the broker's objects.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from mbroker.core.model import Exchange, Queue, QueuedMessage
from mbroker.wire.frames import Props, QueueOptions

__all__ = [
    "BindingReport",
    "ConnectionReport",
    "ConsumerReport",
    "ExchangeReport",
    "MessageReport",
    "QueueReport",
    "QueueTotals",
    "binding_reports",
    "exchange_report",
    "message_report",
    "queue_report",
]


@attrs.frozen
class ConsumerReport:
    """One subscription to a queue."""

    #: the connection's session id (``ConnectionReport.session``)
    session: int
    sid: int
    manual: bool
    #: 0: unlimited
    prefetch: int
    #: seconds, or None
    ack_timeout: float | None
    in_flight: int
    delivered: int
    active: bool


@attrs.frozen
class QueueTotals:
    """The messages of every queue, summed, and their consumers."""

    ready: int
    delayed: int
    unacked: int
    consumers: int


@attrs.frozen
class QueueReport:
    """A queue's options, depth, consumers and counters."""

    name: str
    options: QueueOptions
    #: the private queue of an exchange subscription (``mbroker.sub.*``)
    private: bool
    #: the session id of the connection an exclusive queue belongs to
    owner: int | None
    ready: int
    #: waiting for a time: NACKed with a delay, or published with ``delay=MS``
    delayed: int
    unacked: int
    ready_bytes: int
    consumers: tuple[ConsumerReport, ...]
    published: int
    delivered: int
    acked: int
    redelivered: int
    expired: int
    dropped: int
    rejected: int
    dead_lettered: int


@attrs.frozen
class ExchangeReport:
    """An exchange and its counters."""

    name: str
    kind: str
    durable: bool
    bindings: int
    published: int
    routed: int
    unroutable: int


@attrs.frozen
class BindingReport:
    """One binding: messages published to ``exchange`` with a matching key go to ``queue``."""

    exchange: str
    queue: str
    key: str


@attrs.frozen
class MessageReport:
    """A ready message, looked at where it is."""

    #: the exchange (or queue) it was published to
    source: str
    key: str
    payload: bytes
    #: how many times it was delivered before (and came back)
    deliveries: int
    #: clock time at which it expires; None: never
    expires_at: float | None
    #: its headers, id and priority (contract section 7), if it has any
    props: Props | None = None


@attrs.frozen
class ConnectionReport:
    """One client connection, as its front door (the protocol) describes it."""

    session: int
    peer: str
    #: the logged-in user, None on an open broker or before AUTH
    user: str | None
    #: clock time at which the connection was made
    since: float
    subscriptions: int
    #: manual deliveries not yet acknowledged
    unacked: int
    #: bytes read from the peer and written to it since the connection was made
    bytes_in: int = 0
    bytes_out: int = 0


def queue_report(q: Queue) -> QueueReport:
    """The snapshot of one queue."""
    return QueueReport(
        name=q.name,
        options=q.options,
        private=q.private,
        owner=q.owner.id if q.owner is not None else None,
        ready=len(q.ready),
        delayed=q.held,
        unacked=q.unacked,
        ready_bytes=q.ready_bytes,
        consumers=tuple(
            ConsumerReport(
                c.session.id,
                c.sid,
                c.manual,
                c.prefetch,
                c.ack_timeout,
                c.in_flight,
                c.delivered,
                c.active,
            )
            for c in q.consumers
        ),
        published=q.published,
        delivered=q.delivered,
        acked=q.acked,
        redelivered=q.redelivered,
        expired=q.expired,
        dropped=q.dropped,
        rejected=q.rejected,
        dead_lettered=q.dead_lettered,
    )


def message_report(m: QueuedMessage) -> MessageReport:
    """The snapshot of one message (its payload is shared, not copied)."""
    return MessageReport(m.source, m.key, m.payload, m.deliveries, m.expires_at, m.props)


def exchange_report(ex: Exchange) -> ExchangeReport:
    """The snapshot of one exchange."""
    return ExchangeReport(
        ex.name, ex.kind, ex.durable, len(ex.matcher), ex.published, ex.routed, ex.unroutable
    )


def binding_reports(exchanges: Iterable[Exchange]) -> list[BindingReport]:
    """Every binding of ``exchanges``, exchange by exchange."""
    return [
        BindingReport(ex.name, q.name, key) for ex in exchanges for key, q in ex.matcher.bindings()
    ]
