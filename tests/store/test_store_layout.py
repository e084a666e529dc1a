"""The store package's shape: one job per module, said in its docstring; names that do
not read like functions; ``interfaces`` holds the store's interface."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from zope.interface.interface import InterfaceClass

import mbroker.core
import mbroker.store

PACKAGES = [Path(mbroker.core.__file__).parent, Path(mbroker.store.__file__).parent]
MODULES = sorted(p for pkg in PACKAGES for p in pkg.glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_module_says_its_job_and_stays_small(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert ast.get_docstring(ast.parse(text)), "no module docstring"
    assert text.count("\n") <= 600


@pytest.mark.parametrize("name", ["logstore", "bridge"])
def test_the_logger_is_not_named_like_a_function(name: str) -> None:
    module = importlib.import_module(f"mbroker.store.{name}")
    assert not hasattr(module, "log")
    assert hasattr(module, "_log")


def test_interfaces_holds_the_store_interface() -> None:
    """It defines IStore, and re-exports nothing (the records live in core)."""
    from mbroker.store import interfaces

    tree = ast.parse(Path(interfaces.__file__).read_text(encoding="utf-8"))
    defined = [
        n.name if isinstance(n, ast.ClassDef) else ast.unparse(n)
        for n in tree.body
        if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.Assign, ast.AnnAssign))
    ]
    assert defined == ["IStore"]
    assert isinstance(interfaces.IStore, InterfaceClass)
