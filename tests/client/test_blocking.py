"""The blocking facade, driven from worker threads while the test reactor runs the broker.

pytest-twisted runs the reactor in this process, so crochet is told not to start one
(``crochet.no_setup()``); each test runs its blocking script in a thread with
``deferToThread`` and awaits it.  ``examples/publisher.py`` runs the facade the way
scripts do, with crochet's own reactor thread (tests/test_examples.py).
"""

from __future__ import annotations

import signal
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import crochet
import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from mbroker import errors
from mbroker.client import Published
from mbroker.client.blocking import BlockingMessage, Connection
from mbroker.client.connection import NotConnected, connect
from mbroker.testing import LoopbackBroker
from tests.helpers.proc import ROOT, Proc
from tests.helpers.state import now

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
            assert sub.wait(timeout=0.05) is None  # the user's timeout: not an error
            assert sub.active
            sub.unsubscribe()
            assert sub.wait(1) == "unsubscribed" and not now(lambda: sub.active)
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


# ------------------------------------------------- README's example, as a script


def readme_block(first_line: str) -> str:
    """The code block of README.rst that starts with ``first_line``, as written there."""
    text = (ROOT / "README.rst").read_text()
    start = text.index(f"    {first_line}\n")
    lines = []
    for line in text[start:].splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


def readme_example(port: int, timeout: float) -> str:
    """README's blocking example, as written there, for a broker on ``port``."""
    code = readme_block("from mbroker.blocking import Connection")
    assert 'Connection("localhost", 5555)' in code and "wait(timeout=5)" in code
    code = code.replace('"localhost", 5555', f'"127.0.0.1", {port}')
    return code.replace("wait(timeout=5)", f"wait(timeout={timeout})")


def run_script(tmp_path: Path, code: str) -> Proc:
    script = tmp_path / "example.py"
    script.write_text(code)
    return Proc.start([sys.executable, str(script)])


@pytest_twisted.ensureDeferred
async def test_readme_example_ends_cleanly_when_its_timeout_passes(
    server: LoopbackBroker, tmp_path: Path
) -> None:
    proc = run_script(tmp_path, readme_example(server.port, timeout=0.5))
    assert await proc.ended() == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("hello\na\nb\nc\n", "")


@pytest_twisted.ensureDeferred
async def test_ctrl_c_in_a_blocking_wait_ends_without_a_traceback(
    server: LoopbackBroker, tmp_path: Path
) -> None:
    proc = run_script(tmp_path, readme_example(server.port, timeout=60))
    await proc.wait_for("c\n")
    client = await connect(reactor, server.endpoint)
    try:
        deadline = reactor.seconds() + 15
        while (await client.stats("jobs"))["consumers"] != 1:
            assert reactor.seconds() < deadline, "the example never subscribed"
            await deferLater(reactor, 0.02)
        await client.publish("jobs", "live")  # the subscription is up: wait() is waiting
        await proc.wait_for("live\n")
        proc.signal(signal.SIGINT)
        assert await proc.ended() == 0, proc.stderr
        assert proc.stderr == ""
        assert proc.stdout == "hello\na\nb\nc\nlive\n"
        stats = await client.stats("jobs")
        assert (stats["consumers"], stats["messages"], stats["unacked"]) == (0, 0, 0)
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_readme_client_and_blocking_examples_run_one_after_the_other(
    server: LoopbackBroker, tmp_path: Path
) -> None:
    """A reader runs README's examples in order on one broker: they share the "jobs"
    queue, so they must declare it alike, and each may be run again."""
    client_code = readme_block("from twisted.internet import task")
    assert '"tcp:localhost:5555"' in client_code
    client_code = client_code.replace('"tcp:localhost:5555"', f'"{server.endpoint}"')
    for code, out in [
        (client_code, "b'resize photo 42' jobs  0\n"),
        (readme_example(server.port, timeout=0.1), "hello\na\nb\nc\n"),
        (client_code, "b'resize photo 42' jobs  0\n"),
    ]:
        proc = run_script(tmp_path, code)
        assert await proc.ended() == 0, proc.stderr
        assert (proc.stdout, proc.stderr) == (out, "")


@pytest_twisted.ensureDeferred
async def test_heartbeat_is_passed_on_and_pings_are_answered_between_calls(
    server: LoopbackBroker,
) -> None:
    assert server._factory is not None
    protocols = server._factory.wrappedFactory.protocols

    def script() -> None:
        with Connection(endpoint=server.endpoint, timeout=5, heartbeat=1) as conn:
            assert [p._heartbeat for p in protocols] == [1.0]
            threading.Event().wait(3.5)  # no call for more than 3 x 1 s
            assert conn.ping() >= 0  # the same connection: the reactor answered the PINGs

    await in_thread(script)


@pytest_twisted.ensureDeferred
async def test_properties_through_the_facade(server: LoopbackBroker) -> None:
    def script() -> None:
        with Connection(endpoint=server.endpoint, timeout=5) as conn:
            assert conn.create("q", "queue", dedup_window=60000) is True
            sent = conn.publish("q", "x", headers={"k": "v"}, id="m1", priority=4)
            assert sent == 1 and isinstance(sent, Published) and not sent.duplicate
            many = conn.publish_many("q", [b"a", b"b"], headers={"k": b"w"}, priority=1)
            assert many == [1, 1]
            with pytest.raises(errors.BadArgs, match="bad header name"):
                conn.publish("q", "x", headers={"no spaces": "v"})
            got = conn.pull("q", 3)
            assert [(m.headers, m.id, m.priority) for m in got] == [
                ({"k": b"v"}, "m1", 4),
                ({"k": b"w"}, None, 1),
                ({"k": b"w"}, None, 1),
            ]

    await in_thread(script)
