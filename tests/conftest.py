"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.broker import BrokerProcess, start_broker


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A real ``twistd -n mbroker`` on a free loopback port, with ``tmp_path/data``.

    Restart it on the same state with ``start_broker(tmp_path)`` after ``stop()``.
    Its output is printed at teardown, so a failing test shows the broker's log.
    """
    broker = start_broker(tmp_path)
    try:
        yield broker
    finally:
        broker.stop()
        print(f"--- broker output (exit code {broker.process.returncode}) ---")
        print(broker.output())
