"""Every ``curl`` example in ``docs/http.rst`` is replayed against a real broker.

An example is a ``.. code-block:: console`` of ``$ curl ...`` commands, each followed
by what it prints.  The blocks are replayed in the document's order on one broker
(``twistd -n mbroker --http ...`` with a data directory), so the document reads as a
tour; a block after ``.. replay: users`` goes to a second broker started with a users
file (``alice`` with password ``s3cret`` and the patterns ``alice.*``; ``monitor``,
password ``look``, tagged ``monitoring``; ``ops``, password ``act``, tagged
``administrator``).

What a command prints is compared this way: with ``-i``, the status line must be the
same, and each header shown must be in the answer; a JSON body must match the one
shown, where ``...`` in an object stands for fields not shown and ``<n>`` for any
number; any other body must contain each line shown.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from argon2 import PasswordHasher

from mbroker.errors import ERRORS_BY_CODE
from mbroker.server.auth import hash_password
from mbroker.server.http.api import ROUTES, STATUS_BY_CODE, match_route
from tests.helpers.broker import BrokerProcess, start_broker

DOC = Path(__file__).resolve().parents[2] / "docs" / "http.rst"
HTTP = ("--http", "tcp:0:interface=127.0.0.1")


@attrs.frozen
class Command:
    lineno: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    show_head: bool
    expected: tuple[str, ...]
    users: bool


def parse_curl(line: str) -> tuple[str, str, dict[str, str], bytes | None, bool]:
    """``curl -s[i] [-X M] [-H 'K: V'] [-u U:P] [-d DATA] URL``: method, path, headers, body, -i."""
    words = shlex.split(line)
    assert words[0] == "curl", line
    method, url, body, show_head = None, None, None, False
    headers: dict[str, str] = {}
    it = iter(words[1:])
    for w in it:
        if w in ("-s", "-si", "-is", "-i"):
            show_head = show_head or "i" in w
        elif w == "-X":
            method = next(it)
        elif w == "-H":
            name, _, value = next(it).partition(":")
            headers[name.strip()] = value.strip()
        elif w == "-u":
            headers["Authorization"] = "Basic " + base64.b64encode(next(it).encode()).decode()
        elif w == "-d":
            body = next(it).encode()
        else:
            assert url is None and w.startswith("localhost:15672/"), line
            url = w
    assert url is not None, line
    if body is not None and "Content-Type" not in headers:
        headers["Content-Type"] = "application/x-www-form-urlencoded"  # as curl does
    method = method or ("POST" if body is not None else "GET")
    return method, url[len("localhost:15672") :], headers, body, show_head


def parse_examples(text: str) -> list[Command]:
    lines = text.splitlines()
    out: list[Command] = []
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: console":
            continue
        before = [x.strip() for x in lines[:i] if x.strip()]
        users = bool(before) and before[-1] == ".. replay: users"
        block: list[tuple[int, str]] = []
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith("   ")):
            block.append((j + 1, lines[j][3:]))
            j += 1
        current: tuple[int, str] | None = None
        shown: list[str] = []
        for lineno, text_line in block + [(0, "$ ")]:
            if text_line.startswith("$ "):
                if current is not None:
                    while shown and not shown[-1]:
                        shown.pop()
                    method, path, headers, body, head = parse_curl(current[1])
                    out.append(
                        Command(current[0], method, path, headers, body, head, tuple(shown), users)
                    )
                current, shown = (lineno, text_line[2:]), []
            elif current is not None:
                shown.append(text_line)
    return out


EXAMPLES = parse_examples(DOC.read_text(encoding="utf-8"))


# --------------------------------------------------------------- comparing


def json_pattern(text: str) -> Any:
    """The JSON shown, with ``...`` as a ``"...": true`` member and ``<n>`` as ``"<n>"``."""
    text = re.sub(r"\.\.\.(?=\s*[}\]])", '"...": true', text)
    text = text.replace("<n>", '"<n>"')
    return json.loads(text)


def matches(shown: Any, got: Any) -> bool:
    if shown == "<n>":
        return isinstance(got, (int, float)) and not isinstance(got, bool)
    if isinstance(shown, dict):
        if not isinstance(got, dict):
            return False
        keys = set(shown) - {"..."}
        if "..." not in shown and keys != set(got):
            return False
        return all(k in got and matches(shown[k], got[k]) for k in keys)
    if isinstance(shown, list):
        return (
            isinstance(got, list)
            and len(shown) == len(got)
            and all(matches(s, g) for s, g in zip(shown, got))
        )
    return type(shown) is type(got) and shown == got


def check(
    example: Command, status: int, reason: str, headers: http.client.HTTPMessage, body: bytes
) -> None:
    shown = list(example.expected)
    where = f"docs/http.rst:{example.lineno}"
    if example.show_head:
        assert shown[0] == f"HTTP/1.1 {status} {reason}", where
        shown.pop(0)
        while shown and shown[0]:
            name, _, value = shown.pop(0).partition(": ")
            assert headers.get(name) == value, f"{where}: header {name}: {headers.get(name)!r}"
        while shown and not shown[0]:
            shown.pop(0)
    text = body.decode("utf-8")
    if not shown:
        assert not body, f"{where}: unexpected body {text!r}"
    elif shown[0][:1] in "{[":
        pattern = json_pattern("\n".join(shown))
        assert matches(pattern, json.loads(text)), f"{where}: got {text}"
    else:
        got = text.splitlines()
        for line in shown:
            regex = re.escape(line).replace(re.escape("<n>"), r"[0-9.e+]+")
            assert any(re.fullmatch(regex, g) for g in got), f"{where}: no line {line!r}"


# ---------------------------------------------------------------- replaying


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[bool, BrokerProcess]]:
    open_dir = tmp_path_factory.mktemp("http-docs")
    users_dir = tmp_path_factory.mktemp("http-docs-users")
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    users = users_dir / "users"
    users.write_text(
        f"alice:{hash_password('s3cret', hasher)}:alice.*:alice.*:alice.*\n"
        f"monitor:{hash_password('look', hasher)}:-:-:-:monitoring\n"
        f"ops:{hash_password('act', hasher)}:-:-:-:administrator\n"
        f"nobody:{hash_password('none', hasher)}:-:-:-\n"
    )
    made = [start_broker(open_dir, *HTTP)]
    try:
        made.append(start_broker(users_dir, *HTTP, "--users", str(users)))
        yield {False: made[0], True: made[1]}
    finally:
        for b in made:
            b.stop()


def replay(broker: BrokerProcess, example: Command) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", broker.http_port, timeout=10)
    try:
        conn.request(example.method, example.path, example.body, example.headers)
        response = conn.getresponse()
        body = response.read()
        check(example, response.status, response.reason, response.headers, body)
    finally:
        conn.close()


def test_the_examples_in_order(brokers: dict[bool, BrokerProcess]) -> None:
    for example in EXAMPLES:
        replay(brokers[example.users], example)


def test_the_document_has_examples() -> None:
    assert len(EXAMPLES) > 30
    assert any(e.users for e in EXAMPLES)


@pytest.mark.parametrize(
    "route", [(m, "/".join(p)) for m, p, _ in ROUTES], ids=lambda r: f"{r[0]} {r[1]}"
)
def test_every_route_has_an_example(route: tuple[str, str]) -> None:
    method, pattern = route
    for e in EXAMPLES:
        segments = tuple(e.path.split("?")[0].strip("/").split("/"))
        if segments[0] != "api" or e.method != method:
            continue
        path = tuple(s.replace("%2F", "/") for s in segments[1:])
        if len(path) >= 2 and path[1] == "/":
            path = path[:1] + path[2:]
        if match_route(tuple(pattern.split("/")), path) is not None:
            return
    pytest.fail(f"docs/http.rst has no example of {method} /api/{pattern}")


def test_a_wrong_example_fails() -> None:
    [example] = parse_examples(
        '.. code-block:: console\n\n   $ curl -s localhost:15672/healthz\n   {"status": "bad"}\n'
    )
    with pytest.raises(AssertionError):
        check(example, 200, "OK", http.client.HTTPMessage(), b'{"status": "ok"}')
    assert matches(json_pattern('{"a": <n>, ...}'), {"a": 1, "b": 2})
    assert not matches(json_pattern('{"a": <n>}'), {"a": 1, "b": 2})
    assert not matches(json_pattern('[{"a": 1, ...}]'), [{"a": 1}, {"a": 2}])


def test_the_status_list_is_the_codes() -> None:
    """The document's list of statuses names every wire code with its real status."""
    documented: dict[str, int] = {}
    for status, rest in re.findall(r"^\* (\d{3}): (.*)$", DOC.read_text(), re.MULTILINE):
        if status in ("405", "415"):  # (a method or a content type: BAD_COMMAND, BAD_ARGS)
            continue
        for code in re.findall(r"``([A-Z_]+)``", rest):
            documented[code] = int(status)
    assert documented == STATUS_BY_CODE
    assert set(STATUS_BY_CODE) == set(ERRORS_BY_CODE)
