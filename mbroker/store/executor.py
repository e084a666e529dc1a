"""Where the log store's file I/O runs.

The store hands each job (a function doing file I/O) to an :class:`Executor`
and gets a Deferred that fires on the reactor thread with its result.  Jobs run
one at a time, in the order they were submitted.

- :class:`ThreadExecutor` -- production: one dedicated thread, so that fsync
  never blocks the reactor and writes keep their order.
- :class:`SyncExecutor` -- runs the job at once, in the caller (tests).
- :class:`ManualExecutor` -- queues jobs until the test runs them, to see what
  happens while a write is in flight (group commit tests).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.python.failure import Failure

T = TypeVar("T")


class Executor(Protocol):
    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        """Run ``job`` after the jobs submitted before; fire with its result."""

    def stop(self) -> None:
        """Release the executor's resources; call once, with no job pending."""


class ThreadExecutor:
    """Jobs run in one dedicated thread, in order.

    A plain thread fed by a ``queue.SimpleQueue`` (put and get are C calls, with no
    Python-level condition variable), each result handed back with one
    ``callFromThread``: the store submits a job per group commit, thousands a second
    when fsync is fast, so the hand-off must cost little (Twisted's ``ThreadPool``,
    with its coordinator and context tracking, cost about a tenth of the broker's
    CPU in the durable benchmark)."""

    def __init__(self, reactor: IReactorFromThreads, name: str = "mbroker-store") -> None:
        self._reactor = reactor
        self._jobs: SimpleQueue[tuple[Callable[[], Any], Deferred[Any]] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        self._stopped = False
        self._trigger: object | None = None
        core = IReactorCore(reactor, None)
        if core is not None:
            self._core = core
            self._trigger = core.addSystemEventTrigger("during", "shutdown", self._shutdown)

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        if self._stopped:
            return fail(RuntimeError("the executor is stopped"))
        self._jobs.put((job, d))
        return d

    def _work(self) -> None:
        call = self._reactor.callFromThread
        get = self._jobs.get
        while True:
            item = get()
            if item is None:
                return
            job, d = item
            try:
                result = job()
            except BaseException:
                call(d.errback, Failure())
            else:
                call(d.callback, result)
            del item, job, d

    def stop(self) -> None:
        if self._trigger is not None:
            self._core.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        self._shutdown()

    def _shutdown(self) -> None:
        """Let the jobs already submitted finish, then end the thread."""
        self._trigger = None
        if not self._stopped:
            self._stopped = True
            self._jobs.put(None)
            if threading.current_thread() is not self._thread:
                self._thread.join()


class SyncExecutor:
    """Jobs run at once in the calling thread; the Deferred has already fired."""

    def submit(self, job: Callable[[], T]) -> Deferred[T]:
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
