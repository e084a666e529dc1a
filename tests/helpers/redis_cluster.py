"""A real Redis Cluster for the cluster tests, and cluster nodes of the broker.

:func:`redis_cluster` is a session-scoped fixture: one local Redis Cluster (3 masters,
started by ``scripts/redis_cluster.py``, the script developers run) for every cluster
test of the run, stopped at the end.  :func:`cluster` is the per-test fixture the tests
use: the same cluster, emptied (``FLUSHALL`` on each master) before the test, so that
no test sees another's queues.  :func:`start_node` starts ``twistd -n mbroker
--cluster …`` as :func:`tests.helpers.broker.start_broker` starts a single broker,
and :func:`two_nodes` the two nodes a test module shares (its ``nodes`` fixture; the
``a`` and ``b`` fixtures of ``tests/e2e/conftest.py`` connect to them).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.broker import BrokerProcess, start_broker

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "redis_cluster.py"


def _load_script() -> Any:
    spec = importlib.util.spec_from_file_location("mbroker_redis_cluster_script", _SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


redis_cluster_script = _load_script()
DevCluster = redis_cluster_script.DevCluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """One local Redis Cluster for the whole run."""
    dev = DevCluster(masters=3).start()
    try:
        yield dev
    finally:
        dev.stop()


def flush(dev: Any) -> None:
    """Empty every master of ``dev``."""
    from redis import Redis

    for host, port in dev.nodes:
        r = Redis(host=host, port=port)
        try:
            if r.execute_command("ROLE")[0] == b"master":
                r.flushall()
        finally:
            r.close()


@pytest.fixture
def cluster(redis_cluster: Any) -> Any:
    """The session's Redis Cluster, emptied for this test."""
    flush(redis_cluster)
    return redis_cluster


def start_node(tmp_path: Path, dev: Any, name: str, *extra: str) -> BrokerProcess:
    """``twistd -n mbroker --cluster URL --node-name NAME`` on a free loopback port."""
    work = tmp_path / name
    work.mkdir(exist_ok=True)
    return start_broker(work, "--cluster", dev.url, "--node-name", name, *extra, memory_only=True)


def two_nodes(
    dev: Any,
    tmp_path: Path,
    names: tuple[str, str],
    extra: tuple[str, ...] = (),
    b_extra: tuple[str, ...] = (),
) -> Iterator[tuple[BrokerProcess, BrokerProcess]]:
    """For a module's ``nodes`` fixture: ``dev`` emptied, two nodes named ``names``
    started (both with ``extra``, the second with ``b_extra`` too), stopped after."""
    flush(dev)
    a = start_node(tmp_path, dev, names[0], *extra)
    try:
        b = start_node(tmp_path, dev, names[1], *extra, *b_extra)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def blocked_reads(url: str) -> int:
    """How many clients of the Redis Cluster at ``url`` (as ``--cluster`` takes it)
    are blocked in ``XREADGROUP`` right now: a node's read loop waiting for entries
    (``CLIENT LIST`` of each master, flag ``b``)."""
    from redis import Redis

    n = 0
    for hostport in url.removeprefix("redis://").split(","):
        host, port = hostport.rsplit(":", 1)
        r = Redis(host=host, port=int(port))
        try:
            if r.execute_command("ROLE")[0] == b"master":
                n += sum([c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in r.client_list()])
        finally:
            r.close()
    return n
