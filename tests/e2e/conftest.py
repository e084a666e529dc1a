"""Fixtures shared by the end-to-end contract tests (a module may define its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, client_of, running_broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One in-memory ``twistd -n mbroker`` per test module."""
    yield from running_broker(tmp_path_factory)


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[Client]:
    yield from client_of(broker)
