"""What an API request says: its query parameters, its JSON body, the list options.

Everything here refuses a bad value with :class:`~mbroker.errors.BadArgs` naming it,
and takes values of exactly the JSON type asked for (``true`` is no integer here).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from mbroker import errors
from mbroker.core.snapshots import ExchangeReport, QueueReport
from mbroker.server.auth import User


@attrs.frozen
class ApiRequest:
    """One request to the API, as the site hands it over."""

    method: str
    #: the path segments after ``/api``, percent-decoded
    path: tuple[str, ...]
    query: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    #: the logged-in user; None when the broker has no users file (anyone may do anything)
    user: User | None = None
    #: the ``X-Reason`` header (why a connection is closed)
    reason: str | None = None


R = TypeVar("R", QueueReport, ExchangeReport)

#: what ``?sort=`` may name in /api/queues and /api/exchanges
QUEUE_SORTS: dict[str, Callable[[QueueReport], Any]] = {
    "name": lambda q: q.name,
    "messages": lambda q: q.ready + q.delayed + q.unacked,
    "messages_ready": lambda q: q.ready,
    "messages_unacknowledged": lambda q: q.unacked,
    "message_bytes_ready": lambda q: q.ready_bytes,
    "consumers": lambda q: len(q.consumers),
}
EXCHANGE_SORTS: dict[str, Callable[[ExchangeReport], Any]] = {
    "name": lambda e: e.name,
    "type": lambda e: e.kind,
    "bindings": lambda e: e.bindings,
}
#: the largest ``?page_size=``
PAGE_SIZE_MAX = 500


def listing(
    request: ApiRequest,
    rows: list[R],
    sorts: dict[str, Callable[[R], Any]],
    shape: Callable[[R], dict[str, Any]],
) -> Any:
    """A list, as RabbitMQ's: ``?name=`` keeps the names holding that text, ``?sort=``
    (and ``?sort_reverse=true``) orders them; with ``?page=N`` (``?page_size=``, 100 by
    default) the answer is one page of them, ``{"items": [...], "page": ...}``.  Only
    what is shown is turned into JSON."""
    total = len(rows)
    text = request.query.get("name")
    if text:
        rows = [r for r in rows if text in r.name]
    key = request.query.get("sort")
    if key is not None:
        if key not in sorts:
            raise errors.BadArgs(f"sort is one of {', '.join(sorts)}, not {key!r}")
        rows = sorted(rows, key=sorts[key], reverse=flag(request, "sort_reverse"))
    if "page" not in request.query:
        return [shape(r) for r in rows]
    size = number(request, "page_size", 100, 1, PAGE_SIZE_MAX)
    pages = max(1, -(-len(rows) // size))
    page = number(request, "page", 1, 1, pages)
    return {
        "items": [shape(r) for r in rows[(page - 1) * size : page * size]],
        "page": page,
        "page_size": size,
        "page_count": pages,
        "filtered_count": len(rows),
        "total_count": total,
    }


def flag(request: ApiRequest, name: str) -> bool:
    """The query parameter ``name``: ``true``/``1`` or ``false``/``0`` (the default)."""
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise errors.BadArgs(f"{name} is true or false, not {value!r}")
    return value in ("true", "1")


def number(request: ApiRequest, name: str, default: int, least: int, most: int) -> int:
    """The query parameter ``name``: a decimal integer from ``least`` to ``most``."""
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) < 10) or not least <= int(text) <= most:
        raise errors.BadArgs(f"{name} is an integer from {least} to {most}, not {text!r}")
    return int(text)


def json_object(data: bytes) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}``."""
    if not data.strip():
        return {}
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise errors.BadArgs(f"the body is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise errors.BadArgs("the body must be a JSON object")
    return value


def take(body: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """Take ``key`` out of ``body``: a value of type ``kind``, ``default`` if absent or null."""
    value = body.pop(key, None)
    if value is None:
        return default
    if type(value) is not kind:  # (a bool is no int here)
        raise errors.BadArgs(f"{key} must be {_JSON_NAMES[kind]}, not {json.dumps(value)}")
    return value


_JSON_NAMES = {bool: "true or false", int: "an integer", str: "a string"}


def rabbit_defaults(body: dict[str, Any]) -> None:
    """Accept what RabbitMQ clients send by default when it asks for nothing."""
    if body.pop("auto_delete", False) is not False:
        raise errors.BadArgs("auto_delete is not supported")
    if body.pop("internal", False) is not False:
        raise errors.BadArgs("internal exchanges are not supported")
    arguments = body.pop("arguments", {})
    if arguments not in ({}, None):
        raise errors.BadArgs(
            "arguments are not supported: give mbroker's options (max_length, ttl, ...) "
            "at the top level of the body"
        )


def no_more(body: dict[str, Any]) -> None:
    """Refuse the fields of ``body`` that no :func:`take` took."""
    if body:
        raise errors.BadArgs("unknown field(s): " + ", ".join(sorted(body)))
