"""The store codec's queue options: every option round-trips, and data written before
``auto-delete`` and ``expires`` existed (section 7) still decodes, as the same options."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from mbroker.core.records import QueueDeclared
from mbroker.store import codec
from mbroker.wire.frames import QueueOptions

_ints = st.none() | st.integers(min_value=0, max_value=2**63 - 1)

options = st.builds(
    QueueOptions,
    durable=st.booleans(),
    max_length=_ints,
    max_bytes=_ints,
    overflow=st.sampled_from(["drop-head", "reject"]),
    ttl=_ints,
    dead_letter=st.none() | st.text("abc.-_", min_size=1, max_size=20),
    max_deliver=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
    exclusive=st.booleans(),
    auto_delete=st.booleans(),
    expires=st.none() | st.integers(min_value=1, max_value=2**63 - 1),
    dedup_window=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
)


@given(options, st.binary(max_size=8))
def test_options_round_trip(opts: QueueOptions, tail: bytes) -> None:
    data = codec.encode_options(opts) + tail
    assert codec.decode_options(data, 0) == (opts, len(data) - len(tail))


def test_lifetime_options_are_a_flag_bit_and_a_field_after_the_old_ones() -> None:
    assert codec.encode_options(QueueOptions(auto_delete=True)) == bytes((8, 0))
    assert codec.encode_options(QueueOptions(expires=5)) == bytes((0, 32)) + codec._I64.pack(5)


def test_options_written_before_the_lifetime_options_still_decode() -> None:
    # durable, overflow=reject; max-length=10, ttl=5000; dead-letter "dlq" (the old layout)
    i64 = codec._I64.pack
    old = (
        bytes((1 | 4, 1 | 4 | 16))
        + i64(10)
        + i64(5000)
        + struct.pack(codec._U16.format, 3)
        + b"dlq"
    )
    expected = QueueOptions(
        durable=True, max_length=10, overflow="reject", ttl=5000, dead_letter="dlq"
    )
    assert codec.decode_options(old, 0) == (expected, len(old))
    assert codec.encode_options(expected) == old  # no option new: the very same bytes


def test_a_queue_declaration_with_lifetime_options_round_trips() -> None:
    record = QueueDeclared("q", QueueOptions(durable=True, auto_delete=True, expires=60000))
    body = codec._str16("q") + codec.encode_options(record.options)
    assert codec.decode_record(codec.T_QUEUE_DECLARED, body) == record
