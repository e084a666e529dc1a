"""The STOMP <-> message properties mapping (:mod:`mbroker.server.stomp_props`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbroker import errors
from mbroker.server.stomp_props import message_headers, send_props
from mbroker.wire.frames import Props
from mbroker.wire.stomp import Frame, StompError


def send(*headers: tuple[str, str]) -> Frame:
    return Frame("SEND", (("destination", "/queue/q"), *headers), b"x")


def test_a_send_without_custom_headers_has_no_props() -> None:
    plain = send(("receipt", "r"), ("content-length", "1"), ("expiration", "5"))
    assert send_props(plain) is None
    assert send_props(send(("transaction", "t"), ("persistent", "true"))) is None


def test_custom_headers_priority_and_id() -> None:
    props = send_props(
        send(
            ("content-type", "text/plain"),
            ("correlation-id", "c-1"),
            ("reply-to", "/temp-queue/r"),
            ("priority", "7"),
            ("amqp-message-id", "m-1"),
            ("x-note", "caf\u00e9 a:b"),
            ("x-note", "second is ignored"),
            ("receipt", "r"),
        )
    )
    assert props == Props(
        (
            ("content-type", b"text/plain"),
            ("correlation-id", b"c-1"),
            ("reply-to", b"/temp-queue/r"),
            ("x-note", "caf\u00e9 a:b".encode()),
        ),
        "m-1",
        7,
    )


def test_names_outside_the_native_charset_are_mapped_and_back() -> None:
    props = send_props(send(("my:key", "v"), ("with space", "w"), ("_.6162", "x")))
    assert props is not None
    names = [n for n, _ in props.headers]
    assert names == ["_." + b"my:key".hex(), "_." + b"with space".hex(), "_." + b"_.6162".hex()]
    back = message_headers(props, "1.2")
    assert back == b"my\\ckey:v\nwith space:w\n_.6162:x\n"


@pytest.mark.parametrize(
    "header, error",
    [
        (("priority", "10"), StompError),
        (("priority", "high"), StompError),
        (("amqp-message-id", "two words"), errors.BadArgs),
        (("n" * 70 + ":", "v"), StompError),
    ],
)
def test_bad_properties_are_refused(header: tuple[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        send_props(send(header))


def test_too_many_headers_is_the_native_limit() -> None:
    with pytest.raises(errors.Limit):
        send_props(send(*[(f"h{i}", "") for i in range(65)]))


def test_message_headers_for_each_version() -> None:
    props = Props((("a", b"1\n2"), ("b", b"\xff"), ("destination", b"no")), "i", 3)
    assert (
        message_headers(props, "1.2") == b"amqp-message-id:i\npriority:3\na:1\\n2\nb:\xef\xbf\xbd\n"
    )
    # STOMP 1.0 cannot carry a newline in a value: that header is left out
    assert message_headers(props, "1.0") == b"amqp-message-id:i\npriority:3\nb:\xef\xbf\xbd\n"
    assert message_headers(Props((("x", b"y"),)), "1.1") == b"x:y\n"


@settings(max_examples=100)
@given(
    st.dictionaries(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=15),
        st.text(st.characters(codec="utf-8"), max_size=30),
        min_size=1,
        max_size=8,
    )
)
def test_headers_round_trip_through_stomp_12(headers: dict[str, str]) -> None:
    from mbroker.server.stomp_props import NOT_CARRIED

    wanted = {
        k: v for k, v in headers.items() if k not in NOT_CARRIED | {"priority", "amqp-message-id"}
    }
    props = send_props(send(*wanted.items()))
    if not wanted:
        assert props is None
        return
    assert props is not None
    lines = message_headers(props, "1.2").decode().split("\n")[:-1]
    unescape = {"\\n": "\n", "\\c": ":", "\\\\": "\\", "\\r": "\r"}

    def plain(s: str) -> str:
        import re

        return re.sub(r"\\[ncr\\]", lambda m: unescape[m.group(0)], s)

    got = {}
    for line in lines:
        name, _, value = line.partition(":")
        got[plain(name)] = plain(value)
    assert got == wanted
