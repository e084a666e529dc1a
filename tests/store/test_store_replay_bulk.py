"""Runs of message frames replayed in bulk give exactly what one frame at a time gives.

The examples write logs of the format before batch frames (one frame per message,
``batch_frames=0``), which recovery still reads; every log in the property test is
written three ways (batch frames from 2 or 16 messages, or none).  Recovery replays a
run of message frames laid out alike (one queue, source and key, no properties, no
expiry) in bulk, whatever their payload sizes: ``replay(..., bulk=False)`` replays every
frame with the general loop instead, and is the reference here.  Every log (runs of
mixed and equal sizes, removals, copies, multi-queue messages, properties, expiry,
several segments) and every damage (a flipped byte anywhere, a torn tail) must give the
same recovered state, ledger, warnings and tail with both.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbroker.core.records import (
    MessagesRemoved,
    MessagesStored,
    MessageStored,
    QueueDeclared,
    QueueDeleted,
    Record,
    RecoveryWarning,
)
from mbroker.store import codec
from mbroker.store.segment import segment_name
from mbroker.wire.frames import Props
from tests.helpers.replay import both
from tests.helpers.store import DATA, DURABLE, declare, ids, open_log, result

SEG1 = os.path.join(DATA, segment_name(1))
PROPS = Props((("k", b"v"),), "id-1", 3)


def mixed(first: int, count: int, queue: str = "q") -> list[MessageStored]:
    """``count`` messages of payloads of many sizes (0 to 300 bytes)."""
    return [
        MessageStored(i, (queue,), "ex", "a.b", bytes([i % 251]) * ((i * 37) % 301))
        for i in range(first, first + count)
    ]


def message_frames(data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of every message frame of a segment."""
    out = []
    pos = codec.FILE_HEADER.size
    while pos < len(data):
        _magic, _crc, typ, length = codec.HEADER.unpack_from(data, pos)
        end = pos + codec.HEADER_SIZE + length
        if typ == codec.T_MESSAGE:
            out.append((pos, end))
        pos = end
    return out


# ------------------------------------------------------------------ examples


def test_a_run_of_mixed_sizes_replays_in_bulk() -> None:
    store, fs, _ = open_log(batch_frames=0)
    result(store.write(declare("q")))
    result(store.write(mixed(1, 200)))
    fast, _slow = both(fs.kill9())
    assert fast.bulk_frames == 199  # all but the first, which the general loop reads
    assert ids(fast.recovered) == list(range(1, 201))
    assert [m[3] for m in fast.recovered.messages["q"]] == [m.payload for m in mixed(1, 200)]
    assert fast.recovered.warnings == []


def test_runs_of_equal_and_of_mixed_sizes_after_each_other() -> None:
    store, fs, _ = open_log(batch_frames=0)
    result(store.write(declare("q", "r")))
    result(store.write([MessagesStored(1, ("q",), "ex", "k", [b"x" * 50] * 30)]))
    result(store.write(mixed(31, 30)))
    result(store.write([MessagesRemoved("q", (2, 40))]))
    result(store.write(mixed(61, 30, "r")))
    result(store.write([MessagesStored(91, ("q",), "ex", "k", [b"y" * 7] * 30)]))
    fast, _slow = both(fs.kill9())
    assert fast.bulk_frames == 4 * 29  # each run but its first frame
    kept = [i for i in range(1, 121) if i not in (2, 40) and not 61 <= i <= 90]
    assert ids(fast.recovered) == kept
    assert ids(fast.recovered, "r") == list(range(61, 91))


def test_damage_inside_a_run_of_mixed_sizes_is_found_at_the_same_offset() -> None:
    store, fs, _ = open_log(batch_frames=0)
    result(store.write(declare("q")))
    result(store.write(mixed(1, 60)))
    result(store.write([MessagesRemoved("q", (5,))]))
    data = fs.content(SEG1)
    frames = message_frames(data)
    for nth in (0, 1, 2, 30, 58, 59):
        start, end = frames[nth]
        for offset in (start, start + 2, start + 7, start + 20, start + 33, end - 1):
            damaged = bytearray(data)
            damaged[offset] ^= 0x10
            crashed = fs.kill9()
            crashed.set_content(SEG1, bytes(damaged))
            fast, _slow = both(crashed)
            lost = nth + 1
            assert ids(fast.recovered) == [i for i in range(1, 61) if i not in (5, lost)], (
                nth,
                offset,
            )
            assert fast.recovered.warnings[0] == RecoveryWarning(
                "corrupt", segment_name(1), start, end - start
            ), (nth, offset)


