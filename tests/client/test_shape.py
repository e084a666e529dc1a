"""The shape of the client side (mbroker.client, mbroker.cli, mbroker.testing): modules
of one job and at most 600 lines, objects that ask each other through public names,
reactors typed by what is asked of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
MODULES = sorted(
    [
        *(ROOT / "mbroker" / "client").glob("*.py"),
        *(ROOT / "mbroker" / "cli").glob("*.py"),
        ROOT / "mbroker" / "testing.py",
        ROOT / "mbroker" / "blocking.py",
        ROOT / "mbroker" / "__main__.py",
        ROOT / "mbroker" / "wire" / "replydata.py",
    ]
)
#: (module, line text) of the private names reached on another object, and why each is fine
FRIENDS = {
    # tag_ranges lives beside Message and marks the messages it names settled
    ("messages.py", "item._settled"),
    # a classmethod of LoopbackBroker starting the instance it made
    ("testing.py", "server._listen"),
}
IDS = [str(p.relative_to(ROOT)) for p in MODULES]


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_one_job_in_at_most_600_lines(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 600
    assert ast.get_docstring(_tree(path)), f"{path.name} does not say its job"


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_no_private_name_of_another_object(path: Path) -> None:
    reached = []
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") or not isinstance(node.value, ast.Name):
            continue
        owner = node.value.id
        if owner in ("self", "cls", "os", "sys"):
            continue
        if (path.name, f"{owner}.{node.attr}") not in FRIENDS:
            reached.append(f"{path.name}:{node.lineno}: {owner}.{node.attr}")
    assert reached == []


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_reactors_are_typed(path: Path) -> None:
    untyped = [
        f"{path.name}:{node.lineno}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.arg)
        and "reactor" in node.arg
        and (node.annotation is None or ast.unparse(node.annotation) in ("Any", "object"))
        and node.arg != "self"
    ]
    assert untyped == []


def test_the_documented_imports_still_work() -> None:
    from mbroker.blocking import Connection
    from mbroker.client import Client, ClientError, Message, Subscription, connect
    from mbroker.client.blocking import Connection as Blocking
    from mbroker.testing import LoopbackBroker, connected_pair

    assert Connection is Blocking
    assert all((Client, ClientError, Message, Subscription, connect))
    assert all((LoopbackBroker, connected_pair))
