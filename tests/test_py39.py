"""The code stays importable on Python 3.9, the language level of Debian's PyPy.

mbroker is developed and type-checked on CPython 3.10+, and runs on PyPy 3.9 for
speed (README: "Running on PyPy").  CI has no PyPy, so this guards, statically,
against what breaks there and nowhere else:

* syntax newer than 3.9 (``match``, ``except*``), by parsing every module with
  ``feature_version=(3, 9)``;
* ``X | Y`` evaluated at run time (a type alias, an ``isinstance`` or ``cast``
  argument): ``from __future__ import annotations`` only defers annotations;
* ``zip(..., strict=...)``, and names that 3.9's standard library does not have.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(
    p
    for top in ("mbroker", "twisted", "benchmarks", "examples", "tests")
    for p in (ROOT / top).rglob("*.py")
    if "__pycache__" not in p.parts
)

#: module attributes added after Python 3.9 (those a broker might reach for)
NEWER = {
    "typing": {"TypeAlias", "ParamSpec", "Concatenate", "TypeGuard", "Self", "Never"},
    "typing_extensions": set(),
    "enum": {"StrEnum", "verify"},
    "datetime": {"UTC"},
    "itertools": {"pairwise", "batched"},
}
NEWER_MODULES = {"tomllib"}


def _type_union(node: ast.AST) -> bool:
    """``a | b`` where both sides read as types (names, subscripts, None)."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)):
        return False
    sides = (node.left, node.right)
    return all(
        _type_union(s)
        or (isinstance(s, ast.Name) and not s.id.isupper())
        or isinstance(s, ast.Subscript)
        or (isinstance(s, ast.Constant) and s.value is None)
        or (isinstance(s, ast.Attribute) and s.attr[:1].isupper() and not s.attr.isupper())
        for s in sides
    )


def problems(source: str, name: str) -> list[str]:
    try:
        tree = ast.parse(source, name, feature_version=(3, 9))
    except SyntaxError as e:
        return [f"{name}:{e.lineno}: not Python 3.9 syntax: {e.msg}"]
    found = []

    def where(node: ast.AST) -> str:
        return f"{name}:{getattr(node, 'lineno', '?')}"

    # module- and class-level assignments are evaluated at import time
    bodies = [tree.body] + [n.body for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for body in bodies:
        for stmt in body:
            value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
            if value is not None and any(_type_union(n) for n in ast.walk(value)):
                found.append(f"{where(stmt)}: X | Y evaluated at import (use Union/Optional)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            fname = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", "")
            if fname == "zip" and any(k.arg == "strict" for k in node.keywords):
                found.append(f"{where(node)}: zip(strict=) is Python 3.10")
            checked = {"isinstance": 1, "issubclass": 1, "cast": 0, "TypeVar": None}
            if fname in checked:
                idx = checked[fname]
                args = node.args[idx : idx + 1] if idx is not None else []
                args += [k.value for k in node.keywords if k.arg == "bound"]
                if any(_type_union(n) for a in args for n in ast.walk(a)):
                    found.append(f"{where(node)}: X | Y evaluated in {fname}()")
        elif isinstance(node, ast.ImportFrom) and node.module in NEWER:
            late = NEWER[node.module] & {a.name for a in node.names}
            if late:
                found.append(f"{where(node)}: {node.module}.{sorted(late)} is newer than 3.9")
        elif isinstance(node, ast.Import):
            late = NEWER_MODULES & {a.name for a in node.names}
            if late:
                found.append(f"{where(node)}: {sorted(late)} is newer than 3.9")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_module_stays_python39(path: Path) -> None:
    assert problems(path.read_text(), str(path.relative_to(ROOT))) == []


@pytest.mark.parametrize(
    "source",
    [
        "Alias = int | None\n",
        "class A:\n    x = list[int] | None\n",
        "isinstance(x, (int | str))\n",
        "cast(Foo | None, y)\n",
        "T = TypeVar('T', bound=Exchange | Queue)\n",
        "for a, b in zip(x, y, strict=True):\n    pass\n",
        "match x:\n    case 1:\n        pass\n",
        "from typing import TypeAlias\n",
        "import tomllib\n",
    ],
)
def test_the_guard_sees(source: str) -> None:
    assert problems(source, "x.py")


@pytest.mark.parametrize(
    "source",
    [
        "def f(x: int | None) -> str | None: ...\n",
        "flags = os.O_WRONLY | os.O_CREAT\n",
        "MASK = A_BIT | B_BIT\n",
        "x: int | None = None\n",
        "Alias = Optional[int]\n",
    ],
)
def test_the_guard_lets_pass(source: str) -> None:
    assert problems(source, "x.py") == []
