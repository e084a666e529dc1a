"""Every example session in ``docs/protocol.rst`` is replayed against a real broker.

An example is a ``.. code-block:: text`` whose lines are all of these forms:

``C: <line>``
    the client sends ``<line>`` and CRLF (a payload line too);
``S: <line>``
    the server's next line must be exactly ``<line>``, where ``<n>`` stands for a
    decimal number and ``<version>`` for the broker's version;
``S: (connection closed)``
    the server must have closed the connection;
``# <text>``
    a comment for the reader.

``C1:``/``S1:``, ``C2:``/``S2:`` … are separate connections, opened on their first
line.  Each block starts on fresh connections (the greeting is read, and compared when
an ``S`` line shows it); after its last line the server must have sent nothing more
on any connection (an unknown command's reply must come next), so an example shows
*every* line the server sent.  Afterwards every object the block made is deleted, so
a ``LIST`` in an example shows only what that example made.

An RST comment right before the block can change how it is replayed:
``.. replay: --max-line 64`` replays it on a broker started with those ``twistd
mbroker`` options; ``.. replay: skip`` does not replay it (it needs a broker
configuration the command line cannot give).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.broker import BrokerProcess, start_broker, twistd_command
from tests.helpers.docs import (
    DOC,
    END,
    END_REPLY,
    Example,
    Step,
    clean,
    line_pattern,
    parse_examples,
    replay,
)
from tests.helpers.lineclient import LineClient

COMMANDS = (
    "CREATE DELETE BIND UNBIND PUBLISH SUBSCRIBE UNSUBSCRIBE PULL ACK NACK TOUCH PURGE "
    "PING PONG HEARTBEAT QUIT HELP AUTH LIST STATS"
).split()
#: The error codes replayed on an open broker here (NO_AUTH, AUTH and FORBIDDEN are
#: replayed by test_auth_docs.py; UNAVAILABLE needs a full disk: test_durable_faults.py;
#: INTERNAL is a bug).
ERROR_CODES = (
    "BAD_COMMAND BAD_ARGS BAD_FRAME LINE_TOO_LONG TOO_BIG NOT_FOUND EXISTS WRONG_KIND "
    "NOT_EMPTY IN_USE OVERFLOW LIMIT"
).split()


EXAMPLES = parse_examples(DOC.read_text(encoding="utf-8"))


# --------------------------------------------------------------------- replaying


class Brokers:
    """One broker per distinct set of options, started when first needed."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.running: dict[tuple[str, ...], BrokerProcess] = {}

    def get(self, args: tuple[str, ...]) -> BrokerProcess:
        if args not in self.running:
            self.running[args] = start_broker(self.tmp.mktemp("broker"), *args, memory_only=True)
        return self.running[args]

    def stop(self) -> None:
        for broker in self.running.values():
            broker.stop()


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    b = Brokers(tmp_path_factory)
    try:
        yield b
    finally:
        b.stop()


def _example_id(example: Example) -> str:
    return f"line{example.lineno}"


#: Blocks marked ``.. replay: skip`` are checked elsewhere (the AUTH sessions by
#: test_auth_docs.py, the limits by the end-to-end tests), so they get no test here.
REPLAYED = [e for e in EXAMPLES if e.broker_args is not None]


@pytest.mark.parametrize("example", REPLAYED, ids=_example_id)
def test_example(brokers: Brokers, example: Example) -> None:
    assert example.broker_args is not None
    broker = brokers.get(example.broker_args)
    try:
        replay(broker, example)
    finally:
        clean(broker)


# --------------------------------------------------------------------- coverage


def _replayed() -> list[Example]:
    return [e for e in EXAMPLES if e.broker_args is not None]


def test_the_document_has_examples() -> None:
    assert len(_replayed()) >= 30


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_replayed_example(command: str) -> None:
    sent = (text.split(None, 1)[:1] for e in _replayed() for text in e.lines("C"))
    assert [command] in sent, f"no replayed example sends {command}"


@pytest.mark.parametrize("code", ERROR_CODES)
def test_every_error_code_has_an_example(code: str) -> None:
    # LIMIT needs limits that twistd's options cannot lower yet: its examples may be
    # marked "skip" (tests/e2e/test_contract_limits.py covers them).
    examples = EXAMPLES if code == "LIMIT" else _replayed()
    replies = (text for e in examples for text in e.lines("S"))
    assert any(text.startswith(f"-ERR {code} ") for text in replies), f"no example of {code}"


def test_an_example_fails_when_the_server_says_something_else(brokers: Brokers) -> None:
    wrong = Example(1, (), (Step(2, "", "C", "PING"), Step(3, "", "S", "+PING")))
    with pytest.raises(pytest.fail.Exception, match="expected '\\+PING'"):
        replay(brokers.get(()), wrong)
    extra = Example(1, (), (Step(2, "", "C", "PING"), Step(3, "", "C", "PING")))
    with pytest.raises(pytest.fail.Exception, match="expected nothing more"):
        replay(brokers.get(()), extra)


def test_placeholders() -> None:
    assert line_pattern("STAT uptime <n>").fullmatch("STAT uptime 12")
    assert not line_pattern("STAT uptime <n>").fullmatch("STAT uptime x")
    assert line_pattern("QUEUE mbroker.sub.<n>.1 x").fullmatch("QUEUE mbroker.sub.7.1 x")
    assert not line_pattern("a.b").fullmatch("axb")


