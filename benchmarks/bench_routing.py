"""Micro-benchmark of mbroker.core.routing: match() calls per second.

Run from the repository root: ``python benchmarks/bench_routing.py``.  Each row binds
N targets and times ``match`` for a key that reaches one of them (fanout: all).
Topic is timed twice: "hit" repeats one key (served by the memo), "cold" cycles
through more distinct keys than the memo holds, so every call walks the trie.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from itertools import cycle
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mbroker.core.routing import (  # noqa: E402
    TOPIC_CACHE_SIZE,
    DirectMatcher,
    FanoutMatcher,
    TopicMatcher,
)


def rate(call: Callable[[], object], budget: float = 0.4) -> float:
    """Calls per second of *call*, best of three runs of about *budget* seconds."""
    timer = timeit.Timer(call)
    number, elapsed = timer.autorange()
    number = max(1, int(number * budget / elapsed))
    best = min(timer.repeat(repeat=3, number=number))
    return number / best


def direct(n: int) -> Callable[[], object]:
    m: DirectMatcher[int] = DirectMatcher()
    for i in range(n):
        m.add(f"orders.s{i}", i)
    return lambda: m.match("orders.s7")


def fanout(n: int) -> Callable[[], object]:
    m: FanoutMatcher[int] = FanoutMatcher()
    for i in range(n):
        m.add("", i)
    return lambda: m.match("any.key")


def topic_hit(n: int) -> Callable[[], object]:
    return topic(n, cold=False)


def topic_cold(n: int) -> Callable[[], object]:
    return topic(n, cold=True)


def topic(n: int, cold: bool) -> Callable[[], object]:
    m: TopicMatcher[int] = TopicMatcher()
    # Distinct literal and wildcard patterns, plus two that every stock key meets.
    for i in range(n - 2):
        m.add(f"stock.s{i}.trade" if i % 2 else f"stock.s{i}.*", i)
    m.add("stock.#", -1)
    m.add("*.*.trade", -2)
    if not cold:
        return lambda: m.match("stock.s7.trade")
    keys = cycle([f"stock.s{i}.trade" for i in range(2 * TOPIC_CACHE_SIZE + 1)])
    return lambda: m.match(next(keys))


def main() -> None:
    rows: list[tuple[str, Callable[[int], Callable[[], object]]]] = [
        ("direct", direct),
        ("fanout", fanout),
        ("topic (hit)", topic_hit),
        ("topic (cold)", topic_cold),
    ]
    sizes = (10, 10_000)
    print(f"Python {sys.version.split()[0]}: match() calls per second")
    print(f"{'matcher':<14}" + "".join(f"{f'{n:,} bindings':>18}" for n in sizes))
    for name, build in rows:
        cells = "".join(f"{rate(build(n)):>18,.0f}" for n in sizes)
        print(f"{name:<14}{cells}")


if __name__ == "__main__":
    main()
