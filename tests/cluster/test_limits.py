"""A shared queue's limits and expiry in Redis (mbroker.cluster.limits, .expiry): the
journal that hands Redis's verdicts to the replies, on a fake clock; the Lua scripts
themselves on the real local Redis Cluster (a fake Redis cannot run Lua)."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from twisted.internet import task

from mbroker import errors
from mbroker.cluster import keys
from mbroker.cluster.expiry import SWEEP_SCRIPT
from mbroker.cluster.limits import (
    MARK_SCRIPT,
    RECOUNT_SCRIPT,
    ClusterJournal,
    Limits,
    bytes_key,
    limit_args,
    sizes_key,
)
from mbroker.cluster.link import RedisLink
from mbroker.cluster.node import ClusterBroker
from mbroker.cluster.writer import ClusterWriter
from mbroker.config import Config
from mbroker.core import records as rec
from mbroker.core.journal import Done
from mbroker.wire.frames import Props, QueueOptions
from tests.helpers.fakeredis import FakeLink, FakeRedis


class Store:
    """A journal's writer that answers when a test says."""

    def __init__(self) -> None:
        self.pending: list[Done] = []

    def write(self, records: list[rec.Record], done: Done) -> None:
        self.pending.append(done)


def test_the_verdicts_of_a_command_reach_its_reply_line_by_line() -> None:
    clock, store = task.Clock(), Store()
    journal = ClusterJournal(clock, store.write, lambda: True)
    answers: list[errors.BrokerError | None] = []
    # a run of three publishes: the second refused by Redis
    journal.new_command()
    verdicts = []
    for i in range(3):
        journal.line = i
        verdicts.append(journal.verdict())
        journal.add(rec.MessagesRemoved("q", ()))
    journal.on_commit(answers.append)
    # the next command's reply hears nothing of them
    journal.new_command()
    journal.add(rec.MessagesRemoved("q", ()))
    journal.on_commit(answers.append)
    clock.advance(0)
    verdicts[1].error = errors.Overflow("q is full")
    (done,) = store.pending
    done(None)
    first, second = answers
    assert isinstance(first, errors.Refused) and second is None
    assert first.lines == {1: errors.Overflow("q is full")}
    assert (first.code, first.text) == ("OVERFLOW", "q is full")


def test_publishes_with_properties_count_their_lines_while_verdicts_wait() -> None:
    clock, store = task.Clock(), Store()
    journal = ClusterJournal(clock, store.write, lambda: True)
    lines = []
    for _ in range(3):
        journal.next_line()
        journal.flush()  # (a publish with an id commits what came before it)
        lines.append(journal.verdict().line)
    assert lines == [0, 1, 2]
    journal.on_commit(lambda err: None)
    journal.next_line()
    assert journal.line == 0  # (a new reply: its first line)


def test_verdicts_nobody_waits_for_reach_no_other_reply() -> None:
    """A publish with properties that no reply waits for (a STOMP SEND without a
    receipt) into a full reject queue, then one into an open queue whose reply waits:
    the broker hears ``unawaited`` in between, and that reply hears nothing of the
    refusal (it took the other publish's refusal for its own before)."""
    clock, redis = task.Clock(), JudgingRedis(room=0)
    link = cast(RedisLink, FakeLink(redis))
    writer = ClusterWriter(clock, link)
    journal = ClusterJournal(clock, writer.write, lambda: writer.available)
    broker = ClusterBroker(clock, Config(), journal, writer, "n1")
    broker.create(None, "full", "queue", QueueOptions(max_length=1, overflow="reject"))
    broker.create(None, "open", "queue", QueueOptions())
    clock.advance(0)
    props = Props(headers=(("h", b"1"),))
    broker.publish_props("full", "", b"nobody waits", None, props)
    broker.unawaited()
    answers: list[errors.BrokerError | None] = []
    broker.publish_props("open", "", b"a reply waits", None, props)
    journal.on_commit(answers.append)
    clock.advance(0)
    clock.advance(0)
    assert answers == [None]
    assert dict(broker.stats("full"))["rejected"] == "1"


