"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_twisted

from mbroker.client.connection import Client, connect
from mbroker.testing import LoopbackBroker
from tests.helpers.broker import BrokerProcess, start_broker


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


@pytest_twisted.async_yield_fixture
async def broker() -> AsyncIterator[LoopbackBroker]:
    """The real broker in this process on a loopback port (``mbroker.testing``).
    ``tests/e2e`` has its own ``broker``: a ``twistd`` process."""
    from twisted.internet import reactor

    server = await LoopbackBroker.start(reactor)
    yield server
    await server.stop()


@pytest_twisted.async_yield_fixture
async def client(broker: LoopbackBroker) -> AsyncIterator[Client]:
    """A Deferred client of ``broker``, closed at the end."""
    from twisted.internet import reactor

    c = await connect(reactor, broker.endpoint)
    yield c
    await c.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under ``tests/e2e/`` is marked ``e2e`` (``-m 'not e2e'`` runs the rest)."""
    e2e = Path(__file__).resolve().parent / "e2e"
    for item in items:
        if e2e in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
