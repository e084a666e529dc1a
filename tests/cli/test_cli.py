"""The ``mbroker`` command, run through its entry point as a subprocess, against a real
broker listening on a loopback port of this process.

:class:`Proc` (also used by tests/test_examples.py) runs a program under the test
reactor, so that the in-process broker keeps serving while the program runs; every
run has a deadline and is killed when it passes.
"""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from mbroker.cli.main import parse_args
from mbroker.cli.main import run as run_cli
from mbroker.cli.output import Progress
from mbroker.client.connection import Client
from mbroker.testing import LoopbackBroker
from tests.helpers.proc import ROOT, Proc, mbroker_command, reactor


async def run(argv: Sequence[str], stdin: bytes = b"") -> Proc:
    """Run a program to its end."""
    proc = Proc.start(argv, stdin)
    await proc.ended()
    return proc


async def cli(broker: LoopbackBroker | None, *args: str, stdin: bytes = b"") -> Proc:
    """Run ``mbroker [--connect <broker>] ARGS``."""
    connect_to = ["--connect", broker.endpoint] if broker is not None else []
    return await run([*mbroker_command(), *connect_to, *args], stdin)


# ------------------------------------------------------------------- tests


def test_the_entry_point_is_declared() -> None:
    assert '"mbroker = mbroker.cli.main:main"' in (ROOT / "setup.py").read_text()