class JudgingRedis(FakeRedis):
    """Answers the limits' script as a full queue would after ``room`` copies."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def call(self, name: str, *args: Any) -> Any:
        if name == "execute_command" and args[0] == "EVALSHA":
            self.calls.append(("limit", args[3:4]))
            self.room -= 1
            return [1, 0] if self.room >= 0 else [0]
        return super().call(name, *args)


def test_a_run_of_publishes_hears_which_copies_redis_refused() -> None:
    """What a node does with the script's answers: the reply to a run of PUBLISH
    waits for Redis and gets OVERFLOW on the refused lines only; the node counts
    them; a queue without limits keeps its plain XADD."""
    clock, redis = task.Clock(), JudgingRedis(room=2)
    link = cast(RedisLink, FakeLink(redis))
    writer = ClusterWriter(clock, link)
    journal = ClusterJournal(clock, writer.write, lambda: writer.available)
    broker = ClusterBroker(clock, Config(), journal, writer, "n1")
    broker.create(None, "full", "queue", QueueOptions(max_length=2, overflow="reject"))
    broker.create(None, "plain", "queue", QueueOptions())
    clock.advance(0)
    answers: list[errors.BrokerError | None] = []
    reached, refused = broker.publish_many("full", "", [b"1", b"2", b"3", b"4"])
    assert (reached, refused) == (1, {})  # (not known yet: Redis judges)
    journal.on_commit(answers.append)
    assert broker.publish("plain", "", b"p") == 1
    journal.on_commit(answers.append)
    clock.advance(0)
    clock.advance(0)
    first, second = answers
    assert isinstance(first, errors.Refused) and second is None
    assert sorted(first.lines) == [2, 3]
    assert str(first.lines[2]) == "OVERFLOW full is full"
    assert [a for n, a in redis.calls if n == "limit"] == [(keys.stream("full"),)] * 4
    assert [a[0] for n, a in redis.calls if n == "xadd"] == [keys.stream("plain")]
    assert dict(broker.stats("full"))["rejected"] == "2"


def add(r: Any, q: str, limits: Limits, payload: bytes, level: int = 0, **extra: str) -> Any:
    fields: dict[str, bytes | str] = {"s": q, "k": "", "p": payload, **extra}
    return r.eval(*limit_args(q, limits, fields, level))


def ready_bytes(r: Any, q: str) -> int:
    return int(r.get(bytes_key(q)) or 0)


@pytest.mark.cluster
def test_reject_by_length_and_bytes_counts_only_ready_entries(r: Any) -> None:
    q = "lim"
    r.xgroup_create(keys.stream(q), keys.GROUP, "0", mkstream=True)
    lim = Limits(3, 10, True, False)
    assert add(r, q, lim, b"1234")[0] == 1
    assert add(r, q, lim, b"1234")[0] == 1
    assert add(r, q, lim, b"123") == [0]  # 11 bytes: refused, nothing added
    assert (r.xlen(keys.stream(q)), ready_bytes(r, q)) == (2, 8)
    # a node reads one (and marks it): it is no longer ready
    got = r.xreadgroup(keys.GROUP, "n1", {keys.stream(q): ">"}, count=1)
    entry = got[0][1][0][0]
    r.eval(MARK_SCRIPT, 2, bytes_key(q), sizes_key(q), entry, 4)
    assert ready_bytes(r, q) == 4
    assert add(r, q, lim, b"12")[0] == 1
    assert add(r, q, lim, b"12")[0] == 1  # 3 ready now (the read one does not count)
    assert add(r, q, lim, b"") == [0]
    # given back to the stream: ready again, counted once
    assert r.eval(RECOUNT_SCRIPT, 2, bytes_key(q), sizes_key(q), entry) == 4
    assert r.eval(RECOUNT_SCRIPT, 2, bytes_key(q), sizes_key(q), entry) == 0
    assert ready_bytes(r, q) == 12


@pytest.mark.cluster
def test_drop_head_by_bytes_returns_the_dropped_entries(r: Any) -> None:
    q = "dh"
    r.xgroup_create(keys.stream(q), keys.GROUP, "0", mkstream=True)
    lim = Limits(None, 10, False, True)
    for p in (b"aaaa", b"bbbb"):
        assert add(r, q, lim, p) == [1]
    got = add(r, q, lim, b"ccccccc", h="x")
    assert got[0] == 1
    dropped = [dict(zip(f[::2], f[1::2])) for f in got[1:]]
    assert [d[b"p"] for d in dropped] == [b"aaaa", b"bbbb"]
    assert ready_bytes(r, q) == 7
    # without a dead-letter target: only how many
    lim = Limits(1, None, False, False)
    assert add(r, q, lim, b"d") == [1, 1]


@pytest.mark.cluster
def test_limits_count_over_levels_and_drop_the_lowest_first(r: Any) -> None:
    q = "lv"
    r.xgroup_create(keys.stream(q), keys.GROUP, "0", mkstream=True)
    lim = Limits(3, 100, False, True)
    assert add(r, q, lim, b"a1", 1) == [1]
    assert add(r, q, lim, b"b5", 5) == [1]
    assert add(r, q, lim, b"c1", 1) == [1]
    # full: a 5 drops the oldest of level 1, a 0 (the lowest) drops itself
    got = add(r, q, lim, b"d5", 5)
    assert [dict(zip(f[::2], f[1::2]))[b"p"] for f in got[1:]] == [b"a1"]
    got = add(r, q, lim, b"e0", 0)
    assert [dict(zip(f[::2], f[1::2]))[b"p"] for f in got[1:]] == [b"e0"]
    lens = [r.xlen(keys.level_stream(q, n)) for n in (0, 1, 5)]
    assert (lens, ready_bytes(r, q)) == ([0, 1, 2], 6)
    # a node reads level 5's entries: no longer ready, room for two of level 0
    r.xreadgroup(keys.GROUP, "n1", {keys.level_stream(q, 5): ">"}, count=2)
    r.eval(MARK_SCRIPT, 2, bytes_key(q), sizes_key(q), b"5:x", 2, b"5:y", 2)
    assert add(r, q, lim, b"f0", 0) == [1]
    assert add(r, q, lim, b"g0", 0) == [1]
    assert ready_bytes(r, q) == 6
    # reject counts over the levels too
    assert add(r, q, Limits(3, None, True, False), b"h9", 9) == [0]
    assert add(r, q, Limits(None, 7, True, False), b"hh", 9) == [0]
    assert add(r, q, Limits(4, 8, True, False), b"hh", 9) == [1, 0]
    assert r.xlen(keys.level_stream(q, 9)) == 1


@pytest.mark.cluster
def test_the_sweep_removes_expired_ready_entries_only(r: Any) -> None:
    q = "sw"
    stream = keys.stream(q)
    r.xgroup_create(stream, keys.GROUP, "0", mkstream=True)
    r.set(bytes_key(q), 0)
    now = time.time()
    lim = Limits(None, 1000, False, False)
    add(r, q, lim, b"held", e=repr(now - 5))  # read by a node below: not swept
    r.xreadgroup(keys.GROUP, "n1", {stream: ">"}, count=1)
    r.decrby(bytes_key(q), 4)
    add(r, q, lim, b"old", e=repr(now - 1))
    add(r, q, lim, b"new", e=repr(now + 60))
    add(r, q, lim, b"none")
    got = r.eval(SWEEP_SCRIPT, 2, stream, bytes_key(q), keys.GROUP, repr(now), 100, "1", "1")
    assert got[:2] == [3, 1]
    assert dict(zip(got[2][::2], got[2][1::2]))[b"p"] == b"old"
    assert (r.xlen(stream), ready_bytes(r, q)) == (3, 7)
