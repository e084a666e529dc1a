"""Batch message frames: written for runs of messages laid out alike, replayed in bulk,
cut off whole when torn, salvaged message by message when damaged."""

from __future__ import annotations

import os
import struct
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbroker.core.records import (
    MessagesRemoved,
    MessagesStored,
    MessageStored,
    Record,
    Recovered,
    RecoveryWarning,
)
from mbroker.store import batch, codec
from mbroker.store.compaction import message_frames
from mbroker.store.files import CrashFS
from mbroker.store.logstore import LogStore
from mbroker.store.segment import segment_name
from mbroker.wire.frames import Props
from tests.helpers.replay import both
from tests.helpers.store import DATA, declare, ids, open_log, result

SEG1 = os.path.join(DATA, segment_name(1))
PROPS = Props((("k", b"v"),))
#: the fewest messages made a batch frame here (small frames: every byte is tried)
LEAST = 2
#: payloads of a batch frame of six messages (one empty)
SIX = [b"alpha", b"", b"c" * 37, b"delta-delta", b"\xc3\x5a" * 9, b"f"]


def open_batched(fs: CrashFS | None = None, **kw: Any) -> tuple[LogStore, CrashFS, Recovered]:
    return open_log(fs, batch_frames=LEAST, **kw)


def frames(data: bytes, start: int = codec.FILE_HEADER.size) -> list[tuple[int, int, int]]:
    """``(type, start, end)`` of every frame."""
    out = []
    pos = start
    while pos < len(data):
        _magic, _crc, typ, length = codec.HEADER.unpack_from(data, pos)
        out.append((typ, pos, pos + codec.HEADER_SIZE + length))
        pos += codec.HEADER_SIZE + length
    return out


def decoded(data: bytes, sizes: list[int]) -> list[Any]:
    """Every record in ``data``, each message on its own; checks ``sizes`` add up."""
    assert sum(sizes) == len(data)
    out: list[Any] = []
    for typ, start, end in frames(data, 0):
        body = data[start + codec.HEADER_SIZE : end]
        if typ == codec.T_BATCH:
            out += batch.decode_batch(body)
        else:
            out.append(codec.decode_record(typ, body))
    return out


def flat(records: list[Record]) -> list[Any]:
    out: list[Any] = []
    for r in records:
        out += r.messages() if isinstance(r, MessagesStored) else [r]
    return out


# ------------------------------------------------------------------- writing


def test_runs_of_messages_laid_out_alike_make_batch_frames() -> None:
    records: list[Record] = [
        MessagesStored(1, ("q",), "ex", "k", [b"a", b"bb"]),
        MessageStored(3, ("q",), "ex", "k", b"ccc"),
        MessageStored(7, ("q",), "ex", "k", b"gap before me"),  # (ids need not follow)
        MessagesRemoved("q", (1,)),
        MessagesStored(8, ("q", "r"), "ex", "k", [b"x"] * 5, PROPS),
        MessageStored(13, ("q",), "ex", "k", b"e", 1e12),
        MessageStored(14, ("q",), "ex", "k", b"e", 1e12),
        MessagesStored(15, ("q",), "ex", "k", [b"short", b"run"]),
    ]
    data, sizes = batch.encode_records(records, 3)  # (runs of 3 messages or more)
    types = [typ for typ, _start, _end in frames(data, 0)]
    assert types == [codec.T_BATCH, codec.T_REMOVED, codec.T_BATCH] + [codec.T_MESSAGE] * 4
    assert decoded(data, sizes) == flat(records)
    assert len(sizes) == 4 + 1 + 5 + 4
    # a message of a batch counts 16 bytes and its payload; the first, the fixed part too
    assert sizes[1:4] == [16 + 2, 16 + 3, 16 + 13]


def test_runs_shorter_than_the_least_are_message_frames() -> None:
    """By default a run of fewer than BATCH_MIN messages is written as message frames:
    a batch frame costs more to write and to replay than so few messages."""
    short = MessagesStored(1, ("q",), "ex", "k", [b"x"] * (batch.BATCH_MIN - 1))
    data, _sizes = batch.encode_records([short])
    assert {t for t, _s, _e in frames(data, 0)} == {codec.T_MESSAGE}
    long = MessagesStored(1, ("q",), "ex", "k", [b"x"] * batch.BATCH_MIN)
    data, _sizes = batch.encode_records([long])
    assert [t for t, _s, _e in frames(data, 0)] == [codec.T_BATCH]
    store, fs, _ = open_log()  # (the store's default)
    between = MessagesRemoved("q", (1,))  # (else the two make one run of 31)
    result(store.write([*declare("q"), short, between, attrs.evolve(long, first_id=99)]))
    kinds = [t for t, _s, _e in frames(fs.content(SEG1))]
    assert kinds.count(codec.T_BATCH) == 1 and kinds.count(codec.T_MESSAGE) == len(short.payloads)


