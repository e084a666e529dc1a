"""The HTTP front door: a ``twisted.web`` site in the broker's process and reactor.

One leaf resource answers every path: ``/healthz`` (no login), ``/metrics``
(Prometheus), ``/api/...`` (the JSON API of :mod:`mbroker.server.http.api`) and the
dashboard page, ``/`` and ``/static/...`` (:mod:`mbroker.server.http.dashboard`).  For
each request it

* logs the user in with HTTP Basic auth when the broker has a users file, through
  the native protocol's factory (:meth:`BrokerFactory.check_password`: argon2 in the
  reactor's thread pool, a few at a time; a failure is answered after
  ``auth_fail_delay``, as a failed AUTH is);
* refuses a PUT, POST or DELETE that carries neither a JSON content type nor an
  ``X-Requested-With`` header, so that no cross-site HTML form can change anything
  (and sends no CORS header, ever);
* keeps at most ``max_body`` bytes of a request body (``413 TOO_BIG`` beyond);
* answers a change to durable state once the store has it (as the native protocol
  does: a refusal the store reports, such as a cluster's full queue, is the answer,
  and a reply known only then, such as whether a publish's id was new, is made
  then), and turns every :class:`~mbroker.errors.BrokerError` into a JSON error in one
  place (:func:`~mbroker.server.http.api.error_reply`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import Resource

from mbroker import errors
from mbroker.core.broker import Broker
from mbroker.core.snapshots import ConnectionReport
from mbroker.server.auth import Permissions, User
from mbroker.server.http.api import (
    CUSTOM_HEADER,
    MUTATING,
    Api,
    ApiRequest,
    Reply,
    error_reply,
    may_change,
)
from mbroker.server.http.dashboard import Dashboard
from mbroker.server.http.health import health_json
from mbroker.server.http.metrics import Snapshot, exposition
from mbroker.server.http.rates import Rates
from mbroker.server.http.views import encode_json
from mbroker.server.service import BrokerService

log = Logger()
T = TypeVar("T")
#: seconds an HTTP connection may stay idle (twisted.web's default is 12 hours)
IDLE_TIMEOUT = 60.0
#: a list longer than this is encoded to JSON in a thread
_ENCODE_IN_THREAD = 100

_ALL = Permissions()


class BoundedRequest(server.Request):
    """A request that keeps at most ``max_body`` bytes of its body (the rest is read
    and dropped, and ``body_too_big`` set): a client cannot make the broker buffer
    without bound."""

    max_body = 4 * 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_size = 0
        self.body_too_big = False

    def handleContentChunk(self, data: bytes) -> None:
        self.body_size += len(data)
        if self.body_size > self.max_body:
            self.body_too_big = True
            return
        super().handleContentChunk(data)


class HttpResource(Resource):
    """Every path of the HTTP listener (see the module's docstring)."""

    isLeaf = True

    def __init__(
        self, service: BrokerService, reactor: IReactorTime, rates: Rates | None = None
    ) -> None:
        super().__init__()
        self.service = service
        self.reactor = reactor
        self.rates = rates
        self._api: Api | None = None
        self.dashboard = Dashboard()

    def render(self, request: server.Request) -> int:
        d = Deferred.fromCoroutine(self._serve(cast(BoundedRequest, request)))
        d.addErrback(lambda f: log.failure("answering HTTP failed", failure=f))
        return server.NOT_DONE_YET

    async def _serve(self, request: BoundedRequest) -> None:
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))
        try:
            reply = await self._answer(request)
        except errors.BrokerError as e:
            reply = error_reply(e)
        except Exception:
            log.failure("HTTP {method} {path} failed", method=request.method, path=request.path)
            reply = error_reply(errors.Internal("see the broker's log"))
        if not gone:
            _write(request, reply)

    async def _answer(self, request: BoundedRequest) -> Reply:
        path = [p.decode("utf-8", "replace") for p in request.postpath or []]
        method = (request.method or b"").decode("ascii", "replace")
        if path == ["healthz"]:
            if method not in ("GET", "HEAD"):
                raise errors.BadCommand("healthz answers GET")
            status, health = health_json(self.service)
            return Reply(status, health)
        if self.dashboard.handles(path):
            # the page and its files (no data in them: served while the broker starts)
            if self.service.factory is not None:
                await self._login(request)
            return self.dashboard.answer(method, path)
        if (
            not path
            or path[0] not in ("api", "metrics")
            or (path[0] == "metrics" and len(path) > 1)
        ):
            raise errors.NotFound(
                "no such path: " + (request.path or b"").decode("utf-8", "replace")
            )
        service = self.service
        broker, factory = service.broker, service.factory
        if broker is None or factory is None:
            raise errors.Unavailable("the broker is starting: its store is being recovered")
        user = await self._login(request)
        if method in MUTATING and not may_change(
            request.getHeader(b"content-type"), request.getHeader(CUSTOM_HEADER)
        ):
            reply = error_reply(
                errors.BadArgs(
                    "a request that changes something needs Content-Type: application/json "
                    "or an X-Requested-With header"
                )
            )
            return Reply(415, reply.body)
        if request.body_too_big:
            raise errors.TooBig(f"the request body is over {request.max_body} bytes")
        if path[0] == "metrics":
            return await self._metrics(request, broker, user)
        api = self._api
        if api is None or api.broker is not broker:
            api = self._api = self._make_api(broker)
        body = request.content.read() if request.content is not None else b""
        query = {
            k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
            for k, v in (request.args or {}).items()
            if v
        }
        journal = broker.journal
        mark = journal.changes if journal is not None else 0
        reason = request.getHeader(b"x-reason")
        reply = api.handle(
            ApiRequest(
                method,
                tuple(path[1:]),
                query,
                body,
                user,
                reason.decode("utf-8", "replace") if reason is not None else None,
            )
        )
        changed = journal is not None and journal.changes != mark
        if isinstance(reply.body, list) and len(reply.body) > _ENCODE_IN_THREAD:
            # (10,000 queues are 5 MB of JSON: encoded off the reactor thread; the
            # dicts were made for this reply alone)
            data = await self._in_thread(encode_json, reply.body)
            reply = Reply(reply.status, data, ((b"Content-Type", b"application/json"),))
        if changed and journal is not None:
            # a durable change: answer once the store has it (or could not take it)
            committed: Deferred[errors.BrokerError | None] = Deferred()
            journal.on_commit(committed.callback)
            err = await committed
            if err is not None:
                raise err
        return reply if reply.late is None else reply.late()

    def _make_api(self, broker: Broker) -> Api:
        service = self.service

        def connections() -> list[ConnectionReport]:
            factory = service.factory
            return [p.report() for p in factory.protocols] if factory is not None else []

        def extras() -> dict[str, Any]:
            out: dict[str, Any] = {}
            factory = service.factory
            if factory is not None:
                watch = factory.watch
                out["memory_high_water"] = {
                    "limit": watch.high_water,
                    "alarm": watch.alarm,
                    "connections_blocked": len(watch.blocked),
                    "blocked_total": watch.blocked_total,
                    "blocked_publishes": watch.blocked_publishes,
                }
            out["store"] = service.store.stats() if service.store is not None else None
            return out

        def alarm() -> bool:
            factory = service.factory
            return factory is not None and factory.watch.alarm

        def disconnect(session: int, reason: str) -> None:
            factory = service.factory
            for p in list(factory.protocols) if factory is not None else []:
                if p.report().session == session:
                    p.disconnect(reason)

        rates = self.rates
        details = rates.details if rates is not None else dict
        return Api(broker, connections, extras, alarm, details, disconnect)

    async def _login(self, request: BoundedRequest) -> User | None:
        factory = self.service.factory
        assert factory is not None
        if not factory.auth_required:
            return None
        header = request.getHeader(b"authorization") or b""
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"basic":
            raise errors.NoAuth("log in with HTTP Basic auth (a user of the users file)")
        try:
            name, colon, password = (
                base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, ValueError):
            name, colon, password = "", "", ""
        if not colon:
            raise errors.NoAuth("malformed HTTP Basic credentials")
        user, problem = await factory.check_password(name, password)
        if problem is not None:
            log.error("the users file was not re-read: {problem}", problem=problem)
        if user is None:
            log.warn("failed HTTP login as {user!r} from {peer}", user=name, peer=_peer(request))
            await deferLater(self.reactor, self.service.config.auth_fail_delay, lambda: None)
            raise errors.AuthFailed("wrong user or password")
        return user

    async def _metrics(self, request: BoundedRequest, broker: Broker, user: User | None) -> Reply:
        if (request.method or b"") not in (b"GET", b"HEAD"):
            raise errors.BadCommand("metrics answers GET")
        perms = (
            None
            if user is None or user.permissions == _ALL or user.may_monitor()
            else user.permissions
        )
        if perms is not None and not perms.may_see_broker():
            name = user.name if user is not None else "?"
            raise errors.Forbidden(
                f"{name} may not see the broker's figures (no right on any name)"
            )
        queues = broker.queue_reports()
        exchanges = broker.exchange_reports()
        if perms is not None:
            queues = [q for q in queues if perms.may_see(q.name)]
            exchanges = [e for e in exchanges if perms.may_see(e.name)]
        factory, store = self.service.factory, self.service.store
        watch = factory.watch if factory is not None else None
        bytes_in, bytes_out = factory.bytes_totals() if factory is not None else (0, 0)
        snapshot = Snapshot(
            {k: int(v) for k, v in broker.stats()},
            queues,
            exchanges,
            watch.high_water if watch is not None else 0,
            watch.alarm if watch is not None else False,
            len(watch.blocked) if watch is not None else 0,
            memory_blocked=watch.blocked_total if watch is not None else 0,
            memory_blocked_publishes=watch.blocked_publishes if watch is not None else 0,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            store=store.stats() if store is not None else None,
            fsync=store.fsync_latency() if store is not None else None,
        )
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        # formatting 10,000 queues takes a while: in a thread
        data, content_type = await self._in_thread(exposition, snapshot, accept)
        return Reply(200, data, ((b"Content-Type", content_type.encode("latin-1")),))

    async def _in_thread(self, f: Callable[..., T], *args: Any) -> T:
        """``f(*args)`` in the reactor's thread pool (inline when it has none)."""
        reactor = self.reactor
        if IReactorThreads.providedBy(reactor):
            return await deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)
        return f(*args)


