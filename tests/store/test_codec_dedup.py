"""The store's side of message ids (section 7): the records and snapshot fields that keep
the dedup windows and the remembered ids, and data written before them, which still
decodes as having none."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from mbroker.core.records import ExchangeDeclared, IdRemembered, QueueDeclared, QueueDeleted
from mbroker.store import codec
from mbroker.store.state import Declarations, StoreState, pack_id, unpack_id
from mbroker.wire.frames import QueueOptions

_names = st.text("abcxyz.-_", min_size=1, max_size=20)
_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255)


def body(frame: bytes) -> tuple[int, bytes]:
    _magic, _crc, typ, length = codec.HEADER.unpack_from(frame, 0)
    return typ, frame[codec.HEADER_SIZE : codec.HEADER_SIZE + length]


@given(_names, st.sampled_from(["direct", "fanout", "topic"]), st.none() | st.integers(0, 2**40))
def test_exchange_declared_round_trips(name: str, kind: str, window: int | None) -> None:
    record = ExchangeDeclared(name, kind, window)
    assert codec.decode_record(*body(codec.encode_record(record))) == record


def test_an_exchange_declared_before_dedup_windows_decodes_with_none() -> None:
    old = codec.frame(codec.T_EXCHANGE_DECLARED, codec._str16("ex") + codec._str16("topic"))
    assert codec.decode_record(*body(old)) == ExchangeDeclared("ex", "topic", None)
    assert codec.encode_record(ExchangeDeclared("ex", "topic")) == old  # the same bytes


@given(
    _names,
    _ids,
    st.floats(0, 2e9),
    st.floats(0, 2e9),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
)
def test_id_remembered_round_trips(
    name: str, msg_id: str, at: float, expires: float, reached: int, bound: int
) -> None:
    record = IdRemembered(name, msg_id, at, expires, reached, bound)
    typ, data = body(codec.encode_record(record))
    assert typ == codec.T_ID
    assert codec.decode_record(typ, data) == record


def test_a_snapshot_with_windows_and_ids_round_trips() -> None:
    snap = codec.Snapshot(
        7,
        (("ex", "topic"), ("old", "fanout")),
        (("q", QueueOptions(durable=True, dedup_window=5), 1),),
        (("q", "ex", "#"),),
        (("ex", 1000),),
        (("q", "a", 12.5, 1), ("ex", "b", 13.0, 0)),
    )
    assert codec.decode_snapshot(body(codec.encode_snapshot(snap))[1]) == snap


def test_a_snapshot_written_before_dedup_windows_decodes_with_none() -> None:
    # the old layout: next id, counts, then exchanges, queues and bindings, nothing after
    old = (
        struct.pack("<QIII", 3, 1, 1, 0)
        + codec._str16("ex")
        + codec._str16("topic")
        + codec._str16("q")
        + codec.encode_options(QueueOptions(durable=True))
        + struct.pack("<Q", 1)
    )
    snap = codec.decode_snapshot(old)
    assert (snap.dedup_windows, snap.ids) == ((), ())
    assert body(codec.encode_snapshot(snap))[1] == old  # none: the very same bytes


def test_ids_go_with_their_object_and_only_for_declared_ones() -> None:
    state = StoreState()
    state.apply_all(
        [
            QueueDeclared("q", QueueOptions(durable=True)),
            ExchangeDeclared("ex", "topic", 100),
            IdRemembered("q", "a", 0.0, 10.0, 1),
            IdRemembered("ex", "a", 0.0, 10.0, 0),
            IdRemembered("nobody", "a", 0.0, 10.0, 1),
        ]
    )
    r = state.recovered()
    assert r.ids == {"q": {"a": (10.0, 1)}, "ex": {"a": (10.0, 0)}}
    assert r.dedup_windows == {"ex": 100}
    state.apply(ExchangeDeclared("ex", "topic"))  # redeclared without a window
    state.apply(QueueDeclared("q", QueueOptions()))  # (keeps its ids, as its messages)
    assert state.recovered().dedup_windows == {}
    assert state.recovered().ids["q"] == {"a": (10.0, 1)}
    state.apply(QueueDeleted("q"))
    assert "q" not in state.recovered().ids


def test_expired_ids_are_dropped_as_they_pile_up() -> None:
    decls = Declarations()
    decls.declare_queue("q", QueueOptions(durable=True), 1)
    for i in range(5000):  # a window of 100 s, one id a second
        decls.remember_id(IdRemembered("q", str(i), float(i), i + 100.0, 1))
        assert len(decls.ids["q"]) <= 1024
    assert min(int(i) for i in decls.ids["q"]) >= 5000 - 1024
    decls.prune_ids(5000.0)
    assert sorted(int(i) for i in decls.ids["q"]) == list(range(4901, 5000))


def test_past_their_bound_the_oldest_ids_are_dropped() -> None:
    decls = Declarations()
    decls.declare_queue("q", QueueOptions(durable=True), 1)
    for i in range(5000):  # a window of an hour, and a bound of 600
        decls.remember_id(IdRemembered("q", str(i), float(i), i + 3600.0, 1, 600))
        assert len(decls.ids["q"]) <= 1200
    assert min(int(i) for i in decls.ids["q"]) >= 5000 - 1200
    assert [int(i) for i in decls.ids["q"]][-600:] == list(range(4400, 5000))


@given(st.floats(0, 4e9), st.integers(0, 2**32 - 1))
def test_a_stored_id_keeps_its_expiry_to_the_millisecond_rounded_up(
    expires: float, reached: int
) -> None:
    back, n = unpack_id(pack_id(expires, reached))
    assert n == reached
    assert expires - 1e-6 <= back < expires + 0.001 + 1e-6