def test_a_long_run_is_cut_into_frames_by_count_and_bytes() -> None:
    count = batch.BATCH_MAX + 10
    run = MessagesStored(1, ("q",), "ex", "k", [b"%d" % i for i in range(count)])
    data, sizes = batch.encode_records([run], LEAST)
    assert [end - start for _t, start, end in frames(data, 0)] == [
        sum(sizes[: batch.BATCH_MAX]),
        sum(sizes[batch.BATCH_MAX :]),
    ]
    assert decoded(data, sizes) == run.messages()
    big = [b"x" * (300 * 1024)] * 7  # 1 MiB passed with the fourth: 4 + 3
    data, sizes = batch.encode_records([MessagesStored(1, ("q",), "ex", "k", big)], LEAST)
    parts = frames(data, 0)
    assert [t for t, _s, _e in parts] == [codec.T_BATCH, codec.T_BATCH]
    assert [len(batch.decode_batch(data[s + codec.HEADER_SIZE : e])) for _t, s, e in parts] == [
        4,
        3,
    ]


def test_a_name_with_nul_cannot_be_stored_in_a_batch() -> None:
    with pytest.raises(codec.CodecError):
        batch.encode_records([MessagesStored(1, ("bad\0name",), "ex", "k", [b"x"] * 9)], LEAST)


messages = st.builds(
    MessageStored,
    st.integers(1, 2**40),
    st.sampled_from([("q",), ("q",), ("q", "r"), ("é",)]),
    st.sampled_from(["ex", ""]),
    st.sampled_from(["k", "k", "ü.k"]),
    st.binary(max_size=30),
    st.sampled_from([None, None, 1.5e9]),
    st.sampled_from([None, None, PROPS]),
)
runs = st.builds(
    MessagesStored,
    st.integers(1, 2**40),
    st.sampled_from([("q",), ("q", "r")]),
    st.just("ex"),
    st.just("k"),
    st.lists(st.binary(max_size=30), min_size=1, max_size=12),
    st.sampled_from([None, PROPS]),
)
removals = st.builds(MessagesRemoved, st.just("q"), st.lists(st.integers(1, 99)).map(tuple))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(messages, messages, runs, removals), max_size=30))
def test_every_record_decodes_back(records: list[Record]) -> None:
    data, sizes = batch.encode_records(records, LEAST)
    assert decoded(data, sizes) == flat(records)
    assert len(sizes) == len(flat(records))
    old, old_sizes = codec.encode_batch(records)
    assert decoded(old, old_sizes) == flat(records)


# ------------------------------------------------------------------- replay


def batch_log(payloads: list[bytes] = SIX) -> tuple[CrashFS, int, int]:
    """A log: queue q, messages 1-3 one by one, a batch frame of ``payloads`` (ids
    10, 12, 14, ...) and a removal of 2 after it; the batch frame's start and end."""
    store, fs, _ = open_batched()
    result(store.write(declare("q")))
    for i in (1, 2, 3):
        result(store.write([MessageStored(i, ("q",), "ex", "k", b"one %d" % i)]))
    before = len(fs.content(SEG1))
    run = [MessageStored(10 + 2 * i, ("q",), "ex", "k", p) for i, p in enumerate(payloads)]
    result(store.write(run))
    after = len(fs.content(SEG1))
    result(store.write([MessagesRemoved("q", (2,))]))
    [(typ, start, end)] = [f for f in frames(fs.content(SEG1)) if f[1] == before]
    assert typ == codec.T_BATCH and end == after
    return fs, start, end


def batch_ids(payloads: list[bytes] = SIX) -> list[int]:
    return [10 + 2 * i for i in range(len(payloads))]


def test_a_batch_frame_replays_in_bulk() -> None:
    fs, _start, _end = batch_log()
    fast, _slow = both(fs.kill9())
    assert fast.batch_frames == 1
    assert ids(fast.recovered) == [1, 3, *batch_ids()]
    assert [m[3] for m in fast.recovered.messages["q"]][2:] == SIX
    assert fast.recovered.next_msg_id == 21 and fast.recovered.warnings == []
    seg = fast.ledger.segments[1]
    assert seg.live == 8


@pytest.mark.parametrize(
    "payloads",
    [[b"e" * 7] * 6, [b"m" * n for n in (5, 1023, 0, 17)], [b"b" * n for n in (2000, 9, 1024, 0)]],
)
def test_payloads_of_one_size_small_and_large_sizes_come_back(payloads: list[bytes]) -> None:
    fs, _start, _end = batch_log(payloads)
    fast, _slow = both(fs.kill9())
    assert fast.batch_frames == 1
    assert [m[3] for m in fast.recovered.messages["q"]][2:] == payloads


