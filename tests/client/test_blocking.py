"""The blocking facade, driven from worker threads while the test reactor runs the broker.

pytest-twisted runs the reactor in this process, so crochet is told not to start one
(``crochet.no_setup()``); each test runs its blocking script in a thread with
``deferToThread`` and awaits it.  ``examples/publisher.py`` runs the facade the way
scripts do, with crochet's own reactor thread (tests/test_examples.py).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import crochet
import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.threads import deferToThread

from mbroker import errors
from mbroker.client.blocking import BlockingMessage, Connection
from mbroker.client.connection import NotConnected
from mbroker.testing import LoopbackBroker

try:
    crochet.no_setup()
except RuntimeError:  # already done by another module of this run
    pass

reactor: Any = _reactor
T = TypeVar("T")
pytestmark = pytest.mark.filterwarnings("ignore:isSet:DeprecationWarning")  # crochet 2.1


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[LoopbackBroker]:
    broker = await LoopbackBroker.start(reactor)
    yield broker
    await broker.stop()


async def in_thread(script: Callable[[], T], timeout: float = 10.0) -> T:
    result: T = await deferToThread(script).addTimeout(timeout, reactor)
    return result


@pytest_twisted.ensureDeferred
async def test_commands(server: LoopbackBroker) -> None:
    def script() -> None:
        with Connection(endpoint=server.endpoint, timeout=5) as conn:
            assert conn.hello is not None
            assert conn.create("logs", "fanout") is True
            assert conn.create("q", "queue", max_length=100) is True
            conn.bind("q", "logs")
            assert conn.publish("logs", "hello") == 1
            assert conn.publish_many("q", [b"1", b"2", b"3"]) == [1, 1, 1]
            first, *rest = conn.pull("q", 10, ack="manual")
            assert first.text == "hello" and first.source == "logs"
            first.ack()
            assert first.settled
            assert conn.nack(rest, requeue=True) == 3
            again = conn.pull("q", 10)
            assert [m.payload for m in again] == [b"1", b"2", b"3"]
            assert all(m.redelivered == 1 for m in again)
            assert conn.pull("q", wait=50) == []
            assert {row.name for row in conn.list()} == {"logs", "q"}
            assert conn.stats("q")["messages"] == 0
            assert conn.ping() >= 0
            with pytest.raises(errors.NotFound):
                conn.publish("nope", b"x")
            with pytest.raises(errors.NotFound):
                conn.publish_many("nope", [b"x", b"y"])
            conn.unbind("q", "logs")
            assert conn.purge("q") == 0
            assert conn.delete("q") == 0

    await in_thread(script)


@pytest_twisted.ensureDeferred
async def test_subscribe_runs_callbacks_in_worker_threads(server: LoopbackBroker) -> None:
    reactor_thread = threading.current_thread()

    def script() -> list[tuple[bytes, int, bool]]:
        seen: list[tuple[bytes, int, bool]] = []
        done = threading.Event()

        def callback(message: BlockingMessage) -> None:
            seen.append(
                (
                    message.payload,
                    message.redelivered,
                    threading.current_thread() is reactor_thread,
                )
            )
            if message.payload == b"fail" and not message.redelivered:
                raise RuntimeError("try again")
            if len(seen) == 4:
                done.set()

        with Connection(endpoint=server.endpoint, timeout=5) as conn:
            conn.create("jobs", "queue")
            sub = conn.subscribe("jobs", callback, prefetch=10)
            for payload in (b"a", b"fail", b"b"):
                conn.publish("jobs", payload)
            assert done.wait(5)
            with pytest.raises(TimeoutError):
                sub.wait(timeout=0.05)
            sub.unsubscribe()
            assert sub.wait(1) == "unsubscribed" and not sub.active
            assert sub.received == 4
            stats = conn.stats("jobs")
            assert (stats["messages"], stats["unacked"], stats["acked"]) == (0, 0, 3)
        return seen

    seen = await in_thread(script)
    assert sorted((p, r) for p, r, _ in seen) == [(b"a", 0), (b"b", 0), (b"fail", 0), (b"fail", 1)]
    assert not any(in_reactor for _, _, in_reactor in seen)


@pytest_twisted.ensureDeferred
async def test_a_callback_may_settle_its_message(server: LoopbackBroker) -> None:
    def script() -> dict[str, int | str]:
        got = threading.Event()

        def reject(message: BlockingMessage) -> None:
            message.nack(requeue=False)
            got.set()

        with Connection(endpoint=server.endpoint) as conn:
            conn.create("dead", "queue")
            conn.create("q", "queue", dead_letter="dead")
            conn.subscribe("q", reject)
            conn.publish("q", b"poison")
            assert got.wait(5)
            [dead] = conn.pull("dead", wait=2000)
            assert dead.reason == "rejected"
            return conn.stats("q")

    stats = await in_thread(script)
    assert stats["acked"] == 0 and stats["dead_lettered"] == 1


@pytest_twisted.ensureDeferred
async def test_refused_connection(server: LoopbackBroker) -> None:
    port = server.port
    await server.stop()

    def script() -> None:
        with pytest.raises(NotConnected):
            Connection("127.0.0.1", port, timeout=5)

    await in_thread(script)
