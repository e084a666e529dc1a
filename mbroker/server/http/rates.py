"""Message rates for ``/api/overview``: the broker's counters, sampled on a timer.

Every ``interval`` seconds (5 by default) the HTTP service reads the broker's
``published``, ``delivered`` and ``acked`` counters (its STATS) and keeps the last
five minutes of samples; a rate is the difference between the newest sample and the
one closest to the wanted age.  Nothing is counted per message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

#: the counters sampled: overview name -> STATS field
FIELDS = {"publish": "published", "deliver": "delivered", "ack": "acked"}
#: the windows reported: overview name -> seconds
WINDOWS = {"rate": 10.0, "rate_1m": 60.0, "rate_5m": 300.0}


class Rates:
    """Rates of the counters ``read()`` returns (None: no broker yet, skip)."""

    def __init__(
        self,
        clock: IReactorTime,
        read: Callable[[], dict[str, int] | None],
        interval: float = 5.0,
    ) -> None:
        self.clock = clock
        self.read = read
        self.interval = interval
        longest = max(WINDOWS.values())
        self.samples: deque[tuple[float, dict[str, int]]] = deque(
            maxlen=int(longest / interval) + 2
        )
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        loop = self._loop = LoopingCall(self.sample)
        loop.clock = self.clock
        loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def sample(self) -> None:
        counts = self.read()
        if counts is None:
            return
        if self.samples and any(counts[f] < self.samples[-1][1][f] for f in FIELDS.values()):
            self.samples.clear()  # a new broker (its counters started again)
        self.samples.append((self.clock.seconds(), counts))

    def details(self) -> dict[str, dict[str, float]]:
        """``{"publish": {"rate": per second over 10 s, "rate_1m": ..., "rate_5m": ...},
        "deliver": ..., "ack": ...}``; 0.0 until two samples span some time."""
        out: dict[str, dict[str, float]] = {name: {} for name in FIELDS}
        for window, seconds in WINDOWS.items():
            rates = self._rates(seconds)
            for name in FIELDS:
                out[name][window] = rates.get(name, 0.0)
        return out

    def _rates(self, seconds: float) -> dict[str, float]:
        if len(self.samples) < 2:
            return {}
        t1, newest = self.samples[-1]
        # the oldest sample within the window (at least the one before the newest)
        t0, oldest = self.samples[-2]
        for t, counts in self.samples:
            if t1 - t <= seconds + self.interval / 2:
                t0, oldest = t, counts
                break
        span = t1 - t0
        if span <= 0:
            return {}
        return {name: round((newest[f] - oldest[f]) / span, 2) for name, f in FIELDS.items()}
