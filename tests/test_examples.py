"""Each example, run as a user runs it (``python examples/X.py …``), against a real broker
on a loopback port of this process."""

from __future__ import annotations

import re
import signal
import sys
from typing import Any

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults

from mbroker.client.connection import Client
from mbroker.testing import LoopbackBroker
from tests.helpers.proc import ROOT, Proc

reactor: Any = _reactor


def start(broker: LoopbackBroker, script: str, *args: str) -> Proc:
    argv = [sys.executable, str(ROOT / "examples" / script), *args]
    return Proc.start([*argv, "--host", "127.0.0.1", "--port", str(broker.port)])


async def run(broker: LoopbackBroker, script: str, *args: str) -> Proc:
    proc = start(broker, script, *args)
    await proc.ended()
    return proc


async def run_all(broker: LoopbackBroker, *runs: tuple[str, ...]) -> list[Proc]:
    return await gatherResults([Deferred.fromCoroutine(run(broker, *r)) for r in runs])


# ------------------------------------------------------- publisher & subscriber


@pytest_twisted.ensureDeferred
async def test_publisher_and_live_subscriber(broker: LoopbackBroker, client: Client) -> None:
    created = await run(broker, "publisher.py", "--create", "news")
    assert (created.code, created.stdout) == (0, "created topic news\n")
    sub = start(broker, "subscriber.py", "--subscribe", "news")
    missing, usage, exists = await run_all(
        broker,
        ("publisher.py", "--publish", "nowhere", "x"),
        ("publisher.py", "--create", "a", "--delete", "a"),
        ("publisher.py", "--create", "news"),
    )
    assert missing.code == 1 and "NOT_FOUND" in missing.stderr
    assert usage.code == 2
    assert (exists.code, exists.stdout) == (0, "topic news exists\n")
    await sub.wait_for("subscribed to news", "err")
    first = await run(broker, "publisher.py", "--publish", "news", "hello world", "--key", "a.b")
    assert (first.code, first.stdout) == (0, "published to news (1 subscriber queue(s) reached)\n")
    await client.publish("news", "second")
    await sub.wait_for("second\n")
    sub.signal(signal.SIGINT)  # Ctrl-C
    assert await sub.ended() == 0, sub.stderr
    assert sub.stdout == "hello world\nsecond\n"
    assert "ended: unsubscribed" in sub.stderr
    deleted = await run(broker, "publisher.py", "--delete", "news")
    assert (deleted.code, deleted.stdout) == (0, "deleted topic news\n")


@pytest_twisted.ensureDeferred
async def test_pulling_subscriber_gets_what_arrived_since_its_last_pull(
    broker: LoopbackBroker, client: Client
) -> None:
    await client.create("news", "topic")
    first, missing, usage = await run_all(
        broker,
        ("subscriber.py", "--pull", "news", "--name", "alice"),
        ("subscriber.py", "--pull", "nowhere", "--name", "carol"),
        ("subscriber.py", "--pull", "news"),
    )
    assert (first.code, first.stdout) == (0, "")
    assert "created queue alice" in first.stderr
    assert missing.code == 1 and "NOT_FOUND" in missing.stderr
    assert usage.code == 2 and "--name" in usage.stderr
    for i in range(150):  # more than one PULL's worth
        await client.publish("news", f"item {i}", "any.key")
    second, bob = await run_all(
        broker,
        ("subscriber.py", "--pull", "news", "--name", "alice"),
        ("subscriber.py", "--pull", "news", "--name", "bob"),
    )
    assert second.code == 0 and second.stdout.splitlines() == [f"item {i}" for i in range(150)]
    assert (bob.code, bob.stdout) == (0, "")  # bob starts now
    await client.publish("news", "later", "k")
    third = await run(broker, "subscriber.py", "--pull", "news", "--name", "alice")
    assert (third.code, third.stdout) == (0, "later\n")
    alice = [row for row in await client.list() if row.name == "alice"]
    assert alice and alice[0].durable


# -------------------------------------------------------------- more examples


@pytest_twisted.ensureDeferred
async def test_work_queue_shares_tasks_and_acks_them(
    broker: LoopbackBroker, client: Client
) -> None:
    workers = [start(broker, "work_queue.py", "--work", "--count", "3") for _ in range(2)]
    for worker in workers:
        await worker.wait_for("waiting for tasks", "err")
    sender = await run(broker, "work_queue.py", "--send", *[f"t{i}:0.2" for i in range(6)])
    assert sender.code == 0 and sender.stdout.count("sent t") == 6
    codes = await gatherResults([w.ended() for w in workers])
    assert codes == [0, 0], [w.stderr for w in workers]
    done = [re.findall(r"done (t\d)", w.stdout) for w in workers]
    assert sorted(done[0] + done[1]) == [f"t{i}" for i in range(6)]
    assert len(done[0]) == len(done[1]) == 3
    stats = await client.stats("tasks")
    assert (stats["messages"], stats["unacked"], stats["acked"]) == (0, 0, 6)


@pytest_twisted.ensureDeferred
async def test_fanout_logs_reach_every_listener(broker: LoopbackBroker, client: Client) -> None:
    listeners = [start(broker, "fanout_logs.py", "--listen", "--count", "2") for _ in range(2)]
    for listener in listeners:
        await listener.wait_for("listening", "err")
    first = await run(broker, "fanout_logs.py", "--emit", "info", "started")
    assert (first.code, first.stdout) == (0, "sent to 2 listener(s)\n")
    await client.publish("logs", "ERROR: disk full")
    for listener in listeners:
        assert await listener.ended() == 0
        assert listener.stdout == "INFO: started\nERROR: disk full\n"


@pytest_twisted.ensureDeferred
async def test_topic_routing_by_patterns(broker: LoopbackBroker, client: Client) -> None:
    kern = start(broker, "topic_routing.py", "--listen", "kern.*", "--count", "2")
    critical = start(
        broker, "topic_routing.py", "--listen", "*.critical", "kern.critical", "--count", "2"
    )
    await kern.wait_for("listening for kern.*", "err")
    await critical.wait_for("listening for *.critical kern.critical", "err")
    emitted = await run(broker, "topic_routing.py", "--emit", "kern.critical", "disk full")
    assert (emitted.code, emitted.stdout) == (0, "sent [kern.critical] to 2 listener(s)\n")
    await client.publish("topic_logs", "boot", "kern.info")
    await client.publish("topic_logs", "oom", "app.critical")
    assert await kern.ended() == 0 and await critical.ended() == 0
    assert kern.stdout == "[kern.critical] disk full\n[kern.info] boot\n"
    assert critical.stdout == "[kern.critical] disk full\n[app.critical] oom\n"


@pytest_twisted.ensureDeferred
async def test_request_reply(broker: LoopbackBroker) -> None:
    server = start(broker, "rpc.py", "--serve", "--count", "2")
    await server.wait_for("serving", "err")
    ten, thirty = await run_all(broker, ("rpc.py", "--call", "10"), ("rpc.py", "--call", "30"))
    assert (ten.code, ten.stdout) == (0, "fib(10) = 55\n"), ten.stderr
    assert (thirty.code, thirty.stdout) == (0, "fib(30) = 832040\n"), thirty.stderr
    assert await server.ended() == 0
    assert sorted(server.stdout.splitlines()) == ["fib(10) = 55", "fib(30) = 832040"]
