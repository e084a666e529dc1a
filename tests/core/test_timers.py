"""The one timer structure (mbroker.core.timers) on a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from mbroker.core.timers import COMPACT_FLOOR, Timers


class Log:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.fired: list[tuple[Any, Any, float]] = []

    def __call__(self, owner: Any, arg: Any) -> None:
        self.fired.append((owner, arg, self.clock.seconds()))

    @property
    def args(self) -> list[Any]:
        return [a for _, a, _ in self.fired]


def make() -> tuple[Clock, Timers, Log]:
    clock = Clock()
    return clock, Timers(clock), Log(clock)


def test_fires_in_due_order_at_the_millisecond() -> None:
    clock, t, log = make()
    t.later(300, log, "o", "c")
    t.later(100, log, "o", "a")
    t.later(200, log, "o", "b")
    clock.advance(0.099)
    assert log.args == []
    clock.advance(0.001)
    assert log.args == ["a"]
    clock.advance(0.1)
    clock.advance(0.1)
    assert log.args == ["a", "b", "c"]
    assert [round(at, 6) for _, _, at in log.fired] == [0.1, 0.2, 0.3]
    assert len(t) == 0 and t.fired == 3


def test_same_millisecond_keeps_the_order_added() -> None:
    clock, t, log = make()
    for i in range(50):
        t.at(1000, log, None, i)
    t.at(999, log, None, "first")
    clock.advance(1.0)
    assert log.args == ["first", *range(50)]


def test_due_in_rounds_up_to_a_whole_millisecond() -> None:
    clock, t, _ = make()
    clock.advance(0.0004)
    assert t.due_in(100) == 101  # never earlier than asked
    clock.advance(0.0006)
    assert t.due_in(100) == 101


def test_one_clock_call_whatever_the_number_of_entries() -> None:
    clock, t, log = make()
    for i in range(1000):
        t.later(1000 + i % 7, log, None, i)
    assert len(clock.getDelayedCalls()) == 1
    t.later(5, log, None, "early")  # a new earliest re-arms the one call
    (call,) = clock.getDelayedCalls()
    assert round(call.getTime(), 6) == 0.005
    clock.advance(0.005)
    assert log.args == ["early"]
    (call,) = clock.getDelayedCalls()
    assert round(call.getTime(), 6) == 1.0
    clock.advance(1)
    clock.advance(0.01)
    assert len(log.args) == 1001
    assert clock.getDelayedCalls() == []


def test_a_past_due_time_fires_on_the_next_turn() -> None:
    clock, t, log = make()
    clock.advance(5)
    t.at(1000, log, None, "late")
    clock.advance(0)
    assert log.args == ["late"]


def test_a_cancelled_owner_or_argument_does_not_fire() -> None:
    clock, t, log = make()
    q1, q2 = object(), object()
    t.later(10, log, q1, "a")
    t.later(10, log, q2, "b")
    t.later(10, log, q1, "c")
    t.later(10, log, q2, "d")
    t.cancel(q1, 2)
    t.cancel("d")
    assert len(t) == 1
    clock.advance(0.01)
    assert log.args == ["b"]
    assert len(t) == 0


def test_the_heap_is_rebuilt_once_most_of_it_is_dead() -> None:
    clock, t, log = make()
    owners = [object() for _ in range(3)]
    n = COMPACT_FLOOR
    for i in range(3 * n):
        t.later(100, log, owners[i % 3], i)
    t.cancel(owners[0], n)
    assert len(t) == 2 * n  # not rebuilt yet: a third is dead
    t.cancel(owners[1], n)  # two thirds: rebuilt
    assert len(t) == n
    assert t.size == n  # the memory is given back
    clock.advance(0.1)
    assert log.args == list(range(2, 3 * n, 3))


class StepClock:
    """A clock whose calls run only when the test says (one reactor turn each)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[tuple[float, Any]] = []

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, fn: Any, *args: Any) -> Any:
        call = Clock().callLater(delay, fn, *args)  # (a cancellable handle)
        self.calls.append((self.now + delay, call))
        return call

    def turn(self) -> None:
        """Run the calls due now, as one reactor turn would."""
        due = [c for at, c in self.calls if at <= self.now and c.active()]
        self.calls = [(at, c) for at, c in self.calls if at > self.now and c.active()]
        for c in due:
            c.func(*c.args)


def test_a_big_release_is_spread_over_turns() -> None:
    clock = StepClock()
    t = Timers(clock, batch=100)
    fired: list[int] = []
    for i in range(250):
        t.later(10, lambda _o, a: fired.append(a), None, i)
    clock.now = 0.01
    clock.turn()
    assert len(fired) == 100  # the rest wait for the next turns
    clock.turn()
    assert len(fired) == 200
    clock.turn()
    assert fired == list(range(250))
    assert not [c for _, c in clock.calls if c.active()]


def test_an_entry_added_while_firing_fires_in_its_turn() -> None:
    clock, t, log = make()

    def chain(owner: Any, arg: Any) -> None:
        log(owner, arg)
        if arg < 3:
            t.later(10, chain, owner, arg + 1)

    t.later(10, chain, None, 0)
    for _ in range(4):
        clock.advance(0.01)
    assert log.args == [0, 1, 2, 3]
    assert [round(at, 6) for _, _, at in log.fired] == [0.01, 0.02, 0.03, 0.04]


def test_a_rebuild_between_turns_of_a_big_release_keeps_the_rest_in_order() -> None:
    clock = StepClock()
    t = Timers(clock, batch=10)
    fired: list[int] = []
    gone, kept = object(), object()
    n = COMPACT_FLOOR + 100
    for i in range(3 * n):
        t.at(10, lambda _o, a: fired.append(a), gone if i % 3 else kept, i)
    clock.now = 0.01
    clock.turn()
    assert fired == list(range(10))
    t.cancel(gone, 2 * n - 6)  # over half dead: rebuilt now, between turns
    assert t.size == n - 4
    while [c for _, c in clock.calls if c.active()]:
        clock.turn()
    assert fired == list(range(10)) + list(range(12, 3 * n, 3))
    assert len(t) == 0


def test_an_entry_for_a_past_time_added_while_firing_joins_the_tail() -> None:
    clock, t, log = make()

    def first(owner: Any, arg: Any) -> None:
        log(owner, arg)
        t.at(0, log, None, "past")  # already due: after what is being fired

    t.at(20, first, None, "a")
    t.at(20, log, None, "b")
    t.at(30, log, None, "c")
    clock.advance(0.03)
    assert log.args == ["a", "b", "past", "c"]
