"""A real Redis Cluster for the cluster tests, and cluster nodes of the broker.

:func:`redis_cluster` is a session-scoped fixture: one local Redis Cluster (3 masters,
started by ``scripts/redis_cluster.py``, the script developers run) for every cluster
test of the run, stopped at the end.  :func:`cluster` is the per-test fixture the tests
use: the same cluster, emptied (``FLUSHALL`` on each master) before the test, so that
no test sees another's queues.  :func:`start_node` starts ``twistd -n mbroker
--cluster …`` as :func:`tests.helpers.broker.start_broker` starts a single broker,
and :func:`two_nodes` the two nodes a test module shares (its ``nodes`` fixture; the
``a`` and ``b`` fixtures of ``tests/e2e/conftest.py`` connect to them).
:func:`master_of` names the master of a key's slot and :func:`fail_over` kills it and
waits for its replica's promotion; :func:`replication` (noted at a master's kill) and
:func:`failover_report` say what a failover test that lost more than it should needs
to know.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.contract import Client, poll, unique
from tests.helpers.lineclient import Msg

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


def master_of(dev: Any, key: str) -> int:
    """The port of the master that holds ``key``'s slot (as the cluster says now)."""
    from redis.cluster import ClusterNode, RedisCluster

    rc = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in dev.nodes if alive(dev, p)])
    try:
        return int(rc.get_node_from_key(key).port)
    finally:
        rc.close()


def alive(dev: Any, port: int) -> bool:
    """Whether the Redis node on ``port`` of ``dev`` runs."""
    p = dev.processes.get(port)
    return p is not None and p.poll() is None


def fail_over(dev: Any, port: int, timeout: float = 15.0) -> int:
    """``kill -9`` the master on ``port`` and wait (polling, up to ``timeout`` s) until
    one of its replicas says it is a master; that replica's port."""
    from redis import Redis

    def role(p: int) -> bytes:
        r = Redis(host="127.0.0.1", port=p, socket_timeout=1)
        try:
            return bytes(r.execute_command("ROLE")[0])
        finally:
            r.close()

    r = Redis(host="127.0.0.1", port=port)
    try:
        info = dict(r.info("replication"))
    finally:
        r.close()
    replicas = [int(v["port"]) for k, v in info.items() if k.startswith("slave")]
    assert replicas, f"master {port} has no replica: {info}"
    dev.kill(port)
    deadline = time.monotonic() + timeout
    while True:
        for p in replicas:
            if role(p) == b"master":
                return p
        if time.monotonic() > deadline:
            raise AssertionError(f"no replica of {port} ({replicas}) promoted in {timeout} s")
        time.sleep(0.05)


def replication(dev: Any, port: int) -> str:
    """What a master has written (its replication offset) and, for each of its
    replicas, the offset it last acknowledged to the master (``acked``: every second)
    and the one it has (``has``, asked of the replica); to note just before a kill."""
    from redis import Redis

    def info(p: int) -> dict[str, Any]:
        r = Redis(host="127.0.0.1", port=p)
        try:
            return dict(r.info("replication"))
        finally:
            r.close()

    master = info(port)
    replicas = [
        f"{v['port']} {v['state']} acked={v['offset']} "
        f"has={info(int(v['port'])).get('master_repl_offset')}"
        for k, v in sorted(master.items())
        if k.startswith("slave") and isinstance(v, dict)
    ]
    return f"master {port} offset={master.get('master_repl_offset')}: " + ", ".join(replicas)


#: the lines of a Redis log that tell a replication or failover story
_STORY = (
    "sync",
    "Sync",
    "ACK",
    "MASTER",
    "master",
    "FAIL",
    "ailover",
    "election",
    "Cluster state",
    "replica",
    "Replica",
)


def failover_report(dev: Any, key: str, *node_outputs: str) -> str:
    """What to read when a failover lost more than it should: each Redis node's role
    and offset, ``key``'s stream on the live master that holds it (its length, and
    ``entries-added``: the entries it has had since it was made), the replication and
    failover lines of each node's log, and the warnings of the broker nodes (their
    ``output()``).  Call it before ``dev.stop()`` (which removes the logs)."""
    from redis import Redis

    out = []
    for host, port in dev.nodes:
        if not alive(dev, port):
            out.append(f"redis {port}: dead")
            continue
        r = Redis(host=host, port=port)
        try:
            out.append(f"redis {port}: ROLE {r.execute_command('ROLE')}")
            if r.execute_command("ROLE")[0] == b"master" and r.exists(key):
                stream = r.xinfo_stream(key)
                picked = ("length", "entries-added", "first-entry", "last-generated-id")
                out.append(f"  {key}: { ({k: stream.get(k) for k in picked}) }")
                out.append(f"  groups: {r.xinfo_groups(key)}")
        except Exception as e:  # noqa: BLE001 (a report: say what failed and go on)
            out.append(f"  ({type(e).__name__}: {e})")
        finally:
            r.close()
    for port in dev.ports:
        log = dev.directory / str(port) / "redis.log" if dev.directory else None
        if log is not None and log.exists():
            lines = [
                ln
                for ln in log.read_text().splitlines()
                if any(s in ln for s in _STORY) and "overcommit" not in ln
            ]
            out.append(f"--- redis {port} log ({len(lines)} lines of its story)")
            out.extend(lines[-40:])
    for i, text in enumerate(node_outputs):
        lines = [ln for ln in text.splitlines() if "Redis" in ln or "warn" in ln.lower()]
        out.append(f"--- broker node {i}: {len(lines)} lines naming Redis or a warning")
        out.extend(lines[-40:])
    return "\n".join(out)


def spans(numbers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` as ``0-2 5 7-8``."""
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return " ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


#: the documented bound on the spread of a namespace change between nodes
#: (docs/cluster.rst)
SPREAD = 2.0


def made(a: Client, b: Client, *options: str) -> str:
    """A new queue (``CREATE`` ``options``), made through node A and known to node B."""
    q = unique("q")
    a.ok(" ".join([f"CREATE {q} queue", *options]))
    poll(lambda: q in b.listing(), SPREAD * 2)
    return q


def take(c: Client, n: int, timeout: float = 15) -> list[Msg]:
    """The next ``n`` MSGs of a subscription with ``prefetch=1``, each acknowledged."""
    got = []
    for _ in range(n):
        m = c.read_msg(timeout)
        got.append(m)
        assert c.ok(f"ACK {m.tag}") == "+OK 1"
    return got


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