def test_batch_frames_and_message_frames_in_one_log() -> None:
    """A log written before batch frames, then with them: all of it replays."""
    store, fs, _ = open_log(batch_frames=0)
    result(store.write(declare("q", "r")))
    result(store.write([MessagesStored(1, ("q",), "ex", "k", [b"old %d" % i for i in range(20)])]))
    store, fs, rec = open_batched(fs.kill9())
    assert ids(rec) == list(range(1, 21))
    result(store.write([MessagesStored(21, ("q",), "ex", "k", [b"new %d" % i for i in range(20)])]))
    result(store.write([MessagesStored(41, ("q", "r"), "ex", "k", [b"two"] * 5, PROPS)]))
    result(store.write([MessagesRemoved("q", (5, 25, 42)), MessagesRemoved("r", (41,))]))
    result(store.write([MessagesStored(46, ("q",), "ex", "k", [b"last"] * 9)]))
    assert codec.T_BATCH in [t for t, _s, _e in frames(fs.content(SEG1))]
    fast, _slow = both(fs.kill9())
    expected = [i for i in range(1, 55) if i not in (5, 25, 42)]
    assert ids(fast.recovered) == expected
    assert ids(fast.recovered, "r") == [42, 43, 44, 45]
    assert fast.recovered.messages["r"][0][5] == PROPS
    assert fast.batch_frames == 2  # (the one for two queues goes message by message)


def test_copies_in_batch_frames_move_the_messages() -> None:
    """Ids already stored (copies) in a batch frame: message by message, as copies."""
    store, fs, _ = open_batched()
    result(store.write(declare("q")))
    result(store.write([MessagesStored(1, ("q",), "ex", "k", [b"m%d" % i for i in range(8)])]))
    result(
        store.write([MessageStored(i, ("q",), "ex", "k", b"m%d" % (i - 1)) for i in (2, 3, 4, 5)])
    )
    fast, _slow = both(fs.kill9())
    assert ids(fast.recovered) == list(range(1, 9))
    assert fast.batch_frames == 1 and fast.ledger.segments[1].live == 8


def test_the_compactor_reads_the_messages_of_batch_frames() -> None:
    fs, _start, _end = batch_log()
    got = message_frames(fs.content(SEG1))
    assert [msg_id for msg_id, _body in got] == [1, 2, 3, *batch_ids()]
    assert [codec.decode_message(body).payload for _id, body in got][3:] == SIX


def test_a_batch_frame_that_does_not_decode_is_skipped() -> None:
    """A good CRC around bad lengths (a bug, a newer version): reported, skipped."""
    store, fs, _ = open_batched()
    result(store.write(declare("q")))
    frame = codec.frame(codec.T_BATCH, batch.HEAD.pack(3, 99, 0.0, 0, 1, 0, 0) + b"q" * 40)
    crashed = fs.kill9()
    data = crashed.content(SEG1)
    crashed.set_content(SEG1, data + frame + codec.encode_record(MessagesRemoved("q", (1,))))
    fast, _slow = both(crashed)
    assert fast.recovered.warnings == [
        RecoveryWarning("corrupt", segment_name(1), len(data), len(frame))
    ]


# ----------------------------------------------------------- torn, damaged


def test_a_batch_frame_torn_at_every_byte_is_cut_off_whole() -> None:
    fs, start, end = batch_log()
    full = fs.content(SEG1)
    for cut in range(start, end):
        crashed = fs.kill9()
        crashed.set_content(SEG1, full[:cut])
        fast, _slow = both(crashed)
        assert ids(fast.recovered) == [1, 2, 3], cut
        assert fast.tail_good == start
        warnings = [RecoveryWarning("torn-tail", segment_name(1), start, cut - start)]
        assert fast.recovered.warnings == (warnings if cut > start else []), cut
        store, crashed, rec = open_batched(crashed)
        assert crashed.content(SEG1) == full[:start]
        assert ids(rec) == [1, 2, 3]


def regions(start: int, end: int, payloads: list[bytes]) -> dict[str, Any]:
    """Where the parts of the batch frame at ``start`` lie."""
    count = len(payloads)
    head = start + codec.HEADER_SIZE
    head_size = batch.HEAD_SIZE + 1 + 2 + 1 + 4  # names "q", "ex", "k"; the head crc
    ids_at = head + head_size
    payloads_at = ids_at + 16 * count
    offsets = [payloads_at + sum(map(len, payloads[:i])) for i in range(count)]
    return {
        "header": range(start, head),
        "head": range(head, ids_at),
        "ids": [range(ids_at + 8 * i, ids_at + 8 * i + 8) for i in range(count)],
        "lengths": range(ids_at + 8 * count, ids_at + 12 * count),
        "crcs": [
            range(ids_at + 12 * count + 4 * i, ids_at + 12 * count + 4 * i + 4)
            for i in range(count)
        ],
        "payloads": [range(o, o + len(p)) for o, p in zip(offsets, payloads)],
        "offsets": offsets,
        "trailer": range(offsets[-1] + len(payloads[-1]), end),
    }


