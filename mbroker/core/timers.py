"""One timer structure for the broker's per-message timers: a heap driven by one clock call.

Delayed messages (``PUBLISH … delay=MS``) and NACK delays can number in the millions;
one ``clock.callLater`` each would cost a Twisted ``DelayedCall`` object per message and
make the reactor's own heap as big.  :class:`Timers` keeps them instead in buckets, one
per integer millisecond that something is due in: a bucket is a flat list
``[fn, owner, arg, fn, owner, arg, …]`` in the order the entries were added (so that
things due in the same millisecond keep it), and a binary heap holds the distinct
milliseconds.  Exactly one ``callLater`` is armed, for the earliest.  An entry costs
three list slots (24 bytes) besides what it points to; a million messages delayed
by the same MS over a few seconds share a few thousand buckets.

When the call fires it takes every entry now due, in (millisecond, order added) order,
and calls ``fn(owner, arg)`` for each, at most :attr:`Timers.batch` of them per reactor
turn (the rest go on in the next turn, so that a million messages released together
never block the reactor for long).  An entry added while a bucket is being fired, for a
time already past, joins that bucket's tail.

Cancelling is lazy, as in Twisted's own reactor: :meth:`Timers.cancel` names an owner
(a queue being deleted) or an argument (a message purged) whose entries are dead, and
says how many entries that kills; a dead entry is skipped when it comes up, and the
buckets are rebuilt without the dead ones once they are more than half of them.

Plain Python, no Twisted: the clock is injected (the reactor, or ``task.Clock``).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any

from mbroker.core.model import Clock, DelayedCall

#: ``fn(owner, arg)``: what an entry calls when it is due
Fire = Callable[[Any, Any], None]

#: entries fired per reactor turn at most; the rest follow in the next turn
BATCH = 10_000
#: dead entries below this never trigger a rebuild (a small heap is cheap to skim)
COMPACT_FLOOR = 1024


class Timers:
    """The buckets of due times, their heap, and the one armed clock call."""

    def __init__(self, clock: Clock, batch: int = BATCH) -> None:
        self.clock = clock
        self.batch = batch
        #: due millisecond -> [fn, owner, arg, …]
        self._buckets: dict[int, list[Any]] = {}
        #: the due milliseconds that have a bucket
        self._heap: list[int] = []
        #: entries held, dead ones included
        self._size = 0
        self._call: DelayedCall | None = None
        #: the due time (ms) the armed call is for
        self._armed_ms = 0.0
        #: the bucket being fired (its due ms) and how far, or None between buckets
        self._firing: int | None = None
        self._pos = 0
        #: owners and arguments whose entries are dead, and how many entries that is
        self._dead: set[Any] = set()
        self._garbage = 0
        #: True while ``fn`` calls run (a rebuild waits for them to end)
        self._in_fire = False
        #: entries fired so far (for tests and statistics)
        self.fired = 0

    def __len__(self) -> int:
        """Entries waiting that are still live."""
        return self._size - self._garbage

    @property
    def size(self) -> int:
        """Entries held, dead ones included (what it costs in memory)."""
        return self._size

    def due_in(self, ms: int) -> int:
        """The integer millisecond ``ms`` from now: the first whole millisecond at or
        after ``now + ms`` (never earlier than asked)."""
        return math.ceil(self.clock.seconds() * 1000.0 - 1e-6) + ms

    def at(self, due_ms: int, fn: Fire, owner: Any, arg: Any) -> None:
        """Call ``fn(owner, arg)`` once the clock reaches ``due_ms`` (milliseconds of
        the clock; a time already past fires on the next turn)."""
        firing = self._firing
        if firing is not None and due_ms < firing:
            due_ms = firing  # past due: the tail of the bucket being fired
        bucket = self._buckets.get(due_ms)
        if bucket is None:
            bucket = self._buckets[due_ms] = []
            heap = self._heap
            heapq.heappush(heap, due_ms)
            if heap[0] == due_ms:  # the new earliest
                self._arm(due_ms)
        bucket += (fn, owner, arg)
        self._size += 1

    def later(self, ms: int, fn: Fire, owner: Any, arg: Any) -> None:
        """:meth:`at` ``ms`` milliseconds from now."""
        self.at(self.due_in(ms), fn, owner, arg)

    def cancel(self, key: Any, entries: int = 1) -> None:
        """The ``entries`` pending entries whose owner or argument is ``key`` are dead:
        they will not fire.  The caller knows how many it had pending (a queue counts
        its delayed messages); a wrong count only delays or hastens a rebuild."""
        if entries <= 0:
            return
        self._dead.add(key)
        self._garbage += entries
        if (
            self._garbage > COMPACT_FLOOR
            and self._garbage * 2 > self._size
            and not self._in_fire  # (then after the firing)
        ):
            self.compact()

    def compact(self) -> None:
        """Rebuild the buckets without their dead entries."""
        dead = self._dead
        if dead:
            size = 0
            for due in list(self._heap):
                b = self._buckets[due]
                start = self._pos if due == self._firing else 0
                live = []
                for i in range(start, len(b), 3):
                    if b[i + 1] not in dead and b[i + 2] not in dead:
                        live += b[i : i + 3]
                if due == self._firing:
                    self._pos = 0
                if live:
                    self._buckets[due] = live
                    size += len(live) // 3
                else:
                    del self._buckets[due]
            self._heap = list(self._buckets)
            heapq.heapify(self._heap)
            self._size = size
            if self._firing is not None and self._firing not in self._buckets:
                self._firing = None
        dead.clear()
        self._garbage = 0
        if not self._heap:
            self._disarm()

    def _arm(self, due_ms: float) -> None:
        call = self._call
        if call is not None:
            if self._armed_ms <= due_ms:
                return
            call.cancel()
        delay = due_ms / 1000.0 - self.clock.seconds()
        self._armed_ms = due_ms
        self._call = self.clock.callLater(delay if delay > 0 else 0, self._fire)

    def _disarm(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _fire(self) -> None:
        self._call = None
        self._in_fire = True
        try:
            self._fire_due()
        finally:
            self._in_fire = False
        if self._garbage > COMPACT_FLOOR and self._garbage * 2 > self._size:
            self.compact()

    def _fire_due(self) -> None:
        heap = self._heap
        buckets = self._buckets
        dead = self._dead
        # (a call may fire a hair early in floating point: 1 µs of slack)
        limit = self.clock.seconds() * 1000.0 + 1e-3
        budget = self.batch
        while heap and heap[0] <= limit:
            due = self._firing = heap[0]
            bucket = buckets[due]
            i = self._pos
            while i < len(bucket):  # (it may grow while it fires)
                if not budget:
                    self._pos = i
                    self._arm(0)  # the next turn goes on
                    return
                fn, owner, arg = bucket[i], bucket[i + 1], bucket[i + 2]
                i += 3
                self._size -= 1
                if dead and (owner in dead or arg in dead):
                    self._garbage -= 1
                    continue
                budget -= 1
                self.fired += 1
                fn(owner, arg)
            heapq.heappop(heap)
            del buckets[due]
            self._firing = None
            self._pos = 0
        if not heap:
            dead.clear()
            self._garbage = 0
        elif self._call is None:
            self._arm(heap[0])
