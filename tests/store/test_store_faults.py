"""The log store when the disk fills up or fails."""

from __future__ import annotations

import errno
import os

from mbroker import errors
from mbroker.store.executor import ManualExecutor
from mbroker.store.segment import segment_name
from tests.helpers.state import now
from tests.helpers.store import (
    DATA,
    declare,
    failure,
    ids,
    log_store,
    msg,
    open_log,
    result,
    tracked,
)

SEG1 = os.path.join(DATA, segment_name(1))


def test_enospc_fails_the_group_and_the_store_takes_writes_again_later() -> None:
    store, fs, clock = log_store(retry_interval=1.0)
    result(store.open())
    result(store.write([*declare("q"), msg(1)]))
    good = fs.content(SEG1)
    fs.inject("write", errno.ENOSPC)
    f = failure(store.write([msg(2, payload=b"x" * 1000)]))
    assert f.check(errors.Unavailable)
    assert "No space left" in str(f.value)
    assert fs.content(SEG1) == good  # the partial write was cut back
    assert store.stats()["available"] == 0 and not store.available
    writes = fs.ops["write"]
    # rejected at once, without touching the disk
    assert failure(store.write([msg(3)])).check(errors.Unavailable)
    assert fs.ops["write"] == writes
    clock.advance(1.0)  # a probe, still no space
    assert fs.ops["write"] == writes + 1
    assert failure(store.write([msg(3)])).check(errors.Unavailable)
    fs.clear()  # space comes back
    clock.advance(1.0)
    assert store.stats()["available"] == 1 and now(lambda: store.available)
    result(store.write([msg(4)]))
    rec = open_log(fs.kill9())[2]
    assert ids(rec) == [1, 4]
    assert rec.warnings == []


def test_writes_waiting_behind_a_failed_write_fail_too() -> None:
    executor = ManualExecutor()
    store, fs, clock = log_store(executor=executor)
    d = store.open()
    executor.run_all()
    result(d)
    result_first = tracked(store.write([*declare("q"), msg(1)]))
    executor.run_all()
    assert result_first == [None]
    fs.inject("write", errno.ENOSPC, times=1)
    failing = tracked(store.write([msg(2)]))
    behind = [tracked(store.write([msg(i)])) for i in (3, 4)]
    executor.run_all()
    assert failing[0].check(errors.Unavailable)
    assert all(b[0].check(errors.Unavailable) for b in behind)
    clock.advance(1.0)
    executor.run_all()
    done = tracked(store.write([msg(5)]))
    executor.run_all()
    assert done == [None]
    assert ids(open_log(fs.kill9())[2]) == [1, 5]


def test_enospc_while_rotating_to_a_new_segment() -> None:
    store, fs, clock = log_store(segment_size=300)
    result(store.open())
    result(store.write(declare("q")))
    i = 0
    while fs.files(DATA)[segment_name(1)] < 300:
        i += 1
        result(store.write([msg(i)]))
    fs.inject("open", errno.ENOSPC, times=1)
    assert failure(store.write([msg(100)])).check(errors.Unavailable)
    assert list(fs.files(DATA)) == [segment_name(1)]
    fs.inject("write", errno.ENOSPC, times=1)  # the probe fails while writing the header
    clock.advance(1.0)
    assert store.stats()["available"] == 0
    assert list(fs.files(DATA)) == [segment_name(1)]
    clock.advance(1.0)
    assert store.stats()["available"] == 1
    assert list(fs.files(DATA)) == [segment_name(1), segment_name(2)]
    result(store.write([msg(101)]))
    rec = open_log(fs.kill9())[2]
    assert ids(rec) == [*range(1, i + 1), 101]
    assert rec.warnings == []


def test_eio_on_fsync_stops_writes_for_good() -> None:
    store, fs, clock = log_store()
    result(store.open())
    result(store.write([*declare("q"), msg(1)]))
    fs.inject("fsync", errno.EIO, times=1)
    f = failure(store.write([msg(2)]))
    assert f.check(errors.Unavailable)
    assert "restart" in str(f.value)
    fsyncs = fs.ops["fsync"]
    clock.advance(60)
    # never retried: the page cache may have dropped what the fsync was to write
    assert fs.ops["fsync"] == fsyncs
    assert failure(store.write([msg(3)])).check(errors.Unavailable)
    assert store.stats()["available"] == 0
    assert tracked(store.close()) == [None]
    # after a restart, what was confirmed is there; the rest is whatever the disk kept
    rec = open_log(fs.kill9())[2]
    assert ids(rec)[:1] == [1]
    store2 = open_log(fs.kill9())[0]
    result(store2.write([msg(4)]))


def test_eio_on_an_interval_fsync_stops_writes() -> None:
    store, fs, clock = log_store(fsync="interval", interval_ms=50)
    result(store.open())
    result(store.write([*declare("q"), msg(1)]))  # confirmed after the OS write
    fs.inject("fsync", errno.EIO, times=1)
    clock.advance(0.05)
    assert failure(store.write([msg(2)])).check(errors.Unavailable)


def test_a_store_that_cannot_open() -> None:
    fs = log_store()[1]
    fs.makedirs(DATA)
    fs.inject("listdir", errno.EACCES)
    store = log_store(fs)[0]
    f = failure(store.open())
    assert f.check(errors.Unavailable)
    assert failure(store.write(declare("q"))).check(errors.Unavailable)
    assert tracked(store.close()) == [None]
