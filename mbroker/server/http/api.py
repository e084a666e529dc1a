"""The JSON API: RabbitMQ's management paths, translated onto the broker's public methods.

Each handler takes an :class:`ApiRequest` (method, path below ``/api``, query, body,
user) and returns a :class:`Reply`, or raises a :class:`~mbroker.errors.BrokerError`;
:func:`error_reply` is the one place that turns such an error into a JSON error
(``{"error": "NOT_FOUND", "reason": "..."}``) with the HTTP status of its wire code.
Nothing here touches a socket: :mod:`mbroker.server.http.site` feeds it requests.

Commands are checked by the wire protocol's own rules: a CREATE, BIND, UNBIND or
PUBLISH made from a JSON body is encoded as the line a client would send and decoded
again by :class:`~mbroker.wire.commands.CommandDecoder`, so a name, key, option or
payload size the native protocol refuses is refused here too, with the same code.
Permissions are the users file's, as the native protocol applies them, widened by the
user's tags (as RabbitMQ's management plugin has them): a ``monitoring`` user sees
every figure (every queue, exchange, binding and connection, whatever its patterns),
an ``administrator`` also takes every action; a user without tags gets what its
patterns allow (and, as before tags, sees every connection with ``* * *``), and the
broker-wide ``/api/overview`` only with a right on some name, as ``STATS``.

RabbitMQ's virtual-host segment is accepted and ignored (mbroker has one namespace):
``/api/queues/%2F/jobs`` is ``/api/queues/jobs``.  A name never holds ``/``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, get_args

import attrs

from mbroker import errors
from mbroker.core.broker import Broker
from mbroker.core.model import Published
from mbroker.core.snapshots import BindingReport, ConnectionReport, QueueTotals
from mbroker.server.auth import ADMINISTRATOR, TAGS, Permissions
from mbroker.server.http.message_props import publish_properties
from mbroker.server.http.request import (
    EXCHANGE_SORTS,
    QUEUE_SORTS,
    ApiRequest,
    flag,
    json_object,
    listing,
    no_more,
    number,
    rabbit_defaults,
    take,
)
from mbroker.server.http.views import (
    VHOST,
    binding_json,
    connection_json,
    exchange_json,
    message_json,
    overview_json,
    props,
    queue_json,
)
from mbroker.wire import frames
from mbroker.wire.commands import CommandDecoder
from mbroker.wire.encode import encode_command

#: The HTTP status for each wire error code (anything else: 500).
STATUS_BY_CODE: dict[str, int] = {
    errors.BadCommand.code: 400,
    errors.BadArgs.code: 400,
    errors.BadFrame.code: 400,
    errors.LineTooLong.code: 400,
    errors.TooBig.code: 413,
    errors.NotFound.code: 404,
    errors.Exists.code: 409,
    errors.WrongKind.code: 409,
    errors.NotEmpty.code: 409,
    errors.InUse.code: 409,
    errors.Overflow.code: 409,
    errors.NoAuth.code: 401,
    errors.AuthFailed.code: 401,
    errors.Forbidden.code: 403,
    errors.Limit.code: 429,
    errors.Unavailable.code: 503,
    errors.Internal.code: 500,
}

#: Content types a request that changes something may carry (see :func:`may_change`).
JSON_TYPES = (b"application/json",)
#: ... or, with any content type, this header (what JavaScript libraries send)
CUSTOM_HEADER = b"x-requested-with"
#: The most messages ``GET /api/queues/NAME/messages`` shows.
PEEK_MAX = 100
#: What changes state: refused without a JSON content type or the custom header.
MUTATING = frozenset({"PUT", "POST", "DELETE", "PATCH"})
#: Seconds ``/api/overview`` keeps its sum of the queues' messages (a walk of every
#: queue: about 1 ms at 10,000 queues) before summing again.
TOTALS_TTL = 1.0

_ALL = Permissions()


@attrs.frozen
class Reply:
    """An answer: HTTP status, a JSON-able body (None: no body) and extra headers; or,
    with ``late``, the answer is ``late()`` once the journal's commit is answered (a
    cluster node learns from Redis whether a publish's id is new)."""

    status: int
    body: Any = None
    headers: tuple[tuple[bytes, bytes], ...] = ()
    late: Callable[[], Reply] | None = None


