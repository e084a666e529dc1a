"""Contract section 6, limits and flow control: slow consumers, clients that do not read
their replies, bounded memory, and ``-ERR LIMIT``."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import (
    Client,
    connect,
    poll,
    rss_bytes,
    running_broker,
    start_configured_broker,
    unique,
)
from tests.helpers.lineclient import Msg
from tests.helpers.targets import node_args

MiB = 1024 * 1024
PRIVATE_MAX_BYTES = 4 * MiB
PAYLOAD = 8 * 1024


@pytest.fixture(scope="module")
def broker(
    request: pytest.FixtureRequest, target: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """Default limits but a 4 MiB private queue, so that slow subscribers overflow fast."""
    args = ("--private-max-bytes", str(PRIVATE_MAX_BYTES), *node_args(request))
    yield from running_broker(tmp_path_factory, *args)


@pytest.fixture(scope="module")
def configured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """Limits that twistd's options cannot set yet."""
    process = start_configured_broker(
        Path(tmp_path_factory.mktemp("configured")),
        max_connections=4,
        max_subscriptions=3,
        slow_consumer_disconnect=True,
        private_max_length=50,
    )
    try:
        yield process
    finally:
        process.stop()


def _alone(broker: BrokerProcess) -> bool:
    """Whether a new connection is greeted and is the broker's only one."""
    try:
        with connect(broker) as probe:
            return probe.hello.startswith(b"HELLO") and probe.stats()["connections"] == "1"
    except (ConnectionError, TimeoutError, OSError):
        return False


@pytest.fixture
def configured(configured_broker: BrokerProcess) -> BrokerProcess:
    """The broker with four connections at most, once every earlier test's connections
    have gone (the broker counts a closed one only when it has seen the close)."""
    poll(lambda: _alone(configured_broker))
    return configured_broker


def numbered(i: int) -> bytes:
    return b"%08d" % i + b"." * (PAYLOAD - 8)


def flood(c: Client, name: str, start: int, count: int, batch: int = 200) -> None:
    """Publish ``count`` numbered payloads, pipelined ``batch`` at a time."""
    for first in range(start, start + count, batch):
        numbers = range(first, min(first + batch, start + count))
        c.send(
            b"".join(
                b"PUBLISH %s %d\r\n%s\r\n" % (name.encode(), PAYLOAD, numbered(i)) for i in numbers
            )
        )
        for _ in numbers:
            data, status = c.read_reply()
            assert status.startswith(b"+OK ") and not data, status


def drain(c: Client, quiet_for: float = 0.3) -> list[Msg]:
    """Every message pushed to ``c`` until nothing more comes for ``quiet_for`` s."""
    out = []
    while True:
        try:
            out.append(c.read_msg(quiet_for))
        except TimeoutError:
            return out


def number(m: Msg) -> int:
    return int(m.payload[:8])


# ---------------------------------------------------------------- slow consumers


def test_a_subscriber_that_never_reads(broker: BrokerProcess) -> None:
    with connect(broker) as admin, connect(broker) as slow, connect(broker) as pub:
        ex = unique("ex")
        admin.ok(f"CREATE {ex} fanout")
        before = set(admin.listing())
        slow.ok(f"SUBSCRIBE {ex}")
        (private,) = set(admin.listing()) - before

        flood(pub, ex, 0, 3000)  # 24 MB: far more than the socket and the queue hold
        first = admin.stats(private)
        rss_first = rss_bytes(broker)
        started = time.monotonic()
        assert admin.ok("PING") == "+PONG"  # the broker serves the others meanwhile
        assert time.monotonic() - started < 1
        flood(pub, ex, 3000, 3000)  # 24 MB more
        second = admin.stats(private)
        rss_second = rss_bytes(broker)

        assert 0 < int(first["dropped"]) < int(second["dropped"])
        assert int(second["bytes"]) <= PRIVATE_MAX_BYTES
        assert int(second["published"]) == 6000
        assert int(second["delivered"]) + int(second["messages"]) + int(second["dropped"]) == 6000
        # A broker that kept every message would have grown by 24 MB more.
        assert rss_second - rss_first < 8 * MiB, (rss_first, rss_second)

        got = [number(m) for m in drain(slow)]  # it finally reads: the newest, in order
        assert got == sorted(got) and len(got) == int(second["delivered"]) + int(second["messages"])
        assert got[-1] == 5999
        assert int(admin.stats(private)["dropped"]) == 6000 - len(got)


def test_a_consumer_that_does_not_read_is_skipped(broker: BrokerProcess) -> None:
    n = 4000
    with connect(broker) as admin, connect(broker) as slow, connect(broker) as fast:
        q = unique("q")
        admin.ok(f"CREATE {q} queue")
        slow.ok(f"SUBSCRIBE {q}")
        fast.ok(f"SUBSCRIBE {q}")
        errors: list[BaseException] = []

        def publish() -> None:
            try:
                flood(admin, q, 0, n)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        publisher = threading.Thread(target=publish)
        publisher.start()
        fast_got = []
        while True:  # read while it publishes, until it is done and nothing more comes
            try:
                fast_got.append(number(fast.read_msg(0.2)))
            except TimeoutError:
                if not publisher.is_alive():
                    break
        publisher.join()
        assert not errors, errors
        # Only what fitted in its socket before it was congested went to the slow one.
        assert len(fast_got) > n / 2, len(fast_got)
        slow_got = [number(m) for m in drain(slow)]
        assert sorted(fast_got + slow_got) == list(range(n))
        assert admin.stats(q)["messages"] == "0"


