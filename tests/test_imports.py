"""Imports point one way, down the layers of ARCHITECTURE.md, and never in a circle.

Every ``import`` in ``mbroker/`` counts, those under ``TYPE_CHECKING`` and inside
functions included: a cycle hidden from the interpreter is still a knot for the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mbroker"

# Each module may import from its own layer and the layers with a lower number.
LAYERS = {
    "mbroker": 0,
    "mbroker.errors": 0,
    "mbroker.config": 0,
    "mbroker.wire": 1,
    "mbroker.core": 2,
    "mbroker.store": 3,
    "mbroker.cluster": 4,
    "mbroker.server": 5,
    "mbroker.client": 6,
    "mbroker.blocking": 6,
    "mbroker.cli": 7,
    "mbroker.__main__": 7,
    "mbroker.testing": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    best = ""
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    assert best, f"{module} is in no layer: add it to LAYERS"
    return LAYERS[best]


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path], own: str = "") -> set[str]:
    """The mbroker modules that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name in modules:
                found.add(name)
    found.discard(own)
    return found


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules, name) for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    for name in all_modules():
        layer(name)


def test_no_module_imports_from_a_layer_above_it() -> None:
    upward = [
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
        for src, targets in sorted(graph().items())
        for dst in sorted(targets)
        if layer(dst) > layer(src)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    edges = graph()
    # A package's __init__ re-exporting its own modules is not a cycle through them.
    for name in list(edges):
        edges[name] = {d for d in edges[name] if not name.startswith(d + ".") or d == "mbroker"}
        edges[name].discard("mbroker")
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from mbroker.server.protocol import BrokerProtocol\n", encoding="utf-8")
    assert imports_of(bad, {"mbroker.server.protocol": bad}) == {"mbroker.server.protocol"}
    assert layer("mbroker.server.protocol") > layer("mbroker.core.broker")
