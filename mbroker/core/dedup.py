"""Message ids and dedup windows (contract section 7): which PUBLISH ids an exchange or
queue still remembers, and for how long.

Every exchange and queue remembers the ``id=`` of each PUBLISH that named it for its
dedup window (CREATE ``dedup-window=MS``, else the server's default; 0: off), counted
from the first PUBLISH.  A PUBLISH whose id is remembered is accepted but not routed
again: the :class:`~mbroker.core.publishing.Publisher` asks :meth:`Dedup.check` before
it routes and calls :meth:`Dedup.remember` once the PUBLISH succeeded, so a refused one
leaves no id behind.

Memory is bounded, and nothing runs per id but a dict look-up and an append:

- one :class:`Window` per object that was sent an id (made on first use): a dict
  ``id -> queues the first one reached`` and the ids in the order they came, grouped in
  :class:`_Bucket` s of one millisecond of expiry (all ids of one object share its
  window length, so they expire in the order they came: a FIFO, no heap);
- expired ids go lazily, when the window is looked at, and by one sweep of every
  window every :data:`SWEEP_INTERVAL` seconds on the injected clock (no timer per id
  or per object); the sweep also forgets the windows of deleted objects;
- a window holds at most ``Config.dedup_max_ids`` ids: past it the oldest are
  forgotten early, and counted (``dedup_forgotten`` in STATS).

For a durable exchange or queue each remembered id is also an
:class:`~mbroker.core.records.IdRemembered` record in the journal, in the batch of the
message, so the ``+OK`` waits for it; the store gives the live ones back on start
(:meth:`Dedup.restore`).  Expiry times are the clock's, which in the server is the
wall clock (as for a stored message's ``expires_at``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from mbroker import errors
from mbroker.config import Config
from mbroker.core import records as rec
from mbroker.core.journal import Journal
from mbroker.core.model import Clock, Obj, Queue

#: seconds between two sweeps of every window (while some window holds ids)
SWEEP_INTERVAL = 10.0
#: float noise forgiven when times in seconds become milliseconds (a nanosecond)
_SLACK_MS = 1e-6

__all__ = ["SWEEP_INTERVAL", "Dedup", "Window"]


class _Bucket:
    """Ids remembered until the same millisecond, in the order they came."""

    __slots__ = ("expires_ms", "ids", "start")

    def __init__(self, expires_ms: int, first: str) -> None:
        self.expires_ms = expires_ms
        self.ids = [first]
        #: ids before this index were forgotten early (the window was full)
        self.start = 0


class Window:
    """The ids one exchange or queue remembers (see the module docstring)."""

    __slots__ = ("obj", "ms", "durable", "seen", "order", "forgotten", "duplicates")

    def __init__(self, obj: Obj, ms: int, durable: bool) -> None:
        self.obj = obj
        self.ms = ms
        self.durable = durable
        #: id -> the number of queues its first PUBLISH reached
        self.seen: dict[str, int] = {}
        self.order: deque[_Bucket] = deque()
        #: ids forgotten before their window ended, to keep the bound
        self.forgotten = 0
        #: PUBLISH commands answered ``duplicate``
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self.seen)

    def expire(self, now: float) -> None:
        """Forget the ids whose window ended by ``now``."""
        order, seen = self.order, self.seen
        now_ms = now * 1000.0 + _SLACK_MS
        while order and order[0].expires_ms <= now_ms:
            b = order.popleft()
            ids = b.ids
            for i in range(b.start, len(ids)):
                seen.pop(ids[i], None)

    def add(self, msg_id: str, reached: int, expires: float, max_ids: int) -> None:
        """Remember ``msg_id`` until ``expires`` (clock seconds)."""
        # (rounded up to the millisecond: an id is never forgotten before its time)
        expires_ms = math.ceil(expires * 1000.0 - _SLACK_MS)
        order = self.order
        if order and order[-1].expires_ms >= expires_ms:
            order[-1].ids.append(msg_id)  # (a later one never expires sooner)
        else:
            order.append(_Bucket(expires_ms, msg_id))
        self.seen[msg_id] = reached
        while len(self.seen) > max_ids:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        b = self.order[0]
        self.seen.pop(b.ids[b.start], None)
        b.start += 1
        if b.start == len(b.ids):
            self.order.popleft()
        self.forgotten += 1


class Dedup:
    """Every object's :class:`Window`, the sweep, and what the store keeps of them."""

    def __init__(self, clock: Clock, config: Config, journal: Journal | None) -> None:
        self.clock = clock
        self.journal = journal
        self.default_ms = config.dedup_window
        self.max_ids = config.dedup_max_ids
        self.windows: dict[str, Window] = {}
        #: ids forgotten early and duplicates, in windows that are gone too
        self._forgotten_gone = 0
        self._duplicates_gone = 0
        self._sweeping = False

    def window_ms(self, obj: Obj) -> int:
        """``obj``'s dedup window in milliseconds (0: it remembers no ids)."""
        ms = obj.options.dedup_window if isinstance(obj, Queue) else obj.dedup_window
        return self.default_ms if ms is None else ms

    def window(self, obj: Obj) -> Window | None:
        """``obj``'s window (made now if it has none yet), or None when it has none."""
        w = self.windows.get(obj.name)
        if w is not None and w.obj is obj:
            return w
        ms = self.window_ms(obj)
        if not ms:
            return None
        if w is not None:  # an object of that name that was deleted
            self._retire(w)
        durable = obj.options.durable if isinstance(obj, Queue) else obj.durable
        w = self.windows[obj.name] = Window(obj, ms, durable)
        if not self._sweeping:
            self._sweeping = True
            self.clock.callLater(SWEEP_INTERVAL, self.sweep)
        return w

    def check(self, obj: Obj, msg_id: str) -> tuple[Window | None, int | None]:
        """Before a PUBLISH with ``id=msg_id`` naming ``obj`` is routed: its window (None:
        ``obj`` remembers no ids), and what the first PUBLISH with that id reached if it
        is remembered (then this one is a duplicate, and is not routed).  Raises
        ``UNAVAILABLE`` when ``obj`` is durable and the store cannot take the id."""
        w = self.window(obj)
        if w is None:
            return None, None
        w.expire(self.clock.seconds())
        first = w.seen.get(msg_id)
        journal = self.journal
        if first is not None:
            w.duplicates += 1
            if w.durable and journal is not None:
                journal.barrier()  # (``duplicate`` says the first is stored: wait for it)
            return w, first
        if w.durable and journal is not None and not journal.available:
            raise errors.Unavailable("the store cannot take writes; nothing was published")
        return w, None

    def remember(self, w: Window | None, msg_id: str | None, reached: int) -> None:
        """After the PUBLISH with ``id=msg_id`` succeeded (``check`` gave ``w``)."""
        if w is None or msg_id is None:
            return
        now = self.clock.seconds()
        expires = now + w.ms / 1000.0
        w.add(msg_id, reached, expires, self.max_ids)
        if w.durable and self.journal is not None:
            record = rec.IdRemembered(w.obj.name, msg_id, now, expires, reached, self.max_ids)
            self.journal.add(record)

    def sweep(self) -> None:
        """Forget expired ids everywhere, and the windows of deleted objects; run every
        :data:`SWEEP_INTERVAL` seconds while any window is left."""
        now = self.clock.seconds()
        for name, w in list(self.windows.items()):
            w.expire(now)
            if w.obj.deleted:
                del self.windows[name]
                self._retire(w)
        self._sweeping = bool(self.windows)
        if self._sweeping:
            self.clock.callLater(SWEEP_INTERVAL, self.sweep)

    def _retire(self, w: Window) -> None:
        self._forgotten_gone += w.forgotten
        self._duplicates_gone += w.duplicates

    def restore(self, recovered: rec.Recovered, find: Callable[[str], Obj | None]) -> None:
        """Remember again the ids a store kept for durable objects (those whose window
        has not ended), oldest first; ``find`` is the namespace's ``find``."""
        now = self.clock.seconds()
        for name, entries in recovered.ids.items():
            obj = find(name)
            if obj is None:
                continue
            live = sorted(
                [(exp, i, n) for i, (exp, n) in entries.items() if exp > now],
                key=lambda e: e[0],
            )
            w = self.window(obj) if live else None
            if w is None:
                continue
            for exp, i, n in live:
                w.add(i, n, exp, self.max_ids)

    # ------------------------------------------------------------------ figures

    def figures(self, obj: Obj) -> tuple[int, int, int] | None:
        """``obj``'s remembered ids, ids forgotten early, and duplicates; None when it
        was sent no id (lately)."""
        w = self.windows.get(obj.name)
        if w is None or w.obj is not obj:
            return None
        w.expire(self.clock.seconds())
        return len(w.seen), w.forgotten, w.duplicates

    def totals(self) -> tuple[int, int, int]:
        """The same for the whole broker (forgotten and duplicates since it started)."""
        now = self.clock.seconds()
        ids = forgotten = duplicates = 0
        for w in self.windows.values():
            w.expire(now)
            ids += len(w.seen)
            forgotten += w.forgotten
            duplicates += w.duplicates
        return ids, forgotten + self._forgotten_gone, duplicates + self._duplicates_gone