def error_reply(e: errors.BrokerError) -> Reply:
    """The JSON error for ``e``: its wire code and text, with the matching HTTP status."""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    status = STATUS_BY_CODE.get(e.code, 500)
    if isinstance(e, (errors.NoAuth, errors.AuthFailed)):
        headers = ((b"WWW-Authenticate", b'Basic realm="mbroker"'),)
    return Reply(status, {"error": e.code, "reason": e.text}, headers)


def may_change(content_type: bytes | None, custom_header: bytes | None) -> bool:
    """Whether a PUT/POST/DELETE carries what a cross-site HTML form cannot send: a JSON
    content type, or the custom header.  (No CORS headers are ever sent, so a browser
    sends neither cross-site without a preflight that we do not answer.)"""
    if custom_header is not None:
        return True
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() in JSON_TYPES


# -------------------------------------------------------------------- the routes

Handler = Callable[["Api", ApiRequest, list[str]], Reply]
#: (method, path pattern, handler); ``*`` in a pattern is a name (the handler's args)
ROUTES: list[tuple[str, tuple[str, ...], Handler]] = []


def _route(method: str, *pattern: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ROUTES.append((method, pattern, handler))
        return handler

    return register


def match_route(pattern: tuple[str, ...], path: tuple[str, ...]) -> list[str] | None:
    """The names a path gives a route's pattern, or None when it does not match."""
    if len(pattern) != len(path):
        return None
    names = []
    for want, got in zip(pattern, path):
        if want == "*":
            names.append(got)
        elif want != got:
            return None
    return names


class Api:
    """The JSON API over one broker and its connections.

    ``connections`` lists the open connections' reports and ``disconnect(session,
    reason)`` closes one; ``extras`` adds the front door's figures (memory watch,
    store) to ``/api/overview``, and ``rates`` its message rates
    (:meth:`mbroker.server.http.rates.Rates.details`).
    """

    def __init__(
        self,
        broker: Broker,
        connections: Callable[[], list[ConnectionReport]] = list,
        extras: Callable[[], dict[str, Any]] = dict,
        memory_alarm: Callable[[], bool] = lambda: False,
        rates: Callable[[], dict[str, dict[str, float]]] = dict,
        disconnect: Callable[[int, str], None] = lambda session, reason: None,
    ) -> None:
        self.broker = broker
        self.rates = rates
        self.disconnect = disconnect
        self.connections = connections
        self.extras = extras
        self.memory_alarm = memory_alarm
        #: the overview's queue totals, and when they were summed
        self._totals: QueueTotals | None = None
        self._totals_at = 0.0
        config = broker.config
        self._max_line = config.max_line
        self._max_payload = config.max_payload

    def handle(self, request: ApiRequest) -> Reply:
        """Answer ``request``; raises :class:`~mbroker.errors.BrokerError`."""
        path = request.path
        if len(path) >= 2 and path[1] == VHOST:  # RabbitMQ's vhost: the only one
            path = path[:1] + path[2:]
        allowed = []
        for method, pattern, handler in ROUTES:
            names = match_route(pattern, path)
            if names is None:
                continue
            if method == request.method or (method == "GET" and request.method == "HEAD"):
                return handler(self, request, names)
            allowed.append(method)
        if allowed:
            reply = error_reply(errors.BadCommand(f"{request.method} is not allowed here"))
            allow = ", ".join(sorted(set(allowed)))
            return attrs.evolve(reply, status=405, headers=((b"Allow", allow.encode()),))
        raise errors.NotFound("no such API path: /api/" + "/".join(request.path))

    # ------------------------------------------------------------ wire checks

    def _checked(self, cmd: frames.Command) -> Any:
        """``cmd`` as the native protocol would take it: encoded, decoded, so refused
        (``BAD_ARGS``, ``TOO_BIG``, ...) wherever the wire refuses it."""
        decoder = CommandDecoder(self._max_line, self._max_payload)
        items = decoder.feed(encode_command(cmd))
        if len(items) != 1:
            raise errors.BadArgs("not one command")
        item = items[0]
        if isinstance(item, errors.BrokerError):
            raise item
        return item

    # -------------------------------------------------------------- overview

    @_route("GET", "whoami")
    def whoami(self, request: ApiRequest, names: list[str]) -> Reply:
        """The logged-in user and its tags, as RabbitMQ answers it (so that a page can
        leave out what the user may not do); on an open broker, no name and the
        ``administrator`` tag (anyone may do anything)."""
        user = request.user
        if user is None:
            return Reply(200, {"name": None, "tags": [ADMINISTRATOR]})
        return Reply(200, {"name": user.name, "tags": [t for t in TAGS if t in user.tags]})

    @_route("GET", "overview")
    def overview(self, request: ApiRequest, names: list[str]) -> Reply:
        """The broker's figures, refused (as STATS) to a user with no tag and no right
        on any name; the queue totals are one walk of the queues every
        :data:`TOTALS_TTL` seconds at most, however often it is asked."""
        perms = _perms(request, act=False)
        if perms is not None and not perms.may_see_broker():
            raise _forbid(request, "see", "the broker's figures (no right on any name)")
        now = self.broker.clock.seconds()
        totals = self._totals
        if totals is None or not 0 <= now - self._totals_at < TOTALS_TTL:
            totals = self._totals = self.broker.queue_totals()
            self._totals_at = now
        stats = {k: int(v) for k, v in self.broker.stats()}
        body = overview_json(stats, totals, self.rates())
        body.update(self.extras())
        return Reply(200, body)

    # ----------------------------------------------------------------- queues

    @_route("GET", "queues")
    def queues(self, request: ApiRequest, names: list[str]) -> Reply:
        perms = _perms(request, act=False)
        visible = [q for q in self.broker.queue_reports() if perms is None or perms.may_see(q.name)]
        return Reply(200, listing(request, visible, QUEUE_SORTS, queue_json))

    @_route("GET", "queues", "*")
    def queue(self, request: ApiRequest, names: list[str]) -> Reply:
        name = names[0]
        _see(request, name)
        (q,) = self.broker.queue_reports(name)
        body = queue_json(q)
        body["consumer_details"] = [
            {
                "connection": c.session,
                "sid": c.sid,
                "ack": "manual" if c.manual else "auto",
                "prefetch": c.prefetch,
                "ack_timeout": c.ack_timeout,
                "in_flight": c.in_flight,
                "delivered": c.delivered,
                "active": c.active,
            }
            for c in q.consumers
        ]
        body["bindings"] = [
            binding_json(b) for b in self.broker.binding_reports() if b.queue == name
        ]
        return Reply(200, body)

    @_route("PUT", "queues", "*")
    def create_queue(self, request: ApiRequest, names: list[str]) -> Reply:
        name = names[0]
        body = json_object(request.body)
        rabbit_defaults(body)
        if body.pop("exclusive", False) is not False:
            raise errors.BadArgs(
                "an exclusive queue belongs to a connection: create it over the wire protocol"
            )
        options: dict[str, Any] = {"durable": take(body, "durable", bool, False)}
        for key in ("max_length", "max_bytes", "ttl", "max_deliver"):
            value = take(body, key, int, None)
            if value is not None:
                options[key] = value
        overflow = take(body, "overflow", str, "drop-head")
        if overflow not in get_args(frames.Overflow):
            raise errors.BadArgs(f"overflow must be drop-head or reject, not {overflow!r}")
        options["overflow"] = overflow
        dead_letter = take(body, "dead_letter", str, None)
        if dead_letter is not None:
            options["dead_letter"] = dead_letter
        no_more(body)
        cmd = frames.Create(name, "queue", frames.QueueOptions(**options))
        return self._create(request, self._checked(cmd))

    @_route("DELETE", "queues", "*")
    def delete_queue(self, request: ApiRequest, names: list[str]) -> Reply:
        name = names[0]
        _check(request, Permissions.may_configure, "configure", name)
        self.broker.queue_reports(name)  # NOT_FOUND, or WRONG_KIND for an exchange
        dropped = self.broker.delete(name, flag(request, "if-empty"), flag(request, "if-unused"))
        return Reply(200, {"dropped": dropped})

    @_route("DELETE", "queues", "*", "contents")
    def purge(self, request: ApiRequest, names: list[str]) -> Reply:
        name = names[0]
        _check(request, Permissions.may_read, "read from", name)
        return Reply(200, {"purged": self.broker.purge(name)})

    @_route("GET", "queues", "*", "messages")
    def peek(self, request: ApiRequest, names: list[str]) -> Reply:
        """The first ``count`` ready messages (default 10, at most 100), left in the queue;
        payloads cut to ``truncate`` bytes (default and at most max-payload)."""
        name = names[0]
        _check(request, Permissions.may_read, "read from", name)
        count = number(request, "count", 10, 1, PEEK_MAX)
        truncate = number(request, "truncate", self._max_payload, 0, self._max_payload)
        return Reply(200, [message_json(m, truncate) for m in self.broker.peek(name, count)])

    @_route("GET", "queues", "*", "bindings")
    def queue_bindings(self, request: ApiRequest, names: list[str]) -> Reply:
        name = names[0]
        _see(request, name)
        self.broker.queue_reports(name)
        return Reply(
            200, [binding_json(b) for b in self.broker.binding_reports() if b.queue == name]
        )

    # -------------------------------------------------------------- exchanges

    @_route("GET", "exchanges")
    def exchanges(self, request: ApiRequest, names: list[str]) -> Reply:
        perms = _perms(request, act=False)
        visible = [
            e for e in self.broker.exchange_reports() if perms is None or perms.may_see(e.name)
        ]
        return Reply(200, listing(request, visible, EXCHANGE_SORTS, exchange_json))

    @_route("GET", "exchanges", "*")
    def exchange(self, request: ApiRequest, names: list[str]) -> Reply:
        name = names[0]
        _see(request, name)
        (e,) = self.broker.exchange_reports(name)
        body = exchange_json(e)
        body["bindings"] = [
            binding_json(b) for b in self.broker.binding_reports() if b.exchange == name
        ]
        return Reply(200, body)

    @_route("PUT", "exchanges", "*")
    def create_exchange(self, request: ApiRequest, names: list[str]) -> Reply:
        name = names[0]
        body = json_object(request.body)
        rabbit_defaults(body)
        kind = take(body, "type", str, None)
        if kind not in frames.EXCHANGE_KINDS:
            raise errors.BadArgs(f"an exchange's type is direct, fanout or topic, not {kind!r}")
        durable = take(body, "durable", bool, False)
        no_more(body)
        cmd = frames.Create(name, kind, frames.QueueOptions(durable=durable))
        return self._create(request, self._checked(cmd))

    def _create(self, request: ApiRequest, cmd: frames.Create) -> Reply:
        perms = _perms(request, act=True)
        if perms is not None:
            _check(request, Permissions.may_configure, "configure", cmd.name)
            if cmd.options.dead_letter is not None:
                _check(request, Permissions.may_write, "write to", cmd.options.dead_letter)
        made = self.broker.create(None, cmd.name, cmd.kind, cmd.options)
        if not made:
            return Reply(204)
        kind = "queues" if cmd.kind == "queue" else "exchanges"
        location = f"/api/{kind}/{cmd.name}".encode()
        return Reply(201, {"created": cmd.name}, ((b"Location", location),))

    @_route("DELETE", "exchanges", "*")
    def delete_exchange(self, request: ApiRequest, names: list[str]) -> Reply:
        name = names[0]
        _check(request, Permissions.may_configure, "configure", name)
        self.broker.exchange_reports(name)  # NOT_FOUND, or WRONG_KIND for a queue
        self.broker.delete(name, if_unused=flag(request, "if-unused"))
        return Reply(200, {"deleted": name})

    @_route("POST", "exchanges", "*", "publish")
    def publish(self, request: ApiRequest, names: list[str]) -> Reply:
        """A test message to an exchange, or straight to a queue (mbroker allows both)."""
        name = names[0]
        body = json_object(request.body)
        key = take(body, "routing_key", str, "")
        payload_text = take(body, "payload", str, "")
        encoding = take(body, "payload_encoding", str, "string")
        ttl = take(body, "ttl", int, None)
        extra, expiration = publish_properties(body.pop("properties", None))
        ttl = expiration if ttl is None else ttl
        no_more(body)
        if encoding == "string":
            payload = payload_text.encode("utf-8")
        elif encoding == "base64":
            try:
                payload = base64.b64decode(payload_text, validate=True)
            except (binascii.Error, ValueError):
                raise errors.BadArgs("payload is not valid base64") from None
        else:
            raise errors.BadArgs(f"payload_encoding is string or base64, not {encoding!r}")
        _check(request, Permissions.may_write, "write to", name)
        if self.memory_alarm():
            raise errors.Unavailable("the broker's memory is over its high-water mark")
        cmd: frames.Publish = self._checked(frames.Publish(name, key, payload, ttl))
        if extra is None:
            return _published(self.broker.publish(cmd.name, cmd.key, cmd.payload, cmd.ttl))
        # (a duplicate id: routed false, queues what the first one reached)
        result = self.broker.publish_props(name, key, payload, ttl, extra)
        if isinstance(result, Published):  # (known once the store has answered)
            return Reply(200, late=lambda: _published(result.reached, result.duplicate))
        return _published(*result)

    # --------------------------------------------------------------- bindings

    @_route("GET", "bindings")
    def bindings(self, request: ApiRequest, names: list[str]) -> Reply:
        return Reply(200, [binding_json(b) for b in self._visible_bindings(request)])

    @_route("POST", "bindings")
    def bind_body(self, request: ApiRequest, names: list[str]) -> Reply:
        body = json_object(request.body)
        source = take(body, "source", str, None)
        destination = take(body, "destination", str, None)
        if source is None or destination is None:
            raise errors.BadArgs("a binding needs a source (exchange) and a destination (queue)")
        if take(body, "destination_type", str, "queue") not in ("q", "queue"):
            raise errors.BadArgs("a binding's destination is a queue")
        return self._bind(request, source, destination, body)

    @_route("GET", "bindings", "e", "*", "q", "*")
    def bindings_between(self, request: ApiRequest, names: list[str]) -> Reply:
        exchange, queue = names
        found = [
            b
            for b in self._visible_bindings(request)
            if b.exchange == exchange and b.queue == queue
        ]
        return Reply(200, [binding_json(b) for b in found])

    @_route("POST", "bindings", "e", "*", "q", "*")
    def bind_path(self, request: ApiRequest, names: list[str]) -> Reply:
        exchange, queue = names
        return self._bind(request, exchange, queue, json_object(request.body))

    def _bind(self, request: ApiRequest, exchange: str, queue: str, body: dict[str, Any]) -> Reply:
        key = take(body, "routing_key", str, "")
        if body.pop("arguments", {}) not in ({}, None):
            raise errors.BadArgs("binding arguments are not supported")
        no_more(body)
        cmd: frames.Bind = self._checked(frames.Bind(queue, exchange, key))
        _check_binding(request, cmd.queue, cmd.exchange)
        made = self.broker.bind(cmd.queue, cmd.exchange, cmd.key)
        location = f"/api/bindings/e/{cmd.exchange}/q/{cmd.queue}/{props(cmd.key)}".encode()
        return Reply(
            201 if made else 204, {"created": made} if made else None, ((b"Location", location),)
        )

    @_route("DELETE", "bindings", "e", "*", "q", "*", "*")
    def unbind(self, request: ApiRequest, names: list[str]) -> Reply:
        exchange, queue, props = names
        key = "" if props == "~" else props
        cmd: frames.Unbind = self._checked(frames.Unbind(queue, exchange, key))
        _check_binding(request, cmd.queue, cmd.exchange)
        self.broker.unbind(cmd.queue, cmd.exchange, cmd.key)
        return Reply(
            200, {"deleted": binding_json(BindingReport(cmd.exchange, cmd.queue, cmd.key))}
        )

    def _visible_bindings(self, request: ApiRequest) -> list[BindingReport]:
        perms = _perms(request, act=False)
        return [
            b
            for b in self.broker.binding_reports()
            if perms is None or (perms.may_see(b.queue) and perms.may_see(b.exchange))
        ]

    # ------------------------------------------------------------ connections

    @_route("GET", "connections")
    def list_connections(self, request: ApiRequest, names: list[str]) -> Reply:
        return Reply(200, [connection_json(c) for c in self._visible_connections(request)])

    @_route("GET", "connections", "*")
    def connection(self, request: ApiRequest, names: list[str]) -> Reply:
        return Reply(200, connection_json(self._connection(request, names[0])))

    @_route("DELETE", "connections", "*")
    def close_connection(self, request: ApiRequest, names: list[str]) -> Reply:
        """Close a connection: the client gets ``-ERR LIMIT <reason>`` (the
        ``X-Reason`` header, as RabbitMQ takes it, or "closed by an operator")."""
        c = self._connection(request, names[0])
        if c not in self._visible_connections(request, act=True):  # (a monitoring user)
            user = request.user.name if request.user is not None else "?"
            raise errors.Forbidden(f"{user} may not close connection {c.session}")
        reason = request.reason or "closed by an operator"
        if not reason.isprintable() or len(reason) > 200:
            raise errors.BadArgs("the reason is at most 200 printable characters")
        self.disconnect(c.session, reason)
        return Reply(200, {"closed": c.session})

    def _visible_connections(
        self, request: ApiRequest, act: bool = False
    ) -> list[ConnectionReport]:
        """The connections the user may see (or, with ``act``, close): all of them for
        a user whose permissions are ``* * *`` or whose tag covers it (monitoring to
        see, administrator to close); its own for any other user."""
        user = request.user
        every = (
            user is None
            or user.permissions == _ALL
            or (user.may_administer() if act else user.may_monitor())
        )
        return [
            c
            for c in sorted(self.connections(), key=_session_of)
            if every or (user is not None and c.user == user.name)
        ]

    def _connection(self, request: ApiRequest, name: str) -> ConnectionReport:
        for c in self._visible_connections(request):
            if str(c.session) == name:
                return c
        raise errors.NotFound(f"no connection {name}")


# ------------------------------------------------------------------- helpers


def _published(reached: int, duplicate: bool = False) -> Reply:
    return Reply(200, {"routed": reached > 0 and not duplicate, "queues": reached})


def _session_of(c: ConnectionReport) -> int:
    return c.session


def _perms(request: ApiRequest, act: bool) -> Permissions | None:
    """The patterns that limit what the request's user may see (or, with ``act``, do);
    None when nothing does: no users file, ``* * *``, or a tag that covers it
    (``monitoring`` or ``administrator`` to see, ``administrator`` to act)."""
    user = request.user
    if user is None or user.permissions == _ALL:
        return None
    if user.may_administer() or (not act and user.may_monitor()):
        return None
    return user.permissions


def _forbid(request: ApiRequest, what: str, name: str) -> errors.Forbidden:
    user = request.user.name if request.user is not None else "?"
    return errors.Forbidden(f"{user} may not {what} {name}")


def _see(request: ApiRequest, name: str) -> None:
    """Refuse to show ``name``'s figures to a user with no right to it nor a tag."""
    perms = _perms(request, act=False)
    if perms is not None and not perms.may_see(name):
        raise _forbid(request, "see", name)


def _check(
    request: ApiRequest, may: Callable[[Permissions, str], bool], what: str, name: str
) -> None:
    """Refuse an action on ``name`` that the user's patterns do not allow (unless the
    user is an administrator).  Peeking at messages is an action: it shows payloads,
    which ``monitoring`` does not open."""
    perms = _perms(request, act=True)
    if perms is not None and not may(perms, name):
        raise _forbid(request, what, name)


def _check_binding(request: ApiRequest, queue: str, exchange: str) -> None:
    """BIND and UNBIND: configure the queue, read the exchange (as the native protocol)."""
    _check(request, Permissions.may_configure, "configure", queue)
    _check(request, Permissions.may_read, "read from", exchange)