async def inproc(
    broker: LoopbackBroker, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run the CLI in this process (``cli.run``): (exit status, stdout, stderr)."""
    code = await run_cli(reactor, parse_args(["--connect", broker.endpoint, *args]))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------- through the entry point (subprocess)


@pytest_twisted.ensureDeferred
async def test_usage_errors_exit_2() -> None:
    results = await gatherResults(
        [
            Deferred.fromCoroutine(cli(None, *args))
            for args in ((), ("publish", "q", "one", "two"), ("--help",))
        ]
    )
    for proc in results[:-1]:
        assert proc.code == 2, proc.stderr
        assert "usage: mbroker" in proc.stderr
    helped = results[-1]
    assert helped.code == 0 and "subscribe" in helped.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["create", "q", "stack"],
        ["pull", "q", "--max", "0"],
        ["bind", "q"],
        ["publish", "q", "text", "--ttl", "-1"],
        ["--port", "x", "ping"],
    ],
)
def test_usage_errors_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parse_args(args)
    assert exit.value.code == 2
    assert "usage: mbroker" in capsys.readouterr().err


@pytest_twisted.ensureDeferred
async def test_exit_status_ok_broker_error_and_no_broker(
    broker: LoopbackBroker, client: Client
) -> None:
    probe = await LoopbackBroker.start(reactor)
    port = probe.port
    await probe.stop()
    await client.create("news", "topic")
    await client.create("q", "queue")
    await client.bind("q", "news", "#")
    hostport = ["--host", "127.0.0.1", "--port", str(broker.port)]
    ok, refused, unknown, exists = await gatherResults(
        [
            Deferred.fromCoroutine(c)
            for c in (
                cli(None, "publish", "news", "-k", "sport.uk", "Goal!", *hostport),
                cli(None, "--host", "127.0.0.1", "--port", str(port), "ping"),
                cli(broker, "publish", "nowhere", "x"),
                cli(broker, "create", "news", "fanout"),
            )
        ]
    )
    assert (ok.code, ok.stdout) == (0, "published 1 message to news, reached 1 queue\n")
    assert refused.code == 1 and "cannot connect" in refused.stderr
    assert unknown.code == 1 and "error: NOT_FOUND nowhere" in unknown.stderr
    assert exists.code == 1 and "EXISTS" in exists.stderr
    [m] = await client.pull("q")
    assert (m.payload, m.routing_key) == (b"Goal!", "sport.uk")


@pytest_twisted.ensureDeferred
async def test_publish_from_stdin_and_a_file(
    broker: LoopbackBroker, client: Client, tmp_path: Path
) -> None:
    for name in ("lines", "raw", "file"):
        await client.create(name, "queue")
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"message {i}\n" for i in range(3000)))
    lines, raw, from_file, failed = await gatherResults(
        [
            Deferred.fromCoroutine(c)
            for c in (
                cli(broker, "publish", "lines", stdin=b"one\ntwo\r\n\nthree"),
                cli(broker, "publish", "raw", "--raw", stdin=b"\x00binary\r\nsafe\xff"),
                cli(broker, "publish", "file", "--file", str(path), "--progress"),
                cli(broker, "publish", "nope", stdin=b"a\nb\n"),
            )
        ]
    )
    assert (lines.code, lines.stdout) == (0, "published 4 messages to lines\n")
    assert [m.payload for m in await client.pull("lines", 10)] == [b"one", b"two", b"", b"three"]
    assert raw.code == 0
    assert [m.payload for m in await client.pull("raw", 10)] == [b"\x00binary\r\nsafe\xff"]
    assert (from_file.code, from_file.stdout) == (0, "published 3000 messages to file\n")
    assert "100%" in from_file.stderr and "3,000 messages" in from_file.stderr
    msgs = await client.pull("file", 5000)
    assert len(msgs) == 3000 and msgs[-1].payload == b"message 2999"
    assert failed.code == 1 and "NOT_FOUND" in failed.stderr


@pytest_twisted.ensureDeferred
async def test_subscribe_prints_messages_as_they_come(
    broker: LoopbackBroker, client: Client
) -> None:
    await client.create("news", "topic")
    await client.create("q", "queue")
    await client.create("doomed", "queue")
    base = [*mbroker_command(), "--connect", broker.endpoint, "-v", "subscribe"]
    json_sub = Proc.start([*base, "news", "sport.*", "--count", "2", "--json"])
    text_sub = Proc.start([*base, "news", "-n", "3"])
    endless = Proc.start([*base, "q"])
    doomed = Proc.start([*base, "doomed"])
    for proc, name in ((json_sub, "news"), (text_sub, "news"), (endless, "q"), (doomed, "doomed")):
        await proc.wait_for(f"subscribed to {name}", "err")
    assert await client.publish("news", "Goal! ⚽", "sport.uk") == 2
    await client.publish("q", b"one")
    await json_sub.wait_for("Goal")
    await text_sub.wait_for("Goal")
    await client.publish("news", b"rain", "weather.uk")
    await client.publish("news", b"\xff", "sport.fr")
    await client.delete("doomed")
    await endless.wait_for("one\n")
    endless.signal(signal.SIGINT)  # Ctrl-C: a clean stop
    codes = await gatherResults([p.ended() for p in (json_sub, text_sub, endless, doomed)])
    assert codes == [0, 0, 0, 1], [p.stderr for p in (json_sub, text_sub, endless, doomed)]
    first, second = (json.loads(line) for line in json_sub.stdout.splitlines())
    assert first == {
        "source": "news", "routing_key": "sport.uk", "redelivered": 0, "payload": "Goal! ⚽"
    }  # fmt: skip
    assert second["payload_base64"] == "/w=="
    assert text_sub.stdout == "Goal! ⚽\nrain\n\ufffd\n"
    assert "ended: deleted" in doomed.stderr
    stats = await client.stats("q")
    assert (stats["acked"], stats["consumers"]) == (1, 0)


# ------------------------------------------------------- in process (cli.run)


@pytest_twisted.ensureDeferred
async def test_commands(broker: LoopbackBroker, capsys: pytest.CaptureFixture[str]) -> None:
    async def mb(*args: str) -> tuple[int, str, str]:
        return await inproc(broker, capsys, *args)

    assert await mb("create", "news") == (0, "created topic news\n", "")
    assert await mb("create", "jobs", "queue", "--max-length", "10", "--ttl", "60000") == (
        0, "created queue jobs\n", ""
    )  # fmt: skip
    assert (await mb("create", "jobs", "queue", "--max-length", "10", "--ttl", "60000"))[1] == (
        "queue jobs exists\n"
    )
    assert (await mb("create", "dl", "queue", "--durable", "--overflow", "reject"))[0] == 0
    assert await mb("bind", "jobs", "news", "sport.#") == (
        0, "bound jobs to news with sport.#\n", ""
    )  # fmt: skip
    assert (await mb("publish", "news", "-k", "sport.uk", "--ttl", "9000", "Goal!"))[0] == 0
    code, out, _ = await mb("list")
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME", "TYPE", "DURABLE", "MESSAGES", "UNACKED", "CONSUMERS", "BINDINGS"
    ]  # fmt: skip
    assert [line.split() for line in lines[1:]] == [
        ["dl", "queue", "yes", "0", "0", "0", "-"],
        ["jobs", "queue", "no", "1", "0", "0", "-"],
        ["news", "topic", "no", "-", "-", "-", "1"],
    ]
    code, out, _ = await mb("list", "--json")
    assert {"name": "news", "type": "topic", "durable": False, "bindings": 1} in json.loads(out)
    code, out, _ = await mb("stats", "jobs", "--json")
    assert json.loads(out)["messages"] == 1
    assert json.loads(out)["durable"] is False  # the same type as in `list --json`
    code, out, _ = await mb("stats")
    assert "published" in out and code == 0
    code, out, _ = await mb("pull", "jobs", "--json")
    assert json.loads(out) == {
        "source": "news", "routing_key": "sport.uk", "redelivered": 0, "payload": "Goal!"
    }  # fmt: skip
    assert await mb("pull", "jobs", "--wait", "10") == (0, "", "")
    code, out, _ = await mb("ping")
    assert out.startswith("PONG from mbroker")
    code, _, err = await mb("unbind", "jobs", "news", "never")
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = await mb("delete", "bad name!")
    assert code == 1 and "BAD_ARGS" in err
    await mb("publish", "jobs", "x")
    code, _, err = await mb("delete", "jobs", "--if-empty")
    assert code == 1 and "NOT_EMPTY" in err
    assert await mb("purge", "jobs") == (0, "purged jobs (1 message dropped)\n", "")
    assert await mb("unbind", "jobs", "news", "sport.#") == (
        0, "unbound jobs from news (sport.#)\n", ""
    )  # fmt: skip
    assert await mb("delete", "jobs") == (0, "deleted jobs (0 messages dropped)\n", "")
    assert await mb("publish", "news", "a") == (
        0, "published 1 message to news, reached 0 queues\n", ""
    )  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_list_hides_private_queues_and_says_when_empty(
    broker: LoopbackBroker, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await inproc(broker, capsys, "list"))[1].endswith("(no exchanges or queues)\n")
    await client.create("news", "topic")
    await client.subscribe("news", lambda m: None)
    _, out, _ = await inproc(broker, capsys, "list")
    assert "mbroker.sub" not in out
    _, out, _ = await inproc(broker, capsys, "list", "--all")
    assert "mbroker.sub" in out


@pytest_twisted.ensureDeferred
async def test_bench_placeholder_measures(
    broker: LoopbackBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await inproc(broker, capsys, "bench", "--messages", "3000", "--size", "16")
    assert code == 0
    assert "publish (pipelined, confirmed)" in out and "msg/s" in out


def test_progress_bar_rendering() -> None:
    stream = io.StringIO()
    bar = Progress(1000, True, stream)
    bar.update(10, 500)
    bar.finish(20, 1000)
    text = stream.getvalue()
    assert "[###############               ]  50% 10 messages" in text
    assert "100% 20 messages" in text and text.endswith("\n")
    quiet = io.StringIO()
    auto = Progress(None, None, quiet)  # not a terminal: no bar
    auto.update(5000, 1)
    auto.finish(5000, 1)
    assert quiet.getvalue() == ""


@pytest_twisted.ensureDeferred
async def test_user_subcommand_manages_a_users_file(tmp_path: Path) -> None:
    users = str(tmp_path / "users")
    added = await run(
        [*mbroker_command(), "user", "add", "alice", "--users", users, "--password-stdin"],
        stdin=b"s3cret\n",
    )
    assert added.code == 0, added.stderr
    listed = await run([*mbroker_command(), "user", "list", "--users", users])
    assert listed.code == 0, listed.stderr
    assert listed.stdout.split()[0] == "alice"
    assert b"s3cret" not in (tmp_path / "users").read_bytes()  # only a hash is kept
    missing = await run([*mbroker_command(), "user", "remove", "bob", "--users", users])
    assert missing.code != 0
