"""Fixtures shared by the end-to-end contract tests (a module may define its own).

A contract module of :data:`tests.helpers.targets.NODE_MODULES` runs against a single
broker and against a cluster node (the ``target`` fixture, parametrised by
:func:`pytest_generate_tests`); ``on_node`` tells a test which.  Every other module
gets a single broker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, client_of, running_broker
from tests.helpers.redis_cluster import redis_cluster
from tests.helpers.targets import NODE, SINGLE, node_args, parametrize

__all__ = ["redis_cluster"]  # (a fixture, used by name: one Redis Cluster per run)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize(metafunc)


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> str:
    """What the module's broker is: ``single`` or ``node`` (a cluster node)."""
    return str(getattr(request, "param", SINGLE))


@pytest.fixture(scope="module")
def on_node(target: str) -> bool:
    """Whether the module's broker is a cluster node (docs/cluster.rst: where a rule
    differs there, the test asserts what holds on a node)."""
    return target == NODE


@pytest.fixture(scope="module")
def broker(
    request: pytest.FixtureRequest, target: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """One in-memory ``twistd -n mbroker`` per test module (and target)."""
    yield from running_broker(tmp_path_factory, *node_args(request))


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[Client]:
    yield from client_of(broker)


@pytest.fixture
def a(nodes: tuple[BrokerProcess, BrokerProcess]) -> Iterator[Client]:
    """A client of the first of a cluster module's two nodes (its ``nodes`` fixture)."""
    yield from client_of(nodes[0])


@pytest.fixture
def b(nodes: tuple[BrokerProcess, BrokerProcess]) -> Iterator[Client]:
    """A client of the second of a cluster module's two nodes."""
    yield from client_of(nodes[1])


@pytest.fixture
def redis(redis_cluster: object) -> Iterator[object]:
    """A redis-py client of the session's Redis Cluster (to look at the keys)."""
    from redis.cluster import RedisCluster

    host, port = redis_cluster.nodes[0]  # type: ignore[attr-defined]
    r = RedisCluster(host=host, port=port)
    try:
        yield r
    finally:
        r.close()
