"""The Deferred client against a real broker on a real loopback port, TLS included,
and across broker restarts."""

from __future__ import annotations

import datetime
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from mbroker import errors
from mbroker.client.connection import (
    Client,
    ConnectionLost,
    Message,
    NotABroker,
    NotConnected,
    Unconfirmed,
    connect,
    tcp_endpoint,
)
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.factory import BrokerFactory
from mbroker.testing import LoopbackBroker
from tests.helpers.broker import start_broker

reactor: Any = _reactor
FAST_RETRY: Callable[[int], float] = lambda attempt: 0.05  # noqa: E731


async def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms until it is true; fail after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"still false after {timeout} s: {predicate}")
        await deferLater(reactor, 0.01)


def within(d: Deferred[Any], seconds: float = 5.0) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[LoopbackBroker]:
    broker = await LoopbackBroker.start(reactor)
    yield broker
    await broker.stop()


@pytest_twisted.async_yield_fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Clients to close at the end (reconnecting ones would retry for ever)."""
    made: list[Client] = []
    yield made
    await gatherResults([within(c.close()) for c in made])


async def free_port() -> int:
    probe = await LoopbackBroker.start(reactor)
    port = probe.port
    await probe.stop()
    return port


# ------------------------------------------------------------------- basics


@pytest_twisted.ensureDeferred
async def test_every_method_over_tcp(server: LoopbackBroker, clients: list[Client]) -> None:
    client = await connect(reactor, server.endpoint)
    clients.append(client)
    assert client.hello is not None
    assert await client.create("orders", "direct") is True
    assert await client.create("eu", "queue") is True
    await client.bind("eu", "orders", "eu")
    assert await client.publish("orders", b"one", "eu") == 1
    assert await client.publish("orders", b"two", "us") == 0
    [m] = await client.pull("eu", 10, ack="manual")
    assert (m.payload, m.routing_key, m.source) == (b"one", "eu", "orders")
    await m.nack()
    [m] = await client.pull("eu", ack="manual")
    assert m.redelivered == 1
    assert await client.touch(m) == 1
    assert await client.ack(m) == 1
    assert len(await client.list()) == 2
    assert (await client.stats("orders"))["routed"] == 1
    assert await client.ping() >= 0
    await client.unbind("eu", "orders", "eu")
    with pytest.raises(errors.NotFound):
        await client.unbind("eu", "orders", "eu")
    assert await client.purge("eu") == 0
    assert await client.delete("eu") == 0
    got: list[Message] = []
    sub = await client.subscribe("orders", got.append, "eu")
    await client.publish("orders", b"three", "eu")
    await eventually(lambda: got)
    await sub.unsubscribe()
    await client.close()
    assert not client.connected
    with pytest.raises(NotConnected):
        await client.ping()


@pytest_twisted.ensureDeferred
async def test_ten_thousand_pipelined_publishes(
    server: LoopbackBroker, clients: list[Client]
) -> None:
    client = await connect(reactor, server.endpoint)
    clients.append(client)
    await client.create("q", "queue", max_length=100_000)
    results = await within(gatherResults([client.publish("q", b"%d" % i) for i in range(10_000)]))
    assert results == [1] * 10_000
    msgs = await client.pull("q", 10_000)
    assert [m.payload for m in msgs] == [b"%d" % i for i in range(10_000)]


@pytest_twisted.ensureDeferred
async def test_connection_refused_is_not_connected() -> None:
    port = await free_port()
    with pytest.raises(NotConnected, match="cannot connect"):
        await connect(reactor, tcp_endpoint("127.0.0.1", port))


@pytest_twisted.ensureDeferred
async def test_connection_limit_is_a_broker_error(clients: list[Client]) -> None:
    server = await LoopbackBroker.start(reactor, Config(max_connections=1))
    try:
        clients.append(await connect(reactor, server.endpoint))
        with pytest.raises(errors.Limit):
            await within(connect(reactor, server.endpoint))
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_an_unknown_host_or_a_bad_port_is_not_connected() -> None:
    class UnknownHost:
        def connect(self, factory: Any) -> Deferred[Any]:
            return fail(DNSLookupError("nosuchhost.invalid"))

    with pytest.raises(NotConnected, match="cannot connect to .*DNS lookup failed"):
        await connect(reactor, UnknownHost(), timeout=5)  # type: ignore[arg-type]
    with pytest.raises(NotConnected, match="cannot connect to tcp:127.0.0.1:99999: .*65535"):
        await connect(reactor, "tcp:127.0.0.1:99999", timeout=5)


def test_tcp_endpoint_escapes_ipv6() -> None:
    assert tcp_endpoint("::1", 5555) == "tcp:\\:\\:1:5555"
    assert tcp_endpoint() == "tcp:localhost:5555"


# ---------------------------------------------------------------------- TLS


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca").mkdir()
    key_path, cert_path = directory / "key.pem", directory / "ca" / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")  # Twisted's ssl: server
@pytest_twisted.ensureDeferred
async def test_tls_endpoint(tmp_path: Path, clients: list[Client]) -> None:
    key, cert = _self_signed(tmp_path)
    config = Config()
    factory = BrokerFactory(Broker(reactor, config), config, reactor)
    port = await serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    ).listen(factory)
    try:
        number = port.getHost().port
        client = await within(
            connect(reactor, f"tls:localhost:{number}:trustRoots={tmp_path / 'ca'}")
        )
        clients.append(client)
        await client.create("q", "queue")
        assert await client.publish("q", b"secret") == 1
        [m] = await client.pull("q")
        assert m.payload == b"secret"
        await client.close()
    finally:
        await port.stopListening()


# ----------------------------------------------------------------- restarts


@pytest_twisted.ensureDeferred
async def test_subscriptions_are_restored_after_a_restart(
    server: LoopbackBroker, clients: list[Client]
) -> None:
    async def declare(client: Client) -> None:
        await client.create("news", "topic")

    client = await connect(
        reactor, server.endpoint, reconnect=True, retry_policy=FAST_RETRY, on_connect=declare
    )
    clients.append(client)
    got: list[Message] = []
    sub = await client.subscribe("news", got.append, "sport.#")
    assert await client.publish("news", b"before", "sport.uk") == 1
    await eventually(lambda: got)

    unconfirmed = client.publish("news", b"in the gap", "sport.uk")
    await server.restart()  # a new, empty broker on the same port
    with pytest.raises(Unconfirmed):
        await unconfirmed

    await eventually(lambda: client.connected and sub.sid is not None)
    assert "news" in {row.name for row in await client.list()}
    assert await client.publish("news", b"after", "sport.uk") == 1
    assert await client.publish("news", b"ignored", "weather") == 0
    await eventually(lambda: len(got) == 2)
    assert [m.payload for m in got] == [b"before", b"after"]
    assert client.subscriptions == [sub] and sub.active


@pytest_twisted.ensureDeferred
async def test_unacked_messages_come_again_after_reconnecting(
    server: LoopbackBroker, clients: list[Client]
) -> None:
    client = await connect(reactor, server.endpoint, reconnect=True, retry_policy=FAST_RETRY)
    clients.append(client)
    await client.create("jobs", "queue")
    seen: list[tuple[bytes, int]] = []
    stuck: Deferred[None] = Deferred()

    def work(m: Message) -> Deferred[None] | None:
        seen.append((m.payload, m.redelivered))
        return stuck if len(seen) == 1 else None

    await client.subscribe("jobs", work, prefetch=1)
    await client.publish("jobs", b"job-1")
    await eventually(lambda: seen)
    await server.restart(keep_state=True)  # the connection drops, the queue stays
    await eventually(lambda: len(seen) == 2)
    assert seen == [(b"job-1", 0), (b"job-1", 1)]
    stuck.callback(None)  # its ack has no connection any more: logged, not raised
    stats = await client.stats("jobs")
    assert (stats["messages"], stats["unacked"], stats["acked"]) == (0, 0, 1)


@pytest_twisted.ensureDeferred
async def test_a_subscription_that_cannot_be_restored_ends(
    server: LoopbackBroker, clients: list[Client]
) -> None:
    client = await connect(reactor, server.endpoint, reconnect=True, retry_policy=FAST_RETRY)
    clients.append(client)
    await client.create("q", "queue")
    sub = await client.subscribe("q", lambda m: None)
    ended = sub.when_ended()
    await server.restart()  # the queue is gone
    with pytest.raises(errors.NotFound):
        await within(ended)
    assert client.subscriptions == []
    await eventually(lambda: client.connected)


@pytest_twisted.ensureDeferred
async def test_without_reconnect_a_lost_connection_ends_everything(
    server: LoopbackBroker, clients: list[Client]
) -> None:
    client = await connect(reactor, server.endpoint)
    clients.append(client)
    await client.create("q", "queue")
    sub = await client.subscribe("q", lambda m: None)
    ended = sub.when_ended()
    await server.restart()
    with pytest.raises(ConnectionLost):
        await within(ended)
    assert not client.connected
    with pytest.raises(NotConnected):
        await client.publish("q", b"x")
    with pytest.raises(NotConnected):
        await client.when_connected()


@pytest_twisted.ensureDeferred
async def test_reconnect_waits_for_a_broker_that_starts_later(clients: list[Client]) -> None:
    port = await free_port()
    connecting = connect(
        reactor, tcp_endpoint("127.0.0.1", port), reconnect=True, retry_policy=FAST_RETRY
    )
    await deferLater(reactor, 0.2)
    assert not connecting.called
    server = await LoopbackBroker.start(reactor, port=port)
    try:
        client = await within(connecting)
        clients.append(client)
        assert await client.ping() >= 0
        await client.close()
        assert not client.reconnecting
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_reconnect_gives_up_after_the_timeout() -> None:
    port = await free_port()
    with pytest.raises(NotConnected, match="within"):
        await connect(
            reactor,
            tcp_endpoint("127.0.0.1", port),
            reconnect=True,
            retry_policy=FAST_RETRY,
            timeout=0.3,
        )


@pytest_twisted.ensureDeferred
async def test_when_connected_waits_for_the_next_connection(
    server: LoopbackBroker, clients: list[Client]
) -> None:
    client = await connect(reactor, server.endpoint, reconnect=True, retry_policy=FAST_RETRY)
    clients.append(client)
    await server.stop()
    await eventually(lambda: not client.connected)
    with pytest.raises(NotConnected):
        await client.ping()
    waiting = client.when_connected()
    assert not waiting.called
    await server.restart()
    await within(waiting)
    assert await client.ping() >= 0


@pytest_twisted.ensureDeferred
async def test_a_killed_twistd_broker_restarted_on_the_same_port(
    tmp_path: Path, clients: list[Client]
) -> None:
    """The real ``twistd -n mbroker``, killed (SIGKILL) and started again on its port."""
    first = await deferToThread(start_broker, tmp_path, memory_only=True)
    port = first.port
    second = None
    try:

        async def declare(client: Client) -> None:
            await client.create("news", "fanout")

        client = await connect(
            reactor,
            tcp_endpoint(first.host, port),
            reconnect=True,
            retry_policy=FAST_RETRY,
            on_connect=declare,
        )
        clients.append(client)
        got: list[bytes] = []
        sub = await client.subscribe("news", lambda m: got.append(m.payload))
        await client.publish("news", b"before")
        await eventually(lambda: got == [b"before"])
        await deferToThread(first.kill, signal.SIGKILL)
        await eventually(lambda: not client.connected)
        second = await deferToThread(
            start_broker, tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1",
            memory_only=True,
        )  # fmt: skip
        await within(client.when_connected(), 10)
        await eventually(lambda: sub.sid is not None)
        assert await client.publish("news", b"after") == 1
        await eventually(lambda: got == [b"before", b"after"])
    finally:
        await deferToThread(first.stop)
        if second is not None:
            await deferToThread(second.stop)


@pytest_twisted.ensureDeferred
async def test_a_failing_on_connect_is_retried(
    server: LoopbackBroker, clients: list[Client]
) -> None:
    attempts: list[int] = []

    async def flaky(client: Client) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("not yet")
        await client.create("ready", "queue")

    client = await within(
        connect(reactor, server.endpoint, reconnect=True, retry_policy=FAST_RETRY, on_connect=flaky)
    )
    clients.append(client)
    assert len(attempts) == 2
    assert await client.publish("ready", b"x") == 1


# ------------------------------------------------- a server that is not mbroker


class _Impostor(Protocol):
    """A server that is not mbroker: ``greeting`` at once, then ``answer`` to each read
    (``answer_and_close``: as an HTTP server does to a bad request)."""

    def __init__(self, greeting: bytes, answer: bytes, close: bool) -> None:
        self.greeting, self.answer, self.close = greeting, answer, close

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        if self.answer:
            self.transport.write(self.answer)
            if self.close:
                self.transport.loseConnection()


@pytest_twisted.async_yield_fixture
async def impostor() -> AsyncIterator[Callable[..., str]]:
    """``impostor(greeting=b"", answer=b"", close=False)``: the endpoint of such a server."""
    ports: list[Any] = []

    def listen(greeting: bytes = b"", answer: bytes = b"", close: bool = False) -> str:
        factory = Factory.forProtocol(lambda: _Impostor(greeting, answer, close))
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return f"tcp:127.0.0.1:{port.getHost().port}"

    yield listen
    await gatherResults([p.stopListening() for p in ports])


async def refusal(endpoint: str) -> tuple[Exception, float]:
    """How ``connect`` (with a 10 s timeout) fails, and after how many seconds."""
    start = reactor.seconds()
    with pytest.raises(NotConnected) as caught:
        await connect(reactor, endpoint, timeout=10)
    return caught.value, reactor.seconds() - start


HTTP_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_an_http_server_is_named_within_a_second(impostor: Callable[..., str]) -> None:
    endpoint = impostor(answer=HTTP_400, close=True)  # says nothing until asked
    error, took = await refusal(endpoint)
    port = endpoint.rsplit(":", 1)[1]
    assert isinstance(error, NotABroker)
    assert str(error) == (
        f"127.0.0.1:{port} is not an mbroker server (it said: HTTP/1.1 400 Bad Request)"
    )
    assert took < 1.0


@pytest_twisted.ensureDeferred
async def test_a_server_that_speaks_first_or_sends_garbage_is_named_at_once(
    impostor: Callable[..., str],
) -> None:
    smtp, took = await refusal(impostor(greeting=b"220 mail.example.com ESMTP ready\r\n"))
    assert isinstance(smtp, NotABroker) and took < 1.0
    assert "(it said: 220 mail.example.com ESMTP ready)" in str(smtp)
    garbage, took = await refusal(impostor(greeting=b"\x00\xff\x16\x03" * 30))
    assert isinstance(garbage, NotABroker) and took < 1.0
    assert "it said: \\x00" in str(garbage)
    redis, took = await refusal(impostor(answer=b"+PONG\r\n"))  # answers the probe
    assert isinstance(redis, NotABroker) and took < 1.0
    assert "(it said: +PONG)" in str(redis)


@pytest_twisted.ensureDeferred
async def test_reconnect_does_not_retry_a_server_that_is_not_a_broker(
    impostor: Callable[..., str],
) -> None:
    start = reactor.seconds()
    with pytest.raises(NotABroker, match=r"it said: HTTP/1.1 400 Bad Request"):
        await connect(reactor, impostor(answer=HTTP_400, close=True), reconnect=True, timeout=10)
    assert reactor.seconds() - start < 1.0


@pytest_twisted.ensureDeferred
async def test_a_silent_server_is_named_after_the_greeting_timeout(
    impostor: Callable[..., str],
) -> None:
    error, took = await refusal(impostor())
    assert isinstance(error, NotABroker)
    assert str(error).endswith("is not an mbroker server (it said nothing for 1 s)")
    assert 0.9 < took < 3.0


@pytest_twisted.ensureDeferred
async def test_a_slow_greeting_is_still_a_broker(
    server: LoopbackBroker, clients: list[Client]
) -> None:
    """A broker whose greeting comes late answers the probe PING after it: no harm."""
    hello = b"HELLO mbroker 9 proto=1 auth=none max-payload=100\r\n"

    class Slow(Protocol):
        """Greets after 0.5 s, and (like the broker) reads nothing before it greets."""

        def connectionMade(self) -> None:
            IPushProducer(self.transport).pauseProducing()
            reactor.callLater(0.5, self.greet)

        def greet(self) -> None:
            assert self.transport is not None
            self.transport.write(hello)
            IPushProducer(self.transport).resumeProducing()

        def dataReceived(self, data: bytes) -> None:
            assert self.transport is not None
            for line in data.splitlines():
                self.transport.write(b"+PONG\r\n" if line == b"PING" else b"+OK bye\r\n")

    port = reactor.listenTCP(0, Factory.forProtocol(Slow), interface="127.0.0.1")
    try:
        client = await connect(reactor, f"tcp:127.0.0.1:{port.getHost().port}", timeout=10)
        clients.append(client)
        assert client.hello is not None and client.hello.version == "9"
        assert await within(client.ping()) >= 0
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_stray_reply_line_is_one_clear_error(impostor: Callable[..., str]) -> None:
    hello = b"HELLO mbroker 1 proto=1 auth=none max-payload=100\r\n"
    # A reply no command waits for: the next command is told, nothing hangs.
    client = await connect(reactor, impostor(greeting=hello + b"+OK stray\r\n"), timeout=10)
    await eventually(lambda: not client.connected)
    with pytest.raises(NotConnected) as caught:
        await within(client.ping())
    assert "the broker sent a reply no command was waiting for: '+OK stray'" in str(caught.value)
    # A reply that does not fit its command (+PONG to a PUBLISH): that command fails.
    client = await connect(reactor, impostor(greeting=hello, answer=b"+PONG\r\n"), timeout=10)
    with pytest.raises(Unconfirmed) as unconfirmed:
        await within(client.publish("q", b"x"))
    assert "a reply that does not fit its command: '+PONG'" in str(unconfirmed.value)
    assert not client.connected
    # A subscription ends with the same error instead of waiting for ever.
    client = await connect(
        reactor, impostor(greeting=hello, answer=b"+OK 1\r\n+OK 5\r\n"), timeout=10
    )
    sub = await within(client.subscribe("q", lambda m: None))
    with pytest.raises(ConnectionLost) as ended:
        await within(sub.when_ended())
    assert "a reply no command was waiting for: '+OK 5'" in str(ended.value)


# ------------------------------------------------------------------ heartbeats


def _heartbeats(server: LoopbackBroker) -> list[float]:
    """The heartbeat interval of each connection the broker has open (seconds)."""
    assert server._factory is not None
    return [p._heartbeat for p in server._factory.wrappedFactory.protocols]


@pytest_twisted.ensureDeferred
async def test_heartbeat_is_sent_on_every_connection_and_pings_answered(
    server: LoopbackBroker, clients: list[Client]
) -> None:
    client = await connect(
        reactor, server.endpoint, heartbeat=1, reconnect=True, retry_policy=FAST_RETRY
    )
    clients.append(client)
    assert _heartbeats(server) == [1.0]
    proto = client._proto
    # idle for more than 3 x 1 s: the broker pushes PINGs and the client answers them,
    # so the broker keeps the connection (it would close one that stays silent)
    await deferLater(reactor, 3.6)
    assert client.connected and client._proto is proto
    assert await client.ping() >= 0
    await server.restart()
    await eventually(lambda: client.connected and client._proto is not proto)
    await eventually(lambda: _heartbeats(server) == [1.0])
