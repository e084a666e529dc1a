"""Section 7 properties on the wire: percent-encoding, PUBLISH options, limits, MSG."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mbroker.errors import BadArgs, Limit
from mbroker.wire import CommandDecoder, ReplyDecoder
from mbroker.wire.encode import encode_command, publish_head
from mbroker.wire.frames import Msg, Props, Publish, PublishRun, percent_encode
from mbroker.wire.props import (
    MAX_HEADER_TEXT,
    MAX_HEADERS,
    from_stored,
    msg_attrs,
    percent_decode,
    stored_text,
    with_due,
)

NAMES = st.text("abcXYZ019_-.", min_size=1, max_size=128)


@given(st.binary(max_size=300))
def test_percent_encoding_round_trips(value: bytes) -> None:
    written = percent_encode(value)
    assert not any(b in b" \t\r\n" or b < 0x21 or b > 0x7E for b in written)
    assert percent_decode(written) == value


@given(st.binary(max_size=100))
def test_lower_case_escapes_are_read_too(value: bytes) -> None:
    assert percent_decode(b"".join(b"%%%02x" % b for b in value)) == value


def test_only_what_needs_it_is_escaped() -> None:
    assert percent_encode(b"a=b;c:d/e") == b"a=b;c:d/e"
    assert percent_encode(b"100% sure\r\n") == b"100%25%20sure%0D%0A"
    assert percent_encode("é".encode()) == b"%C3%A9"


@pytest.mark.parametrize("bad", [b"%", b"%4", b"%zz", b"a%g0", b"%%"])
def test_a_bad_escape_is_bad_args(bad: bytes) -> None:
    with pytest.raises(BadArgs, match="escape"):
        percent_decode(bad)


def decode(data: bytes) -> list[object]:
    return list(CommandDecoder().feed(data if data.endswith(b"\n") else data + b"\r\n"))


def test_publish_options_become_props() -> None:
    [cmd] = decode(b"PUBLISH ex k ttl=5 H.ct=text%2Fplain id=a-1 priority=3 delay=10 2\r\nhi\r\n")
    assert cmd == Publish("ex", "k", b"hi", 5, Props((("ct", b"text/plain"),), "a-1", 3, 10))


def test_a_publish_without_props_has_none() -> None:
    assert decode(b"PUBLISH q k ttl=5 :x") == [Publish("q", "k", b"x", 5)]


def test_header_values_may_be_empty_and_names_keep_their_case() -> None:
    [cmd] = decode(b"PUBLISH q h.A= h.a=1 :x")
    assert isinstance(cmd, Publish) and cmd.props is not None
    assert cmd.props.headers == (("A", b""), ("a", b"1"))


@pytest.mark.parametrize(
    "line,error",
    [
        (b"PUBLISH q h.a=1 h.a=2 :x", "duplicate header"),
        (b"PUBLISH q h.=1 :x", "bad header name"),
        (b"PUBLISH q h.a/b=1 :x", "bad header name"),
        (b"PUBLISH q h." + b"n" * 129 + b"=1 :x", "bad header name"),
        (b"PUBLISH q h.a=%x :x", "escape"),
        (b"PUBLISH q priority=10 :x", "priority"),
        (b"PUBLISH q priority=-1 :x", "priority"),
        (b"PUBLISH q delay=31536000001 :x", "a year"),
        (b"PUBLISH q id= :x", "id must be"),
        (b"PUBLISH q id=" + b"i" * 256 + b" :x", "id must be"),
        (b"PUBLISH q id=1 id=2 :x", "duplicate"),
        (b"PUBLISH q h.a=1 key :x", "unexpected argument"),
    ],
)
def test_bad_props_are_bad_args(line: bytes, error: str) -> None:
    [err] = decode(line)
    assert isinstance(err, BadArgs) and error in err.text


def test_limits_are_limit_and_the_payload_is_consumed() -> None:
    many = b" ".join(b"h.n%d=1" % i for i in range(MAX_HEADERS + 1))
    big = b"h.big=" + b"v" * MAX_HEADER_TEXT
    d = CommandDecoder()
    out = d.feed(b"PUBLISH q " + many + b" 3\r\nabc\r\nPUBLISH q " + big + b" 1\r\nx\r\nPING\r\n")
    assert [type(x).__name__ for x in out] == ["Limit", "Limit", "Ping"]
    assert isinstance(out[0], Limit) and "64 headers" in out[0].text
    assert not d.closed


def test_exactly_at_the_limits_is_accepted() -> None:
    names = [b"h.n%02d=" % i for i in range(MAX_HEADERS)]
    text = sum(map(len, names))
    names[0] += b"v" * (MAX_HEADER_TEXT - text)
    [cmd] = decode(b"PUBLISH q " + b" ".join(names) + b" :x")
    assert isinstance(cmd, Publish) and cmd.props is not None
    assert len(cmd.props.headers) == MAX_HEADERS


def test_repeated_heads_with_props_form_a_run_that_keeps_them() -> None:
    line = b"PUBLISH q h.a=1 id=x 1\r\nA\r\n"
    d = CommandDecoder()
    d.feed(line)  # remembered
    [run] = d.feed(line * 3)
    assert run == PublishRun("q", "", [b"A"] * 3, None, Props((("a", b"1"),), "x"))


def test_the_msg_tail_is_in_the_contract_order() -> None:
    p = Props((("z", b"1 2"), ("a", b"")), "m1", 4)
    assert p.tail == b" id=m1 priority=4 h.z=1%202 h.a="
    assert Props(priority=0).tail == b""


@given(
    st.lists(st.tuples(NAMES, st.binary(max_size=40)), max_size=8, unique_by=lambda h: h[0]),
    st.one_of(
        st.none(),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
    ),
    st.integers(0, 9),
    st.one_of(st.none(), st.integers(0, 10**9)),
)
def test_publish_head_round_trips_through_the_decoder(
    headers: list[tuple[str, bytes]], msg_id: str | None, priority: int, delay: int | None
) -> None:
    props = Props(tuple(headers), msg_id, priority, delay)
    [cmd] = decode(encode_command(Publish("q", "k", b"xy", None, props)))
    expect = props if (headers or msg_id or priority or delay is not None) else None
    assert isinstance(cmd, Publish) and cmd.props == expect


def test_publish_head_refuses_what_the_broker_would() -> None:
    with pytest.raises(BadArgs):
        publish_head("q", "", None, Props((("a b", b""),)))
    with pytest.raises(Limit):
        publish_head("q", "", None, Props(tuple((f"n{i}", b"") for i in range(65))))


def test_msg_attributes_are_read_back_by_the_client_decoder() -> None:
    props = Props((("ct", b"a b"),), "i9", 2)
    line = b"MSG 1 5 ex k redelivered=1" + props.tail + b" future=1 2\r\nhi\r\n"
    [msg] = ReplyDecoder().feed(line)
    assert isinstance(msg, Msg) and msg.redelivered == 1
    assert msg_attrs(msg.attrs) == ({"ct": b"a b"}, "i9", 2)


@given(st.floats(0, 4e9).map(lambda f: round(f, 3)))
def test_stored_text_round_trips_with_a_due_time(due: float) -> None:
    props = with_due(Props((("a", b"\x00"),), "x", 1), due)
    back = from_stored(stored_text(props))
    assert back is not None and back.headers == props.headers and back.id == "x"
    assert back.due is not None and abs(back.due - due) < 0.0011
    assert from_stored(stored_text(with_due(None, 5.0))) == Props(due=5.0)
    assert from_stored(b"") is None
