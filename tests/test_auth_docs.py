"""The examples of ``docs/protocol.rst`` that need a users file, replayed.

``tests/test_docs.py`` replays every example on a broker started with the options of
its ``.. replay:`` comment; those options cannot name a file the test makes, so the
AUTH examples say ``.. replay: skip`` there, and ``.. replay-auth: --users USERS …``
right before it, which this module replays with ``USERS`` replaced by a users file
holding the users the document describes (and an administrator that cleans up).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.auth import cheap_hash
from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.docs import DOC, Example, parse_examples, replay
from tests.helpers.docs import clean as docs_clean

#: user, password, configure, write, read: as docs/protocol.rst describes them
USERS = [
    ("alice", "s3cret", "alice.*", "*", "alice.*|jobs"),
    ("bob", "b0b", "-", "-", "jobs"),
    ("docs-admin", "clean-up", "*", "*", "*"),
]
_MARK = re.compile(r"\.\. replay-auth:\s*(?P<args>.*?)\s*")


def auth_examples(text: str) -> list[tuple[Example, tuple[str, ...]]]:
    lines = text.splitlines()
    found = []
    for example in parse_examples(text):
        if example.broker_args is not None:
            continue
        before = [line.strip() for line in lines[: example.lineno - 1] if line.strip()]
        if len(before) >= 2 and before[-1] == ".. replay: skip":
            match = _MARK.fullmatch(before[-2])
            if match:
                found.append((example, tuple(match.group("args").split())))
    return found


EXAMPLES = auth_examples(DOC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("docs-users") / "users"
    path.write_text("".join(f"{u}:{cheap_hash(p)}:{c}:{w}:{r}\n" for u, p, c, w, r in USERS))
    return path


@pytest.fixture(scope="module")
def brokers(
    tmp_path_factory: pytest.TempPathFactory, users_file: Path
) -> Iterator[dict[tuple[str, ...], BrokerProcess]]:
    running: dict[tuple[str, ...], BrokerProcess] = {}
    try:
        yield running
    finally:
        for broker in running.values():
            broker.stop()


def clean(broker: BrokerProcess) -> None:
    docs_clean(broker, login="AUTH docs-admin clean-up")


def test_the_document_has_auth_examples() -> None:
    replies = [text for example, _ in EXAMPLES for text in example.lines("S")]
    for code in ("NO_AUTH", "AUTH", "FORBIDDEN", "LIMIT"):
        assert any(text.startswith(f"-ERR {code} ") for text in replies), code
    text = DOC.read_text(encoding="utf-8")
    for user, password, *_rights in USERS[:2]:
        assert f"``{user}`` (password ``{password}``)" in text


@pytest.mark.parametrize("example, args", EXAMPLES, ids=[f"line{e.lineno}" for e, _ in EXAMPLES])
def test_auth_example(
    brokers: dict[tuple[str, ...], BrokerProcess],
    users_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
    example: Example,
    args: tuple[str, ...],
) -> None:
    real_args = tuple(str(users_file) if a == "USERS" else a for a in args)
    if real_args not in brokers:
        brokers[real_args] = start_broker(
            tmp_path_factory.mktemp("broker"), *real_args, memory_only=True
        )
    broker = brokers[real_args]
    try:
        replay(broker, example)
    finally:
        clean(broker)
