"""Fixtures of the cluster tests: ``r``, a redis-py client of the session's local Redis
Cluster (:func:`tests.helpers.redis_cluster.redis_cluster`), emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.redis_cluster import flush, redis_cluster

__all__ = ["redis_cluster"]  # (a fixture, used by name)


@pytest.fixture
def r(redis_cluster: Any) -> Iterator[Any]:
    """A client of the session's Redis Cluster, emptied first, closed after."""
    from redis.cluster import ClusterNode, RedisCluster

    flush(redis_cluster)
    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster.nodes])
    try:
        yield client
    finally:
        client.close()