def test_a_torn_tail_inside_a_run_of_mixed_sizes() -> None:
    store, fs, _ = open_log(batch_frames=0)
    result(store.write(declare("q")))
    result(store.write(mixed(1, 40)))
    data = fs.content(SEG1)
    frames = message_frames(data)
    for start, end in frames[-3:]:
        for cut in range(start, end):
            crashed = fs.kill9()
            crashed.set_content(SEG1, data[:cut])
            fast, _slow = both(crashed)
            kept = frames.index((start, end))
            assert ids(fast.recovered) == list(range(1, kept + 1)), cut
            assert fast.tail_good == start
            if cut > start:
                assert fast.recovered.warnings == [
                    RecoveryWarning("torn-tail", segment_name(1), start, cut - start)
                ]


def test_a_gap_in_the_ids_ends_a_run() -> None:
    store, fs, _ = open_log(batch_frames=0)
    result(store.write(declare("q")))
    result(store.write([*mixed(1, 10), *mixed(12, 10), *mixed(30, 10)]))
    result(store.write([MessagesStored(40, ("q",), "ex", "a.b", [b"e" * 11] * 10)]))
    result(store.write([MessagesStored(52, ("q",), "ex", "a.b", [b"e" * 11] * 10)]))
    result(store.write([MessagesStored(70, ("q",), "ex", "a.b", [b"f" * 5] * 10)]))
    result(store.write([MessagesStored(82, ("q",), "ex", "a.b", [b"g" * 5] * 10)]))
    fast, _slow = both(fs.kill9())
    expected = [*range(1, 11), *range(12, 22), *range(30, 50), *range(52, 62)]
    assert ids(fast.recovered) == [*expected, *range(70, 80), *range(82, 92)]
    payloads = {m[0]: m[3] for m in fast.recovered.messages["q"]}
    assert payloads[12] == mixed(12, 1)[0].payload and payloads[82] == b"g" * 5
    assert fast.bulk_frames == 6 * 9 + 10  # (40 follows 39 without a gap)


def test_copies_of_stored_messages_end_a_run() -> None:
    """A copy (what compaction writes) of a message already stored, laid out like the
    run before it, moves that message: the run stops there, whatever the sizes."""
    store, fs, _ = open_log(batch_frames=0)
    result(store.write(declare("q")))
    result(store.write(mixed(1, 20)))
    result(store.write([MessagesStored(21, ("q",), "ex", "a.b", [b"z" * 11] * 10)]))
    result(store.write([*mixed(3, 2), *mixed(21, 3), *mixed(31, 5)]))
    result(store.write([MessagesStored(22, ("q",), "ex", "a.b", [b"z" * 11] * 3)]))
    fast, _slow = both(fs.kill9())
    assert ids(fast.recovered) == list(range(1, 36))
    assert len(fast.ledger.copies) == 0 and fast.ledger.segments[1].live == 35


def test_properties_expiry_and_other_layouts_end_a_run() -> None:
    store, fs, _ = open_log(batch_frames=0)
    result(store.write(declare("q", "r")))
    records: list[Record] = [*mixed(1, 10)]
    records.append(MessageStored(11, ("q",), "ex", "a.b", b"h" * 9, None, PROPS))
    records += mixed(12, 10)
    records.append(MessageStored(22, ("q",), "ex", "a.b", b"e" * 99, 1e12))
    records += mixed(23, 10)
    records.append(MessageStored(33, ("q", "r"), "ex", "a.b", b"two"))
    records += mixed(34, 10)
    records.append(MessageStored(44, ("q",), "ex", "other", b"key"))
    records += mixed(45, 10)
    result(store.write(records))
    fast, _slow = both(fs.kill9())
    assert ids(fast.recovered) == list(range(1, 55))
    assert fast.bulk_frames == 5 * 9  # each run of 10 but its first frame; none of the others
    by_id = {m[0]: m for m in fast.recovered.messages["q"]}
    assert by_id[11][5] == PROPS and by_id[22][4] == 1e12
    assert ids(fast.recovered, "r") == [33]


