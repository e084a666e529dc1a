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


# ------------------------------------------------ whole frames with remembered heads


class CountingSearch:
    """Stands in for the decoder's head-end regex and counts its searches."""

    def __init__(self) -> None:
        self.real = stomp._HEAD_END
        self.calls = 0

    def search(self, *args: object) -> object:
        self.calls += 1
        return self.real.search(*args)  # type: ignore[call-overload]


SEND = b"SEND\ndestination:/queue/a\ncontent-length:%d\n\n%s\x00"


def test_whole_frames_with_remembered_heads_skip_the_head_search(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = CountingSearch()
    monkeypatch.setattr(stomp, "_HEAD_END", counting)
    d = StompDecoder(version="1.2")
    frames(d.feed(SEND % (2, b"ab")))  # (a new head: searched and parsed)
    assert counting.calls == 1
    got = d.feed(SEND % (2, b"cd") + b"\n" + SEND % (2, b"e\x00") + b"\r\n\n" + SEND % (2, b"gh"))
    assert counting.calls == 1
    assert [getattr(i, "body", None) for i in got] == [b"cd", None, b"e\x00", None, b"gh"]
    assert got[1] is stomp.HEARTBEAT and got[3] is stomp.HEARTBEAT
    assert d._buf == b""


def test_a_frame_cut_by_the_read_goes_the_long_way_and_is_the_same() -> None:
    d = StompDecoder(version="1.2")
    frames(d.feed(SEND % (2, b"ab")))
    data = SEND % (2, b"cd") + SEND % (2, b"ef")
    cut = len(SEND % (2, b"cd")) + len(b"SEND\ndestination:/queue/a\ncontent-length:2\n\n")
    first = frames(d.feed(data[:cut]))  # (one whole frame, then a head with no body yet)
    second = frames(d.feed(data[cut:]))  # (the body alone: not a new frame)
    assert [f.body for f in first + second] == [b"cd", b"ef"]


@pytest.mark.parametrize(("cut", "searched"), [(60, 1), (92, 0)])
def test_after_a_cut_frame_the_whole_frames_of_the_read_skip_the_search(
    cut: int, searched: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = CountingSearch()
    monkeypatch.setattr(stomp, "_HEAD_END", counting)
    d = StompDecoder(version="1.2")
    data = SEND % (2, b"ab") + SEND % (2, b"cd") + SEND % (2, b"ef") + SEND % (2, b"gh")
    # (frames of 47 bytes, heads of 44: the read ends in the second frame's head, or
    # one byte into its body)
    first = frames(d.feed(data[:cut]))
    searches = counting.calls
    rest = frames(d.feed(data[cut:]))  # (the cut frame, then two whole frames)
    assert [f.body for f in first + rest] == [b"ab", b"cd", b"ef", b"gh"]
    assert counting.calls == searches + searched  # (only a cut head is searched)
    assert rest[1].headers is rest[2].headers is first[0].headers


def test_a_remembered_head_with_a_bad_nul_is_the_same_error() -> None:
    d = StompDecoder(version="1.2")
    frames(d.feed(SEND % (2, b"ab")))
    (err,) = d.feed(SEND % (2, b"abc"))  # (one byte more than it says)
    assert isinstance(err, StompError) and "no NUL after the 2-byte body" in err.message


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"/queue/a", b"/queue/b", b"/topic/x\\cy"]),
            st.binary(max_size=6),
            st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]),
            st.booleans(),
        ),
        max_size=10,
    ),
    st.lists(st.integers(min_value=1, max_value=60), max_size=6),
    st.sampled_from(["1.0", "1.1", "1.2"]),
)
def test_any_stream_of_repeated_heads_in_any_split_is_what_fresh_decoders_give(
    sends: list[tuple[bytes, bytes, bytes, bool]], cuts: list[int], version: str
) -> None:
    parts = []
    for dest, body, eols, counted in sends:
        if not counted:
            body = body.replace(b"\x00", b"")  # (a NUL would end it)
        length = b"content-length:%d\n" % len(body) if counted else b""
        parts.append(b"SEND\ndestination:%s\n%s\n%s\x00%s" % (dest, length, body, eols))
    stream = b"".join(parts)
    expected: list[object] = []
    for one in parts:  # (a fresh decoder per frame: nothing remembered)
        expected += [i for i in StompDecoder(version=version).feed(one)]
    d = StompDecoder(version=version)
    got: list[object] = []
    pos = 0
    for n in cuts + [len(stream)]:
        got += d.feed(stream[pos : pos + n])
        pos += n
    got += d.feed(stream[pos:])
    # (EOLs that a read splits come as two heart-beats: compare without them)
    assert [i for i in got if isinstance(i, Frame)] == [i for i in expected if isinstance(i, Frame)]
    assert not any(isinstance(i, StompError) for i in got + expected)
