"""The STOMP codec's short cuts give what the long way gives: the decoder's remembered
heads (a repeated head is parsed once; its frames are the same frames as without the
cache: headers, escapes, version, limits), and :func:`~mbroker.wire.stomp.receipt`."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbroker.wire import stomp
from mbroker.wire.stomp import Frame, StompDecoder, StompError, encode, receipt


def frames(items: Sequence[object]) -> list[Frame]:
    assert all(isinstance(i, Frame) for i in items), items
    return [i for i in items if isinstance(i, Frame)]


def test_a_repeated_head_is_parsed_once_and_its_frames_share_the_headers() -> None:
    d = StompDecoder(version="1.2")
    send = b"SEND\ndestination:/queue/a\ncontent-length:2\n\n%s\x00"
    parsed = []
    real = d._parse_head

    def counting(head: bytes) -> object:
        parsed.append(head)
        return real(head)

    d._parse_head = counting  # type: ignore[method-assign,assignment]
    got = frames(d.feed(send % b"ab" + send % b"cd"))
    got += frames(d.feed(send % b"ef"))
    assert [f.body for f in got] == [b"ab", b"cd", b"ef"]
    assert len(parsed) == 1
    assert got[0].headers is got[2].headers
    assert got[0] == Frame("SEND", (("destination", "/queue/a"), ("content-length", "2")), b"ab")
    assert got[2].header("destination") == "/queue/a"
    assert got[2].header("receipt") is None and got[2].header("receipt", "x") == "x"


def test_the_header_index_keeps_the_first_of_repeated_headers() -> None:
    d = StompDecoder(version="1.2")
    data = b"SEND\ndestination:/queue/a\ndestination:/queue/b\nx:1\n\n\x00"
    for _ in range(2):  # parsed, then remembered
        (f,) = frames(d.feed(data))
        assert f.header("destination") == "/queue/a"
        assert f.header_map() == {"destination": "/queue/a", "x": "1"}
        assert f.index == f.header_map()
    plain = Frame(f.command, f.headers, f.body)  # made by hand: no index, same answers
    assert plain == f and plain.index is None
    assert plain.header("destination") == "/queue/a" and plain.header_map() == f.header_map()


def test_heads_are_forgotten_when_the_version_changes() -> None:
    # The same head bytes mean different headers in 1.0 (no escapes) and 1.2.
    d = StompDecoder()
    data = b"SEND\ndestination:/queue/a\\cb\n\n\x00"
    (f,) = frames(d.feed(data))
    assert f.header("destination") == "/queue/a\\cb"
    d.version = "1.2"
    (f,) = frames(d.feed(data))
    assert f.header("destination") == "/queue/a:b"
    d.version = "1.0"
    (f,) = frames(d.feed(data))
    assert f.header("destination") == "/queue/a\\cb"


def test_the_remembered_heads_are_bounded() -> None:
    d = StompDecoder(version="1.2")
    for i in range(stomp.HEAD_CACHE_SIZE * 3):
        frames(d.feed(b"SEND\ndestination:/queue/a\nreceipt:%d\n\n\x00" % i))
        assert len(d._heads) <= stomp.HEAD_CACHE_SIZE
    big = b"SEND\nx:" + b"y" * stomp.HEAD_CACHE_BYTES + b"\n\n\x00"
    d._heads.clear()
    frames(d.feed(big))
    assert not d._heads  # (too long to be remembered)


def test_a_bad_head_is_refused_every_time() -> None:
    for _ in range(2):
        d = StompDecoder(version="1.2")
        (err,) = d.feed(b"SEND\nnocolon\n\n\x00")
        assert isinstance(err, StompError)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["/queue/a", "/queue/b", "/topic/x:y", "/queue/a\\b"]),
            st.sampled_from([None, "r1", "r2"]),
            st.binary(max_size=8),
        ),
        max_size=12,
    ),
    st.sampled_from(["1.0", "1.1", "1.2"]),
)
def test_frames_are_the_same_with_the_cache_as_without(
    sends: list[tuple[str, str | None, bytes]], version: str
) -> None:
    encoded = []
    for dest, rid, body in sends:
        headers = [("destination", dest)] + ([("receipt", rid)] if rid else [])
        try:
            encoded.append(encode(Frame("SEND", tuple(headers), body), version))
        except ValueError:
            continue  # (a 1.0 value that cannot be written)
    got = StompDecoder(version=version).feed(b"".join(encoded))
    expected = []
    for one in encoded:  # a fresh decoder per frame: nothing remembered
        expected += StompDecoder(version=version).feed(one)
    assert got == expected
    for g, e in zip(got, expected):
        assert isinstance(g, Frame) and isinstance(e, Frame)
        assert g.header_map() == e.header_map() == dict(g.index or {})


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["1.0", "1.1", "1.2"]))
def test_a_receipt_is_what_encode_writes(receipt_id: str, version: str) -> None:
    try:
        expected = encode(Frame("RECEIPT", (("receipt-id", receipt_id),)), version)
    except (ValueError, UnicodeEncodeError) as e:
        with pytest.raises(type(e)):
            receipt(receipt_id, version)
        return
    assert receipt(receipt_id, version) == expected


def test_receipts_plain_and_escaped() -> None:
    assert receipt("r-1") == b"RECEIPT\nreceipt-id:r-1\n\n\x00"
    assert receipt("a:b", "1.2") == b"RECEIPT\nreceipt-id:a\\cb\n\n\x00"
    assert receipt("a:b", "1.0") == b"RECEIPT\nreceipt-id:a:b\n\n\x00"
