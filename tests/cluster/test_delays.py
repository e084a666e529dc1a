"""Delayed delivery on a cluster (mbroker.cluster.delays): the members kept in Redis,
and the one timer per node that moves due ones, against a fake Redis and a fake clock
(the scripts themselves run in tests/e2e/test_cluster.py, on a real Redis Cluster)."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import task

from mbroker.cluster import delays, keys
from mbroker.cluster.link import RedisLink
from tests.helpers.fakeredis import FakeLink, FakeRedis


def test_a_member_holds_the_entry_fields_and_sorts_in_publish_order() -> None:
    fields: dict[str, bytes | str] = {"s": "q", "k": "", "p": b"1:2:\x00\r\n", "a": b"id=x"}
    first = delays.member("n1", fields)
    second = delays.member("n1", fields)
    assert delays.read_member(first) == {
        b"s": b"q",
        b"k": b"",
        b"p": b"1:2:\x00\r\n",
        b"a": b"id=x",
    }
    assert first < second  # (ties in a sorted set are ordered by member)
    ops = delays.delay_ops(["a", "b"], 50, first)
    assert ops[0] == ("sadd", (keys.DELAYED, "a", "b"))
    assert [op[1][2] for op in ops[1:]] == [keys.delayed("a"), keys.delayed("b")]


class MoverRedis(FakeRedis):
    """Answers the hint set and MOVE_SCRIPT with what a test says."""

    def __init__(self) -> None:
        super().__init__()
        self.hinted: list[bytes] = []
        #: queue -> (ms until the next, moved) MOVE_SCRIPT answers
        self.answers: dict[str, tuple[int, int]] = {}

    def smembers(self, key: str) -> list[bytes]:
        assert key == keys.DELAYED
        return self.hinted

    def eval(self, script: str, numkeys: int, *args: Any) -> list[int]:
        assert script == delays.MOVE_SCRIPT and numkeys == 13  # (with its 9 levels)
        self.calls.append(("move", args[:1]))
        queue = keys.exchange_of(b"mb:x:" + args[0].encode()[len("mb:d:") :])
        wait, moved = self.answers.get(queue, (-1, 0))
        return [wait, moved]


def moves(redis: MoverRedis) -> list[str]:
    out = [args[0] for name, args in redis.calls if name == "move"]
    redis.calls.clear()
    return out


def test_one_timer_looks_at_a_queue_when_its_next_entry_is_due() -> None:
    redis, clock = MoverRedis(), task.Clock()
    mover = delays.Mover(cast(RedisLink, FakeLink(redis)), clock)
    mover.start()
    redis.hinted = [b"q"]
    redis.answers["q"] = (500, 2)  # moved 2, the next due in 500 ms
    clock.advance(delays.TICK)
    assert moves(redis) == [keys.delayed("q")] and mover.moved == 2
    redis.answers["q"] = (-1, 1)
    clock.advance(0.4)  # (not due yet: no script)
    assert moves(redis) == []
    clock.advance(0.15)
    assert moves(redis) == [keys.delayed("q")] and mover.moved == 3
    # nothing left: looked at again only after RECHECK, or when this node adds one
    clock.advance(delays.TICK * 4)
    assert moves(redis) == []
    mover.soon("q", 100)
    clock.advance(0.1 + delays.TICK)
    assert moves(redis) == [keys.delayed("q")]
    clock.advance(delays.RECHECK + delays.TICK)
    assert moves(redis) == [keys.delayed("q")]
    mover.stop()
    clock.advance(delays.RECHECK * 2)
    assert moves(redis) == []
