"""One timer structure for the broker's per-message timers: a heap driven by one clock call.

Delayed messages (``PUBLISH … delay=MS``) and NACK delays can number in the millions;
one ``clock.callLater`` each would cost a Twisted ``DelayedCall`` object per message and
make the reactor's own heap as big.  :class:`Timers` keeps them instead in one binary
heap of plain tuples ``(due_ms, seq, fn, owner, arg)``, ordered by the integer
millisecond they are due and then by ``seq`` (the order they were added, so that things
due in the same millisecond keep it), and arms exactly one ``callLater`` for the
earliest.  When it fires it pops every entry now due and calls ``fn(owner, arg)`` for
each, at most :attr:`Timers.batch` of them per reactor turn (the rest go on in the next
turn, so that a million messages released together never block the reactor for long).

Cancelling is lazy, as in Twisted's own reactor: :meth:`Timers.cancel` names an owner
(a queue being deleted) or an argument (a message purged) whose entries are dead, and
says how many entries that kills; a dead entry is skipped when it comes up, and the
heap is rebuilt without the dead ones once they are more than half of it.  A million
pending entries cost memory (about 100 bytes each besides what they point to), not CPU.

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
Entry = tuple[int, int, Fire, Any, Any]

#: entries fired per reactor turn at most; the rest follow in the next turn
BATCH = 10_000
#: dead entries below this never trigger a rebuild (a small heap is cheap to skim)
COMPACT_FLOOR = 1024


class Timers:
    """The heap of due times, and its one armed clock call."""

    def __init__(self, clock: Clock, batch: int = BATCH) -> None:
        self.clock = clock
        self.batch = batch
        self._heap: list[Entry] = []
        self._seq = 0
        self._call: DelayedCall | None = None
        #: the due time (ms) the armed call is for
        self._armed_ms = 0.0
        #: owners and arguments whose entries are dead, and how many entries that is
        self._dead: set[Any] = set()
        self._garbage = 0
        #: entries fired so far (for tests and statistics)
        self.fired = 0

    def __len__(self) -> int:
        """Entries in the heap that are still live."""
        return len(self._heap) - self._garbage

    @property
    def size(self) -> int:
        """Entries in the heap, dead ones included (what it costs in memory)."""
        return len(self._heap)

    def due_in(self, ms: int) -> int:
        """The integer millisecond ``ms`` from now: the first whole millisecond at or
        after ``now + ms`` (never earlier than asked)."""
        return math.ceil(self.clock.seconds() * 1000.0 - 1e-6) + ms

    def at(self, due_ms: int, fn: Fire, owner: Any, arg: Any) -> None:
        """Call ``fn(owner, arg)`` once the clock reaches ``due_ms`` (milliseconds of
        the clock; a time already past fires on the next turn)."""
        seq = self._seq
        self._seq = seq + 1
        heap = self._heap
        heapq.heappush(heap, (due_ms, seq, fn, owner, arg))
        if heap[0][1] == seq:  # the new earliest
            self._arm(due_ms)

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
        if self._garbage > COMPACT_FLOOR and self._garbage * 2 > len(self._heap):
            self.compact()

    def compact(self) -> None:
        """Rebuild the heap without its dead entries."""
        dead = self._dead
        if dead:
            self._heap = [e for e in self._heap if e[3] not in dead and e[4] not in dead]
            heapq.heapify(self._heap)
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
        heap = self._heap
        dead = self._dead
        # (a call may fire a hair early in floating point: 1 µs of slack)
        limit = self.clock.seconds() * 1000.0 + 1e-3
        pop = heapq.heappop
        budget = self.batch
        while heap and heap[0][0] <= limit:
            if not budget:
                self._arm(0)  # the next turn goes on
                return
            _, _, fn, owner, arg = pop(heap)
            if dead and (owner in dead or arg in dead):
                self._garbage -= 1
                continue
            budget -= 1
            self.fired += 1
            fn(owner, arg)
        if not heap:
            dead.clear()
            self._garbage = 0
        elif self._call is None:
            self._arm(heap[0][0])
