"""Password checks for every front door: argon2 off the reactor thread, a few at a time.

One :class:`PasswordChecks` serves a broker's native, STOMP and HTTP logins alike, so
the bound on concurrent checks (each takes tens of milliseconds and 64 MiB) holds for
the whole broker, not once per listener.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredSemaphore, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

from mbroker.server.auth import Authenticator, User


class PasswordChecks:
    """Checks passwords against ``auth`` in ``reactor``'s thread pool, at most
    ``MAX_CONCURRENT`` at a time; inline with a reactor that has no threads (a test's
    ``Clock``) or with ``in_thread=False``.  Without ``auth`` nobody gets in."""

    MAX_CONCURRENT = 2

    def __init__(
        self, auth: Authenticator | None, reactor: object | None, in_thread: bool = True
    ) -> None:
        self.auth = auth
        self._threads: IReactorThreads | None = None
        if in_thread and IReactorThreads.providedBy(reactor):
            self._threads = reactor
        self._running = DeferredSemaphore(self.MAX_CONCURRENT)

    def check(self, user: str, password: str) -> Deferred[tuple[User | None, str | None]]:
        """``(user, None)`` for the right password, ``(None, None)`` otherwise; the
        second item says why a changed users file could not be re-read."""
        auth = self.auth
        if auth is None:
            return succeed((None, None))

        def check() -> tuple[User | None, str | None]:
            problem = auth.refresh()
            return auth.check(user, password), problem

        def run() -> Deferred[tuple[User | None, str | None]]:
            threads = self._threads
            if threads is not None:
                return deferToThreadPool(threads, threads.getThreadPool(), check)
            return maybeDeferred(check)

        return self._running.run(run)
