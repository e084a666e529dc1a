"""A shared queue's limits and expiry in Redis (mbroker.cluster.limits, .expiry): the
journal that hands Redis's verdicts to the replies, on a fake clock; the Lua scripts
themselves on the real local Redis Cluster (a fake Redis cannot run Lua)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

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
from mbroker.core import records as rec
from mbroker.core.journal import Done
from tests.helpers.redis_cluster import flush, redis_cluster

__all__ = ["redis_cluster"]  # (a fixture, used by name)


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


@pytest.fixture
def r(redis_cluster: Any) -> Iterator[Any]:
    from redis.cluster import ClusterNode, RedisCluster

    flush(redis_cluster)
    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster.nodes])
    try:
        yield client
    finally:
        client.close()


def add(r: Any, q: str, limits: Limits, payload: bytes, **extra: str) -> Any:
    fields: dict[str, bytes | str] = {"s": q, "k": "", "p": payload, **extra}
    return r.eval(*limit_args(keys.stream(q), q, limits, fields))


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