def test_a_batch_frame_with_any_byte_flipped_loses_only_the_message_hit() -> None:
    fs, start, end = batch_log()
    full = fs.content(SEG1)
    where = regions(start, end, SIX)
    assert where["trailer"].stop - where["trailer"].start == len(where["head"]) + 4
    name = segment_name(1)
    for offset in range(start, end):
        damaged = bytearray(full)
        damaged[offset] ^= 0x24
        crashed = fs.kill9()
        crashed.set_content(SEG1, bytes(damaged))
        fast, _slow = both(crashed)
        hit = [
            i
            for i in range(len(SIX))
            if offset in where["ids"][i]
            or offset in where["crcs"][i]
            or offset in where["payloads"][i]
        ]
        kept = [m for i, m in enumerate(batch_ids()) if i not in hit]
        assert ids(fast.recovered) == [1, 3, *kept], offset
        by_id = {m[0]: m[3] for m in fast.recovered.messages["q"]}
        assert [by_id[m] for m in kept] == [p for i, p in enumerate(SIX) if i not in hit]
        expected = [RecoveryWarning("salvaged", name, start, end - start, messages=len(kept))]
        expected += [
            RecoveryWarning("corrupt", name, where["offsets"][i], len(SIX[i])) for i in hit
        ]
        assert fast.recovered.warnings == expected, offset
        assert str(expected[0]).endswith(
            f"({end - start} bytes): its {len(kept)} intact messages kept"
        )
        # the frames after it are read as ever; the file is kept whole
        assert fast.tail_good == len(full) and fast.recovered.next_msg_id == max(kept) + 1


def test_two_damaged_heads_lose_the_batch_frame_only() -> None:
    fs, start, end = batch_log()
    where = regions(start, end, SIX)
    damaged = bytearray(fs.content(SEG1))
    damaged[where["head"].start + 1] ^= 1
    damaged[where["trailer"].start + 1] ^= 1
    crashed = fs.kill9()
    crashed.set_content(SEG1, bytes(damaged))
    fast, _slow = both(crashed)
    assert ids(fast.recovered) == [1, 3]
    assert [(w.kind, w.offset) for w in fast.recovered.warnings] == [("corrupt", start)]


def test_a_salvaged_message_keeps_its_ledger_size() -> None:
    """A damaged batch frame counts its kept messages as an intact one would."""
    fs, start, end = batch_log()
    intact = both(fs.kill9())[0].ledger
    damaged = bytearray(fs.content(SEG1))
    damaged[start + 3] ^= 1  # the frame's crc
    crashed = fs.kill9()
    crashed.set_content(SEG1, bytes(damaged))
    salvaged = both(crashed)[0].ledger
    assert salvaged.home == intact.home
    assert salvaged.segments[1].live_bytes == intact.segments[1].live_bytes
    assert struct.calcsize("<IIdHHHH") == batch.HEAD_SIZE


def test_a_segment_with_a_salvaged_batch_frame_is_compacted() -> None:
    """The compactor salvages as recovery does: the kept messages are copied."""
    store, fs, _ = open_batched(segment_size=2000)
    result(store.write(declare("q", "d")))
    result(store.write([MessagesStored(1, ("q",), "ex", "k", SIX)]))
    i = 7
    while len(fs.files(DATA)) < 2:  # dead messages after it, until the segment is sealed
        result(store.write([MessageStored(i, ("d",), "ex", "k", b"d" * 100)]))
        result(store.write([MessagesRemoved("d", (i,))]))
        i += 1
    data = bytearray(fs.content(SEG1))
    [(_typ, start, end)] = [f for f in frames(bytes(data)) if f[0] == codec.T_BATCH]
    hit = regions(start, end, SIX)["payloads"][2].start  # the third message
    data[hit] ^= 1
    crashed = fs.kill9()
    crashed.set_content(SEG1, bytes(data))
    store, fs, rec = open_batched(crashed, segment_size=2000)
    assert [w.kind for w in rec.warnings] == ["salvaged", "corrupt"]
    while segment_name(1) in fs.files(DATA):
        result(store.write([MessageStored(i, ("d",), "ex", "k", b"d" * 100)]))
        result(store.write([MessagesRemoved("d", (i,))]))
        i += 1
        assert i < 500, "segment 1 was never compacted"
    assert store.stats()["compactions"] == 1
    rec = open_batched(fs.kill9())[2]
    assert ids(rec) == [1, 2, 4, 5, 6]
    assert [m[3] for m in rec.messages["q"]] == [p for n, p in enumerate(SIX) if n != 2]
    assert rec.warnings == []
