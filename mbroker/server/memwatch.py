"""The broker's memory against its high-water mark (docs/protocol.rst, "Limits and flow control").

When the process's memory passes the mark, the broker stops reading from connections
that publish until it falls back: publishers see back-pressure, not errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mbroker.core.model import Clock
from mbroker.core.reports import current_rss

log = Logger()


class Holdable(Protocol):
    """A connection the watch can hold and release (a ``BrokerProtocol``)."""

    def release(self) -> None:
        """The memory is under the mark again: go on reading and publishing."""


class MemoryWatch:
    """The broker's memory against its high-water mark, looked at periodically.

    Over the mark (``alarm``), a connection that sends a PUBLISH stops being read
    (:meth:`BrokerProtocol.hold_for_memory`) and is listed in ``blocked``; once the
    memory is under the mark again, every blocked connection goes on.  Consumers are
    never blocked: they are what brings the memory down.  ``measure`` gives the
    memory in bytes (default: the process's resident set size).

    For monitoring, ``blocked_total`` counts the times a connection was held and
    ``blocked_publishes`` the publishes (PUBLISH, STOMP SEND) that waited for the
    memory to fall (counted by the connection when it is released or lost): nothing is
    counted while the memory is under the mark.

    Besides every ``interval`` seconds, the memory is looked at whenever the
    connections have read ``check_after`` bytes since the last look, so that however
    fast clients publish, the broker overshoots its mark by little more than that.
    """

    #: bytes read from all connections between two looks at the memory, at most
    CHECK_AFTER = 4 * 1024 * 1024

    def __init__(
        self,
        clock: Clock,
        high_water: int,
        interval: float = 0.1,
        measure: Callable[[], int] | None = None,
    ) -> None:
        self.clock = clock
        self.high_water = high_water
        self.interval = interval
        self.measure = measure if measure is not None else current_rss
        self.alarm = False
        #: bytes read since the last look
        self.received = 0
        self.check_after = self.CHECK_AFTER if high_water > 0 else 1 << 62
        #: the connections held, in the order they were (a dict as an ordered set)
        self.blocked: dict[Holdable, None] = {}
        #: times a connection was held, and publishes that waited (see above)
        self.blocked_total = 0
        self.blocked_publishes = 0
        self.last = 0
        self._loop: LoopingCall | None = None
        self._trimmed = 0.0

    def start(self) -> None:
        if self.high_water > 0 and self._loop is None:
            self._loop = LoopingCall(self.check)
            self._loop.clock = cast(IReactorTime, self.clock)
            d = self._loop.start(self.interval, now=True)
            d.addErrback(lambda f: log.failure("the memory watch stopped", failure=f))

    def stop(self) -> None:
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None

    def hold(self, conn: Holdable) -> None:
        """``conn`` sent a publish over the mark: it is not read until :meth:`check`
        finds the memory under the mark and calls its ``release``."""
        self.blocked[conn] = None
        self.blocked_total += 1

    def check(self) -> None:
        self.received = 0
        used = self.last = self.measure()
        if used >= self.high_water:
            if not self.alarm:
                self.alarm = True
                log.warn(
                    "memory {used} bytes is over the high-water mark {mark}: publishers "
                    "are not read until it falls back",
                    used=used,
                    mark=self.high_water,
                )
            now = self.clock.seconds()
            if now - self._trimmed >= 1.0:  # freed memory goes back to the OS
                self._trimmed = now
                _trim_heap()
        elif self.alarm:
            self.alarm = False
            blocked, self.blocked = self.blocked, {}
            log.info(
                "memory {used} bytes is under the high-water mark {mark} again: "
                "{n} publishers go on",
                used=used,
                mark=self.high_water,
                n=len(blocked),
            )
            for p in blocked:
                p.release()


#: libc's malloc_trim once looked up, ``False`` where there is none (declared before
#: the ``global`` below: PyPy 3.9 rejects an annotated global declared after it)
_malloc_trim: Any = None


def _trim_heap() -> None:
    """Ask glibc to give freed heap memory back to the OS (nothing elsewhere)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)
