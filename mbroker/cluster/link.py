"""The node's connection to Redis Cluster, and the threads that use it.

Redis work never runs on the reactor thread.  :class:`RedisLink` holds one
synchronous, thread-safe ``redis.cluster.RedisCluster`` client (redis-py; it follows
the cluster's slot map and its failovers) and two ways to run work with it:

- :meth:`RedisLink.write`: one dedicated thread (:class:`~mbroker.store.executor.
  ThreadExecutor`), jobs in submission order: the pipelines of
  :mod:`mbroker.cluster.writer`, so that an ACK's ``XACK`` never overtakes the
  ``XADD`` it follows;
- :meth:`RedisLink.read`: a thread pool for everything else (each queue's blocking
  ``XREADGROUP``, namespace reads, the liveness and takeover rounds), so that one
  blocked read holds up nothing but its own queue.

Both fire their Deferreds on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from redis.cluster import ClusterNode, RedisCluster
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from mbroker.errors import Unavailable
from mbroker.store.executor import ThreadExecutor

T = TypeVar("T")

#: threads for blocking reads: one per queue this node consumes from, at most
READ_THREADS = 64


def parse_nodes(url: str) -> list[tuple[str, int]]:
    """The startup nodes of ``redis://host:port,host:port,…`` (the scheme may be left
    out); raises ValueError for anything else."""
    text = url.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme not in ("redis", ""):
            raise ValueError(f"{url!r}: only redis:// is supported")
    nodes = []
    for part in text.split(","):
        part = part.strip().rstrip("/")
        if not part:
            continue
        split = urlsplit("//" + part)
        if split.hostname is None or split.port is None:
            raise ValueError(f"{part!r} is not host:port")
        nodes.append((split.hostname, split.port))
    if not nodes:
        raise ValueError(f"{url!r} names no Redis node")
    return nodes


class RedisLink:
    """A Redis Cluster client and the threads that use it (see the module's text)."""

    def __init__(
        self, reactor: IReactorCore, nodes: list[tuple[str, int]], client: Any = None
    ) -> None:
        self.reactor = reactor
        self.nodes = nodes
        #: the redis-py client (a ``RedisCluster``, or a fake in tests)
        self.client: Any = client
        self._pool = ThreadPool(minthreads=0, maxthreads=READ_THREADS, name="mbroker-redis")
        self._writer: ThreadExecutor | None = None
        self._started = False
        #: Redis commands sent (pipelined ones each count), for STATS and benchmarks
        self.commands = 0

    def start(self) -> Deferred[None]:
        """Start the threads and connect (off the reactor thread)."""
        reactor: Any = self.reactor
        self._pool.start()
        self._started = True
        self._writer = ThreadExecutor(reactor, name="mbroker-redis-write")
        reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        if self.client is not None:
            return self.read(lambda: None)

        def connect() -> None:
            startup = [ClusterNode(h, p) for h, p in self.nodes]
            where = ",".join(f"{h}:{p}" for h, p in self.nodes)
            try:
                self.client = RedisCluster(
                    startup_nodes=startup,
                    socket_connect_timeout=5,
                    cluster_error_retry_attempts=3,
                )
                self.client.ping(target_nodes=RedisCluster.PRIMARIES)
            except Exception as e:  # (one line for the operator, not a traceback)
                raise Unavailable(f"cannot use the Redis Cluster at {where}: {e}") from None

        return self.read(connect)

    def read(self, job: Callable[[], T]) -> Deferred[T]:
        """Run ``job`` in the read pool; fire with its result on the reactor thread."""
        reactor: IReactorFromThreads = self.reactor  # type: ignore[assignment]
        return deferToThreadPool(reactor, self._pool, job)

    def write(self, job: Callable[[], T]) -> Deferred[T]:
        """Run ``job`` on the write thread, after the jobs written before."""
        assert self._writer is not None
        return self._writer.submit(job)

    def stop(self) -> None:
        """Stop the threads (blocked reads end within their block time)."""
        if not self._started:
            return
        self._started = False
        if self._writer is not None:
            self._writer.stop()
        self._pool.stop()
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 (closing: nothing left to tell)
                pass