# ----------------------------------------------------------- every log, every damage

payloads = st.one_of(
    st.binary(max_size=40), st.integers(0, 400).map(lambda n: b"\x5a\xc3" * (n // 2))
)
operations = st.one_of(
    st.tuples(
        st.just("publish"),
        # (mostly alike, so that runs go on from one write to the next)
        st.sampled_from([("q",), ("q",), ("q",), ("r",), ("q", "r")]),
        st.lists(payloads, min_size=1, max_size=25),
        st.sampled_from(["a.b", "a.b", "a.b", "a.c", ""]),
        st.sampled_from([None, None, None, 1e12]),
        st.sampled_from([None, None, None, PROPS]),
        st.sampled_from([0, 0, 0, 1, 2]),  # the gap before the first id
    ),
    st.tuples(st.just("equal"), st.sampled_from(["q", "r"]), st.integers(1, 25), st.binary()),
    st.tuples(
        st.just("remove"), st.sampled_from(["q", "r"]), st.integers(0, 30), st.integers(1, 8)
    ),
    st.tuples(st.just("copy"), st.integers(0, 200), st.integers(1, 6)),
    st.tuples(st.just("delete"), st.sampled_from(["q", "r"])),
)
damages = st.one_of(
    st.none(),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.floats(0, 1)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(operations, max_size=12),
    damages,
    st.sampled_from([600, 4000, 1 << 20]),
    st.sampled_from([0, 2, 16]),
)
def test_bulk_and_frame_at_a_time_agree(
    ops: list[tuple[Any, ...]],
    damage: tuple[Any, ...] | None,
    segment_size: int,
    batch_frames: int,
) -> None:
    store, fs, _ = open_log(segment_size=segment_size, batch_frames=batch_frames)
    result(store.write(declare("q", "r")))
    next_id = 1
    published: list[tuple[int, tuple[str, ...], str, bytes]] = []
    for op in ops:
        records: list[Record] = []
        if op[0] == "publish":
            _, queues, bodies, key, expires, props, gap = op
            next_id += gap
            for body in bodies:
                records.append(MessageStored(next_id, queues, "ex", key, body, expires, props))
                published.append((next_id, queues, key, body))
                next_id += 1
        elif op[0] == "equal":
            _, queue, count, body = op
            records.append(MessagesStored(next_id, (queue,), "ex", "k", [body] * count))
            published += [(next_id + i, (queue,), "k", body) for i in range(count)]
            next_id += count
        elif op[0] == "remove":
            _, queue, first, count = op
            mine = [m for m, queues, _key, _body in published if queue in queues]
            if mine:
                records.append(MessagesRemoved(queue, tuple(mine[first : first + count])))
        elif op[0] == "copy":  # what compaction writes: messages again, under their ids
            _, first, count = op
            for msg_id, queues, key, body in published[first : first + count]:
                records.append(MessageStored(msg_id, queues, "ex", key, body))
        else:
            records += [QueueDeleted(op[1]), QueueDeclared(op[1], DURABLE)]
        if records:
            result(store.write(records))
    crashed = fs.kill9()
    if damage is not None:
        names = sorted(crashed.listdir(DATA))
        segments = [os.path.join(DATA, n) for n in names if n.endswith(".seg")]
        sizes = [len(crashed.content(p)) for p in segments]
        where = int(damage[1] * (sum(sizes) - 1))
        for path, size in zip(segments, sizes):
            if where < size:
                data = bytearray(crashed.content(path))
                if damage[0] == "flip":
                    data[where] ^= damage[2]
                else:
                    del data[where:]
                crashed.set_content(path, bytes(data))
                break
            where -= size
    both(crashed)
