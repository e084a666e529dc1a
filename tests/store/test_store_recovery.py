"""Recovery of the log store from what a crash, or a bad disk, leaves behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from mbroker import errors
from mbroker.core.records import MessagesRemoved, QueueDeleted, RecoveryWarning
from mbroker.store import codec
from mbroker.store.files import CrashFS, Locked, RealFileSystem
from mbroker.store.segment import segment_name
from tests.helpers.store import DATA, declare, failure, ids, log_store, msg, open_log, result

SEG1 = os.path.join(DATA, segment_name(1))


def store_with(count: int) -> tuple[CrashFS, list[int]]:
    """A log with a queue and ``count`` messages, one write each; frame ends."""
    store, fs, _ = open_log()
    result(store.write(declare("q")))
    ends = [len(fs.content(SEG1))]
    for i in range(1, count + 1):
        result(store.write([msg(i, payload=b"m%d" % i * 5)]))
        ends.append(len(fs.content(SEG1)))
    return fs, ends


def test_torn_tail_at_every_byte_of_the_last_record() -> None:
    fs, ends = store_with(3)
    full = fs.content(SEG1)
    start, end = ends[-2], ends[-1]
    for cut in range(start, end):
        crashed = fs.kill9()
        crashed.set_content(SEG1, full[:cut])
        store, crashed, rec = open_log(crashed)
        assert ids(rec) == [1, 2], cut
        if cut == start:
            assert rec.warnings == []
        else:
            assert rec.warnings == [
                RecoveryWarning("torn-tail", segment_name(1), start, cut - start)
            ]
        # The tail was cut off: the store appends after the last good record.
        assert crashed.content(SEG1) == full[:start]
        result(store.write([msg(4)]))
        again = open_log(crashed.kill9())[2]
        assert ids(again) == [1, 2, 4]
        assert again.warnings == []


def test_torn_tail_with_garbage_instead_of_the_last_record() -> None:
    fs, ends = store_with(3)
    full = bytearray(fs.content(SEG1))
    start = ends[-2]
    for i in range(start + 3, ends[-1], 7):  # the length survives, the body does not
        damaged = bytearray(full)
        damaged[i] ^= 0xFF
        crashed = fs.kill9()
        crashed.set_content(SEG1, bytes(damaged))
        rec = open_log(crashed)[2]
        assert ids(rec) == [1, 2]
        assert [w.kind for w in rec.warnings] == ["torn-tail"]


@pytest.mark.parametrize("where", ["body", "crc", "length", "magic"])
def test_corrupt_record_in_the_middle_is_skipped(where: str) -> None:
    fs, ends = store_with(5)
    data = bytearray(fs.content(SEG1))
    start = ends[2]  # the frame of message 3
    offset = {"body": start + 20, "crc": start + 3, "length": start + 8, "magic": start}[where]
    data[offset] ^= 0x5A
    crashed = fs.kill9()
    crashed.set_content(SEG1, bytes(data))
    store, crashed, rec = open_log(crashed)
    assert ids(rec) == [1, 2, 4, 5]
    [warning] = rec.warnings
    assert (warning.kind, warning.file, warning.offset) == ("corrupt", segment_name(1), start)
    assert warning.length == ends[3] - start
    assert crashed.content(SEG1) == bytes(data)  # not truncated: later records matter
    result(store.write([msg(6)]))
    assert ids(open_log(crashed.kill9())[2]) == [1, 2, 4, 5, 6]


def test_corrupt_run_of_bytes_resyncs_on_the_next_good_frame() -> None:
    fs, ends = store_with(8)
    data = bytearray(fs.content(SEG1))
    lo, hi = ends[2] + 5, ends[5] - 3  # the frames of messages 3, 4 and 5 are hit
    data[lo:hi] = bytes(hi - lo)
    crashed = fs.kill9()
    crashed.set_content(SEG1, bytes(data))
    rec = open_log(crashed)[2]
    assert ids(rec) == [1, 2, 6, 7, 8]
    [warning] = rec.warnings
    assert (warning.kind, warning.offset, warning.offset + warning.length) == (
        "corrupt",
        ends[2],
        ends[5],
    )


def test_corrupt_record_in_an_older_segment() -> None:
    store, fs, _ = open_log(segment_size=300)
    result(store.write(declare("q")))
    for i in range(1, 30):
        result(store.write([msg(i)]))
    names = sorted(fs.files(DATA))
    assert len(names) > 3
    path = os.path.join(DATA, names[1])
    data = bytearray(fs.content(path))
    data[-5] ^= 1  # the last record of the second segment
    crashed = fs.kill9()
    crashed.set_content(path, bytes(data))
    rec = open_log(crashed, segment_size=300)[2]
    assert len(ids(rec)) == 28
    [warning] = rec.warnings
    assert warning.kind == "corrupt" and warning.file == names[1]
    assert crashed.content(path) == bytes(data)


def test_torn_header_of_a_new_last_segment() -> None:
    store, fs, _ = open_log(segment_size=200)
    result(store.write(declare("q")))
    for i in range(1, 6):
        result(store.write([msg(i)]))
    last = sorted(fs.files(DATA))[-1]
    crashed = fs.kill9()
    path = os.path.join(DATA, segment_name(int(last[:8]) + 1))
    crashed.open_append(path).write(b"MBRK")  # the crash came as it was created
    store, crashed, rec = open_log(crashed, segment_size=200)
    assert ids(rec) == [1, 2, 3, 4, 5]
    assert [w.kind for w in rec.warnings] == ["torn-tail"]
    result(store.write([msg(6)]))
    rec = open_log(crashed.kill9())[2]
    assert ids(rec) == [1, 2, 3, 4, 5, 6] and rec.warnings == []


def test_other_files_in_the_directory_are_ignored() -> None:
    fs, _ = store_with(2)
    crashed = fs.kill9()
    crashed.open_append(os.path.join(DATA, "README")).write(b"hello")
    crashed.open_append(os.path.join(DATA, "1.seg")).write(b"junk")
    rec = open_log(crashed)[2]
    assert ids(rec) == [1, 2] and rec.warnings == []


def test_recovery_warnings_are_logged() -> None:
    fs, ends = store_with(2)
    crashed = fs.kill9()
    crashed.set_content(SEG1, fs.content(SEG1)[:-3])
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        open_log(crashed)
    finally:
        globalLogPublisher.removeObserver(events.append)
    texts = [formatEvent(e) for e in events]
    assert any("torn tail truncated at 00000001.seg:" in t for t in texts), texts


def test_duplicate_copies_of_a_message_are_merged() -> None:
    store, fs, _ = open_log()
    result(store.write([*declare("q", "r"), msg(1, ("q", "r")), msg(2)]))
    result(store.write([MessagesRemoved("r", (1,))]))
    # what compaction writes: a copy, with the queues the message is live in
    result(store.write([msg(1, ("q",)), msg(2)]))
    rec = open_log(fs.kill9())[2]
    assert ids(rec, "q") == [1, 2] and ids(rec, "r") == []


def test_frames_decode_back() -> None:
    records = [
        *declare("q"),
        msg(7, ("q", "r"), headers=(("k", "v"),), expires_at=12.5),
        MessagesRemoved("q", (1, 2, 3)),
        QueueDeleted("q"),
    ]
    data, sizes = codec.encode_batch(records)
    assert sum(sizes) == len(data)
    decoded, pos = [], 0
    for size in sizes:
        typ = data[pos + 6]
        decoded.append(codec.decode_record(typ, data[pos + codec.HEADER_SIZE : pos + size]))
        pos += size
    assert decoded == records


def test_names_with_nul_cannot_be_stored() -> None:
    store = open_log()[0]
    with pytest.raises(codec.CodecError):
        result(store.write([msg(1, ("bad\0name",))]))


# ------------------------------------------------------------ one store per directory


def test_one_log_store_at_a_time_per_data_directory() -> None:
    first, fs, _ = open_log()
    result(first.write([*declare("q"), msg(1)]))
    second = log_store(fs)[0]
    refused = failure(second.open())
    assert refused.check(errors.Unavailable)
    assert "in use by another broker" in str(refused.value)
    result(first.write([msg(2)]))  # the first is untouched
    result(first.close())
    third, _, rec = open_log(fs)  # closed: free again
    assert ids(rec) == [1, 2]
    rec = open_log(fs.kill9())[2]  # and a crash frees it, as the kernel does
    assert ids(rec) == [1, 2]
    result(third.close())


def test_the_real_lock_file_names_its_holder(tmp_path: Path) -> None:
    fs = RealFileSystem()
    path = str(tmp_path / "LOCK")
    lock = fs.lock(path)
    with open(path) as f:
        assert f.read() == f"{os.getpid()}\n"
    with pytest.raises(Locked, match=f"in use by another broker \\(process {os.getpid()}\\)"):
        fs.lock(path)  # flock is per open file: the same process is refused too
    lock.release()
    fs.lock(path).release()
