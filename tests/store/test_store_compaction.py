"""Compaction: the log store's disk use tracks live messages, not history."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import deferLater

from mbroker.core.records import MessagesRemoved, QueueDeclared, QueueDeleted
from mbroker.store.executor import ManualExecutor
from mbroker.store.files import CrashFS
from mbroker.store.ledger import Ledger
from mbroker.store.logstore import LogStore
from mbroker.store.segment import segment_name
from tests.helpers.store import DATA, DURABLE, declare, ids, log_store, msg, open_log, result


def segments(fs: CrashFS) -> list[str]:
    return sorted(fs.files(DATA))


def test_segments_without_live_messages_are_deleted() -> None:
    store, fs, _ = open_log(segment_size=1000)
    result(store.write(declare("q")))
    for i in range(1, 301):
        result(store.write([msg(i)]))
        result(store.write([MessagesRemoved("q", (i,))]))
    stats = store.stats()
    assert stats["segments_deleted"] > 10
    assert len(segments(fs)) <= 2, segments(fs)
    assert stats["disk_bytes"] == sum(fs.files(DATA).values())
    rec = open_log(fs.kill9())[2]
    assert rec.messages == {"q": []} and rec.next_msg_id == 301


def test_a_mostly_dead_segment_is_rewritten() -> None:
    store, fs, _ = open_log(segment_size=2000)
    result(store.write(declare("q", "keep")))
    result(store.write([msg(1, ("keep",), payload=b"precious")]))
    for i in range(2, 400):
        result(store.write([msg(i)]))
        result(store.write([MessagesRemoved("q", (i,))]))
    assert segment_name(1) not in segments(fs)
    assert store.stats()["compactions"] >= 1
    assert len(segments(fs)) <= 2
    rec = open_log(fs.kill9())[2]
    assert rec.messages["keep"] == [(1, "ex", "a.b", b"precious", None, None)]


def test_the_newest_sealed_segment_is_not_read_while_its_messages_may_still_go() -> None:
    """Messages in flight when a segment is sealed are usually acked moments later:
    the segment is then deleted whole, never read; only once a later segment is sealed
    is a still mostly-dead one rewritten."""
    store, fs, _ = open_log(segment_size=2000)
    result(store.write(declare("q")))

    def fill(first: int) -> list[int]:
        """Messages from ``first`` on until the tail moves; those in the sealed one."""
        tail, i = max(segments(fs)), first
        while max(segments(fs)) == tail:
            result(store.write([msg(i)]))
            i += 1
        return list(range(first, i - 1))

    sealed = fill(1)
    result(store.write([MessagesRemoved("q", tuple(sealed[:-1]))]))  # one still in flight
    assert segment_name(1) in segments(fs)
    assert store.stats()["compactions"] == 0  # mostly dead, but the newest sealed
    result(store.write([MessagesRemoved("q", (sealed[-1], sealed[-1] + 1))]))
    assert segment_name(1) not in segments(fs)  # acked: deleted, never read
    assert store.stats()["compactions"] == 0 and store.stats()["messages_copied"] == 0

    sealed = fill(sealed[-1] + 2)  # and now one stays: copied once a later one is sealed
    kept = sealed[-1]
    result(store.write([MessagesRemoved("q", tuple(sealed[:-1]) + (kept + 1,))]))
    tails = {max(segments(fs))}
    i = kept + 2
    while store.stats()["compactions"] == 0 and i < kept + 1000:
        result(store.write([msg(i), MessagesRemoved("q", (i,))]))
        tails.add(max(segments(fs)))
        i += 1
    assert store.stats()["compactions"] == 1 and store.stats()["messages_copied"] == 1
    assert len(tails) >= 2  # not before another segment was sealed
    assert ids(open_log(fs.kill9())[2]) == [kept]


def test_disk_use_tracks_live_data() -> None:
    rng = random.Random(7)
    store, fs, _ = open_log(segment_size=4096)
    result(store.write(declare("q", "r")))
    live: set[int] = set()
    for i in range(1, 3001):
        result(store.write([msg(i, ("q", "r") if i % 3 == 0 else ("q",), payload=b"x" * 100)]))
        live.add(i)
        if len(live) > 100:
            doomed = rng.sample(sorted(live), 5)
            live.difference_update(doomed)
            result(store.write([MessagesRemoved("q", tuple(doomed))]))
            result(store.write([MessagesRemoved("r", tuple(doomed))]))
        if i % 500 == 0:
            stats = store.stats()
            # never more than a few segments beyond what the live messages need
            assert stats["disk_bytes"] < 4 * stats["live_bytes"] + 3 * 4096, stats
    rec = open_log(fs.kill9())[2]
    assert ids(rec) == sorted(live)
    assert ids(rec, "r") == sorted(i for i in live if i % 3 == 0)


def test_a_segment_whose_removals_matter_is_kept() -> None:
    # compact_ratio=0: no rewrite, so the old segment stays and pins the removals
    store, fs, _ = open_log(segment_size=600, compact_ratio=0)
    result(store.write([*declare("q", "keep"), msg(1, ("keep",)), msg(2, ("q",))]))
    for i in range(3, 12):  # fill segment 1
        result(store.write([msg(i, ("keep",))]))
    assert len(segments(fs)) >= 2
    result(store.write([MessagesRemoved("q", (2,))]))  # in a later segment, points back
    for i in range(100, 140):  # more segments; their own messages all die
        result(store.write([msg(i)]))
        result(store.write([MessagesRemoved("q", (i,))]))
    names = segments(fs)
    assert segment_name(1) in names
    rec = open_log(fs.kill9())[2]
    assert ids(rec) == []  # message 2 did not come back
    assert ids(rec, "keep") == list(range(3, 12)) or ids(rec, "keep") == [1, *range(3, 12)]
    assert 1 in ids(rec, "keep")


def test_a_deleted_and_recreated_queue_keeps_its_old_messages_dead() -> None:
    store, fs, _ = open_log(segment_size=500, compact_ratio=0)
    result(store.write([*declare("q", "keep"), msg(1, ("q",)), msg(2, ("keep",))]))
    i = 3

    def fill_until(tail: int) -> None:
        nonlocal i
        while segments(fs)[-1] < segment_name(tail):
            result(store.write([msg(i, ("keep",)), MessagesRemoved("keep", (i,))]))
            i += 1

    fill_until(2)
    # segment 2 records the deletion and a new incarnation, then fills up and dies
    result(store.write([QueueDeleted("q"), QueueDeclared("q", DURABLE)]))
    fill_until(4)
    result(store.write([msg(1000, ("q",))]))
    assert segment_name(1) in segments(fs)  # message 2 keeps it
    assert segment_name(2) not in segments(fs)
    rec = open_log(fs.kill9())[2]
    assert ids(rec) == [1000]  # message 1 belonged to the deleted incarnation
    assert ids(rec, "keep") == [2]


def test_crash_between_copy_and_delete_leaves_harmless_duplicates() -> None:
    executor = ManualExecutor()
    store, fs, _ = log_store(executor=executor, segment_size=1500)
    d = store.open()
    executor.run_all()
    result(d)
    store.write([*declare("q", "keep"), msg(1, ("keep", "q"))])
    executor.run_all()
    for i in range(2, 200):
        store.write([msg(i), MessagesRemoved("q", (i,))])
        while store.stats()["compactions"] == 0 and executor.run_one():
            pass
        if store.stats()["compactions"]:
            break
    assert store.stats()["messages_copied"] == 1
    assert segment_name(1) in segments(fs)  # the copy is written, the delete is not
    rec = open_log(fs.kill9())[2]
    assert ids(rec, "keep") == [1] and ids(rec, "q") == [1]
    executor.run_all()
    assert segment_name(1) not in segments(fs)
    store.write([MessagesRemoved("q", (1,))])
    executor.run_all()
    rec = open_log(fs.kill9())[2]
    assert ids(rec, "keep") == [1] and ids(rec, "q") == []


def test_copies_are_on_disk_before_the_original_goes_even_with_fsync_never() -> None:
    store, fs, _ = open_log(segment_size=1500, fsync="never")
    result(store.write([*declare("q", "keep"), msg(1, ("keep",), payload=b"precious")]))
    result(store.close())  # message 1 is on disk
    store, fs, _ = open_log(fs, segment_size=1500, fsync="never")
    for i in range(2, 200):
        result(store.write([msg(i), MessagesRemoved("q", (i,))]))
        if segment_name(1) not in segments(fs):
            break
    assert store.stats()["compactions"] == 1
    for seed in range(20):  # whatever else the power cut takes, message 1 stays
        rec = open_log(fs.power_cut(random.Random(seed)))[2]
        assert rec.messages["keep"] == [(1, "ex", "a.b", b"precious", None, None)]


@pytest_twisted.ensureDeferred
async def test_compaction_with_real_threads(tmp_path: Path) -> None:
    from twisted.internet import reactor

    directory = str(tmp_path / "data")
    store = LogStore(reactor, directory, segment_size=8192)
    await store.open()
    await store.write([*declare("q", "keep"), msg(1, ("keep",))])
    for start in range(2, 3000, 100):
        batch = range(start, start + 100)
        await store.write([msg(i, payload=b"x" * 50) for i in batch])
        await store.write([MessagesRemoved("q", tuple(batch))])
    for _ in range(500):  # the rewrite of segment 1 runs in the background
        if segment_name(1) not in os.listdir(directory):
            break
        await deferLater(reactor, 0.01, lambda: None)
        await store.write([msg(10_000 + _, ("q",)), MessagesRemoved("q", (10_000 + _,))])
    stats = store.stats()
    assert stats["compactions"] >= 1 and stats["segments_deleted"] > 10
    # the tail, the segment holding the copy, and at most two sealed ones not yet
    # deleted (a segment is rewritten only once a later one is sealed too)
    assert len([n for n in os.listdir(directory) if n.endswith(".seg")]) <= 4
    await store.close()
    store = LogStore(reactor, directory, segment_size=8192)
    rec = await store.open()
    assert ids(rec, "keep") == [1] and ids(rec) == []
    await store.close()


@pytest.mark.parametrize("queues", [("q",), ("q", "r"), ("q", "nope", "r"), ("nope",)])
def test_the_ledger_takes_a_run_as_its_messages(queues: tuple[str, ...]) -> None:
    ledgers = [Ledger(), Ledger()]
    for ledger in ledgers:
        for name in ("q", "r"):
            ledger.declare(QueueDeclared(name, DURABLE))
        ledger.add_segment(1)
    sizes = [40, 41, 0, 70_000]
    for i, size in enumerate(sizes):
        ledgers[0].store(5 + i, queues, ledgers[0].segments[1], size, None)
    ledgers[1].store_run(5, queues, ledgers[1].segments[1], sizes)
    a, b = ledgers
    assert (a.home, a.queue_msgs, a.multi, a.next_msg_id) == (
        b.home,
        b.queue_msgs,
        b.multi,
        b.next_msg_id,
    )
    assert (a.segments[1].live, a.segments[1].live_bytes) == (
        b.segments[1].live,
        b.segments[1].live_bytes,
    )
