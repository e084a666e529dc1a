"""Message properties (contract section 7) in the HTTP API, in the shape of RabbitMQ's
management API: ``"properties": {"headers": {...}, "priority": N, "message_id": ID}``
on a test publish, and the same object on each peeked message.

On publish, header values are strings (sent as UTF-8) or JSON numbers and booleans
(written as JSON writes them); ``content_type``, ``content_encoding``,
``correlation_id`` and ``reply_to`` become the headers ``content-type``,
``content-encoding``, ``correlation-id`` and ``reply-to`` (the names a STOMP client
sees), ``expiration`` (milliseconds, as text) is the ttl, and ``delivery_mode`` is
accepted and ignored (durability belongs to the queue).  Anything else is refused.

On peek, ``headers`` holds the values that are UTF-8, as text, and ``headers_base64``
the others, in base64 (as ``payload``/``payload_encoding`` do for the body).
"""

from __future__ import annotations

import json
from typing import Any

from mbroker import errors
from mbroker.wire.frames import Props
from mbroker.wire.props import header_text, make_props

__all__ = ["properties_json", "publish_properties"]

#: AMQP properties carried as headers, under the names STOMP uses for them
_AS_HEADERS = {
    "content_type": "content-type",
    "content_encoding": "content-encoding",
    "correlation_id": "correlation-id",
    "reply_to": "reply-to",
}


def publish_properties(properties: Any) -> tuple[Props | None, int | None]:
    """A publish's ``properties`` object as the message's :class:`Props` (None when it
    has none) and the ttl its ``expiration`` gives (None when it has none)."""
    if properties is None or properties == {} or properties == []:
        return None, None
    if not isinstance(properties, dict):
        raise errors.BadArgs("properties must be a JSON object")
    props = dict(properties)
    raw = props.pop("headers", None) or {}
    if not isinstance(raw, dict):
        raise errors.BadArgs("properties.headers must be a JSON object")
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, str):
            headers[name] = value
        elif isinstance(value, (bool, int, float)):
            headers[name] = json.dumps(value)
        else:
            raise errors.BadArgs(f"header {name!r}: a string, number or boolean")
    for prop, header in _AS_HEADERS.items():
        value = props.pop(prop, None)
        if value is not None:
            if not isinstance(value, str):
                raise errors.BadArgs(f"properties.{prop} must be a string")
            headers.setdefault(header, value)
    priority = props.pop("priority", None)
    msg_id = props.pop("message_id", None)
    expiration = props.pop("expiration", None)
    if props.pop("delivery_mode", 1) not in (1, 2):
        raise errors.BadArgs("properties.delivery_mode is 1 or 2")
    if props:
        raise errors.BadArgs("unsupported message properties: " + ", ".join(sorted(props)))
    ttl = None
    if expiration is not None:
        if not (isinstance(expiration, str) and expiration.isascii() and expiration.isdigit()):
            raise errors.BadArgs("properties.expiration is milliseconds, as a string")
        ttl = int(expiration)
    if priority is not None and type(priority) is not int:
        raise errors.BadArgs("properties.priority must be an integer")
    if msg_id is not None and not isinstance(msg_id, str):
        raise errors.BadArgs("properties.message_id must be a string")
    if not headers and priority is None and msg_id is None:
        return None, ttl
    return make_props(headers, msg_id, priority), ttl


def properties_json(props: Props | None) -> dict[str, Any]:
    """A peeked message's ``properties``: ``{}`` when it has none."""
    if props is None:
        return {}
    out: dict[str, Any] = {}
    text, raw = header_text(props.headers)
    if text:
        out["headers"] = text
    if raw:
        out["headers_base64"] = raw
    if props.priority:
        out["priority"] = props.priority
    if props.id is not None:
        out["message_id"] = props.id
    return out
