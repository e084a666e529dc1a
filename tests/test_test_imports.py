"""Test modules share code through ``tests/helpers/`` only, never by importing each other.

A test module that imports another runs (and collects) that module's tests a second time
under another name, and ties two files that should change apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_test_modules(path: Path) -> list[str]:
    """The ``tests.…`` modules ``path`` imports, other than ``tests.helpers``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom):  # a relative import, within tests/
            names = [f".{node.module or ''}"]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("."):
                found.append(name)
            elif name == "tests" or name.startswith("tests."):
                if name != "tests.helpers" and not name.startswith("tests.helpers."):
                    found.append(name)
    return found


def test_no_test_module_imports_another() -> None:
    offenders = {
        str(path.relative_to(TESTS)): names
        for path in sorted(TESTS.rglob("*.py"))
        if (names := imported_test_modules(path))
    }
    assert offenders == {}


def test_the_check_sees_an_import_of_a_test_module(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text(
        "from tests.e2e.test_durability import ok\n"
        "from tests.helpers.conn import Conn\n"
        "import tests.test_docs\n"
        "from .test_y import z\n"
    )
    assert imported_test_modules(module) == [
        "tests.e2e.test_durability",
        "tests.test_docs",
        ".test_y",
    ]
