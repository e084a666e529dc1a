"""Each example, run as a user runs it (``python examples/X.py …``), against a real broker
on a loopback port of this process."""

from __future__ import annotations

import json
import re
import signal
import sys
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert "created queue" not in missing.stderr
    assert "carol" not in {row.name for row in await client.list()}  # made, then undone
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_request_reply(broker: LoopbackBroker, client: Client) -> None:
    server = start(broker, "rpc.py", "--serve", "--count", "2")
    await server.wait_for("serving", "err")
    ten, thirty = await run_all(broker, ("rpc.py", "--call", "10"), ("rpc.py", "--call", "30"))
    assert (ten.code, ten.stdout) == (0, "fib(10) = 55\n"), ten.stderr
    assert (thirty.code, thirty.stdout) == (0, "fib(30) = 832040\n"), thirty.stderr
    assert await server.ended() == 0
    assert sorted(server.stdout.splitlines()) == ["fib(10) = 55", "fib(30) = 832040"]
    # Both requests were acknowledged, the last one too, before the server closed.
    stats = await client.stats("rpc_requests")
    assert (stats["acked"], stats["unacked"], stats["messages"], stats["redelivered"]) == (
        2,
        0,
        0,
        0,
    )


async def poll_stats(client: Client, name: str, key: str, value: int) -> dict[str, int | str]:
    """STATS of ``name`` once its ``key`` is ``value`` (fails after 10 s)."""
    deadline = reactor.seconds() + 10
    while (stats := await client.stats(name))[key] != value:
        assert reactor.seconds() < deadline, f"{name} {key}: {stats[key]}, not {value}"
        await deferLater(reactor, 0.02)
    return stats


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_rpc_requests_whose_caller_is_gone_do_not_come_round_again(
    broker: LoopbackBroker, client: Client
) -> None:
    # No server: the caller gives up with one line, and its request expires with it.
    alone = await run(broker, "rpc.py", "--call", "10", "--timeout", "0.3")
    assert (alone.code, alone.stdout) == (1, "")
    assert alone.stderr == "error: no answer within 0.3 s (is a server running? rpc.py --serve)\n"
    stats = await poll_stats(client, "rpc_requests", "expired", 1)
    assert stats["messages"] == 0
    # A request whose reply queue is gone (its caller left after the server took it),
    # and one that is not a request at all: each is dropped, not put back for ever.
    gone = {"n": 5, "reply_to": "rpc-reply-gone", "id": "x"}
    await client.publish("rpc_requests", json.dumps(gone))
    await client.publish("rpc_requests", "not json")
    server = start(broker, "rpc.py", "--serve", "--count", "3")
    await server.wait_for("serving", "err")
    caller = await run(broker, "rpc.py", "--call", "12")
    assert (caller.code, caller.stdout) == (0, "fib(12) = 144\n"), caller.stderr
    assert await server.ended() == 0, server.stderr
    assert server.stdout == "fib(12) = 144\n"
    assert "fib(5): the caller is gone, request dropped" in server.stderr
    assert "dropped a bad request" in server.stderr
    assert "Traceback" not in server.stderr
    stats = await client.stats("rpc_requests")
    assert (stats["acked"], stats["unacked"], stats["messages"], stats["redelivered"]) == (
        3,
        0,
        0,
        0,
    )


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_rpc_refuses_bad_arguments(broker: LoopbackBroker, client: Client) -> None:
    negative, huge, no_time, no_count, count_alone = await run_all(
        broker,
        ("rpc.py", "--call", "-5"),
        ("rpc.py", "--call", "10001"),
        ("rpc.py", "--call", "5", "--timeout", "0"),
        ("rpc.py", "--serve", "--count", "0"),
        ("rpc.py", "--call", "5", "--count", "2"),
    )
    for proc in (negative, huge, no_time, no_count, count_alone):
        assert proc.code == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("usage: rpc.py") and "Traceback" not in proc.stderr
    assert "argument --call: must be a whole number from 0 to 10000, not -5" in negative.stderr
    assert "not 10001" in huge.stderr
    assert "argument --timeout: must be a number of seconds above 0" in no_time.stderr
    assert "argument --count: must be a whole number of at least 1" in no_count.stderr
    assert "--count goes with --serve" in count_alone.stderr
    assert "rpc_requests" not in {row.name for row in await client.list()}  # nothing sent


@pytest_twisted.ensureDeferred
async def test_a_bad_task_is_refused_or_dropped_once(
    broker: LoopbackBroker, client: Client
) -> None:
    refused = await run(broker, "work_queue.py", "--send", "t1:0.1", "t2:x")
    assert (refused.code, refused.stdout) == (2, "")
    assert "argument --send: a task is NAME or NAME:SECONDS (0 to 3600), not 't2:x'" in (
        refused.stderr
    )
    assert "tasks" not in {row.name for row in await client.list()}  # not even t1 was sent
    # A bad task someone else queued does not come round for ever.
    await client.create("tasks", "queue", durable=True)
    await client.publish("tasks", "poison:-1")
    await client.publish("tasks", "fine:0")
    worker = await run(broker, "work_queue.py", "--work", "--count", "1")
    assert worker.code == 0, worker.stderr
    assert re.findall(r"done (\w+)", worker.stdout) == ["fine"]
    assert "dropped a bad task: a task is NAME or NAME:SECONDS" in worker.stderr
    assert "Traceback" not in worker.stderr
    stats = await client.stats("tasks")
    assert (stats["messages"], stats["unacked"], stats["redelivered"]) == (0, 0, 0)
    assert stats["acked"] == 1


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_counts_must_be_positive(broker: LoopbackBroker) -> None:
    procs = await run_all(
        broker,
        ("work_queue.py", "--work", "--count", "0"),
        ("fanout_logs.py", "--listen", "--count", "-1"),
        ("topic_routing.py", "--listen", "a.*", "--count", "0"),
        ("fanout_logs.py", "--emit", "info", "x", "--count", "2"),
    )
    for proc in procs[:3]:
        assert proc.code == 2, proc.stderr
        assert "argument --count: must be a whole number of at least 1" in proc.stderr
    assert procs[3].code == 2 and "--count goes with --listen" in procs[3].stderr