def test_parse_examples() -> None:
    text = (
        "Intro.\n\n.. replay: --max-line 64\n\n.. code-block:: text\n\n"
        "   # a comment\n   C: PING\n   S: +PONG\n\nAfter.\n\n"
        ".. replay: skip\n\n.. code-block:: text\n\n   C1: QUIT\n   S1: +OK bye\n"
    )
    first, second = parse_examples(text)
    assert first.lineno == 5 and first.broker_args == ("--max-line", "64")
    assert first.steps == (Step(8, "", "C", "PING"), Step(9, "", "S", "+PONG"))
    assert second.broker_args is None
    assert second.steps[0] == Step(17, "1", "C", "QUIT")
    with pytest.raises(ValueError, match="not 'C: "):
        parse_examples(".. code-block:: text\n\n   PING\n")


# --------------------------------------------------------------------- the README tour

README = DOC.parent.parent / "README.rst"
#: Which terminal each literal block of the tour is typed in, in order.
TOUR_TERMINALS = "121212"
_SERVER = re.compile(r"(HELLO |\+|-ERR |MSG |EXCHANGE |QUEUE |STAT |CANCEL )")
_SIZE_FORM = re.compile(r"PUBLISH .* [0-9]+")


def tour_blocks(text: str) -> list[list[tuple[str, str]]]:
    """The tour's literal blocks as ``(who, line)`` lists; who is "typed" or "server"."""
    section = text.split("Five-minute tour\n----------------\n", 1)[1]
    section = re.split(r"\n\S[^\n]*\n-{3,}\n", section, maxsplit=1)[0]
    blocks = []
    for body in re.findall(r"\n::\n\n((?:    [^\n]*\n|\n)+)", section):
        lines = [line[4:] for line in body.splitlines() if line.strip()]
        block: list[tuple[str, str]] = []
        for line in lines:
            previous = block[-1] if block else ("", "")
            if line.startswith("$ "):
                continue
            if previous[0] == "server" and previous[1].startswith("MSG "):
                block.append(("server", line))  # a payload the server sent
            elif previous[0] == "typed" and _SIZE_FORM.fullmatch(previous[1]):
                block.append(("typed", line))  # a payload typed after its size
            else:
                block.append(("server" if _SERVER.match(line) else "typed", line))
        blocks.append(block)
    return blocks


def test_the_readme_tour_is_real(tmp_path: Path) -> None:
    blocks = tour_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) == len(TOUR_TERMINALS)
    broker = start_broker(tmp_path, memory_only=True)  # fresh: session numbers start at 1
    terminals: dict[str, LineClient] = {}
    try:
        for terminal, block in zip(TOUR_TERMINALS, blocks):
            if terminal not in terminals:
                terminals[terminal] = broker.connect()
                assert block[0] == ("server", terminals[terminal].hello.decode())
                block = block[1:]
            client = terminals[terminal]
            for who, line in block:
                if who == "typed":
                    client.send(line.encode() + b"\n")  # nc sends LF
                else:
                    assert client.readline().decode() == line, (terminal, line)
        for terminal, client in terminals.items():  # and the broker said nothing more
            typed = [
                line
                for t, b in zip(TOUR_TERMINALS, blocks)
                if t == terminal
                for who, line in b
                if who == "typed"
            ]
            if typed[-1] == "QUIT":
                assert client.expect_closed()
            else:
                client.send(END + b"\n")
                assert client.readline().decode() == END_REPLY
    finally:
        for client in terminals.values():
            client.close()
        broker.stop()


# --------------------------------------------------------------------- the quick start


def quick_start() -> str:
    section = README.read_text(encoding="utf-8").split("Quick start\n-----------\n", 1)[1]
    return re.split(r"\n\S[^\n]*\n-{3,}\n", section, maxsplit=1)[0]


def test_the_quick_start_makes_a_virtualenv_first() -> None:
    commands = [
        line.strip()
        for line in quick_start().splitlines()
        if line.startswith("    ") and line.strip()
    ]
    assert commands == [
        "python3 -m venv venv && . venv/bin/activate",
        "pip install . && twistd -n mbroker",
        "bash .ci/run",
    ]


def test_what_the_quick_start_leaves_behind_is_ignored(tmp_path: Path) -> None:
    """``twistd -n mbroker`` as the quick start runs it (its pid file, its data
    directory, in the working directory) leaves git nothing new to show."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(README.parent / ".gitignore", tmp_path / ".gitignore")
    command = [*twistd_command(), "-n", "mbroker", "--listen", "tcp:0:interface=127.0.0.1"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    broker = BrokerProcess(process, tmp_path / "mbroker-data")
    try:
        broker.wait_for_line(rb"mbroker listening on", timeout=30)
        assert (tmp_path / "twistd.pid").is_file()
        assert (tmp_path / "mbroker-data").is_dir()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        broker.stop()
    assert status.splitlines() == ["?? .gitignore"]


# --------------------------------------------------------------------- the index


def test_the_index_leads_to_every_guide() -> None:
    index = (DOC.parent / "index.rst").read_text(encoding="utf-8")
    toctree = index.split(".. toctree::", 1)[1]
    for document in (
        "tutorial/index",
        "client",
        "api",
        "cli",
        "protocol",
        "security",
        "operations",
    ):
        assert f"\n   {document}\n" in toctree, document
        assert (DOC.parent / f"{document}.rst").is_file(), document
        assert f":doc:`{document}`" in index, document
