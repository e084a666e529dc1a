"""Group commit and the fsync policies of the log store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock

from mbroker.core.records import MessagesRemoved
from mbroker.store.executor import ManualExecutor
from mbroker.store.files import CrashFS
from mbroker.store.logstore import LogStore
from tests.helpers.store import declare, ids, log_store, msg, open_log, result, tracked


def manual_store(**kw: Any) -> tuple[LogStore, ManualExecutor, CrashFS, Clock]:
    executor = ManualExecutor()
    store, fs, clock = log_store(executor=executor, **kw)
    d = store.open()
    executor.run_all()
    result(d)
    return store, executor, fs, clock


def test_writes_during_a_write_share_the_next_fsync() -> None:
    store, executor, fs, _ = manual_store()
    first = tracked(store.write(declare("q")))
    assert executor.pending == 1  # in flight
    later = [tracked(store.write([msg(i)])) for i in range(1, 17)]
    assert executor.pending == 1  # they wait, as one group
    fsyncs = fs.ops["fsync"]
    executor.run_one()
    assert first == [None] and all(out == [] for out in later)
    assert executor.pending == 1
    executor.run_one()
    assert all(out == [None] for out in later)
    assert fs.ops["fsync"] - fsyncs == 2
    assert store.stats()["groups"] == 2
    assert executor.pending == 0


def test_deferreds_fire_in_write_order() -> None:
    store, executor, _fs, _ = manual_store()
    order: list[int] = []

    def done(_: object, i: int) -> None:
        order.append(i)

    store.write(declare("q")).addCallback(done, 0)
    for i in range(1, 6):
        store.write([msg(i)]).addCallback(done, i)
    executor.run_all()
    assert order == [0, 1, 2, 3, 4, 5]


def test_write_from_a_callback_joins_the_next_group() -> None:
    store, executor, _fs, _ = manual_store()
    seen: list[str] = []

    def again(_: None) -> None:
        seen.append("first")
        store.write([msg(2)]).addCallback(lambda _: seen.append("second"))

    store.write([*declare("q"), msg(1)]).addCallback(again)
    executor.run_all()
    assert seen == ["first", "second"]


def test_empty_write_is_a_barrier() -> None:
    store, executor, _fs, _ = manual_store()
    assert tracked(store.write([])) == [None]  # nothing pending: at once
    first = tracked(store.write(declare("q")))
    barrier = tracked(store.write([]))
    assert barrier == []
    executor.run_all()
    assert first == [None] and barrier == [None]


def test_interval_policy_confirms_after_the_write_and_fsyncs_on_the_clock() -> None:
    store, executor, fs, clock = manual_store(fsync="interval", interval_ms=100)
    before = fs.ops["fsync"]
    done = tracked(store.write([*declare("q"), msg(1)]))
    executor.run_all()
    assert done == [None]
    assert fs.ops["fsync"] == before
    # kill -9 keeps what was written; a power cut now could lose it
    assert ids(open_log(fs.kill9())[2]) == [1]
    clock.advance(0.1)
    executor.run_all()
    assert fs.ops["fsync"] == before + 1
    clock.advance(0.1)
    executor.run_all()
    assert fs.ops["fsync"] == before + 1  # nothing new to flush


def test_never_policy_fsyncs_only_on_close() -> None:
    store, executor, fs, clock = manual_store(fsync="never")
    before = fs.ops["fsync"]
    for i in range(5):
        store.write([*declare("q"), msg(i + 1)])
    clock.advance(10)
    executor.run_all()
    assert fs.ops["fsync"] == before
    closed = tracked(store.close())
    executor.run_all()
    assert closed == [None]
    assert fs.ops["fsync"] == before + 1


def test_close_flushes_pending_writes_first() -> None:
    store, executor, _fs, _ = manual_store()
    writes = [tracked(store.write([*declare("q"), msg(i)])) for i in range(1, 4)]
    closed = tracked(store.close())
    late = tracked(store.write([msg(9)]))
    assert late and late[0].check(Exception)
    executor.run_all()
    assert all(w == [None] for w in writes) and closed == [None]


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        log_store(fsync="sometimes")


@pytest_twisted.ensureDeferred
async def test_concurrent_writers_share_fsyncs_on_disk(tmp_path: Path) -> None:
    from twisted.internet import reactor

    store = LogStore(reactor, str(tmp_path / "data"))
    await store.open()
    await store.write(declare("q"))
    next_id = iter(range(1, 10**9))

    async def writer(n: int) -> None:
        for _ in range(n):
            await store.write([msg(next(next_id))])

    await gatherResults([Deferred.fromCoroutine(writer(50)) for _ in range(16)])
    stats = store.stats()
    assert stats["writes"] == 16 * 50 + 1
    assert stats["fsyncs"] < stats["writes"] / 2, stats
    await store.write([MessagesRemoved("q", tuple(range(1, 400)))])
    await store.close()
    reopened = LogStore(reactor, str(tmp_path / "data"))
    rec = await reopened.open()
    assert ids(rec) == list(range(400, 801))
    await reopened.close()
