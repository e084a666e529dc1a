"""Recovery of the log store from what a crash, or a bad disk, leaves behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.logger import formatEvent

from mbroker import errors
from mbroker.core.records import (
    Bound,
    ExchangeDeclared,
    ExchangeDeleted,
    MessagesRemoved,
    MessagesStored,
    QueueDeclared,
    QueueDeleted,
    RecoveryWarning,
)
from mbroker.store import codec
from mbroker.store.files import CrashFS, Locked, RealFileSystem
from mbroker.store.segment import segment_name
from mbroker.wire.frames import Props, QueueOptions
from tests.helpers.logs import logged
from tests.helpers.store import DATA, declare, failure, ids, log_store, msg, open_log, result

SEG1 = os.path.join(DATA, segment_name(1))
FILE_HEADER_SIZE = codec.FILE_HEADER.size


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
    with logged() as events:
        open_log(crashed)
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
        msg(
            7,
            ("q", "r"),
            props=Props((("k", b"v\x00 %"),), "id-1", 3, None, 1.7e9 + 0.5),
            expires_at=12.5,
        ),
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


# --------------------------------------------------- lost queue declarations


def store_with_declaration(count: int) -> tuple[CrashFS, int, int]:
    """A log: an exchange, queue q (its declaration alone in one write), a binding,
    then ``count`` messages; returns the fs and where the declaration frame is."""
    store, fs, _ = open_log()
    result(store.write([ExchangeDeclared("ex", "topic")]))
    start = len(fs.content(SEG1))
    result(store.write([QueueDeclared("q", QueueOptions(durable=True, max_length=5000))]))
    end = len(fs.content(SEG1))
    result(store.write([Bound("q", "ex", "a.#")]))
    result(store.write([msg(i) for i in range(1, count + 1)]))
    return fs, start, end


def test_messages_survive_a_corrupt_queue_declaration_at_every_byte() -> None:
    fs, start, end = store_with_declaration(200)
    full = fs.content(SEG1)
    for i in range(start, end):
        for flip in (0x01, 0xFF):
            damaged = bytearray(full)
            damaged[i] ^= flip
            crashed = fs.kill9()
            crashed.set_content(SEG1, bytes(damaged))
            store, crashed, rec = open_log(crashed)
            assert ids(rec) == list(range(1, 201)), (i, flip)
            assert rec.queues["q"] == QueueOptions(durable=True)
            assert rec.bindings == [("q", "ex", "a.#")]
            assert [w.kind for w in rec.warnings] == ["corrupt", "redeclared"], (i, flip)
            corrupt, again = rec.warnings
            assert (corrupt.file, corrupt.offset) == (segment_name(1), start)
            assert (again.file, again.offset, again.queue, again.messages) == (
                segment_name(1),
                start,
                "q",
                200,
            )
            # The store wrote the declaration again: the next start needs no guess.
            result(store.write([msg(201)]))
            later = open_log(crashed.kill9())[2]
            assert ids(later) == list(range(1, 202))
            assert [w.kind for w in later.warnings] == ["corrupt"]


def test_the_log_says_what_was_lost_and_where_the_messages_are() -> None:
    fs, start, end = store_with_declaration(3)
    damaged = bytearray(fs.content(SEG1))
    damaged[start + 12] ^= 0xFF
    crashed = fs.kill9()
    crashed.set_content(SEG1, bytes(damaged))
    with logged() as events:
        open_log(crashed)
    texts = [formatEvent(e) for e in events]
    assert any(f"corrupt record skipped at 00000001.seg:{start}" in t for t in texts), texts
    assert any(
        f"queue 'q' lost its declaration (damage at 00000001.seg:{start}" in t
        and "its 3 messages are kept in durable queue 'q'" in t
        for t in texts
    ), texts


def test_a_queue_deleted_after_the_damage_stays_deleted() -> None:
    fs, start, end = store_with_declaration(3)
    store, fs, _ = open_log(fs.kill9())
    result(store.write([QueueDeleted("q")]))
    damaged = bytearray(fs.content(SEG1))
    damaged[start + 12] ^= 0xFF
    crashed = fs.kill9()
    crashed.set_content(SEG1, bytes(damaged))
    rec = open_log(crashed)[2]
    assert "q" not in rec.queues and rec.message_count() == 0
    assert [w.kind for w in rec.warnings] == ["corrupt"]


def test_a_later_snapshot_adopts_messages_of_a_lost_declaration() -> None:
    store, fs, _ = open_log(segment_size=400)
    result(store.write(declare("q")))
    start = FILE_HEADER_SIZE
    for i in range(1, 30):
        result(store.write([msg(i)]))
    assert len(fs.files(DATA)) > 2
    damaged = bytearray(fs.content(SEG1))
    damaged[start + 13] ^= 0xFF
    crashed = fs.kill9()
    crashed.set_content(SEG1, bytes(damaged))
    rec = open_log(crashed, segment_size=400)[2]
    assert ids(rec) == list(range(1, 30))
    assert rec.queues["q"] == QueueOptions(durable=True)
    assert [w.kind for w in rec.warnings] == ["corrupt"]


def test_without_damage_a_message_for_an_undeclared_queue_is_still_ignored() -> None:
    store, fs, _ = open_log()
    result(store.write([*declare("q"), msg(1, ("q", "nowhere")), msg(2, ("nowhere",))]))
    rec = open_log(fs.kill9())[2]
    assert list(rec.queues) == ["q"] and ids(rec) == [1] and rec.warnings == []


# ------------------------------------------------------- runs replayed in bulk


def store_with_runs() -> tuple[CrashFS, list[int]]:
    """Runs of same-layout messages (replayed in bulk), removals between them, and
    copies of messages already stored (what compaction writes); frame starts.  One frame
    per message (the format before batch frames, which recovery still reads)."""
    store, fs, _ = open_log(batch_frames=0)
    result(store.write(declare("q")))
    result(store.write([MessagesStored(1, ("q",), "ex", "a.b", [b"p%03d" % i for i in range(40)])]))
    result(store.write([MessagesRemoved("q", (3, 4))]))
    result(store.write([msg(i, payload=b"p%03d" % i) for i in range(41, 61)]))
    result(store.write([msg(i, payload=b"p%03d" % i) for i in (10, 11, 12)]))  # copies
    result(store.write([msg(i, payload=b"p%03d" % i) for i in range(61, 71)]))
    data = fs.content(SEG1)
    starts = [pos for pos in range(len(data)) if data.startswith(codec.MAGIC, pos)]
    return fs, starts


def expected_after_runs() -> list[int]:
    return [i for i in range(1, 71) if i not in (3, 4)]


def test_runs_replay_in_bulk_like_one_frame_at_a_time() -> None:
    fs, _starts = store_with_runs()
    store, crashed, rec = open_log(fs.kill9())
    assert ids(rec) == expected_after_runs() and rec.warnings == []
    assert [m[3] for m in rec.messages["q"]][:3] == [b"p000", b"p001", b"p004"]
    assert rec.next_msg_id == 71
    assert store.stats()["messages"] == 68


@pytest.mark.parametrize("nth", [0, 2, 3, 20, 39, 41, 43, 60, 62, 65, 72])
def test_damage_inside_a_run_is_found_as_one_frame_at_a_time(nth: int) -> None:
    fs, _ = store_with_runs()
    data = bytearray(fs.content(SEG1))
    frames = list(codec_frames(bytes(data)))
    start, end, body = frames[nth]
    msg_id = int.from_bytes(body[:8], "little")
    for offset in (start, start + 3, start + 20, end - 1):
        damaged = bytearray(data)
        damaged[offset] ^= 0x40
        crashed = fs.kill9()
        crashed.set_content(SEG1, bytes(damaged))
        rec = open_log(crashed)[2]
        lost = [] if nth in (60, 61, 62) else [msg_id]  # a copy: the original stays
        assert ids(rec) == [i for i in expected_after_runs() if i not in lost], (nth, offset)
        kinds = [(w.kind, w.offset) for w in rec.warnings]
        assert kinds == [("torn-tail" if end == len(data) else "corrupt", start)], (nth, offset)


def codec_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(start, end, body)`` of every message frame."""
    out = []
    pos = codec.FILE_HEADER.size
    while pos < len(data):
        _magic, _crc, typ, length = codec.HEADER.unpack_from(data, pos)
        end = pos + codec.HEADER_SIZE + length
        if typ == codec.T_MESSAGE:
            out.append((pos, end, data[pos + codec.HEADER_SIZE : end]))
        pos = end
    return out


