"""Replay the example sessions of docs/*.rst against a real broker."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.helpers.broker import BrokerProcess
from tests.helpers.lineclient import LineClient

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.rst"


CLOSED = "(connection closed)"


READ_TIMEOUT = 5.0


END = b"END-OF-EXAMPLE"


END_REPLY = "-ERR BAD_COMMAND unknown command 'END-OF-EXAMPLE'"


_STEP = re.compile(r"(?P<side>[CS])(?P<conn>[0-9]?): ?(?P<text>.*)")


_REPLAY = re.compile(r"\.\. replay:\s*(?P<args>.*?)\s*")


_PLACEHOLDER = re.compile(r"(<n>|<version>)")


_PATTERNS = {"<n>": r"[0-9]+", "<version>": r"\S+"}


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
