"""A STOMP connection's book-keeping: subscriptions, message ids, acks, transactions.

Plain Python, no Twisted and no broker: :mod:`mbroker.server.stomp_commands` keeps one
:class:`Subscription` per SUBSCRIBE and one :class:`Transactions` per connection.

Message ids are ``<sid>-<tag>``: the broker's subscription number and delivery tag, so
that an ACK names its subscription without a table of every message out.  An
``ack:client`` subscription keeps the tags it has out, oldest first, because its ACK
acknowledges every earlier message of the same subscription (and only those: tags are
numbered per connection, across its subscriptions).
"""

from __future__ import annotations

from collections import deque

from mbroker.errors import Limit
from mbroker.wire.frames import TagRanges
from mbroker.wire.stomp import Frame, StompError, encode

__all__ = ["ACK_MODES", "MAX_TRANSACTIONS", "MAX_TX_FRAMES", "Subscription", "Transactions"]

ACK_MODES = ("auto", "client", "client-individual")
MAX_TRANSACTIONS = 64
MAX_TX_FRAMES = 10_000


class Subscription:
    """One STOMP subscription: the client's ``id``, the broker's ``sid``."""

    __slots__ = ("id", "sid", "mode", "prefix", "mid", "pending", "queue", "durable")

    def __init__(self, id: str, sid: int, mode: str, version: str, queue: str) -> None:
        self.id = id
        self.sid = sid
        self.mode = mode
        #: ``MESSAGE`` and the ``subscription`` header, escaped for ``version``
        self.prefix = encode(Frame("MESSAGE", (("subscription", id),)), version)[:-2]
        #: the start of this subscription's message ids
        self.mid = b"%d-" % sid
        #: ack=client: the tags out, oldest first
        self.pending: deque[int] | None = deque() if mode == "client" else None
        #: the queue or exchange it consumes from
        self.queue = queue
        #: a durable topic subscription: its queue outlives the connection
        self.durable = False

    def acked(self, tag: int) -> tuple[TagRanges, bool]:
        """The tags an ACK or NACK of ``tag`` covers, and whether it is cumulative
        (``ack:client``: every tag out up to ``tag``, taken off ``pending``)."""
        pending = self.pending
        if pending is None:
            return ((tag, tag),), False
        ranges: list[tuple[int, int]] = []
        while pending and pending[0] <= tag:
            t = pending.popleft()
            if ranges and ranges[-1][1] == t - 1:
                ranges[-1] = (ranges[-1][0], t)
            else:
                ranges.append((t, t))
        return tuple(ranges), True


def parse_message_id(command: str, mid: str) -> tuple[int, int]:
    """``(sid, tag)`` of a message id ``<sid>-<tag>``; a ``StompError`` if it is not one."""
    sid_text, dash, tag_text = mid.partition("-")
    if not (dash and sid_text.isdigit() and tag_text.isdigit() and len(mid) < 40):
        raise StompError(f"{command}: {mid[:40]!r} is not a message id of ours")
    return int(sid_text), int(tag_text)


class Transactions:
    """The open transactions of a connection and the frames each holds until COMMIT.

    At most ``MAX_TRANSACTIONS`` open, and ``MAX_TX_FRAMES`` frames or ``max_bytes``
    body bytes held across them all: past that, ``Limit``.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._open: dict[str, list[Frame]] = {}
        self._frames = 0
        self._bytes = 0

    def begin(self, tx: str) -> None:
        if tx in self._open:
            raise StompError(f"transaction {tx!r} has already begun")
        if len(self._open) >= MAX_TRANSACTIONS:
            raise Limit(f"at most {MAX_TRANSACTIONS} open transactions")
        self._open[tx] = []

    def hold(self, tx: str, frame: Frame) -> None:
        held = self._open.get(tx)
        if held is None:
            raise StompError(f"no transaction {tx!r}")
        size = self._bytes + len(frame.body)
        if self._frames >= MAX_TX_FRAMES or size > self.max_bytes:
            raise Limit("too much held in transactions: commit or abort first")
        held.append(frame)
        self._frames += 1
        self._bytes = size

    def end(self, tx: str) -> list[Frame]:
        """Close ``tx``: the frames it held, in order (to run, or to drop)."""
        held = self._open.pop(tx, None)
        if held is None:
            raise StompError(f"no transaction {tx!r}")
        self._frames -= len(held)
        self._bytes -= sum(len(f.body) for f in held)
        return held

    def clear(self) -> None:
        """Drop every open transaction (DISCONNECT, or the connection is gone)."""
        self._open.clear()
        self._frames = self._bytes = 0
