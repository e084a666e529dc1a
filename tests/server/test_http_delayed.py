"""The HTTP API's ``messages_delayed`` counts copies published with ``delay=MS``
(contract section 7) as well as NACK delays; ``messages`` counts them too."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock

from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.http.api import Api, ApiRequest
from mbroker.wire.frames import Props, QueueOptions


def get(api: Api, path: str) -> Any:
    reply = api.handle(ApiRequest("GET", tuple(path.split("/")), {}, b""))
    return json.loads(json.dumps(reply.body))


def test_delayed_copies_in_the_api_figures() -> None:
    clock = Clock()
    broker = Broker(clock, Config())
    broker.create(None, "jobs", "queue", QueueOptions())
    broker.publish("jobs", "", b"now")
    assert broker.publish_props("jobs", "", b"later", None, Props(delay=1000)) == (1, False)
    (q,) = get(Api(broker), "queues")
    assert (q["messages"], q["messages_ready"], q["messages_delayed"]) == (2, 1, 1)
    totals = get(Api(broker), "overview")["queue_totals"]
    assert (totals["messages_ready"], totals["messages_delayed"]) == (1, 1)
    clock.advance(1)
    (q,) = get(Api(broker), "queues")
    assert (q["messages"], q["messages_ready"], q["messages_delayed"]) == (2, 2, 0)
