"""The ``mbroker`` command, run through its entry point as a subprocess, against a real
broker listening on a loopback port of this process.

:class:`Proc` (also used by tests/test_examples.py) runs a program under the test
reactor, so that the in-process broker keeps serving while the program runs; every
run has a deadline and is killed when it passes.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from mbroker import __version__
from mbroker.cli import users as usercli
from mbroker.cli.main import run as run_cli
from mbroker.cli.output import Progress
from mbroker.cli.parser import build_parser, parse_args
from mbroker.client.connection import Client
from mbroker.testing import LoopbackBroker
from mbroker.wire.frames import QueueOptions
from tests.helpers.broker import BrokerProcess
from tests.helpers.proc import ROOT, RUN_TIMEOUT, Proc, child_env, mbroker_command, reactor


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
        [line] = proc.stderr.splitlines()  # one line, no usage block, no traceback
        assert line.startswith("mbroker: error: ") and "mbroker --help" in line
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
        ["--port", "99999", "ping"],
        ["--port", "0", "ping"],
        ["--connect", "bogus:1", "ping"],
        ["--connect", "tcp:localhost", "ping"],
        ["--connect", "tcp:localhost:x", "ping"],
        ["--connect", "tcp:localhost:99999", "ping"],
        ["--connect", "tls:host=localhost:port=0", "ping"],
        ["--timeout", "-1", "ping"],
        ["create", "q", "Queue"],
        ["publish", "q", "text", "--file", "lines.txt"],
        ["pull", "q", "--requeue", "--ack", "auto"],
        ["--password", "pw", "ping"],
        ["--user", "u", "--password", "pw", "--password-file", "f", "ping"],
    ],
)
def test_usage_errors_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parse_args(args)
    assert exit.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("mbroker") and ": error: " in line


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
    endless.signal(signal.SIGINT)  # Ctrl-C: a quiet stop, status 130
    codes = await gatherResults([p.ended() for p in (json_sub, text_sub, endless, doomed)])
    assert codes == [0, 0, 130, 1], [p.stderr for p in (json_sub, text_sub, endless, doomed)]
    assert "Traceback" not in endless.stderr
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


# ------------------------------------------- pipes, against a real twistd broker


def shell(broker: BrokerProcess, pipeline: str, timeout: float = RUN_TIMEOUT) -> Any:
    """Run ``pipeline`` in ``sh``, ``MB`` standing for ``mbroker --port <broker>``."""
    mb = " ".join(shlex.quote(w) for w in mbroker_command())
    mb += f" --host {broker.host} --port {broker.port}"
    return subprocess.run(
        ["sh", "-c", pipeline.replace("MB", mb)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        cwd=str(ROOT),
    )


def fill(broker: BrokerProcess, queue: str, n: int) -> None:
    with broker.connect() as c:
        assert c.request(f"CREATE {queue} queue")[1].startswith(b"+OK")
        for i in range(n):
            assert c.request(f"PUBLISH {queue} :m{i}")[1] == b"+OK 1"


def settled_queue(broker: BrokerProcess, queue: str, messages: int) -> list[bytes]:
    """Once ``queue`` holds ``messages`` ready and none unacknowledged (polled with a
    deadline: the broker requeues as it notices a close), its payloads in order."""
    deadline = time.monotonic() + 15
    with broker.connect() as c:
        while True:
            data, status = c.request(f"STATS {queue}")
            stats = {
                line.split()[1].decode(): line.split()[2].decode()
                for line in data
                if isinstance(line, bytes)
            }
            if (stats.get("messages"), stats.get("unacked")) == (str(messages), "0"):
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.05)
        msgs, status = c.request(f"PULL {queue} max=1000")
        return [m.payload for m in msgs if not isinstance(m, bytes)]


def test_pull_into_head_takes_only_what_head_read(broker_process: BrokerProcess) -> None:
    fill(broker_process, "q", 10)
    done = shell(broker_process, "MB pull q --max 10 | head -2")
    assert (done.returncode, done.stdout, done.stderr) == (0, "m0\nm1\n", "")
    assert settled_queue(broker_process, "q", 8) == [f"m{i}".encode() for i in range(2, 10)]


def test_subscribe_into_head_exits_quietly_and_leaves_the_rest(
    broker_process: BrokerProcess,
) -> None:
    fill(broker_process, "q", 10)
    shown: list[str] = []
    for args in ("", "--json", "--prefetch 5"):
        done = shell(broker_process, f"MB subscribe q {args} | head -2", timeout=20)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        lines = done.stdout.splitlines()
        shown += [json.loads(line)["payload"] for line in lines] if "json" in args else lines
    assert shown == [f"m{i}" for i in range(6)]
    # what was delivered and not read (one message, or up to --prefetch) went back
    assert settled_queue(broker_process, "q", 4) == [b"m6", b"m7", b"m8", b"m9"]


def test_subscribe_count_takes_exactly_n(broker_process: BrokerProcess, tmp_path: Path) -> None:
    fill(broker_process, "q", 10)
    out = tmp_path / "out"
    for ack, shown in (("manual", "m0 m1 m2"), ("auto", "m3 m4 m5")):
        done = shell(broker_process, f"MB subscribe q --count 3 --ack {ack} > {out}")
        assert (done.returncode, done.stderr) == (0, "")
        assert out.read_text().split() == shown.split()
    piped = shell(broker_process, "MB subscribe q -n 2 | cat")
    assert (piped.returncode, piped.stdout) == (0, "m6\nm7\n")
    assert settled_queue(broker_process, "q", 2) == [b"m8", b"m9"]


# ------------------------------------------------------------------- publish


@pytest_twisted.ensureDeferred
async def test_publish_from_a_pipe_sends_each_line_as_it_comes(
    broker: LoopbackBroker, client: Client
) -> None:
    """``tail -f app.log | mbroker publish logs``: stdin stays open."""
    await client.create("logs", "queue")
    proc = Proc.start([*mbroker_command(), "--connect", broker.endpoint, "publish", "logs"], None)

    async def arrives(payload: bytes) -> None:
        deadline = reactor.seconds() + 15
        while True:
            got = await client.pull("logs")
            if got:
                assert [m.payload for m in got] == [payload]
                return
            assert reactor.seconds() < deadline, proc.stderr
            await deferLater(reactor, 0.02)

    proc.process.write(b"first line\n")
    await arrives(b"first line")
    proc.process.write(b"second ")
    proc.process.write(b"line\r\n")
    await arrives(b"second line")
    proc.process.closeStdin()
    assert await proc.ended() == 0
    assert proc.stdout == "published 2 messages to logs\n"


@pytest_twisted.ensureDeferred
async def test_ctrl_c_during_a_publish_says_what_was_sent(
    broker: LoopbackBroker, client: Client
) -> None:
    await client.create("logs", "queue")
    proc = Proc.start([*mbroker_command(), "--connect", broker.endpoint, "publish", "logs"], None)
    proc.process.write(b"a\nb\nc\n")
    deadline = reactor.seconds() + 15
    while (await client.stats("logs"))["messages"] != 3:
        assert reactor.seconds() < deadline, proc.stderr
        await deferLater(reactor, 0.02)
    proc.signal(signal.SIGINT)
    assert await proc.ended() == 130
    # All three were sent (the broker holds them); how many replies the command had read
    # by the signal is a race, and it says which were confirmed and which not.
    said = re.fullmatch(
        r"mbroker: interrupted: published (\d) messages? to logs"
        r"(?: \((\d) more sent, not confirmed\))?\n",
        proc.stderr,
    )
    assert said is not None, proc.stderr
    assert int(said[1]) + int(said[2] or 0) == 3, proc.stderr


# ---------------------------------------------------------- errors, no traceback


@pytest_twisted.ensureDeferred
async def test_errors_are_one_line_with_the_right_status(broker: LoopbackBroker) -> None:
    probe = await LoopbackBroker.start(reactor)
    closed = str(probe.port)
    await probe.stop()
    runs = {
        "port": (2, ["--port", "99999", "ping"]),
        "endpoint": (2, ["--connect", "bogus:1", "ping"]),
        "no port": (2, ["--connect", "tcp:localhost", "ping"]),
        "kind": (2, ["create", "q", "stack"]),
        # a check that needs no broker comes first: no "cannot connect" here
        "both": (2, ["--port", closed, "publish", "q", "m", "--file", "x"]),
        "no file": (1, ["--port", closed, "publish", "q", "--file", "/no/such/file"]),
        "unknown host": (1, ["--host", "no-such-host.invalid", "ping"]),
        "refused": (1, ["--host", "127.0.0.1", "--port", closed, "ping"]),
        "bench size": (1, ["--connect", broker.endpoint, "bench", "--size", "2000000"]),
    }
    procs = await gatherResults(
        [Deferred.fromCoroutine(run([*mbroker_command(), *argv])) for _, argv in runs.values()]
    )
    for (what, (code, _)), proc in zip(runs.items(), procs):
        assert proc.code == code, (what, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1, (what, proc.stderr)
        assert proc.stderr.startswith("mbroker"), (what, proc.stderr)
    both, no_file = procs[4], procs[5]
    assert "give a message or --file, not both" in both.stderr
    assert "cannot read /no/such/file" in no_file.stderr
    assert "largest payload" in procs[-1].stderr


# ------------------------------------------------------- create, peek, -m, help


@pytest_twisted.ensureDeferred
async def test_create_exclusive_and_pull_manual_and_peek(
    broker: LoopbackBroker, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await inproc(broker, capsys, "create", "mine", "queue", "--exclusive")
    assert (code, out) == (
        0,
        "created queue mine (exclusive: it is deleted as this command ends)\n",
    )
    await client.create("q", "queue")
    for i in range(4):
        await client.publish("q", f"m{i}")
    assert await inproc(broker, capsys, "peek", "q", "--max", "2") == (0, "m0\nm1\n", "")
    assert await inproc(broker, capsys, "pull", "q", "-n", "3", "--requeue") == (
        0, "m0\nm1\nm2\n", ""
    )  # fmt: skip
    assert (await client.stats("q"))["messages"] == 4  # all given back
    assert await inproc(broker, capsys, "pull", "q", "--ack", "manual") == (0, "m0\n", "")
    assert await inproc(broker, capsys, "pull", "q", "--ack", "auto") == (0, "m1\n", "")
    stats = await client.stats("q")
    assert (stats["messages"], stats["unacked"]) == (2, 0)
    names = [r.name for r in await client.list()]
    assert "mine" not in names  # exclusive: gone with the command's connection


@pytest_twisted.ensureDeferred
async def test_create_with_queue_lifetime_options(
    broker: LoopbackBroker, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("create", "tmp", "queue", "--auto-delete", "--expires", "60000")
    assert await inproc(broker, capsys, *argv) == (0, "created queue tmp\n", "")
    assert broker.broker.queue("tmp").options == QueueOptions(auto_delete=True, expires=60000)
    assert await inproc(broker, capsys, *argv) == (0, "queue tmp exists\n", "")
    code, _, err = await inproc(broker, capsys, "create", "tmp", "queue", "--expires", "1")
    assert code != 0 and "EXISTS" in err
    sub = await client.subscribe("tmp", lambda m: None)
    await sub.unsubscribe()
    assert "tmp" not in [r.name for r in await client.list()]  # auto-delete


def test_python_dash_m_mbroker() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mbroker", "--version"],
        capture_output=True, text=True, env=child_env(), cwd=str(ROOT), timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, f"mbroker {__version__}\n")


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("parser", [build_parser(), usercli._parser()], ids=["mbroker", "user"])
def test_every_option_has_help(parser: argparse.ArgumentParser) -> None:
    missing = [
        f"{p.prog} {a.option_strings or a.dest}"
        for p in _parsers(parser)
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert missing == []
