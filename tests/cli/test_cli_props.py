"""``mbroker`` and message properties (contract section 7): ``publish --header/--id/
--delay/--priority``, the headers, id and priority in ``--json`` output, ``create
--dedup-window``; in this process against the in-process broker, and through the entry
point against a real ``twistd``."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed

from mbroker.cli import commands
from mbroker.cli.main import run as run_cli
from mbroker.cli.parser import parse_args
from mbroker.client import Published
from mbroker.client.connection import Client
from mbroker.testing import LoopbackBroker
from tests.helpers.broker import BrokerProcess
from tests.helpers.proc import ROOT, child_env, mbroker_command, reactor


async def inproc(
    broker: LoopbackBroker, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run the CLI in this process (``cli.run``): (exit status, stdout, stderr)."""
    code = await run_cli(reactor, parse_args(["--connect", broker.endpoint, *args]))
    out, err = capsys.readouterr()
    return code, out, err


@pytest_twisted.ensureDeferred
async def test_publish_properties_and_json_output(
    broker: LoopbackBroker, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    await client.create("q", "queue")
    argv = ["publish", "q", "hi", "-H", "content-type=text/plain", "--header", "e=a=b c"]
    code, out, err = await inproc(broker, capsys, *argv, "--id", "m-1", "--priority", "5")
    assert (code, out, err) == (0, "published 1 message to q, reached 1 queue\n", "")
    await client.publish("q", b"\xff", headers={"bin": b"\x00\xff", "t": "\u00e9"})
    code, out, _ = await inproc(broker, capsys, "peek", "q", "-n", "2", "--json")
    first, second = (json.loads(line) for line in out.splitlines())
    assert first == {
        "source": "q",
        "routing_key": "",
        "redelivered": 0,
        "payload": "hi",
        "id": "m-1",
        "priority": 5,
        "headers": {"content-type": "text/plain", "e": "a=b c"},
    }
    assert second["headers"] == {"t": "\u00e9"}
    assert second["headers_base64"] == {"bin": base64.b64encode(b"\x00\xff").decode()}
    assert "id" not in second and "priority" not in second
    code, out, _ = await inproc(broker, capsys, "pull", "q", "-n", "2", "--json")
    assert [json.loads(line)["redelivered"] for line in out.splitlines()] == [1, 1]


@pytest_twisted.ensureDeferred
async def test_a_bad_header_is_refused_and_nothing_sent(
    broker: LoopbackBroker, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    await client.create("q", "queue")
    code, _, err = await inproc(broker, capsys, "publish", "q", "x", "-H", "bad name=1")
    assert code == 1 and "BAD_ARGS" in err and "bad header name" in err
    assert (await client.stats("q"))["messages"] == 0


@pytest_twisted.ensureDeferred
async def test_create_dedup_window(
    broker: LoopbackBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("create", "q", "queue", "--dedup-window", "60000", "--auto-delete")
    assert await inproc(broker, capsys, *argv) == (0, "created queue q\n", "")
    options = broker.broker.queue("q").options
    assert (options.dedup_window, options.auto_delete) == (60000, True)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["publish", "q", "-H", "novalue"], "not NAME=VALUE"),
        (["publish", "q", "-H", "=v", "x"], "not NAME=VALUE"),
        (["publish", "q", "x", "-H", "a=1", "-H", "a=2"], "'a' given twice"),
        (["publish", "q", "--priority", "10", "x"], "invalid choice"),
        (["publish", "q", "--delay", "-1", "x"], "--delay"),
        (["publish", "q", "--id", "i"], "--id names one message"),
        (["create", "q", "queue", "--dedup-window", "x"], "--dedup-window"),
    ],
)
def test_usage_errors(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parse_args(argv)
    assert exit.value.code == 2
    assert says in capsys.readouterr().err


def test_cli_flags_against_twistd(broker_process: BrokerProcess) -> None:
    """The new flags through the installed entry point, against a real broker."""
    host, port = broker_process.address

    def mb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*mbroker_command(), "--connect", f"tcp:{host}:{port}", *args],
            capture_output=True, text=True, env=child_env(), cwd=str(ROOT), timeout=60,
        )  # fmt: skip

    assert mb("create", "x", "direct", "--dedup-window", "0").returncode == 0
    assert mb("create", "q", "queue").returncode == 0
    assert mb("bind", "q", "x", "k").returncode == 0
    done = mb("publish", "x", "-k", "k", "body", "-H", "trace=abc 1", "--id", "i-1",
              "--priority", "3", "--delay", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = subprocess.run(
        [*mbroker_command(), "--connect", f"tcp:{host}:{port}", "publish", "q", "-H", "k=v",
         "--priority", "2"],
        input="a\nb\n", capture_output=True, text=True, env=child_env(), cwd=str(ROOT),
        timeout=60,
    )  # fmt: skip
    assert (lines.returncode, lines.stdout) == (0, "published 2 messages to q\n"), lines.stderr
    done = mb("subscribe", "q", "--count", "3", "--json")
    assert done.returncode == 0, done.stderr
    first, *rest = (json.loads(line) for line in done.stdout.splitlines())
    assert [(m["payload"], m["headers"], m["priority"]) for m in rest] == [
        ("a", {"k": "v"}, 2),
        ("b", {"k": "v"}, 2),
    ]
    assert first == {
        "source": "x",
        "routing_key": "k",
        "redelivered": 0,
        "payload": "body",
        "id": "i-1",
        "priority": 3,
        "headers": {"trace": "abc 1"},
    }


@pytest_twisted.ensureDeferred
async def test_a_duplicate_publish_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    """``+OK <n> duplicate`` (the broker had the id within its dedup window)."""
    sent: list[dict[str, Any]] = []

    class Broker:
        def publish(self, *args: object, **kw: Any) -> Deferred[int]:
            sent.append(kw)
            return succeed(Published(1, True))

    args = parse_args(["publish", "q", "x", "--id", "m-1", "--delay", "5"])
    assert await commands.publish(reactor, cast(Client, Broker()), args) == 0
    assert capsys.readouterr().out == "q already had id m-1: not routed again (1 queue)\n"
    assert sent == [{"ttl": None, "id": "m-1", "delay": 5}]
