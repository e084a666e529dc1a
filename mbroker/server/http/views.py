"""The JSON shapes of the API's answers: one function per kind of object.

Field names are RabbitMQ's management API's where the two brokers share the notion
(``messages_ready``, ``message_stats.publish``, ``source``/``destination`` ...), and
mbroker's own beside them (``messages_delayed``, ``private``, ``deliveries``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from mbroker import __version__
from mbroker.core.snapshots import (
    BindingReport,
    ConnectionReport,
    ExchangeReport,
    MessageReport,
    QueueReport,
    QueueTotals,
)
from mbroker.server.http.message_props import properties_json

#: RabbitMQ's virtual host: mbroker has one namespace
VHOST = "/"


def overview_json(
    stats: dict[str, int], totals: QueueTotals, rates: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """``/api/overview`` (without the front door's extras): the broker's STATS, the
    queues' totals and the message rates."""
    message_stats: dict[str, Any] = {
        "publish": stats["published"],
        "deliver": stats["delivered"],
        "ack": stats["acked"],
    }
    for name, details in rates.items():
        message_stats[name + "_details"] = details
    return {
        "product_name": "mbroker",
        "product_version": __version__,
        "uptime": stats["uptime_s"],
        "object_totals": {
            "connections": stats["connections"],
            "queues": stats["queues"],
            "exchanges": stats["exchanges"],
            "consumers": totals.consumers,
        },
        "queue_totals": {
            "messages": totals.ready + totals.delayed + totals.unacked,
            "messages_ready": totals.ready,
            "messages_delayed": totals.delayed,
            "messages_unacknowledged": totals.unacked,
        },
        "message_stats": message_stats,
        "connections_total": stats["connections_total"],
        "memory": {"rss": stats["memory_rss"], "peak_rss": stats["memory_peak_rss"]},
    }


def queue_json(q: QueueReport) -> dict[str, Any]:
    """A queue as ``/api/queues`` shows it (RabbitMQ's field names where they exist)."""
    o = q.options
    return {
        "name": q.name,
        "vhost": VHOST,
        "durable": o.durable,
        "exclusive": o.exclusive,
        "auto_delete": False,
        "private": q.private,
        "owner": q.owner,
        "arguments": {
            "max_length": o.max_length,
            "max_bytes": o.max_bytes,
            "overflow": o.overflow,
            "ttl": o.ttl,
            "dead_letter": o.dead_letter,
            "max_deliver": o.max_deliver,
        },
        "messages": q.ready + q.delayed + q.unacked,
        "messages_ready": q.ready,
        "messages_delayed": q.delayed,
        "messages_unacknowledged": q.unacked,
        "message_bytes_ready": q.ready_bytes,
        "consumers": len(q.consumers),
        "message_stats": {
            "publish": q.published,
            "deliver": q.delivered,
            "ack": q.acked,
            "redeliver": q.redelivered,
            "expired": q.expired,
            "dropped": q.dropped,
            "rejected": q.rejected,
            "dead_lettered": q.dead_lettered,
        },
    }


def message_json(m: MessageReport, truncate: int) -> dict[str, Any]:
    """A peeked message, as RabbitMQ's "get messages" shows one: the payload as text
    when it is UTF-8, else in base64; its ``properties`` (headers, priority,
    message_id) as :mod:`~mbroker.server.http.message_props` writes them."""
    payload = m.payload[:truncate]
    try:
        text, encoding = payload.decode("utf-8"), "string"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    return {
        "exchange": m.source,
        "routing_key": m.key,
        "payload": text,
        "payload_encoding": encoding,
        "payload_bytes": len(m.payload),
        "redelivered": m.deliveries > 0,
        "deliveries": m.deliveries,
        "expires_at": int(m.expires_at * 1000) if m.expires_at is not None else None,
        "properties": properties_json(m.props),
    }


def exchange_json(e: ExchangeReport) -> dict[str, Any]:
    return {
        "name": e.name,
        "vhost": VHOST,
        "type": e.kind,
        "durable": e.durable,
        "auto_delete": False,
        "internal": False,
        "bindings": e.bindings,
        "message_stats": {
            "publish_in": e.published,
            "routed": e.routed,
            "unroutable": e.unroutable,
        },
    }


def binding_json(b: BindingReport) -> dict[str, Any]:
    return {
        "source": b.exchange,
        "vhost": VHOST,
        "destination": b.queue,
        "destination_type": "queue",
        "routing_key": b.key,
        "arguments": {},
        "properties_key": props(b.key),
    }


def connection_json(c: ConnectionReport) -> dict[str, Any]:
    return {
        "id": c.session,
        "peer": c.peer,
        "user": c.user,
        "connected_at": int(c.since * 1000),
        "subscriptions": c.subscriptions,
        "messages_unacknowledged": c.unacked,
        "recv_oct": c.bytes_in,
        "send_oct": c.bytes_out,
    }


def encode_json(body: Any) -> bytes:
    """The bytes of a JSON body (compact, UTF-8, one trailing line end)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def props(key: str) -> str:
    """RabbitMQ's ``properties_key`` of a binding without arguments: the key, ``~`` if empty."""
    return key or "~"
