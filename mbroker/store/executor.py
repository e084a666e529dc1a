"""Where the log store's file I/O runs.

The store hands each job (a function doing file I/O) to an :class:`Executor`
and gets a Deferred that fires on the reactor thread with its result.  Jobs run
one at a time, in the order they were submitted.

- :class:`ThreadExecutor` -- production: one dedicated thread (a Twisted
  ``ThreadPool`` of exactly one worker), so that fsync never blocks the reactor
  and writes keep their order.
- :class:`SyncExecutor` -- runs the job at once, in the caller (tests).
- :class:`ManualExecutor` -- queues jobs until the test runs them, to see what
  happens while a write is in flight (group commit tests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class Executor(Protocol):
    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        """Run ``job`` after the jobs submitted before; fire with its result."""

    def stop(self) -> None:
        """Release the executor's resources; call once, with no job pending."""


class ThreadExecutor:
    """Jobs run in one dedicated thread, in order."""

    def __init__(self, reactor: Any, name: str = "mbroker-store") -> None:
        self._reactor = IReactorFromThreads(reactor)
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)
        self._pool.start()
        self._trigger: object | None = None
        core = IReactorCore(reactor, None)
        if core is not None:
            self._core = core
            self._trigger = core.addSystemEventTrigger("during", "shutdown", self._shutdown)

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, job)

    def stop(self) -> None:
        if self._trigger is not None:
            self._core.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        self._pool.stop()

    def _shutdown(self) -> None:
        self._trigger = None
        self._pool.stop()


class SyncExecutor:
    """Jobs run at once in the calling thread; the Deferred has already fired."""

    def __init__(self) -> None:
        self.jobs = 0

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        self.jobs += 1
        try:
            result = job()
        except BaseException:
            return fail()
        return succeed(result)

    def stop(self) -> None:
        pass


class ManualExecutor:
    """Jobs wait until :meth:`run_one` or :meth:`run_all` runs them."""

    def __init__(self) -> None:
        self._queue: deque[tuple[Callable[[], Any], Deferred[Any]]] = deque()
        self.jobs = 0

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self._queue.append((job, d))
        return d

    @property
    def pending(self) -> int:
        return len(self._queue)

    def run_one(self) -> bool:
        """Run the oldest job; False if there was none."""
        if not self._queue:
            return False
        job, d = self._queue.popleft()
        self.jobs += 1
        try:
            result = job()
        except BaseException:
            d.errback()
        else:
            d.callback(result)
        return True

    def run_all(self, limit: int = 100_000) -> int:
        """Run jobs (including those the jobs cause) until none is left."""
        count = 0
        while count < limit and self.run_one():
            count += 1
        return count

    def stop(self) -> None:
        pass
