"""Which broker the contract tests run against: a single broker, or a cluster node.

The acceptance tests (``tests/e2e/test_contract_*.py``) hold for a single broker and,
with the differences docs/cluster.rst lists, for a node of a cluster.  The modules of
:data:`NODE_MODULES` (rules about shared state: objects, messages, consuming, the
figures, queue limits, ttl, dead letters, priorities, delays) run twice in every
test run, through the module-scoped ``target`` fixture (tests/e2e/conftest.py):
once against ``twistd -n mbroker`` and once against a node (``twistd -n mbroker
--cluster …``) of the session's local Redis Cluster
(:func:`tests.helpers.redis_cluster.redis_cluster`), emptied before each module's node
starts (names are unique per test, so the tests of a module do not see each other's
objects).  The other modules test what a node serves with the single broker's own code
(framing, heartbeats, connection limits, peers); with
``MBROKER_TEST_CLUSTER=redis://HOST:PORT,…`` in the environment every contract module
runs against a node too, of that cluster.

A test whose rule differs on a node (docs/cluster.rst, "What differs") asks for the
``on_node`` fixture and asserts what holds there: :func:`figures` and
:func:`stats_show` for LIST and STATS figures that a node reads from Redis every
second, :func:`status_and_msgs` for MSGs that may come after a later reply,
:func:`pull_all` for a PULL that takes what the node holds.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers.contract import Client, poll
from tests.helpers.lineclient import Msg

SINGLE = "single"
NODE = "node"

#: the modules that run against a cluster node in every run
NODE_MODULES = frozenset(
    {
        "test_contract_consume",
        "test_contract_headers",
        "test_contract_help",
        "test_contract_objects",
        "test_contract_queues",
        "test_contract_schedule",
        "test_contract_ttl0",
    }
)

#: a shared queue's figures on a node are those of Redis, read every second by the
#: node's watch round (docs/cluster.rst); room for a loaded CI machine
FIGURES_BOUND = 10.0

_names = itertools.count(1)


def external_cluster() -> str | None:
    """The Redis Cluster named by ``MBROKER_TEST_CLUSTER``, if any."""
    return os.environ.get("MBROKER_TEST_CLUSTER") or None


def parametrize(metafunc: pytest.Metafunc) -> None:
    """``pytest_generate_tests``: the targets of a contract test that asks for one."""
    if "target" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rpartition(".")[2]
    if module in NODE_MODULES or (
        external_cluster() is not None and module.startswith("test_contract_")
    ):
        node = pytest.param(NODE, marks=pytest.mark.cluster)
        metafunc.parametrize("target", [SINGLE, node], indirect=True, scope="module")


def node_args(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The options that make the broker of ``request``'s target a cluster node
    (none for a single broker): the session's Redis Cluster, emptied first."""
    if request.getfixturevalue("target") != NODE:
        return ()
    url = external_cluster()
    if url is None:
        from tests.helpers.redis_cluster import flush

        dev = request.getfixturevalue("redis_cluster")
        flush(dev)
        url = dev.url
    return ("--cluster", url, "--node-name", f"contract-{os.getpid()}-{next(_names)}")


def cluster_url(request: pytest.FixtureRequest) -> str:
    """The Redis Cluster a node target runs on (as ``--cluster`` takes it)."""
    return external_cluster() or request.getfixturevalue("redis_cluster").url


def subscribed_and_waiting(
    request: pytest.FixtureRequest, on_node: bool, subscribe: Callable[[], Any]
) -> None:
    """Run ``subscribe`` (a SUBSCRIBE to a queue); on a node, return once its read loop
    for the queue waits in Redis (``XREADGROUP … BLOCK``): a consumer counts as waiting
    from then on (docs/cluster.rst, limits).  No other read loop may be running."""
    if not on_node:
        subscribe()
        return
    from tests.helpers.redis_cluster import blocked_reads

    url = cluster_url(request)
    poll(lambda: blocked_reads(url) == 0, FIGURES_BOUND)  # (earlier tests' loops ended)
    subscribe()
    poll(lambda: blocked_reads(url) > 0, FIGURES_BOUND)


def figures(on_node: bool, check: Callable[[], Any]) -> Any:
    """Check LIST or STATS figures of a shared queue: true at once on a single broker;
    on a cluster node, within the round in which it reads them from Redis."""
    if on_node:
        return poll(check, FIGURES_BOUND)
    result = check()
    assert result, f"{result!r}: {check}"
    return result


def stats_show(on_node: bool, c: Client, name: str, **want: str) -> None:
    """STATS ``name`` shows ``want`` (``messages="0"``, ``unacked="1"`` …): at once on
    a single broker; on a node within the round in which it reads its shared queues'
    ready, unacknowledged and delayed figures from Redis (until then it shows the last
    round's)."""

    def shown() -> dict[str, str]:
        stats = c.stats(name)
        return {k: stats.get(k, "") for k in want}

    if on_node:
        poll(lambda: shown() == want, FIGURES_BOUND)
    assert shown() == want


def status_and_msgs(c: Client, line: str, n: int, on_node: bool) -> tuple[bytes, list[Msg]]:
    """Send ``line`` (an ACK, a NACK …) that lets ``n`` more MSGs come; its status line
    and those MSGs.  On a single broker the MSGs come first (checked); on a node a
    delivery is asynchronous to replies (docs/cluster.rst), so in either order."""
    c.send(line.encode() + b"\r\n")
    if on_node:
        data, status = c.read_reply()
        assert data == [], data
        return status, [c.read_msg() for _ in range(n)]
    msgs = [c.read_msg() for _ in range(n)]
    return c.readline(), msgs


def pull_all(c: Client, name: str, n: int, on_node: bool) -> list[Msg]:
    """``PULL name max=n``, which gets all ``n`` messages on a single broker (checked);
    a node's PULL takes what the node holds (docs/cluster.rst), so on a node PULLs
    with ``wait`` until ``n`` have come."""
    if not on_node:
        msgs = c.pull(f"PULL {name} max={n}")
        assert len(msgs) == n, msgs
        return msgs
    out: list[Msg] = []
    deadline = time.monotonic() + FIGURES_BOUND
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {out} of {n}"
        out += c.pull(f"PULL {name} max={n - len(out)} wait=500")
    return out
