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
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.e2e.broker import BrokerProcess, start_broker, twistd_command
from tests.e2e.lineclient import LineClient

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.rst"
CLOSED = "(connection closed)"
READ_TIMEOUT = 5.0
END = b"END-OF-EXAMPLE"
END_REPLY = "-ERR BAD_COMMAND unknown command 'END-OF-EXAMPLE'"

_STEP = re.compile(r"(?P<side>[CS])(?P<conn>[0-9]?): ?(?P<text>.*)")
_REPLAY = re.compile(r"\.\. replay:\s*(?P<args>.*?)\s*")
_PLACEHOLDER = re.compile(r"(<n>|<version>)")
_PATTERNS = {"<n>": r"[0-9]+", "<version>": r"\S+"}

COMMANDS = (
    "CREATE DELETE BIND UNBIND PUBLISH SUBSCRIBE UNSUBSCRIBE PULL ACK NACK TOUCH PURGE "
    "PING PONG QUIT HELP AUTH LIST STATS"
).split()
#: The error codes replayed on an open broker here (NO_AUTH, AUTH and FORBIDDEN are
#: replayed by test_auth_docs.py; UNAVAILABLE needs a full disk: test_durable_faults.py;
#: INTERNAL is a bug).
ERROR_CODES = (
    "BAD_COMMAND BAD_ARGS BAD_FRAME LINE_TOO_LONG TOO_BIG NOT_FOUND EXISTS WRONG_KIND "
    "NOT_EMPTY IN_USE OVERFLOW LIMIT"
).split()


@attrs.frozen
class Step:
    lineno: int
    conn: str  # "" for the single-connection form, else "1", "2", …
    side: str  # "C" or "S"
    text: str


@attrs.frozen
class Example:
    lineno: int
    #: ``twistd mbroker`` options to replay on, or None: not replayed
    broker_args: tuple[str, ...] | None
    steps: tuple[Step, ...]

    def lines(self, side: str) -> Iterator[str]:
        return (s.text for s in self.steps if s.side == side)


def parse_examples(text: str) -> list[Example]:
    """Every ``.. code-block:: text`` of an RST document, as examples."""
    lines = text.splitlines()
    examples = []
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: text":
            continue
        indent = len(line) - len(line.lstrip())
        body: list[tuple[int, str]] = []
        j = i + 1
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
        ):
            body.append((j + 1, lines[j]))
            j += 1
        examples.append(Example(i + 1, _replay_args(lines, i), _steps(i + 1, body)))
    return examples


def _replay_args(lines: list[str], i: int) -> tuple[str, ...] | None:
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    match = _REPLAY.fullmatch(lines[j].strip()) if j >= 0 else None
    if match is None:
        return ()
    args = match.group("args")
    return None if args == "skip" else tuple(args.split())


def _steps(lineno: int, body: list[tuple[int, str]]) -> tuple[Step, ...]:
    content = [(n, line) for n, line in body if line.strip()]
    if not content:
        raise ValueError(f"line {lineno}: an empty example")
    margin = min(len(line) - len(line.lstrip()) for _, line in content)
    steps = []
    for n, line in content:
        line = line[margin:]
        if line.startswith("#"):
            continue
        match = _STEP.fullmatch(line)
        if match is None:
            raise ValueError(f"line {n}: not 'C: …', 'S: …' or '# …': {line!r}")
        steps.append(Step(n, match.group("conn"), match.group("side"), match.group("text")))
    return tuple(steps)


def line_pattern(expected: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(expected)
    return re.compile("".join(_PATTERNS[p] if i % 2 else re.escape(p) for i, p in enumerate(parts)))


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


def _fail(example: Example, step: Step, expected: str, got: str, log: list[str]) -> None:
    transcript = "\n".join(log)
    pytest.fail(
        f"docs/protocol.rst line {step.lineno} (example at line {example.lineno}):\n"
        f"expected {expected}\n     got {got}\nthe session so far:\n{transcript}",
        pytrace=False,
    )


def replay(broker: BrokerProcess, example: Example) -> None:
    """Play the example's client lines and check every server line, in order."""
    clients: dict[str, LineClient] = {}
    greeted: set[str] = set()
    closed: set[str] = set()
    log: list[str] = []
    try:
        for step in example.steps:
            client = clients.get(step.conn)
            if client is None:
                client = clients[step.conn] = broker.connect(timeout=READ_TIMEOUT)
            tag = f"{step.side}{step.conn}:"
            if step.side == "C":
                log.append(f"{tag} {step.text}")
                client.send(step.text.encode() + b"\r\n")
                continue
            if step.text == CLOSED:
                if not client.expect_closed(READ_TIMEOUT):
                    _fail(example, step, "the connection closed", "it was still open", log)
                closed.add(step.conn)
                log.append(f"{tag} {CLOSED}")
                continue
            if step.text.startswith("HELLO ") and step.conn not in greeted:
                got = client.hello.decode()
            else:
                try:
                    got = client.readline(READ_TIMEOUT).decode("utf-8", "replace")
                except (TimeoutError, ConnectionError) as e:
                    _fail(example, step, repr(step.text), f"no line ({e})", log)
            greeted.add(step.conn)
            if not line_pattern(step.text).fullmatch(got):
                _fail(example, step, repr(step.text), repr(got), log)
            log.append(f"{tag} {got}")
        last = example.steps[-1].lineno
        for conn, client in clients.items():
            if conn in closed:
                try:
                    extra = client.readline(0).decode("utf-8", "replace")
                except (TimeoutError, ConnectionError):
                    continue
                _fail(example, Step(last, conn, "S", ""), "nothing more", repr(extra), log)
            # An unknown command's reply is unique: whatever comes before it is extra.
            client.send(END + b"\r\n")
            got = client.readline(READ_TIMEOUT).decode("utf-8", "replace")
            if got != END_REPLY:
                _fail(example, Step(last, conn, "S", ""), "nothing more", repr(got), log)
    finally:
        for client in clients.values():
            client.close()


def clean(broker: BrokerProcess, deadline: float = 5.0, login: str | None = None) -> None:
    """Delete every object, and wait until the example's connections are gone.

    ``login`` is an ``AUTH`` line to send first, on a broker that requires one."""
    end = time.monotonic() + deadline
    with broker.connect() as admin:
        if login is not None:
            assert admin.request(login)[1] == b"+OK"
        while True:
            data, _ = admin.request("LIST")
            names = [line.split()[1].decode() for line in data if isinstance(line, bytes)]
            for name in names:
                if not name.startswith("mbroker."):
                    admin.request(f"DELETE {name}")
            stats, _ = admin.request("STATS")
            if not names and b"STAT connections 1" in stats:
                return
            if time.monotonic() > end:
                raise AssertionError(f"objects or connections left: {names} {stats}")
            time.sleep(0.01)


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
    for document in ("tutorial/index", "client", "api", "cli", "protocol", "security"):
        assert f"\n   {document}\n" in toctree, document
        assert (DOC.parent / f"{document}.rst").is_file(), document
        assert f":doc:`{document}`" in index, document
