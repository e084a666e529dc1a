"""The ready messages of a queue that has seen a priority: one FIFO per priority present.

A queue starts with a plain ``collections.deque`` as ``Queue.ready`` and keeps it for as
long as every message it gets has priority 0 (contract section 7: such a queue pays
nothing for priorities).  The first message with priority 1-9 turns it into a
:class:`PriorityReady` (``Dispatcher.admit`` does it), which answers the same calls the broker makes
on a deque -- ``append``, ``appendleft``, ``extend``, ``popleft``, ``pop``,
``remove``, ``clear``, ``len``, truth, iteration, ``[0]`` and ``[-1]`` -- with
priority order: iteration and ``popleft`` go from the highest priority down, FIFO
within one; ``append`` joins the tail of the message's priority and ``appendleft`` its
head (a requeued message).  :meth:`PriorityReady.pop_lowest` is what overflow with
``drop-head`` takes: the oldest message of the lowest priority present.

The levels are a short list of deques, highest priority first, one per priority seen
(at most ten), so the cost of a call grows with the number of priorities in use, not
with the number of messages.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator

from mbroker.core.model import QueuedMessage


def priority_of(m: QueuedMessage) -> int:
    props = m.props
    return props.priority if props is not None else 0


class PriorityReady:
    """Ready messages in priority order (see the module's docstring)."""

    __slots__ = ("_prios", "_levels", "_len")

    def __init__(self, messages: Iterable[QueuedMessage] = ()) -> None:
        #: the priorities with a level, highest first, and their deques
        self._prios: list[int] = []
        self._levels: list[deque[QueuedMessage]] = []
        self._len = 0
        self.extend(messages)

    def _level(self, priority: int) -> deque[QueuedMessage]:
        prios = self._prios
        for i, p in enumerate(prios):
            if p == priority:
                return self._levels[i]
            if p < priority:
                break
        else:
            i = len(prios)
        d: deque[QueuedMessage] = deque()
        prios.insert(i, priority)
        self._levels.insert(i, d)
        return d

    def levels(self) -> list[tuple[int, int]]:
        """``(priority, count)`` for each priority holding messages, highest first."""
        return [(p, len(d)) for p, d in zip(self._prios, self._levels) if d]

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[QueuedMessage]:
        return itertools.chain.from_iterable(list(self._levels))

    def __getitem__(self, index: int) -> QueuedMessage:
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError("ready index out of range")
        for d in self._levels:
            if index < len(d):
                return d[index]
            index -= len(d)
        raise IndexError("ready index out of range")  # pragma: no cover

    def append(self, m: QueuedMessage) -> None:
        props = m.props
        self._level(props.priority if props is not None else 0).append(m)
        self._len += 1

    def appendleft(self, m: QueuedMessage) -> None:
        props = m.props
        self._level(props.priority if props is not None else 0).appendleft(m)
        self._len += 1

    def extend(self, messages: Iterable[QueuedMessage]) -> None:
        for m in messages:
            self.append(m)

    def popleft(self) -> QueuedMessage:
        for d in self._levels:
            if d:
                self._len -= 1
                return d.popleft()
        raise IndexError("pop from an empty queue")

    def pop(self) -> QueuedMessage:
        """The last message in iteration order (the newest of the lowest priority)."""
        for d in reversed(self._levels):
            if d:
                self._len -= 1
                return d.pop()
        raise IndexError("pop from an empty queue")

    def pop_lowest(self) -> QueuedMessage:
        """The oldest message of the lowest priority present (overflow's drop-head)."""
        for d in reversed(self._levels):
            if d:
                self._len -= 1
                return d.popleft()
        raise IndexError("pop from an empty queue")

    def remove(self, m: QueuedMessage) -> None:
        for d in self._levels:
            try:
                d.remove(m)
            except ValueError:
                continue
            self._len -= 1
            return
        raise ValueError("message not ready in this queue")

    def clear(self) -> None:
        for d in self._levels:
            d.clear()
        self._len = 0
