"""The sans-IO and domain layers must not import Twisted (see ARCHITECTURE.md).

Each module is imported in a fresh interpreter, so that what the test runner itself
imported does not hide an import, and a failure names the module that pulls Twisted in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TWISTED_FREE = [
    "mbroker.wire",
    "mbroker.wire.tokens",
    "mbroker.wire.grammar",
    "mbroker.wire.framer",
    "mbroker.wire.commands",
    "mbroker.wire.replies",
    "mbroker.wire.encode",
    "mbroker.wire.frames",
    "mbroker.wire.stomp",  # and mbroker.wire.stomp_frames, which it imports
    "mbroker.errors",
    "mbroker.config",
    "mbroker.server.auth",
    "mbroker.server.stomp_commands",
    "mbroker.server.stomp_destinations",
    "mbroker.server.stomp_state",
    "mbroker.core.routing",
    "mbroker.core.model",
    "mbroker.core.broker",
    "mbroker.core.namespace",
    "mbroker.core.publishing",
    "mbroker.core.dispatch",
    "mbroker.core.consuming",
    "mbroker.core.reports",
    "mbroker.core.journal",
    "mbroker.core.records",
    "mbroker.core.snapshots",
]

PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m == "twisted" or m.startswith("twisted."))
print(" ".join(bad))
"""


def imported_twisted_modules(*modules: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize("module", TWISTED_FREE)
def test_module_does_not_import_twisted(module: str) -> None:
    assert imported_twisted_modules(module) == []


def test_domain_together_does_not_import_twisted() -> None:
    assert imported_twisted_modules(*TWISTED_FREE) == []
