"""A stand-in for the redis-py client and the node's link, for the cluster unit tests.

:class:`FakeRedis` records every command (``calls``) and serves what a test put in
``streams`` to ``XREADGROUP``; :class:`Flaky` fails a real client's commands on
demand; :class:`FakeLink` runs jobs at once (as
:class:`~mbroker.store.executor.SyncExecutor` does), so that a test on a
``task.Clock`` sees each Redis round trip as soon as the clock lets the writer flush
(:class:`HoldingLink`: once the test releases them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed

from mbroker.cluster import drophead

T = TypeVar("T")


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis
        self._queued: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        def record(*args: Any, **kw: Any) -> None:
            self._queued.append((name, args))

        return record

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        out = [self._redis.call(name, *args) for name, args in self._queued]
        self._redis.pipelines.append(list(self._queued))
        return out


class FakeRedis:
    """Records commands; XADD numbers entries; XREADGROUP serves ``streams``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.pipelines: list[list[tuple[str, tuple[Any, ...]]]] = []
        #: stream key -> entries not read yet: ``(entry id, fields)``
        self.streams: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {}
        self._next = 1

    def call(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        if name == "xadd":
            entry = b"%d-0" % self._next
            self._next += 1
            fields = {
                k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in args[1].items()
            }
            self.streams.setdefault(args[0], []).append((entry, fields))
            return entry
        if name == "execute_command" and args[:2] == ("EVAL", drophead.ADD_SCRIPT):
            return self.add_run(args[3], list(args[3 + int(args[2]) + 2 :]))
        if name == "execute_command" and args[:2] == ("EVALSHA", drophead.TRIM_SHA):
            return self.trim(args[3])
        return 1

    def add_run(self, stream: str, flat: list[Any]) -> int:
        """A run of copies for a drop-head queue (drophead.ADD_SCRIPT): each recorded as
        ``("limit", (stream, fields))`` and, at level 0, added as XADD adds."""
        n = 0
        while flat:
            level, nf = int(flat[0]), int(flat[1])
            pairs, flat = flat[2 : 2 + nf], flat[2 + nf :]
            fields = dict(zip(pairs[::2], pairs[1::2]))
            self.calls.append(("limit", (stream, fields)))
            if not level:
                self.call("xadd", stream, fields)
                self.calls.pop()
            n += 1
        return n

    def trim(self, stream: str) -> list[Any]:
        """drophead.TRIM_SCRIPT: here nothing is dropped."""
        return [1, 0]

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        return FakePipeline(self)

    def xreadgroup(
        self, group: str, node: str, streams: dict[str, str], count: int = 1, block: int = 0
    ) -> Any:
        out = []
        for key in streams:
            self.calls.append(("xreadgroup", (key, node, count)))
            entries = self.streams.get(key, [])
            taken, self.streams[key] = entries[:count], entries[count:]
            if taken:
                out.append([key.encode(), taken])
        return out

    def smembers(self, key: str) -> Any:
        """(No sets kept: a queue's levels are tested on a real Redis.)"""
        return set()

    def spublish(self, channel: str, data: bytes) -> int:
        self.calls.append(("spublish", (channel, data)))
        return 1

    def get_node_from_key(self, key: str) -> str:
        return "node-of-" + key

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class FakeLink:
    """A :class:`~mbroker.cluster.link.RedisLink` whose jobs run at once."""

    def __init__(self, client: FakeRedis, reactor: Any = None) -> None:
        self.client = client
        self.reactor = reactor

    def _run(self, job: Callable[[], T]) -> Deferred[T]:
        try:
            return succeed(job())
        except BaseException:
            return fail()

    def read(self, job: Callable[[], T]) -> Deferred[T]:
        return self._run(job)

    def write(self, job: Callable[[], T]) -> Deferred[T]:
        return self._run(job)


class Flaky:
    """A real redis-py client whose commands naming a key of ``dead`` fail as when
    the master holding it is down (a Redis failover under way)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.dead: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        command = getattr(self.client, name)

        def run(*args: Any, **kw: Any) -> Any:
            if self.dead.intersection(a for a in args if isinstance(a, str)):
                from redis.exceptions import ConnectionError as RedisConnectionError

                raise RedisConnectionError("Error 111 connecting to the master. Refused.")
            return command(*args, **kw)

        return run


class HoldingLink(FakeLink):
    """A :class:`FakeLink` whose read jobs, while ``holding``, wait until
    :meth:`release` (Redis work that takes long: a cluster failing over)."""

    def __init__(self, client: Any, reactor: Any = None) -> None:
        super().__init__(client, reactor)
        self.holding = False
        self.held: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def read(self, job: Callable[[], T]) -> Deferred[T]:
        if not self.holding:
            return self._run(job)
        d: Deferred[T] = Deferred()
        self.held.append((job, d))
        return d

    def release(self) -> None:
        """Run the held jobs now (and hold no more)."""
        self.holding = False
        held, self.held = self.held, []
        for job, d in held:
            self._run(job).chainDeferred(d)