def test_a_client_that_does_not_read_its_replies_is_not_read_either(
    broker: BrokerProcess,
) -> None:
    line = b"PING\r\n"
    chunk = memoryview(line * 100_000)
    attempt = 256 * MiB
    rss_before = rss_bytes(broker)
    with connect(broker) as flooder, connect(broker) as other:
        sock = flooder.sock
        # Small socket buffers on our side: less for the broker to catch up on later.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        sock.setblocking(False)
        sent, offset, stalled = 0, 0, None
        while sent < attempt:
            try:
                n = sock.send(chunk[offset:])
            except BlockingIOError:
                n = 0
            if n:
                sent, offset, stalled = sent + n, (offset + n) % len(chunk), None
            elif stalled is None:
                stalled = time.monotonic()
            elif time.monotonic() - stalled > 0.5:
                break
            else:
                select.select([], [sock], [], 0.05)
        # Back-pressure: the broker stopped reading long before the attempt was made.
        assert sent < attempt / 4, sent
        started = time.monotonic()
        assert other.ok("PING") == "+PONG"
        assert time.monotonic() - started < 1
        assert rss_bytes(broker) - rss_before < 32 * MiB

        # Nothing was lost: every PING gets its +PONG, in order, once the client reads.
        rest = line[sent % len(line) :] if sent % len(line) else b""
        pings = (sent + len(rest)) // len(line)
        sock.setblocking(True)
        sender = threading.Thread(target=sock.sendall, args=(rest + b"QUIT\r\n",))
        sender.start()
        received = bytearray()
        sock.settimeout(30)
        while chunk_in := sock.recv(1 << 20):
            received += chunk_in
        sender.join()
    assert len(received) == pings * 7 + len(b"+OK bye\r\n")
    assert received == b"+PONG\r\n" * pings + b"+OK bye\r\n"


# ---------------------------------------------------------------- LIMIT


def test_at_most_1000_subscriptions_per_connection(broker: BrokerProcess) -> None:
    with connect(broker) as c:
        q = unique("q")
        c.ok(f"CREATE {q} queue")
        c.send(f"SUBSCRIBE {q}\r\n".encode() * 1001)
        for sid in range(1, 1001):
            assert c.read_reply() == ([], b"+OK %d" % sid)
        assert c.read_reply() == ([], b"-ERR LIMIT at most 1000 subscriptions per connection")
        assert c.ok("PING") == "+PONG"


def test_the_subscription_limit(configured: BrokerProcess) -> None:
    with connect(configured) as c:
        q = unique("q")
        c.ok(f"CREATE {q} queue")
        for sid in (1, 2, 3):
            assert c.ok(f"SUBSCRIBE {q}") == f"+OK {sid}"
        assert c.err(f"SUBSCRIBE {q}") == "-ERR LIMIT at most 3 subscriptions per connection"
        assert c.ok("PING") == "+PONG"  # not fatal
        assert c.ok("UNSUBSCRIBE 2") == "+OK"
        assert c.ok(f"SUBSCRIBE {q}") == "+OK 4"


def test_the_connection_limit(configured: BrokerProcess) -> None:
    clients = [connect(configured) for _ in range(4)]
    try:
        assert all(c.hello.startswith(b"HELLO mbroker ") for c in clients)
        with connect(configured) as refused:
            assert refused.hello == b"-ERR LIMIT at most 4 connections"
            assert refused.expect_closed()
        clients.pop().close()

        def greeted() -> bool:
            c = connect(configured)
            if c.hello.startswith(b"HELLO "):
                clients.append(c)
                return True
            c.close()
            return False

        poll(greeted)
    finally:
        for c in clients:
            c.close()


def test_a_slow_subscriber_can_be_disconnected(configured: BrokerProcess) -> None:
    with connect(configured) as slow, connect(configured) as pub:
        ex = unique("ex")
        pub.ok(f"CREATE {ex} fanout")
        slow.ok(f"SUBSCRIBE {ex}")
        flood(pub, ex, 0, 2000)
        data, status = slow.read_reply(30)  # the MSG frames it had, then the verdict
        assert status == b"-ERR LIMIT slow consumer"
        assert slow.pushed and all(isinstance(m, Msg) for m in slow.pushed)
        flood(pub, ex, 2000, 10)  # nothing more for the slow one, even if it reads
        assert slow.expect_closed()
        with pytest.raises((TimeoutError, ConnectionError)):
            slow.readline(0)  # nothing came after the -ERR line
        assert pub.ok("PING") == "+PONG"