class HttpSite(server.Site):
    """The site: bounded request bodies, no access log line per request, no tracebacks."""

    requestFactory = BoundedRequest
    displayTracebacks = False
    noisy = False

    def log(self, request: http.Request) -> None:
        pass


def make_site(
    service: BrokerService, reactor: IReactorTime, rates: Rates | None = None
) -> HttpSite:
    """The HTTP site of ``service``'s broker (which may not exist yet: it answers 503
    until the store is recovered)."""
    site = HttpSite(HttpResource(service, reactor, rates), timeout=IDLE_TIMEOUT, reactor=reactor)
    # a JSON body may spell a payload at most ~4/3 longer (base64); the wire's
    # max-payload check applies to the decoded payload
    max_body = 2 * service.config.max_payload + 64 * 1024

    class Request(BoundedRequest):
        pass

    Request.max_body = max_body
    site.requestFactory = Request
    return site


def _write(request: server.Request, reply: Reply) -> None:
    request.setResponseCode(reply.status)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    body = reply.body
    if isinstance(body, bytes):
        data = body
    elif body is None:
        data = b""
    else:
        request.setHeader(b"Content-Type", b"application/json")
        data = encode_json(body)
    for name, value in reply.headers:
        request.setHeader(name, value)
    if data:
        request.write(data)
    request.finish()


def _peer(request: server.Request) -> str:
    peer = request.getClientAddress()
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)
