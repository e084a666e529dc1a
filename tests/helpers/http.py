"""A broker with its HTTP service on loopback ports, and a small JSON client for it."""

from __future__ import annotations

import base64
import json
from io import BytesIO
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers

from mbroker.config import Config
from mbroker.server.http.service import HttpService
from mbroker.server.service import BrokerService, describe_address

JSON = {"Content-Type": "application/json"}


class _Body(Protocol):
    def __init__(self, done: Deferred[bytes]) -> None:
        self.done = done
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if reason is not None and not reason.check(ResponseDone):
            self.done.errback(reason)
        else:
            self.done.callback(b"".join(self.chunks))


def read_body(response: Any) -> Deferred[bytes]:
    done: Deferred[bytes] = Deferred()
    response.deliverBody(_Body(done))
    return done


class Site:
    """A BrokerService with an HttpService child, both on loopback ports."""

    def __init__(self, service: BrokerService, http: HttpService) -> None:
        self.service = service
        self.http = http
        self.base = "http://" + describe_address(http.ports[0].getHost())
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=self.pool)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        user: tuple[str, str] | None = None,
    ) -> tuple[int, Headers, bytes]:
        h = Headers()
        for k, v in (headers or {}).items():
            h.addRawHeader(k, v)
        if user is not None:
            token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
            h.addRawHeader("Authorization", "Basic " + token)
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        response = await self.agent.request(
            method.encode(), (self.base + path).encode(), h, producer
        )
        data = await read_body(response)
        return response.code, response.headers, data

    async def json(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = kw.pop("headers", JSON)
        status, h, raw = await self.request(method, path, data, headers, **kw)
        if raw:
            assert h.getRawHeaders("content-type") == ["application/json"]
            return status, json.loads(raw)
        return status, None


async def start_site(
    config: Config, data_dir: str | None = None, http: str = "tcp:0:interface=127.0.0.1"
) -> Site:
    service = BrokerService(reactor, config, ["tcp:0:interface=127.0.0.1"], data_dir)
    http_service = HttpService(reactor, service, [http])
    http_service.setServiceParent(service)
    service.startService()
    await eventually(lambda: service.ports and http_service.ports)
    return Site(service, http_service)


async def eventually(predicate: Any, timeout: float = 10.0) -> None:
    waited = 0.0
    while not predicate():
        assert waited < timeout, "condition not met in time"
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01
