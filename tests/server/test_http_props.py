"""Message properties in the HTTP API (:mod:`mbroker.server.http.message_props`): a test
publish with RabbitMQ's ``properties`` object, and peek showing them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.task import Clock

from mbroker import errors
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.core.model import Published
from mbroker.server.http.api import Api, ApiRequest, Reply, error_reply
from mbroker.wire.props import make_props


@pytest.fixture
def api() -> Iterator[Api]:
    yield Api(Broker(Clock(), Config()))


def call(api: Api, method: str, path: str, body: Any = None, **query: str) -> Reply:
    data = b"" if body is None else json.dumps(body).encode()
    return api.handle(ApiRequest(method, tuple(path.strip("/").split("/")), query, data))


def refused(api: Api, method: str, path: str, body: Any = None) -> Reply:
    try:
        reply = call(api, method, path, body)
    except errors.BrokerError as e:
        return error_reply(e)
    raise AssertionError(f"{method} {path} was not refused: {reply}")


def test_publish_with_properties_and_peek_them(api: Api) -> None:
    call(api, "PUT", "queues/q", {})
    body = {
        "payload": "hi",
        "properties": {
            "headers": {"trace": "t 1", "n": 3, "ok": True},
            "priority": 5,
            "message_id": "m-1",
            "content_type": "text/plain",
            "correlation_id": "c-1",
            "delivery_mode": 2,
        },
    }
    assert call(api, "POST", "exchanges/q/publish", body).body == {"routed": True, "queues": 1}
    call(api, "POST", "exchanges/q/publish", {"payload": "plain", "properties": {}})
    first, second = call(api, "GET", "queues/q/messages").body
    assert first["properties"] == {
        "headers": {
            "trace": "t 1",
            "n": "3",
            "ok": "true",
            "content-type": "text/plain",
            "correlation-id": "c-1",
        },
        "priority": 5,
        "message_id": "m-1",
    }
    assert second["properties"] == {}


def test_peek_shows_binary_header_values_in_base64(api: Api) -> None:
    call(api, "PUT", "queues/q", {})
    api.broker.publish_props("q", "", b"x", None, make_props({"b": b"\xff"}))
    [m] = call(api, "GET", "queues/q/messages").body
    assert m["properties"] == {"headers_base64": {"b": base64.b64encode(b"\xff").decode()}}


def test_expiration_is_the_ttl(api: Api) -> None:
    call(api, "PUT", "queues/q", {})
    call(
        api, "POST", "exchanges/q/publish", {"payload": "x", "properties": {"expiration": "60000"}}
    )
    [m] = call(api, "GET", "queues/q/messages").body
    assert m["expires_at"] == 60000 and m["properties"] == {}


@pytest.mark.parametrize(
    "properties, says",
    [
        ({"priority": 10}, "priority"),
        ({"priority": "5"}, "priority"),
        ({"message_id": "a b"}, "id must be"),
        ({"headers": {"bad name": "x"}}, "bad header name"),
        ({"headers": {"x": [1]}}, "string, number or boolean"),
        ({"headers": "x"}, "JSON object"),
        ({"user_id": "me"}, "unsupported message properties: user_id"),
        ({"delivery_mode": 3}, "delivery_mode"),
        ({"expiration": 5}, "expiration"),
        ("yes", "JSON object"),
    ],
)
def test_bad_properties_are_refused_and_nothing_published(
    api: Api, properties: Any, says: str
) -> None:
    call(api, "PUT", "queues/q", {})
    reply = refused(api, "POST", "exchanges/q/publish", {"payload": "x", "properties": properties})
    assert reply.status == 400 and says in reply.body["reason"], reply.body
    assert call(api, "GET", "queues/q").body["messages_ready"] == 0


def test_a_duplicate_id_is_answered_routed_false(api: Api) -> None:
    call(api, "PUT", "queues/q", {})
    body = {"payload": "x", "properties": {"message_id": "m-1"}}
    first = call(api, "POST", "exchanges/q/publish", body)
    assert (first.status, first.body, first.late) == (200, {"routed": True, "queues": 1}, None)
    again = call(api, "POST", "exchanges/q/publish", body)
    assert (again.status, again.body) == (200, {"routed": False, "queues": 1})


def test_a_publish_told_later_is_answered_once_known(api: Api) -> None:
    """A broker that learns from its store whether an id is new (a cluster node) returns
    a :class:`Published`: the reply is made from it once the store has answered (the
    site calls ``late`` after the journal's commit)."""
    call(api, "PUT", "queues/q", {})
    told = Published(2)
    api.broker.publish_props = lambda *args: told
    reply = call(api, "POST", "exchanges/q/publish", {"properties": {"message_id": "m-1"}})
    assert reply.late is not None and reply.body is None
    told.reached, told.duplicate = 3, True  # (what the store said: the first reached 3)
    assert reply.late() == Reply(200, {"routed": False, "queues": 3})
    told.duplicate = False
    assert reply.late() == Reply(200, {"routed": True, "queues": 3})
