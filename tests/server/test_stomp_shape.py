"""The shape of the STOMP listener (mbroker.server.stomp*): modules of one job and at
most 600 lines, objects that ask each other through public names, reactors typed by what
is asked of them, and the names other code imports still importable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
MODULES = sorted((ROOT / "mbroker" / "server").glob("stomp*.py"))
IDS = [p.name for p in MODULES]


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_one_job_in_at_most_600_lines(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 600
    assert ast.get_docstring(_tree(path)), f"{path.name} does not say its job"


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_no_private_name_of_another_object(path: Path) -> None:
    reached = [
        f"{path.name}:{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert reached == []


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_reactors_are_typed(path: Path) -> None:
    untyped = [
        f"{path.name}:{node.lineno}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.arg)
        and "reactor" in node.arg
        and (node.annotation is None or ast.unparse(node.annotation) in ("Any", "object"))
    ]
    assert untyped == []


def test_the_names_other_code_imports_still_work() -> None:
    from mbroker.server.stomp import DEFAULT_HEARTBEAT, StompFactory, StompProtocol
    from mbroker.server.stomp_protocol import StompProtocol as Protocol

    assert StompProtocol is Protocol
    assert all((DEFAULT_HEARTBEAT, StompFactory))