def test_after_damage_a_message_stored_for_no_queue_creates_no_queue() -> None:
    fs, start, _end = store_with_declaration(2)
    store, fs, _ = open_log(fs.kill9())
    result(store.write([msg(3, ())]))
    damaged = bytearray(fs.content(SEG1))
    damaged[start + 12] ^= 0xFF
    crashed = fs.kill9()
    crashed.set_content(SEG1, bytes(damaged))
    rec = open_log(crashed)[2]
    assert list(rec.queues) == ["q"] and ids(rec) == [1, 2]


# ------------------------------------------------ lost exchange declarations


def store_with_exchange(kind: str, keys: list[str]) -> tuple[CrashFS, int, int]:
    """A log: queue q, exchange ex of ``kind`` (its declaration alone in one write),
    a binding of q to ex per key; returns the fs and where the declaration frame is."""
    store, fs, _ = open_log()
    result(store.write([QueueDeclared("q", DURABLE_Q)]))
    start = len(fs.content(SEG1))
    result(store.write([ExchangeDeclared("ex", kind)]))
    end = len(fs.content(SEG1))
    result(store.write([Bound("q", "ex", key) for key in keys]))
    return fs, start, end


DURABLE_Q = QueueOptions(durable=True)


@pytest.mark.parametrize(
    "kind,keys,again",
    [
        ("topic", ["a.#", "b"], "topic"),
        ("topic", ["a.b"], "direct"),  # routes as it did: an exact key
        ("direct", ["k1", "k2"], "direct"),
        ("fanout", [""], "fanout"),
    ],
)
def test_bindings_survive_a_corrupt_exchange_declaration_at_every_byte(
    kind: str, keys: list[str], again: str
) -> None:
    fs, start, end = store_with_exchange(kind, keys)
    full = fs.content(SEG1)
    for i in range(start, end):
        damaged = bytearray(full)
        damaged[i] ^= 0xFF
        crashed = fs.kill9()
        crashed.set_content(SEG1, bytes(damaged))
        store, crashed, rec = open_log(crashed)
        assert rec.exchanges == {"ex": again}, i
        assert sorted(rec.bindings) == sorted(("q", "ex", k) for k in keys), i
        assert [w.kind for w in rec.warnings] == ["corrupt", "redeclared-exchange"], i
        warning = rec.warnings[1]
        assert (warning.file, warning.offset) == (segment_name(1), start)
        assert (warning.exchange, warning.exchange_kind, warning.bindings) == (
            "ex",
            again,
            len(keys),
        )
        text = f"its {len(keys)} bindings are kept on durable {again} exchange 'ex'"
        assert text in str(warning)
        # declared again in the store: the next start needs no guess
        later = open_log(crashed.kill9())[2]
        assert later.exchanges == {"ex": again}
        assert [w.kind for w in later.warnings] == ["corrupt"]


def test_a_deleted_exchange_is_not_declared_again() -> None:
    store, fs, _ = open_log()
    result(store.write([QueueDeclared("q", DURABLE_Q), ExchangeDeclared("ex", "topic")]))
    result(store.write([Bound("q", "ex", "a.*")]))
    result(store.write([ExchangeDeleted("ex")]))
    rec = open_log(fs.kill9())[2]
    assert rec.exchanges == {} and rec.bindings == [] and rec.warnings == []
