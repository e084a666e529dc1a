"""The MESSAGE frames of a STOMP connection's deliveries, written as bytes.

:class:`MessageFrames` turns what the broker pushes to a connection (its
``DeliveryTarget`` calls, see :mod:`mbroker.server.stomp_protocol`) into STOMP
``MESSAGE`` frames appended to the connection's output list: each frame as three
parts, a head ending in a blank line, the body and the NUL (which the WebSocket
transport relies on to keep frames whole).  A head is one ``%`` format of parts
cached per subscription (:class:`~mbroker.server.stomp_state.Subscription`: the
``MESSAGE`` line and ``subscription`` header, the start of the message ids) and per
route (the ``destination`` header, remembered per connection); a run of first
deliveries to an ``ack:auto`` subscription shares one head template.  Nothing is
validated or logged per message.
"""

from __future__ import annotations

from collections.abc import Callable

from mbroker import errors
from mbroker.core.broker import Broker
from mbroker.core.model import Queue, QueuedMessage
from mbroker.server.stomp_commands import CACHE_MAX
from mbroker.server.stomp_destinations import message_destination
from mbroker.server.stomp_props import message_headers
from mbroker.server.stomp_state import Subscription

__all__ = ["MessageFrames"]

#: what a frame's head and NUL add to its body, roughly, for the output's size count
HEAD_BYTES = 100


class MessageFrames:
    """Builds one connection's ``MESSAGE`` frames; remembers its destinations by route.

    ``is_temp_queue`` says whether a queue is one of the connection's
    ``/temp-queue/`` queues (its messages then name ``/reply-queue/<queue>``).
    """

    def __init__(self, broker: Broker, is_temp_queue: Callable[[str], bool]) -> None:
        self._broker = broker
        self._is_temp_queue = is_temp_queue
        #: the ``destination`` header of each route seen (``b"<source> <key or ->"``)
        self._routes: dict[bytes, bytes] = {}

    def many(
        self,
        out: list[bytes],
        sub: Subscription,
        tag: int,
        messages: list[QueuedMessage],
        ack: bool,
        version: str,
    ) -> int:
        """Append a ``MESSAGE`` per message, tagged from ``tag`` on (with an ``ack``
        header when ``ack``, and the message's own headers as STOMP ``version`` writes
        them); returns about how many bytes that is."""
        append = out.append
        prefix, mid, pending = sub.prefix, sub.mid, sub.pending
        routes = self._routes
        size = 0
        for m in messages:
            dest = routes.get(m.route)
            if dest is None:
                dest = self._destination(m.route, m.source, m.key)
            payload = m.payload
            n = len(payload)
            size += n
            extra = b"redelivered:true\n" if m.deliveries > 1 else b""
            if ack:
                extra += b"ack:%s%d\n" % (mid, tag)
            if m.props is not None:
                extra += message_headers(m.props, version)
            append(
                b"%sdestination:%s\nmessage-id:%s%d\n%scontent-length:%d\n\n"
                % (prefix, dest, mid, tag, extra, n)
            )
            append(payload)
            append(b"\0")
            if pending is not None:
                pending.append(tag)
            tag += 1
        return size + HEAD_BYTES * len(messages)

    def run(
        self, out: list[bytes], sub: Subscription, tag: int, route: bytes, payloads: list[bytes]
    ) -> int:
        """Append a ``MESSAGE`` per payload of one route, tagged from ``tag`` on (an
        ``ack:auto`` subscription's first deliveries); returns about how many bytes."""
        dest = self._routes.get(route)
        if dest is None:
            source, _, key = route.decode().partition(" ")
            dest = self._destination(route, source, "" if key == "-" else key)
        head = b"%sdestination:%s\nmessage-id:%s%%d\ncontent-length:%%d\n\n" % (
            sub.prefix,
            dest,
            sub.mid,
        )
        append = out.append
        size = 0
        for payload in payloads:
            n = len(payload)
            size += n
            append(head % (tag, n))
            append(payload)
            append(b"\0")
            tag += 1
        return size + HEAD_BYTES * len(payloads)

    def _destination(self, route: bytes, source: str, key: str) -> bytes:
        try:
            obj = self._broker.get(source)
        except errors.NotFound:
            obj = None
        is_queue = isinstance(obj, Queue)
        if is_queue and self._is_temp_queue(source):
            text = f"/reply-queue/{source}"
        else:
            text = message_destination(source, key, is_queue)
        if len(self._routes) >= CACHE_MAX:
            self._routes.clear()
        dest = self._routes[route] = text.encode()
        return dest
