"""The HTTP front door: the JSON API, /metrics and /healthz.

Two tiers: :class:`Api` driven directly over a broker on a ``task.Clock`` (every route,
every refusal), and the real site of a real :class:`BrokerService` on loopback ports,
driven with ``twisted.web.client.Agent`` (status codes, headers, login, CSRF guard,
the Prometheus text, the store's commit).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.logger import formatEvent

from mbroker import errors
from mbroker.client.connection import connect
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.core.journal import Journal
from mbroker.core.namespace import Namespace
from mbroker.core.snapshots import ConnectionReport
from mbroker.server.auth import Pattern, Permissions, User
from mbroker.server.factory import BrokerFactory
from mbroker.server.http.api import TOTALS_TTL, Api, ApiRequest, Reply, error_reply
from mbroker.server.http.health import problem
from mbroker.server.http.service import HttpService
from mbroker.server.http.site import IDLE_TIMEOUT, make_site
from mbroker.server.service import BrokerService, ListenError, describe_address
from mbroker.server.tap import Options, makeService
from mbroker.wire.frames import QueueOptions
from tests.helpers.auth import cheap_hash
from tests.helpers.http import JSON, Site, eventually, start_site
from tests.helpers.logs import logged

# ------------------------------------------------------------- the API, directly


@pytest.fixture
def api() -> Iterator[Api]:
    yield Api(Broker(Clock(), Config()))


def call(api: Api, method: str, path: str, body: Any = None, **query: str) -> Reply:
    data = b"" if body is None else json.dumps(body).encode()
    return api.handle(ApiRequest(method, tuple(path.strip("/").split("/")), query, data))


def refused(api: Api, method: str, path: str, body: Any = None, **query: str) -> Reply:
    """The JSON error the site would answer (it turns BrokerError through error_reply)."""
    try:
        reply = call(api, method, path, body, **query)
    except errors.BrokerError as e:
        return error_reply(e)
    raise AssertionError(f"{method} {path} was not refused: {reply}")


def test_create_list_show_and_delete_a_queue(api: Api) -> None:
    made = call(api, "PUT", "queues/jobs", {"durable": True, "max_length": 5, "overflow": "reject"})
    assert made.status == 201 and (b"Location", b"/api/queues/jobs") in made.headers
    assert (
        call(
            api, "PUT", "queues/jobs", {"durable": True, "max_length": 5, "overflow": "reject"}
        ).status
        == 204
    )
    [q] = call(api, "GET", "queues").body
    assert q["name"] == "jobs" and q["durable"] is True
    assert q["arguments"]["max_length"] == 5 and q["arguments"]["overflow"] == "reject"
    assert call(api, "GET", "queues/jobs").body["consumer_details"] == []
    assert call(api, "DELETE", "queues/jobs").body == {"dropped": 0}
    assert call(api, "GET", "queues").body == []


def test_rabbitmq_vhost_segment_is_the_one_namespace(api: Api) -> None:
    # (the site splits the path before it percent-decodes: "%2F" arrives as "/")
    reply = api.handle(ApiRequest("PUT", ("queues", "/", "logs")))
    assert reply.status == 201
    assert api.handle(ApiRequest("GET", ("queues", "/", "logs"))).body["name"] == "logs"
    assert [q["name"] for q in api.handle(ApiRequest("GET", ("queues", "/"))).body] == ["logs"]


def test_exchanges_bindings_publish_and_purge(api: Api) -> None:
    assert call(api, "PUT", "exchanges/events", {"type": "topic", "durable": False}).status == 201
    call(api, "PUT", "queues/audit", {})
    made = call(api, "POST", "bindings/e/events/q/audit", {"routing_key": "order.*"})
    assert made.status == 201
    assert (b"Location", b"/api/bindings/e/events/q/audit/order.*") in made.headers
    assert call(api, "POST", "bindings/e/events/q/audit", {"routing_key": "order.*"}).status == 204
    assert call(api, "POST", "bindings", {"source": "events", "destination": "audit"}).status == 201
    keys = [b["routing_key"] for b in call(api, "GET", "bindings").body]
    assert sorted(keys) == ["", "order.*"]
    assert len(call(api, "GET", "bindings/e/events/q/audit").body) == 2
    assert call(api, "GET", "exchanges/events").body["bindings"][0]["source"] == "events"
    sent = call(
        api, "POST", "exchanges/events/publish", {"routing_key": "order.new", "payload": "hi"}
    )
    assert sent.body == {"routed": True, "queues": 1}
    b64 = base64.b64encode(b"\x00\xff").decode()
    body = {"payload": b64, "payload_encoding": "base64"}
    assert call(api, "POST", "exchanges/audit/publish", body).body["queues"] == 1
    q = call(api, "GET", "queues/audit").body
    assert q["messages_ready"] == 2 and q["message_bytes_ready"] == 4
    assert q["message_stats"]["publish"] == 2
    assert sorted(b["routing_key"] for b in q["bindings"]) == ["", "order.*"]
    [ex] = call(api, "GET", "exchanges").body
    assert ex["message_stats"] == {"publish_in": 1, "routed": 1, "unroutable": 0}
    assert call(api, "DELETE", "queues/audit/contents").body == {"purged": 2}
    assert call(api, "DELETE", "bindings/e/events/q/audit/~").status == 200
    assert call(api, "DELETE", "bindings/e/events/q/audit/order.*").status == 200
    assert call(api, "GET", "bindings").body == []
    assert call(api, "DELETE", "exchanges/events").body == {"deleted": "events"}


def test_errors_carry_the_wire_code_and_its_http_status(api: Api) -> None:
    call(api, "PUT", "queues/jobs", {"max_length": 5})
    call(api, "PUT", "exchanges/ev", {"type": "fanout"})
    cases: list[tuple[tuple[Any, ...], int, str]] = [
        (("GET", "queues/nope"), 404, "NOT_FOUND"),
        (("GET", "exchanges/jobs"), 409, "WRONG_KIND"),
        (("DELETE", "queues/ev"), 409, "WRONG_KIND"),  # not the exchange of that name
        (("PUT", "queues/jobs", {"max_length": 6}), 409, "EXISTS"),
        (("PUT", "queues/bad name", {}), 400, "BAD_ARGS"),
        (("PUT", "queues/mbroker.x", {}), 400, "BAD_ARGS"),  # reserved, as on the wire
        (("PUT", "queues/q2", {"max_length": -1}), 400, "BAD_ARGS"),
        (("PUT", "queues/q2", {"max_length": "5"}), 400, "BAD_ARGS"),
        (("PUT", "queues/q2", {"durable": 1}), 400, "BAD_ARGS"),
        (("PUT", "queues/q2", {"overflow": "spill"}), 400, "BAD_ARGS"),
        (("PUT", "queues/q2", {"colour": "red"}), 400, "BAD_ARGS"),
        (("PUT", "queues/q2", {"exclusive": True}), 400, "BAD_ARGS"),
        (("PUT", "queues/q2", {"arguments": {"x-max-length": 1}}), 400, "BAD_ARGS"),
        (("PUT", "exchanges/e2", {}), 400, "BAD_ARGS"),
        (("PUT", "exchanges/e2", {"type": "headers"}), 400, "BAD_ARGS"),
        (("POST", "bindings/e/ev/q/jobs", {"routing_key": "a b"}), 400, "BAD_ARGS"),
        (("POST", "bindings", {"source": "ev"}), 400, "BAD_ARGS"),
        (("POST", "exchanges/nope/publish", {"payload": "x"}), 404, "NOT_FOUND"),
        (
            ("POST", "exchanges/ev/publish", {"payload": "%%", "payload_encoding": "base64"}),
            400,
            "BAD_ARGS",
        ),
        (("DELETE", "bindings/e/ev/q/jobs/~"), 404, "NOT_FOUND"),
        (("GET", "nothing/here"), 404, "NOT_FOUND"),
    ]
    for args, status, code in cases:
        reply = refused(api, *args)
        assert (reply.status, reply.body["error"]) == (status, code), args
        assert reply.body["reason"], args


def test_a_body_that_is_not_a_json_object_is_bad_args(api: Api) -> None:
    for data in (b"{", b"[1]", b"\xff"):
        with pytest.raises(errors.BadArgs):
            api.handle(ApiRequest("PUT", ("queues", "q"), {}, data))


def test_delete_if_empty_and_if_unused(api: Api) -> None:
    call(api, "PUT", "queues/jobs", {})
    call(api, "POST", "exchanges/jobs/publish", {"payload": "x"})
    reply = refused(api, "DELETE", "queues/jobs", **{"if-empty": "true"})
    assert (reply.status, reply.body["error"]) == (409, "NOT_EMPTY")
    assert refused(api, "DELETE", "queues/jobs", **{"if-empty": "maybe"}).status == 400
    assert call(api, "DELETE", "queues/jobs", **{"if-unused": "true"}).body == {"dropped": 1}


def test_a_full_queue_refuses_a_test_message(api: Api) -> None:
    call(api, "PUT", "queues/jobs", {"max_length": 1, "overflow": "reject"})
    call(api, "POST", "exchanges/jobs/publish", {"payload": "1"})
    reply = refused(api, "POST", "exchanges/jobs/publish", {"payload": "2"})
    assert (reply.status, reply.body["error"]) == (409, "OVERFLOW")


def test_a_payload_over_max_payload_is_too_big() -> None:
    api = Api(Broker(Clock(), Config(max_payload=10)))
    call(api, "PUT", "queues/jobs", {})
    reply = refused(api, "POST", "exchanges/jobs/publish", {"payload": "x" * 11})
    assert (reply.status, reply.body["error"]) == (413, "TOO_BIG")
    assert call(api, "POST", "exchanges/jobs/publish", {"payload": "x" * 10}).status == 200


def test_a_method_a_path_does_not_take_is_405_with_allow(api: Api) -> None:
    reply = call(api, "PATCH", "queues/jobs")
    assert reply.status == 405 and reply.body["error"] == "BAD_COMMAND"
    assert dict(reply.headers)[b"Allow"] == b"DELETE, GET, PUT"


def test_overview_totals(api: Api) -> None:
    call(api, "PUT", "queues/a", {})
    call(api, "PUT", "exchanges/x", {"type": "direct"})
    call(api, "POST", "exchanges/a/publish", {"payload": "1"})
    body = call(api, "GET", "overview").body
    assert body["object_totals"] == {"connections": 0, "queues": 1, "exchanges": 1, "consumers": 0}
    assert body["queue_totals"]["messages_ready"] == 1
    assert body["message_stats"]["publish"] == 1
    assert body["product_name"] == "mbroker"


def test_overview_sums_the_queues_at_most_once_per_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    broker = Broker(clock, Config())
    api = Api(broker)
    call(api, "PUT", "queues/a", {})
    call(api, "POST", "exchanges/a/publish", {"payload": "1"})
    assert call(api, "GET", "overview").body["queue_totals"]["messages_ready"] == 1
    call(api, "POST", "exchanges/a/publish", {"payload": "2"})
    call(api, "PUT", "queues/b", {})

    def walk() -> list[Any]:
        raise AssertionError("a walk of every object")

    # within the TTL no request walks the queues (nor does STATS count them)
    with monkeypatch.context() as m:
        m.setattr(Namespace, "objects", walk)
        for _ in range(100):
            body = call(api, "GET", "overview").body
        assert body["queue_totals"]["messages_ready"] == 1  # (summed under a second ago)
        assert body["object_totals"]["queues"] == 2  # (counted on CREATE: exact)
        assert broker.stats()[4] == ("queues", "2")
    clock.advance(TOTALS_TTL)
    body = call(api, "GET", "overview").body
    assert body["queue_totals"] == {
        "messages": 2,
        "messages_ready": 2,
        "messages_delayed": 0,
        "messages_unacknowledged": 0,
    }
    call(api, "DELETE", "queues/a")
    call(api, "PUT", "exchanges/x", {"type": "topic"})
    assert dict(broker.stats())["queues"] == "1" and dict(broker.stats())["exchanges"] == "1"


# ------------------------------------------------------------- the real site


@pytest_twisted.async_yield_fixture
async def site() -> AsyncIterator[Site]:
    s = await start_site(Config())
    yield s
    await s.service.stopService()
    await s.pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_json_over_http(site: Site) -> None:
    status, body = await site.json("PUT", "/api/queues/jobs", {"max_length": 3})
    assert status == 201 and body == {"created": "jobs"}
    status, body = await site.json("GET", "/api/queues/%2F/jobs")
    assert status == 200 and body["name"] == "jobs"
    status, body = await site.json("GET", "/api/queues/nope")
    assert (status, body["error"]) == (404, "NOT_FOUND")
    status, h, raw = await site.request("GET", "/nowhere")
    assert status == 404 and json.loads(raw)["error"] == "NOT_FOUND"
    assert h.getRawHeaders("access-control-allow-origin") is None


@pytest_twisted.ensureDeferred
async def test_a_change_without_json_or_custom_header_is_refused(site: Site) -> None:
    # what a cross-site HTML form can send: no JSON content type, no custom header
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for method, path in (("PUT", "/api/queues/jobs"), ("DELETE", "/api/queues/jobs")):
        status, _, raw = await site.request(method, path, b"durable=true", form)
        assert status == 415 and json.loads(raw)["error"] == "BAD_ARGS"
    status, _ = await site.json("GET", "/api/queues/jobs")
    assert status == 404  # nothing was made
    status, _, _ = await site.request("PUT", "/api/queues/jobs", None, {"X-Requested-With": "x"})
    assert status == 201
    status, _, _ = await site.request(
        "DELETE", "/api/queues/jobs", None, {"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 200


@pytest_twisted.ensureDeferred
async def test_a_body_over_the_limit_is_413_and_not_kept() -> None:
    site = await start_site(Config(max_payload=1000))
    try:
        await site.json("PUT", "/api/queues/jobs", {})
        big = json.dumps({"payload": "x" * 200_000}).encode()
        status, _, raw = await site.request("POST", "/api/exchanges/jobs/publish", big, JSON)
        assert status == 413 and json.loads(raw)["error"] == "TOO_BIG"
        status, body = await site.json("GET", "/api/queues/jobs")
        assert body["messages"] == 0
    finally:
        await site.service.stopService()
        await site.pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_connections_lists_native_clients(site: Site) -> None:
    host, port = describe_address(site.service.ports[0].getHost()).split(":")
    client = await connect(reactor, f"tcp:host={host}:port={port}")
    try:
        await client.create("jobs", "queue")
        await client.subscribe("jobs", lambda m: None)
        status, body = await site.json("GET", "/api/connections")
        assert status == 200 and len(body) == 1
        [c] = body
        assert c["subscriptions"] == 1 and c["user"] is None and c["peer"].startswith("127.0.0.1:")
        # the bytes it sent (CREATE, SUBSCRIBE) and got (HELLO and two replies)
        assert c["recv_oct"] >= len(b"CREATE jobs queue\r\nSUBSCRIBE jobs\r\n")
        assert c["send_oct"] > len(b"+OK created\r\n+OK 1\r\n") + len(b"HELLO mbroker ")
        status, q = await site.json("GET", "/api/queues/jobs")
        assert q["consumers"] == 1 and q["consumer_details"][0]["connection"] == c["id"]
    finally:
        await client.close()
    factory = site.service.factory
    assert factory is not None
    await eventually(lambda: not factory.protocols)
    assert (await site.json("GET", "/api/connections"))[1] == []
    # /metrics: the bytes of every connection, closed ones included
    _, _, raw = await site.request("GET", "/metrics")
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(raw.decode())
        for s in family.samples
    }
    assert samples["mbroker_connection_incoming_bytes_total"] >= c["recv_oct"] > 0
    assert samples["mbroker_connection_outgoing_bytes_total"] >= c["send_oct"] > 0


@pytest_twisted.ensureDeferred
async def test_metrics_are_prometheus_text(site: Site) -> None:
    await site.json("PUT", "/api/queues/jobs", {})
    await site.json("POST", "/api/exchanges/jobs/publish", {"payload": "a"})
    await site.json("POST", "/api/exchanges/jobs/publish", {"payload": "b"})
    status, h, raw = await site.request("GET", "/metrics")
    assert status == 200
    assert (h.getRawHeaders("content-type") or [""])[0].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(raw.decode())
        for s in family.samples
    }
    q = (("queue", "jobs"),)
    assert samples[("mbroker_queue_messages_ready", q)] == 2
    assert samples[("mbroker_queue_messages_unacked", q)] == 0
    assert samples[("mbroker_queue_consumers", q)] == 0
    assert samples[("mbroker_queue_messages_published_total", q)] == 2
    assert samples[("mbroker_messages_published_total", ())] == 2
    assert samples[("mbroker_connections", ())] == 0
    assert samples[("mbroker_memory_rss_bytes", ())] > 0
    assert ("process_resident_memory_bytes", ()) in samples
    status, h, raw = await site.request(
        "GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert (h.getRawHeaders("content-type") or [""])[0].startswith("application/openmetrics-text")
    assert raw.endswith(b"# EOF\n")


@pytest_twisted.ensureDeferred
async def test_publishes_held_by_the_memory_mark_are_counted(site: Site) -> None:
    factory = site.service.factory
    assert factory is not None
    watch, used = factory.watch, [2000]
    watch.high_water, watch.measure = 1000, lambda: used[0]
    host, port = describe_address(site.service.ports[0].getHost()).split(":")
    client = await connect(reactor, f"tcp:host={host}:port={port}")
    try:
        await client.create("jobs", "queue")
        watch.check()  # over the mark
        held = [client.publish("jobs", b"a"), client.publish("jobs", b"b")]
        await eventually(lambda: watch.blocked)
        used[0] = 0
        watch.check()  # under it again: the publishes go on
        assert [await d for d in held] == [1, 1]
    finally:
        await client.close()
    _, _, raw = await site.request("GET", "/metrics")
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(raw.decode())
        for s in family.samples
    }
    assert samples["mbroker_memory_blocked_total"] == 1
    assert samples["mbroker_memory_blocked_publishes_total"] == 2
    _, overview = await site.json("GET", "/api/overview")
    high_water = overview["memory_high_water"]
    assert (high_water["blocked_total"], high_water["blocked_publishes"]) == (1, 2)


@pytest_twisted.ensureDeferred
async def test_healthz(site: Site) -> None:
    status, body = await site.json("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok"})


@pytest_twisted.ensureDeferred
async def test_healthz_fails_at_the_connection_limit() -> None:
    site = await start_site(Config(max_connections=1))
    host, port = describe_address(site.service.ports[0].getHost()).split(":")
    try:
        client = await connect(reactor, f"tcp:host={host}:port={port}")
        status, body = await site.json("GET", "/healthz")
        assert status == 503 and body == {
            "status": "failed",
            "reason": "the broker is at its connection limit (1)",
        }
        await client.close()
        broker = site.service.broker
        assert broker is not None
        await eventually(lambda: broker.connections == 0)
        assert (await site.json("GET", "/healthz"))[0] == 200
    finally:
        await site.service.stopService()
        await site.pool.closeCachedConnections()


def test_health_problems_before_start_and_when_the_store_fails() -> None:
    clock = MemoryReactorClock()
    service = BrokerService(clock, Config(), [], None)
    assert problem(service) == "the broker is not running"
    service.running = True
    assert problem(service) == "the broker is starting: its store is being recovered"
    store_ok = [True]
    journal = Journal(clock, lambda records, done: done(None), lambda: store_ok[0])
    service.broker = broker = Broker(clock, Config(), journal)
    service.factory = BrokerFactory(broker, Config(), clock)
    assert problem(service) == "the broker is not listening"
    service.ports = [MemoryReactor().listenTCP(0, service.factory)]
    assert problem(service) is None
    store_ok[0] = False
    assert problem(service) == "the store cannot take writes"


@pytest_twisted.ensureDeferred
async def test_a_durable_change_is_answered_once_stored(tmp_path: Path) -> None:
    site = await start_site(Config(), str(tmp_path / "data"))
    try:
        await eventually(lambda: site.service.broker is not None)
        store = site.service.store
        assert store is not None
        written = store.stats()["records"]
        status, _ = await site.json("PUT", "/api/queues/jobs", {"durable": True})
        assert status == 201
        assert store.stats()["records"] > written  # in the store before the answer
        status, body = await site.json("POST", "/api/exchanges/jobs/publish", {"payload": "p"})
        assert status == 200
        status, h, raw = await site.request("GET", "/metrics")
        assert b"mbroker_store_available 1.0" in raw
        assert b"mbroker_store_fsyncs_total" in raw
        [fsync] = [
            f
            for f in text_string_to_metric_families(raw.decode())
            if f.name == "mbroker_store_fsync_seconds"
        ]
        assert fsync.type == "histogram"
        values = {(s.name, s.labels.get("le")): s.value for s in fsync.samples}
        count = values[("mbroker_store_fsync_seconds_count", None)]
        assert count >= 2  # (the queue's record, the message's: --fsync always)
        assert values[("mbroker_store_fsync_seconds_bucket", "+Inf")] == count
        assert values[("mbroker_store_fsync_seconds_sum", None)] > 0
        status, body = await site.json("GET", "/api/overview")
        assert body["store"]["available"] == 1
    finally:
        await site.service.stopService()
        await site.pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_a_busy_http_port_fails_start_up(site: Site) -> None:
    address = site.http.ports[0].getHost()
    assert isinstance(address, IPv4Address)
    port = address.port
    service = BrokerService(reactor, Config(), ["tcp:0:interface=127.0.0.1"], None)
    HttpService(reactor, service, [f"tcp:{port}:interface=127.0.0.1"]).setServiceParent(service)
    with pytest.raises(ListenError, match="cannot listen for HTTP"):
        service.startService()
    await service.stopService()


# ------------------------------------------------------------- logging in


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("http-auth") / "users"
    lines = [
        f"admin:{cheap_hash('root')}:*:*:*",
        f"alice:{cheap_hash('s3cret')}:alice.*:alice.*:alice.*",
        f"mon:{cheap_hash('look')}:-:-:-:monitoring",
        f"ops:{cheap_hash('act')}:-:-:-:administrator",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest_twisted.async_yield_fixture
async def secured(users_file: Path) -> AsyncIterator[Site]:
    s = await start_site(Config(users_file=str(users_file), auth_fail_delay=0.01))
    yield s
    await s.service.stopService()
    await s.pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_basic_auth(secured: Site) -> None:
    status, h, raw = await secured.request("GET", "/api/queues")
    assert status == 401 and json.loads(raw)["error"] == "NO_AUTH"
    assert h.getRawHeaders("www-authenticate") == ['Basic realm="mbroker"']
    status, h, raw = await secured.request("GET", "/api/queues", user=("admin", "wrong"))
    assert status == 401 and json.loads(raw)["error"] == "AUTH"
    status, _, raw = await secured.request("GET", "/metrics", user=("nobody", "x"))
    assert status == 401
    status, _, raw = await secured.request("GET", "/api/queues", user=("admin", "root"))
    assert status == 200 and json.loads(raw) == []
    status, _, _ = await secured.request("GET", "/healthz")  # probes need no login
    assert status == 200


@pytest_twisted.ensureDeferred
async def test_permissions_of_the_users_file_apply(secured: Site) -> None:
    admin, alice = ("admin", "root"), ("alice", "s3cret")
    assert (await secured.json("PUT", "/api/queues/jobs", {}, user=admin))[0] == 201
    status, body = await secured.json("PUT", "/api/queues/bobs", {}, user=alice)
    assert (status, body["error"]) == (403, "FORBIDDEN")
    assert (await secured.json("PUT", "/api/queues/alice.q", {}, user=alice))[0] == 201
    status, body = await secured.json("GET", "/api/queues", user=alice)
    assert [q["name"] for q in body] == ["alice.q"]
    assert (await secured.json("GET", "/api/queues/jobs", user=alice))[0] == 403
    assert (await secured.json("DELETE", "/api/queues/jobs/contents", user=alice))[0] == 403
    assert (await secured.json("GET", "/api/queues/jobs/messages", user=alice))[0] == 403
    assert (await secured.json("GET", "/api/queues/alice.q/messages", user=alice))[0] == 200
    status, body = await secured.json(
        "POST", "/api/exchanges/jobs/publish", {"payload": "x"}, user=alice
    )
    assert (status, body["error"]) == (403, "FORBIDDEN")
    _, _, raw = await secured.request("GET", "/metrics", user=alice)
    assert b'queue="alice.q"' in raw and b'queue="jobs"' not in raw
    _, _, raw = await secured.request("GET", "/metrics", user=admin)
    assert b'queue="jobs"' in raw


@pytest_twisted.ensureDeferred
async def test_tags_of_the_users_file_apply(secured: Site) -> None:
    mon, ops = ("mon", "look"), ("ops", "act")
    assert (await secured.json("PUT", "/api/queues/tagged", {}, user=mon))[0] == 403
    assert (await secured.json("PUT", "/api/queues/tagged", {}, user=ops))[0] == 201
    status, body = await secured.json("GET", "/api/queues", user=mon)
    assert status == 200 and "tagged" in [q["name"] for q in body]
    _, _, raw = await secured.request("GET", "/metrics", user=mon)
    assert b'mbroker_queue_messages_ready{queue="tagged"}' in raw
    assert (await secured.json("DELETE", "/api/queues/tagged", user=mon))[0] == 403
    assert (await secured.json("DELETE", "/api/queues/tagged", user=ops))[0] == 200


def test_the_http_option_is_repeatable_and_adds_the_http_service(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(["--memory", "--http", "tcp:0", "--http=tcp:1"])
    assert options["http"] == ["tcp:0", "tcp:1"]
    service = makeService(options)
    [http] = list(service)  # type: ignore[call-overload]
    assert isinstance(http, HttpService) and http.endpoints == ["tcp:0", "tcp:1"]
    options = Options()
    options.parseOptions(["--memory"])
    assert list(makeService(options)) == []  # type: ignore[call-overload]


@pytest_twisted.ensureDeferred
async def test_a_long_list_is_json_too(site: Site) -> None:
    broker = site.service.broker
    assert broker is not None
    for i in range(150):  # (over the length encoded in a thread)
        broker.create(None, f"q{i}", "queue", QueueOptions())
    status, body = await site.json("GET", "/api/queues")
    assert status == 200 and [q["name"] for q in body] == [f"q{i}" for i in range(150)]


def test_an_idle_http_connection_is_closed() -> None:
    clock = MemoryReactorClock()
    service = BrokerService(clock, Config(), [], None)
    site = make_site(service, clock)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    clock.advance(IDLE_TIMEOUT - 1)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_peek_shows_ready_messages_and_leaves_them(api: Api) -> None:
    call(api, "PUT", "queues/jobs", {})
    call(api, "POST", "exchanges/jobs/publish", {"payload": "héllo"})
    raw = base64.b64encode(b"\xff\x00").decode()
    call(api, "POST", "exchanges/jobs/publish", {"payload": raw, "payload_encoding": "base64"})
    call(api, "POST", "exchanges/jobs/publish", {"payload": "third", "ttl": 60000})
    shown = call(api, "GET", "queues/jobs/messages", count="2").body
    assert shown == [
        {
            "exchange": "jobs",
            "routing_key": "",
            "payload": "héllo",
            "payload_encoding": "string",
            "payload_bytes": 6,
            "redelivered": False,
            "deliveries": 0,
            "expires_at": None,
            "properties": {},
        },
        {
            "exchange": "jobs",
            "routing_key": "",
            "payload": raw,
            "payload_encoding": "base64",
            "payload_bytes": 2,
            "redelivered": False,
            "deliveries": 0,
            "expires_at": None,
            "properties": {},
        },
    ]
    [*_, third] = call(api, "GET", "queues/jobs/messages").body
    assert third["expires_at"] == 60000
    assert call(api, "GET", "queues/jobs/messages", truncate="3").body[0]["payload"] == "hé"
    q = call(api, "GET", "queues/jobs").body
    assert q["messages_ready"] == 3 and q["message_stats"]["deliver"] == 0
    for bad in ({"count": "0"}, {"count": "101"}, {"count": "x"}, {"count": "²"}):
        assert refused(api, "GET", "queues/jobs/messages", **bad).body["error"] == "BAD_ARGS"
    assert refused(api, "GET", "queues/nope/messages").status == 404


def test_closing_a_connection_names_it_by_id() -> None:
    closed: list[tuple[int, str]] = []
    report = ConnectionReport(7, "127.0.0.1:4000", "bob", 0.0, 0, 0)
    api = Api(
        Broker(Clock(), Config()),
        connections=lambda: [report],
        disconnect=lambda session, reason: closed.append((session, reason)),
    )
    assert call(api, "GET", "connections/7").body["user"] == "bob"
    assert refused(api, "DELETE", "connections/8").status == 404
    assert call(api, "DELETE", "connections/7").body == {"closed": 7}
    with pytest.raises(errors.BadArgs):
        api.handle(ApiRequest("DELETE", ("connections", "7"), reason="a\r\nb"))
    with pytest.raises(errors.BadArgs):
        api.handle(ApiRequest("DELETE", ("connections", "7"), reason="x" * 201))
    assert closed == [(7, "closed by an operator")]
    alice = User("alice", "-", Permissions(read=Pattern("alice.*")))
    assert api.handle(ApiRequest("GET", ("connections",), user=alice)).body == []
    with pytest.raises(errors.NotFound):
        api.handle(ApiRequest("DELETE", ("connections", "7"), user=alice))


def test_lists_filter_sort_and_page(api: Api) -> None:
    for i in range(25):
        call(api, "PUT", f"queues/job-{i:02}", {})
        for _ in range(i % 5):
            call(api, "POST", f"exchanges/job-{i:02}/publish", {"payload": "x"})
    call(api, "PUT", "queues/other", {})
    names = [q["name"] for q in call(api, "GET", "queues", name="job-1").body]
    assert names == [f"job-1{i}" for i in range(10)]
    top = call(api, "GET", "queues", sort="messages", sort_reverse="true").body
    assert [q["messages"] for q in top[:5]] == [4] * 5
    page = call(api, "GET", "queues", name="job", page="3", page_size="10", sort="name").body
    assert [q["name"] for q in page.pop("items")] == [f"job-{i}" for i in range(20, 25)]
    assert page == {
        "page": 3,
        "page_size": 10,
        "page_count": 3,
        "filtered_count": 25,
        "total_count": 26,
    }
    assert call(api, "GET", "queues", page="1", name="none").body["items"] == []
    for bad in (
        {"sort": "colour"},
        {"page": "4", "page_size": "10"},
        {"page": "1", "page_size": "501"},
    ):
        assert refused(api, "GET", "queues", **bad).body["error"] == "BAD_ARGS"
    call(api, "PUT", "exchanges/b", {"type": "topic"})
    call(api, "PUT", "exchanges/a", {"type": "direct"})
    assert [e["name"] for e in call(api, "GET", "exchanges", sort="name").body] == ["a", "b"]


@pytest_twisted.ensureDeferred
async def test_an_open_http_listener_off_loopback_warns() -> None:
    with logged() as events:
        site = await start_site(Config(), http="tcp:0")  # (every interface)
        loopback = await start_site(Config())
    for s in (site, loopback):
        await s.service.stopService()
        await s.pool.closeCachedConnections()
    warnings = [formatEvent(e) for e in events if "open to the network" in formatEvent(e)]
    assert len(warnings) == 1 and "0.0.0.0:" in warnings[0], warnings


# ------------------------------------------------------------------ user tags


def _tagged_api() -> tuple[Api, list[int]]:
    closed: list[int] = []
    reports = [
        ConnectionReport(7, "127.0.0.1:4000", "bob", 0.0, 0, 0),
        ConnectionReport(8, "127.0.0.1:4001", "mon", 0.0, 0, 0),
    ]
    api = Api(
        Broker(Clock(), Config()),
        connections=lambda: reports,
        disconnect=lambda session, reason: closed.append(session),
    )
    call(api, "PUT", "queues/jobs", {})
    call(api, "PUT", "queues/alice.q", {})
    call(api, "PUT", "exchanges/events", {"type": "fanout"})
    call(api, "POST", "bindings/e/events/q/jobs", {})
    call(api, "POST", "exchanges/jobs/publish", {"payload": "secret"})
    return api, closed


def as_user(api: Api, user: User, method: str, path: str, body: Any = None) -> Reply:
    """The reply, or the JSON error the site would answer."""
    data = b"" if body is None else json.dumps(body).encode()
    request = ApiRequest(method, tuple(path.split("/")), {}, data, user)
    try:
        return api.handle(request)
    except errors.BrokerError as e:
        return error_reply(e)


NOBODY = Permissions(Pattern("-"), Pattern("-"), Pattern("-"))
ALICE = User("alice", "-", Permissions(Pattern("alice.*"), Pattern("alice.*"), Pattern("alice.*")))
MON = User("mon", "-", NOBODY, frozenset({"monitoring"}))
OPS = User("ops", "-", NOBODY, frozenset({"administrator"}))

#: (method, path, body): every action of the API on names outside alice.*
ACTIONS: list[tuple[str, str, Any]] = [
    ("PUT", "queues/made", {}),
    ("PUT", "exchanges/made.x", {"type": "topic"}),
    ("POST", "bindings/e/events/q/alice.q", {}),
    ("POST", "bindings", {"source": "events", "destination": "alice.q", "routing_key": "k"}),
    ("DELETE", "bindings/e/events/q/jobs/~", None),
    ("POST", "exchanges/jobs/publish", {"payload": "x"}),
    ("GET", "queues/jobs/messages", None),  # payloads: an action, not a figure
    ("DELETE", "queues/jobs/contents", None),
    ("DELETE", "queues/jobs", None),
    ("DELETE", "exchanges/events", None),
]


def _names(reply: Reply, key: str = "name") -> list[Any]:
    return sorted(item[key] for item in reply.body)


def test_a_user_without_tags_gets_what_its_patterns_allow() -> None:
    api, closed = _tagged_api()
    assert _names(as_user(api, ALICE, "GET", "queues")) == ["alice.q"]
    assert as_user(api, ALICE, "GET", "exchanges").body == []
    assert as_user(api, ALICE, "GET", "bindings").body == []
    assert as_user(api, ALICE, "GET", "queues/jobs").body["error"] == "FORBIDDEN"
    assert as_user(api, ALICE, "GET", "connections").body == []
    assert as_user(api, ALICE, "GET", "connections/7").status == 404
    for method, path, body in ACTIONS:
        reply = as_user(api, ALICE, method, path, body)
        assert (reply.status, reply.body["error"]) == (403, "FORBIDDEN"), (method, path)
    assert as_user(api, ALICE, "DELETE", "connections/7").status == 404
    assert closed == []


def test_the_overview_is_refused_to_a_user_with_no_right_and_no_tag() -> None:
    api, _ = _tagged_api()
    nobody = User("nobody", "-", NOBODY)
    assert as_user(api, nobody, "GET", "overview").body == {
        "error": "FORBIDDEN",
        "reason": "nobody may not see the broker's figures (no right on any name)",
    }
    # as STATS: a right on some name shows the broker's figures; so does a tag
    for user in (ALICE, MON, OPS):
        assert as_user(api, user, "GET", "overview").body["object_totals"]["queues"] == 2


def test_monitoring_sees_every_figure_and_may_do_nothing_more() -> None:
    api, closed = _tagged_api()
    assert _names(as_user(api, MON, "GET", "queues")) == ["alice.q", "jobs"]
    assert _names(as_user(api, MON, "GET", "exchanges")) == ["events"]
    assert _names(as_user(api, MON, "GET", "bindings"), "destination") == ["jobs"]
    assert len(as_user(api, MON, "GET", "bindings/e/events/q/jobs").body) == 1
    jobs = as_user(api, MON, "GET", "queues/jobs").body
    assert jobs["messages_ready"] == 1 and jobs["bindings"][0]["source"] == "events"
    assert len(as_user(api, MON, "GET", "queues/jobs/bindings").body) == 1
    assert as_user(api, MON, "GET", "exchanges/events").body["name"] == "events"
    assert as_user(api, MON, "GET", "overview").body["object_totals"]["queues"] == 2
    assert _names(as_user(api, MON, "GET", "connections"), "id") == [7, 8]
    assert as_user(api, MON, "GET", "connections/7").body["user"] == "bob"
    for method, path, body in ACTIONS:
        reply = as_user(api, MON, method, path, body)
        assert (reply.status, reply.body["error"]) == (403, "FORBIDDEN"), (method, path)
    assert as_user(api, MON, "DELETE", "connections/7").body == {
        "error": "FORBIDDEN",
        "reason": "mon may not close connection 7",
    }
    assert as_user(api, MON, "DELETE", "connections/8").body == {"closed": 8}  # its own
    assert closed == [8]
    assert _names(as_user(api, MON, "GET", "queues")) == ["alice.q", "jobs"]  # nothing changed
    # with the read right on the queue, peeking is allowed (the pattern, not the tag)
    reader = attrs.evolve(MON, permissions=Permissions(read=Pattern("jobs")))
    [message] = as_user(api, reader, "GET", "queues/jobs/messages").body
    assert message["payload"] == "secret"


def test_whoami_tells_the_user_and_its_tags() -> None:
    api, _ = _tagged_api()
    assert as_user(api, MON, "GET", "whoami").body == {"name": "mon", "tags": ["monitoring"]}
    both = attrs.evolve(OPS, tags=frozenset({"administrator", "monitoring"}))
    assert as_user(api, both, "GET", "whoami").body["tags"] == ["monitoring", "administrator"]
    assert as_user(api, ALICE, "GET", "whoami").body == {"name": "alice", "tags": []}
    assert call(api, "GET", "whoami").body == {"name": None, "tags": ["administrator"]}


def test_administrator_may_do_everything() -> None:
    api, closed = _tagged_api()
    assert _names(as_user(api, OPS, "GET", "queues")) == ["alice.q", "jobs"]
    assert _names(as_user(api, OPS, "GET", "connections"), "id") == [7, 8]
    for method, path, body in ACTIONS:
        reply = as_user(api, OPS, method, path, body)
        assert reply.status in (200, 201, 204), (method, path, reply)
    assert as_user(api, OPS, "DELETE", "connections/7").body == {"closed": 7}
    assert closed == [7]
    assert _names(as_user(api, OPS, "GET", "queues")) == ["alice.q", "made"]
    assert _names(as_user(api, OPS, "GET", "exchanges")) == ["made.x"]
