"""The tutorial's programs (``docs/tutorial/*.py``), run as a reader runs them, against
a real broker: in this process on a loopback port, or ``twistd -n mbroker`` with a
data directory where durability is the point."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from mbroker.client.connection import Client
from mbroker.testing import LoopbackBroker
from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.proc import ROOT, Proc, child_env

reactor: Any = _reactor
TUTORIAL = ROOT / "docs" / "tutorial"
PROGRAMS = [
    "work_queues.py",
    "publish_subscribe.py",
    "routing.py",
    "topics.py",
    "rpc.py",
    "durable_work.py",
]


def start(broker: LoopbackBroker, script: str, *args: str) -> Proc:
    address = ["--host", "127.0.0.1", "--port", str(broker.port)]
    return Proc.start([sys.executable, str(TUTORIAL / script), *address, *args])


async def run(broker: LoopbackBroker, script: str, *args: str) -> Proc:
    proc = start(broker, script, *args)
    await proc.ended()
    return proc


def test_the_tutorial_shows_every_program() -> None:
    text = (TUTORIAL / "index.rst").read_text(encoding="utf-8")
    assert sorted(p.name for p in TUTORIAL.glob("*.py") if p.name != "common.py") == sorted(
        PROGRAMS
    )
    for program in PROGRAMS:
        assert f".. literalinclude:: {program}" in text, program


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_1_work_queues_share_tasks_one_at_a_time(
    broker: LoopbackBroker, client: Client
) -> None:
    workers = [start(broker, "work_queues.py", "work", "--count", "3") for _ in range(2)]
    for worker in workers:
        await worker.wait_for("waiting for tasks", "err")
    sender = await run(broker, "work_queues.py", "send", *[f"t{i}:0.1" for i in range(6)])
    assert sender.code == 0, sender.stderr
    assert sender.stdout.splitlines() == [f"sent t{i}:0.1" for i in range(6)]
    codes = await gatherResults([w.ended() for w in workers])
    assert codes == [0, 0], [w.stderr for w in workers]
    done = [re.findall(r"done (t\d)", w.stdout) for w in workers]
    assert sorted(done[0] + done[1]) == [f"t{i}" for i in range(6)]
    assert len(done[0]) == len(done[1]) == 3
    assert (await client.stats("task_queue"))["messages"] == 0


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_2_publish_subscribe_reaches_every_listener(
    broker: LoopbackBroker, client: Client
) -> None:
    listeners = [start(broker, "publish_subscribe.py", "listen", "--count", "2") for _ in range(2)]
    for listener in listeners:
        await listener.wait_for("listening", "err")
    first = await run(broker, "publish_subscribe.py", "emit", "disk 91% full")
    assert (first.code, first.stdout) == (0, "sent to 2 listener(s)\n"), first.stderr
    await client.publish("logs", "disk 99% full")
    for listener in listeners:
        assert await listener.ended() == 0, listener.stderr
        assert listener.stdout == "disk 91% full\ndisk 99% full\n"
    # the listeners' queues went with them
    await until(lambda: list_names(client), lambda names: names == ["logs"])


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_3_routing_by_severity(broker: LoopbackBroker, client: Client) -> None:
    errors = start(broker, "routing.py", "listen", "error", "--count", "1")
    everything = start(broker, "routing.py", "listen", "info", "warning", "error", "--count", "3")
    await errors.wait_for("listening for error", "err")
    await everything.wait_for("listening for info warning error", "err")
    info = await run(broker, "routing.py", "emit", "info", "started")
    assert (info.code, info.stdout) == (0, "sent [info] to 1 listener(s)\n"), info.stderr
    await client.publish("direct_logs", "low on disk", "warning")
    await client.publish("direct_logs", "disk full", "error")
    assert await errors.ended() == 0 and await everything.ended() == 0
    assert errors.stdout == "[error] disk full\n"
    assert everything.stdout == "[info] started\n[warning] low on disk\n[error] disk full\n"


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_4_topics_by_pattern(broker: LoopbackBroker, client: Client) -> None:
    kern = start(broker, "topics.py", "listen", "kern.*", "--count", "2")
    critical = start(broker, "topics.py", "listen", "*.critical", "--count", "2")
    await kern.wait_for("listening for kern.*", "err")
    await critical.wait_for("listening for *.critical", "err")
    emitted = await run(broker, "topics.py", "emit", "kern.critical", "A critical kernel error")
    assert (emitted.code, emitted.stdout) == (0, "sent [kern.critical] to 2 listener(s)\n")
    await client.publish("topic_logs", "booted", "kern.info")
    await client.publish("topic_logs", "out of memory", "app.critical")
    await client.publish("topic_logs", "nobody listens", "app.info")
    assert await kern.ended() == 0 and await critical.ended() == 0
    assert kern.stdout == "[kern.critical] A critical kernel error\n[kern.info] booted\n"
    assert (
        critical.stdout == "[kern.critical] A critical kernel error\n[app.critical] out of memory\n"
    )


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_5_rpc(broker: LoopbackBroker, client: Client) -> None:
    server = start(broker, "rpc.py", "serve", "--count", "2")
    await server.wait_for("serving", "err")
    ten, thirty = await gatherResults(
        [
            Deferred.fromCoroutine(run(broker, "rpc.py", "call", "10")),
            Deferred.fromCoroutine(run(broker, "rpc.py", "call", "30")),
        ]
    )
    assert (ten.code, ten.stdout) == (0, "fib(10) = 55\n"), ten.stderr
    assert (thirty.code, thirty.stdout) == (0, "fib(30) = 832040\n"), thirty.stderr
    assert await server.ended() == 0, server.stderr
    assert sorted(server.stdout.splitlines()) == ["fib(10) = 55", "fib(30) = 832040"]
    stats = await client.stats("rpc_queue")
    assert (stats["messages"], stats["unacked"]) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_5_rpc_without_a_server_gives_up_and_its_request_expires(
    broker: LoopbackBroker, client: Client
) -> None:
    lonely = await run(broker, "rpc.py", "call", "7", "--timeout", "0.5")
    assert lonely.code == 1
    assert "no answer in 0.5 s" in lonely.stderr
    assert "Traceback" not in lonely.stderr
    # nobody will read the answer: the request does not outlive the caller's wait
    await until(lambda: client.stats("rpc_queue"), lambda stats: stats["messages"] == 0)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_6_durable_work_survives_a_crashed_worker(
    broker: LoopbackBroker, client: Client
) -> None:
    sender = await run(broker, "durable_work.py", "send", "t0", "t1", "t2")
    assert sender.code == 0, sender.stderr
    crasher = await run(broker, "durable_work.py", "work", "--crash-on", "t1")
    assert crasher.code == 3
    assert crasher.stdout == "done t0\n"
    assert "crashing on t1" in crasher.stderr
    # once the broker has seen the crashed worker go, t1 is back in the queue
    await until(
        lambda: client.stats("durable_tasks"),
        lambda stats: (stats["messages"], stats["unacked"]) == (2, 0),
    )
    worker = await run(broker, "durable_work.py", "work", "--count", "2")
    assert worker.code == 0, worker.stderr
    assert worker.stdout == "done t1 (redelivered)\ndone t2\n"
    stats = await client.stats("durable_tasks")
    assert (stats["messages"], stats["unacked"], stats["acked"]) == (0, 0, 3)
    [queue] = [row for row in await client.list() if row.name == "durable_tasks"]
    assert queue.durable


@pytest.mark.slow
def test_6_durable_work_survives_a_broker_restart(tmp_path: Path) -> None:
    def program(broker: BrokerProcess, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, str(TUTORIAL / "durable_work.py")]
        argv += ["--host", broker.host, "--port", str(broker.port), *args]
        return subprocess.run(
            argv, env=child_env(), capture_output=True, text=True, timeout=60, check=False
        )

    broker = start_broker(tmp_path)
    try:
        sent = program(broker, "send", "resize-1", "resize-2")
        assert sent.returncode == 0, sent.stderr
    finally:
        broker.stop()
    broker = start_broker(tmp_path)  # the same data directory
    try:
        worked = program(broker, "work", "--count", "2")
    finally:
        broker.stop()
    assert worked.returncode == 0, worked.stderr
    assert worked.stdout == "done resize-1\ndone resize-2\n"


# ------------------------------------------------------------------ helpers


async def list_names(client: Client) -> list[str]:
    return sorted(row.name for row in await client.list())


async def until(get: Any, check: Any, deadline: float = 10.0) -> None:
    """Poll ``await get()`` until ``check`` holds for it, or fail after ``deadline``."""
    end = reactor.seconds() + deadline
    while True:
        value = await get()
        if check(value):
            return
        if reactor.seconds() > end:
            raise AssertionError(f"still {value!r} after {deadline} s")
        await deferLater(reactor, 0.05, lambda: None)
