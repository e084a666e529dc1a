"""The STOMP codec (mbroker.wire.stomp): frames, escaping per version, splits, limits, errors.

Every test here is sans-IO: bytes go into a StompDecoder, frames come out of encode().
"""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbroker.wire import stomp
from mbroker.wire.stomp import (
    ALL_COMMANDS,
    CLIENT_COMMANDS,
    HEARTBEAT,
    MAX_BODY,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LINE,
    SERVER_COMMANDS,
    UNESCAPED_COMMANDS,
    Frame,
    HeartBeat,
    StompDecoder,
    StompError,
    encode,
    heartbeat,
    negotiate_heartbeat,
    negotiate_version,
    parse_accept_version,
    parse_heartbeat,
)

PROPS = settings(max_examples=200, deadline=None)
VERSIONS = ("1.0", "1.1", "1.2")


def frames_of(items: list[Any]) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame)]


def errors_of(items: list[Any]) -> list[StompError]:
    return [i for i in items if isinstance(i, StompError)]


def feed_chunks(decoder: StompDecoder, data: bytes, sizes: list[int]) -> list[Any]:
    """Feed ``data`` cut into pieces of the given sizes (the rest in one last piece)."""
    out: list[Any] = []
    pos = 0
    for n in sizes:
        out += decoder.feed(data[pos : pos + n])
        pos += n
    out += decoder.feed(data[pos:])
    return out


def with_length(frame: Frame) -> Frame:
    """What the decoder yields for ``encode(frame)``: the content-length header appended."""
    if not frame.body:
        return frame
    headers = tuple(h for h in frame.headers if h[0] != "content-length")
    return Frame(frame.command, headers + (("content-length", str(len(frame.body))),), frame.body)


def one_error(data: bytes, **kw: Any) -> StompError:
    items = StompDecoder(**kw).feed(data)
    assert isinstance(items[-1], StompError), items
    assert errors_of(items) == [items[-1]]
    return items[-1]


# ------------------------------------------------------------------ every command

TYPICAL: dict[str, Frame] = {
    "CONNECT": Frame(
        "CONNECT",
        (("accept-version", "1.0,1.1,1.2"), ("host", "/"), ("login", "guest"), ("passcode", "g")),
    ),
    "STOMP": Frame("STOMP", (("accept-version", "1.2"), ("host", "/"), ("heart-beat", "0,0"))),
    "SEND": Frame("SEND", (("destination", "/queue/a"), ("receipt", "r1")), b"hello"),
    "SUBSCRIBE": Frame("SUBSCRIBE", (("id", "0"), ("destination", "/topic/x"), ("ack", "client"))),
    "UNSUBSCRIBE": Frame("UNSUBSCRIBE", (("id", "0"),)),
    "ACK": Frame("ACK", (("id", "m-1"), ("transaction", "tx1"))),
    "NACK": Frame("NACK", (("id", "m-1"), ("requeue", "false"))),
    "BEGIN": Frame("BEGIN", (("transaction", "tx1"),)),
    "COMMIT": Frame("COMMIT", (("transaction", "tx1"),)),
    "ABORT": Frame("ABORT", (("transaction", "tx1"),)),
    "DISCONNECT": Frame("DISCONNECT", (("receipt", "bye"),)),
    "CONNECTED": Frame("CONNECTED", (("version", "1.2"), ("heart-beat", "0,0"), ("server", "m"))),
    "MESSAGE": Frame(
        "MESSAGE",
        (("subscription", "0"), ("message-id", "7"), ("destination", "/queue/a"), ("ack", "7")),
        b"\x00\x01binary\xff\x00",
    ),
    "RECEIPT": Frame("RECEIPT", (("receipt-id", "bye"),)),
    "ERROR": Frame("ERROR", (("message", "malformed frame"),), b"details\nhere"),
}


def test_the_table_covers_every_command() -> None:
    assert set(TYPICAL) == ALL_COMMANDS
    assert CLIENT_COMMANDS.isdisjoint(SERVER_COMMANDS)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("command", sorted(ALL_COMMANDS))
def test_every_command_round_trips(command: str, version: str) -> None:
    frame = TYPICAL[command]
    side = CLIENT_COMMANDS if command in CLIENT_COMMANDS else SERVER_COMMANDS
    decoder = StompDecoder(version=version, commands=side)
    assert decoder.feed(encode(frame, version)) == [with_length(frame)]


def test_the_exact_bytes_of_a_frame() -> None:
    send = Frame("SEND", (("destination", "/queue/a"),), b"hi")
    assert encode(send, "1.2") == b"SEND\ndestination:/queue/a\ncontent-length:2\n\nhi\x00"
    assert encode(Frame("CONNECTED", (("version", "1.2"),)), "1.2") == (
        b"CONNECTED\nversion:1.2\n\n\x00"
    )
    assert encode(Frame("DISCONNECT"), "1.0") == b"DISCONNECT\n\n\x00"
    assert heartbeat() == b"\n"


def test_content_length_is_the_encoders_business() -> None:
    # any content-length the frame carries is replaced by the true one
    lying = Frame("SEND", (("content-length", "99"), ("destination", "q")), b"abc")
    assert encode(lying) == b"SEND\ndestination:q\ncontent-length:3\n\nabc\x00"
    assert encode(Frame("SEND", (("content-length", "5"),))) == b"SEND\n\n\x00"
    # content_length=False leaves it out only where the body can be NUL-terminated
    assert encode(Frame("SEND", (), b"abc"), content_length=False) == b"SEND\n\nabc\x00"
    assert b"content-length:4" in encode(Frame("SEND", (), b"a\x00bc"), content_length=False)
    assert b"content-length:3" in encode(Frame("MESSAGE", (), b"abc"), content_length=False)
    assert b"content-length:3" in encode(Frame("ERROR", (), b"abc"), content_length=False)


def test_encode_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="unknown STOMP command"):
        encode(Frame("send"))
    with pytest.raises(ValueError, match="unknown STOMP version"):
        encode(Frame("SEND"), "1.3")
    for version in VERSIONS:
        with pytest.raises(ValueError, match="empty"):
            encode(Frame("SEND", (("", "v"),)), version)
    with pytest.raises(ValueError):
        encode(Frame("SEND", (("a", "x\ny"),)), "1.0")
    with pytest.raises(ValueError):
        encode(Frame("SEND", (("a:b", "v"),)), "1.0")
    with pytest.raises(ValueError):
        encode(Frame("SEND", (("a", "x\r"),)), "1.0")
    with pytest.raises(ValueError, match="1.1 cannot end a value with CR"):
        encode(Frame("SEND", (("a", "x\r"),)), "1.1")
    with pytest.raises(ValueError):  # CONNECT is never escaped, whatever the version
        encode(Frame("CONNECT", (("passcode", "a\nb"),)), "1.2")
    assert encode(Frame("SEND", (("a", "x\r"),)), "1.2") == b"SEND\na:x\\r\n\n\x00"


# ------------------------------------------------------------------ escaping


def test_escaping_per_version() -> None:
    frame = Frame("SEND", (("k:\\", "a:b\nc\\d\re"),))
    assert encode(frame, "1.2") == b"SEND\nk\\c\\\\:a\\cb\\nc\\\\d\\re\n\n\x00"
    assert encode(frame, "1.1") == b"SEND\nk\\c\\\\:a\\cb\\nc\\\\d\re\n\n\x00"
    for version in ("1.1", "1.2"):
        assert StompDecoder(version=version).feed(encode(frame, version)) == [frame]


def test_unescaping_per_version() -> None:
    wire = b"SEND\nk\\c:a\\cb\\nc\\\\d\n\n\x00"
    for version in ("1.1", "1.2"):
        assert StompDecoder(version=version).feed(wire) == [Frame("SEND", (("k:", "a:b\nc\\d"),))]
    # \r is an escape from 1.2 on
    assert StompDecoder(version="1.2").feed(b"SEND\na:x\\ry\n\n\x00") == [
        Frame("SEND", (("a", "x\ry"),))
    ]
    err = one_error(b"SEND\na:x\\ry\n\n\x00", version="1.1")
    assert err.code == "BAD_FRAME" and "undefined escape sequence '\\\\r'" in err.message


def test_stomp_1_0_leaves_backslashes_alone() -> None:
    wire = b"SEND\nx\\n:a\\nb\\c\\t\\\n\n\x00"
    assert StompDecoder(version="1.0").feed(wire) == [Frame("SEND", (("x\\n", "a\\nb\\c\\t\\"),))]
    frame = Frame("SEND", (("a\\b", "c\\d:e"),))
    assert encode(frame, "1.0") == b"SEND\na\\b:c\\d:e\n\n\x00"
    assert StompDecoder(version="1.0").feed(encode(frame, "1.0")) == [frame]


@pytest.mark.parametrize("command", sorted(UNESCAPED_COMMANDS))
def test_connect_frames_are_never_escaped(command: str) -> None:
    frame = Frame(command, (("login", "a\\b"), ("passcode", "x:y\\n")))
    for version in VERSIONS:
        wire = encode(frame, version)
        assert b"login:a\\b\npasscode:x:y\\n\n" in wire
        side = SERVER_COMMANDS if command == "CONNECTED" else CLIENT_COMMANDS
        decoder = StompDecoder(version=version, commands=side)
        assert decoder.feed(wire) == [frame]


@pytest.mark.parametrize("version", ("1.1", "1.2"))
@pytest.mark.parametrize("bad", [b"\\t", b"\\x", b"\\ ", b"\\", b"\\C", b"\\N"])
def test_an_undefined_escape_is_fatal(version: str, bad: bytes) -> None:
    for line in (b"a:" + bad, b"a" + bad + b":v"):
        err = one_error(b"SEND\n" + line + b"\n\n\x00", version=version)
        assert err.code == "BAD_FRAME" and err.fatal
        assert "undefined escape sequence" in err.message


def test_headers_are_utf8_and_any_bytes_come_back_unchanged() -> None:
    wire = b"SEND\nn\xc3\xa9:\xe2\x82\xac \xff\xfe\n\n\x00"
    (frame,) = StompDecoder(version="1.2").feed(wire)
    assert isinstance(frame, Frame)
    assert frame.headers[0][0] == "né" and frame.headers[0][1].startswith("€ ")
    assert encode(frame, "1.2") == wire


def test_repeated_headers_are_kept_and_the_first_wins() -> None:
    wire = b"SEND\nfoo:1\nfoo:2\ncontent-length:3\ncontent-length:5\n\nabc\x00"
    (frame,) = StompDecoder().feed(wire)
    assert isinstance(frame, Frame)
    assert frame.headers == (
        ("foo", "1"),
        ("foo", "2"),
        ("content-length", "3"),
        ("content-length", "5"),
    )
    assert frame.body == b"abc"
    assert frame.header("foo") == "1"
    assert frame.header("bar") is None and frame.header("bar", "x") == "x"
    assert frame.header_map() == {"foo": "1", "content-length": "3"}


def test_values_keep_their_colons_and_blanks() -> None:
    (frame,) = StompDecoder().feed(b"SEND\ndestination: /queue/a:b \nempty:\n\n\x00")
    assert isinstance(frame, Frame)
    assert frame.headers == (("destination", " /queue/a:b "), ("empty", ""))


# ------------------------------------------------------------------ framing

MIXED_STREAM = (
    b"CONNECT\naccept-version:1.1,1.2\nhost:/\npasscode:a\\b\n\n\x00\n"
    b"\n\n"  # heart-beats
    b"SEND\ndestination:/queue/a\\cb\ncontent-length:5\n\na\x00b\x00c\x00\n\r\n"
    b"SEND\ndestination:/queue/x\nreceipt:r\\n1\n\nnul-terminated\x00"
    b"SUBSCRIBE\r\nid:0\r\ndestination:/topic/t\r\n\r\n\x00\r\n"
    b"ACK\nid:1\n\n\x00"
    b"SEND\ndestination:q\ncontent-length:0\n\n\x00"
    b"DISCONNECT\r\nreceipt:bye\r\n\r\n\x00\r\n\r\n"
)
MIXED_FRAMES = [
    Frame("CONNECT", (("accept-version", "1.1,1.2"), ("host", "/"), ("passcode", "a\\b"))),
    Frame("SEND", (("destination", "/queue/a:b"), ("content-length", "5")), b"a\x00b\x00c"),
    Frame("SEND", (("destination", "/queue/x"), ("receipt", "r\n1")), b"nul-terminated"),
    Frame("SUBSCRIBE", (("id", "0"), ("destination", "/topic/t"))),
    Frame("ACK", (("id", "1"),)),
    Frame("SEND", (("destination", "q"), ("content-length", "0"))),
    Frame("DISCONNECT", (("receipt", "bye"),)),
]


def test_a_stream_of_frames_eols_and_heartbeats() -> None:
    decoder = StompDecoder()
    items = decoder.feed(MIXED_STREAM)
    assert frames_of(items) == MIXED_FRAMES
    assert decoder.version == "1.2"  # switched by the CONNECT, for the frames behind it
    assert not errors_of(items)
    assert items.count(HEARTBEAT) == 4
    assert all(isinstance(i, (Frame, HeartBeat)) for i in items)


def every_command_stream(version: str) -> tuple[bytes, list[Frame]]:
    """A CONNECT, then every client command encoded for ``version``, EOLs between them."""
    connect = Frame("CONNECT", (("accept-version", version), ("host", "/")))
    tricky = Frame("SEND", (("destination", "/q/a\\b:c"), ("x", "l1\nl2")), b"x\x00y")
    if version == "1.0":
        tricky = Frame("SEND", (("destination", "/q/a\\b:c"),), b"x\x00y")
    rest = [TYPICAL[c] for c in sorted(CLIENT_COMMANDS - {"CONNECT"})] + [tricky]
    data = encode(connect, version) + b"\n" + b"\r\n".join(encode(f, version) for f in rest)
    return data + b"\n", [with_length(f) for f in [connect, *rest]]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_split_gives_the_same_frames(version: str) -> None:
    data, expected = every_command_stream(version)
    assert len(expected) == len(CLIENT_COMMANDS) + 1
    for cut in range(len(data) + 1):
        decoder = StompDecoder()
        items = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert frames_of(items) == expected, cut
        assert not errors_of(items)
        assert not decoder._buf  # nothing left over
    decoder = StompDecoder()
    items = feed_chunks(decoder, data, [1] * len(data))
    assert frames_of(items) == expected


@pytest.mark.parametrize("version", VERSIONS)
def test_every_split_of_the_servers_frames_gives_the_same_frames(version: str) -> None:
    connected = Frame("CONNECTED", (("version", version), ("heart-beat", "0,0")))
    message = Frame("MESSAGE", (("destination", "/q/a\\b"), ("message-id", "m:1")), b"\x00x")
    frames = [connected] + [TYPICAL[c] for c in sorted(SERVER_COMMANDS - {"CONNECTED"})]
    frames.append(message)
    data = b"\n".join(encode(f, version) for f in frames) + b"\r\n"
    expected = [with_length(f) for f in frames]
    for cut in range(len(data) + 1):
        decoder = StompDecoder(commands=SERVER_COMMANDS)
        items = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert frames_of(items) == expected, cut
        assert decoder.version == version
    decoder = StompDecoder(commands=SERVER_COMMANDS)
    assert frames_of(feed_chunks(decoder, data, [1] * len(data))) == expected


def test_every_split_of_the_mixed_stream_gives_the_same_frames() -> None:
    for cut in range(len(MIXED_STREAM) + 1):
        decoder = StompDecoder()
        items = decoder.feed(MIXED_STREAM[:cut]) + decoder.feed(MIXED_STREAM[cut:])
        assert frames_of(items) == MIXED_FRAMES, cut
    assert (
        frames_of(feed_chunks(StompDecoder(), MIXED_STREAM, [1] * len(MIXED_STREAM)))
        == MIXED_FRAMES
    )


def test_every_split_of_a_bad_stream_gives_the_same_error() -> None:
    data = b"SEND\ndestination:q\n\nok\x00SEND\ncontent-length:2\n\nabc\x00"
    expected = StompDecoder().feed(data)
    assert frames_of(expected) == [Frame("SEND", (("destination", "q"),), b"ok")]
    (err,) = errors_of(expected)
    assert err.code == "BAD_FRAME" and "no NUL after the 2-byte body" in err.message
    for cut in range(len(data) + 1):
        decoder = StompDecoder()
        items = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert frames_of(items) == frames_of(expected), cut
        assert errors_of(items) == errors_of(expected), cut


# ------------------------------------------------------------------ heart-beats


def test_heartbeats_are_reported_never_as_frames() -> None:
    decoder = StompDecoder()
    assert decoder.feed(b"\n") == [HEARTBEAT]
    assert decoder.feed(b"\r\n\n\r\n") == [HEARTBEAT]  # one run, one item
    assert decoder.feed(b"\r") == []  # may be half a CRLF
    assert decoder.feed(b"\n") == [HEARTBEAT]
    assert decoder.feed(b"ACK\nid:1\n\n\x00\n\n") == [Frame("ACK", (("id", "1"),)), HEARTBEAT]
    assert decoder.feed(b"") == []
    assert not decoder._buf


def test_a_flood_of_heartbeats_is_not_buffered() -> None:
    decoder = StompDecoder()
    for _ in range(100):
        assert decoder.feed(b"\n\r\n" * 10_000) == [HEARTBEAT]
        assert not decoder._buf


def test_a_cr_that_is_not_an_eol_starts_a_command() -> None:
    err = one_error(b"\rSEND\n\n\x00")
    assert err.code == "BAD_COMMAND" and "\\rSEND" in err.message


def test_heartbeat_header_parsing() -> None:
    assert parse_heartbeat(None) == (0, 0)
    assert parse_heartbeat("0,0") == (0, 0)
    assert parse_heartbeat("10000,5000") == (10000, 5000)
    assert parse_heartbeat(" 100 , 200 ") == (100, 200)
    for bad in ("", "1", "1,2,3", "a,b", "-1,0", "1.5,0", ",", "1,", "\u0661,0", "9" * 19 + ",0"):
        with pytest.raises(StompError) as info:
            parse_heartbeat(bad)
        assert info.value.code == "BAD_ARGS" and info.value.fatal
        assert "heart-beat" in info.value.message


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        ((0, 0), (5000, 5000), (0, 0)),  # the client wants none, sends none
        ((4000, 6000), (0, 0), (0, 0)),  # the server does none
        ((4000, 6000), (5000, 5000), (6000, 5000)),
        ((1000, 1000), (5000, 10000), (5000, 10000)),
        ((0, 3000), (5000, 5000), (5000, 0)),  # client sends none: nothing to expect
        ((3000, 0), (5000, 5000), (0, 5000)),  # client wants none: nothing to send
    ],
)
def test_heartbeat_negotiation(
    client: tuple[int, int], server: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert negotiate_heartbeat(client, server) == expected
    # the client's view is the same rule with the sides swapped
    send, expect = expected
    assert negotiate_heartbeat(server, client) == (expect, send)


# ------------------------------------------------------------------ versions


def test_version_negotiation() -> None:
    assert negotiate_version(None) == "1.0"  # no accept-version: a 1.0 client
    assert negotiate_version("1.0,1.1,1.2") == "1.2"
    assert negotiate_version("1.2,1.0") == "1.2"
    assert negotiate_version("1.1, 1.0") == "1.1"
    assert negotiate_version("1.0,1.1,1.2", ("1.0", "1.1")) == "1.1"
    assert negotiate_version("2.0,1.1") == "1.1"
    assert negotiate_version("2.0") is None
    assert negotiate_version("") is None
    assert negotiate_version(None, ("1.1", "1.2")) is None
    assert parse_accept_version("1.1, 1.2,") == ("1.1", "1.2")
    assert parse_accept_version(None) == ("1.0",)


def test_the_decoder_follows_the_connect() -> None:
    # a SEND pipelined right behind the CONNECT is read with the agreed version
    data = b"CONNECT\naccept-version:1.1,1.2\n\n\x00SEND\na:x\\ry\n\n\x00"
    decoder = StompDecoder()
    assert decoder.version == "1.0"
    assert frames_of(decoder.feed(data))[1] == Frame("SEND", (("a", "x\ry"),))
    assert decoder.version == "1.2"
    # only the first CONNECT counts
    decoder.feed(b"CONNECT\naccept-version:1.0\n\n\x00")
    assert decoder.version == "1.2"
    # a 1.0 CONNECT (no accept-version) keeps 1.0: a backslash is a backslash
    decoder = StompDecoder()
    items = decoder.feed(b"STOMP\n\n\x00SEND\na:x\\ry\n\n\x00")
    assert frames_of(items)[1] == Frame("SEND", (("a", "x\\ry"),)) and decoder.version == "1.0"
    # no common version: unchanged (the server refuses the CONNECT)
    decoder = StompDecoder(versions=("1.2",))
    decoder.feed(b"CONNECT\naccept-version:1.1\n\n\x00")
    assert decoder.version == "1.0"
    # a client's decoder follows the CONNECTED
    decoder = StompDecoder(commands=SERVER_COMMANDS)
    decoder.feed(b"CONNECTED\nversion:1.1\n\n\x00")
    assert decoder.version == "1.1"
    decoder = StompDecoder(commands=SERVER_COMMANDS)
    decoder.feed(b"CONNECTED\n\n\x00")
    assert decoder.version == "1.0"


def test_the_version_can_be_set_and_is_checked() -> None:
    decoder = StompDecoder()
    decoder.version = "1.1"
    assert decoder.feed(b"SEND\na:\\c\n\n\x00") == [Frame("SEND", (("a", ":"),))]
    with pytest.raises(ValueError, match="unknown STOMP version"):
        decoder.version = "2.0"
    with pytest.raises(ValueError):
        StompDecoder(version="1.3")


# ------------------------------------------------------------------ limits and bad input


def test_the_default_limits() -> None:
    decoder = StompDecoder()
    assert (MAX_LINE, MAX_HEADER_BYTES, MAX_HEADERS, MAX_BODY) == (8192, 65536, 100, 1 << 20)
    assert (decoder.max_line, decoder.max_header_bytes) == (MAX_LINE, MAX_HEADER_BYTES)
    assert (decoder.max_headers, decoder.max_body) == (MAX_HEADERS, MAX_BODY)


def test_a_header_line_at_the_limit_passes_one_byte_more_fails() -> None:
    ok = b"SEND\n" + b"a:" + b"v" * 14 + b"\r\n\n\x00"  # 16 bytes, and a CRLF
    assert frames_of(StompDecoder(max_line=16).feed(ok))
    bad = b"SEND\n" + b"a:" + b"v" * 15 + b"\n\n\x00"
    err = one_error(bad, max_line=16)
    assert err.code == "LINE_TOO_LONG" and "16 bytes" in err.message and err.fatal


def test_a_long_line_is_refused_before_it_ends() -> None:
    decoder = StompDecoder(max_line=16)
    assert decoder.feed(b"SEND\na:" + b"v" * 13) == []
    assert decoder.feed(b"v\r") == []  # 17 bytes, the last a CR: may still be 16 + CRLF
    (err,) = decoder.feed(b"v")
    assert isinstance(err, StompError) and err.code == "LINE_TOO_LONG"
    assert decoder.error is err
    assert decoder.feed(b"\n\n\x00") == []  # a failed decoder stays failed
    # the command line too
    err = one_error(b"X" * 40, max_line=16)
    assert err.code == "LINE_TOO_LONG"


def test_the_head_size_limit() -> None:
    head = b"SEND\n" + b"".join(b"h%02d:vvvvv\n" % i for i in range(10))  # 5 + 100 bytes
    assert len(head) == 105
    assert frames_of(StompDecoder(max_header_bytes=105).feed(head + b"\n\x00"))
    err = one_error(head + b"\n\x00", max_header_bytes=104)
    assert err.code == "TOO_BIG" and "frame headers longer than 104 bytes" in err.message
    # an unfinished head is refused as soon as it is too long, not when it ends
    decoder = StompDecoder(max_header_bytes=104)
    items = decoder.feed(head * 3)
    assert len(errors_of(items)) == 1 and errors_of(items)[0].code == "TOO_BIG"


def test_the_header_count_limit() -> None:
    def frame(n: int) -> bytes:
        return b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(n)) + b"\n\x00"

    assert len(frames_of(StompDecoder(max_headers=5).feed(frame(5)))[0].headers) == 5
    err = one_error(frame(6), max_headers=5)
    assert err.code == "TOO_BIG" and "more than 5 headers" in err.message
    assert one_error(frame(MAX_HEADERS + 1)).code == "TOO_BIG"
    assert frames_of(StompDecoder().feed(frame(MAX_HEADERS)))


def test_the_body_size_limit_with_content_length() -> None:
    ok = b"SEND\ncontent-length:10\n\n" + b"\x00" * 10 + b"\x00"
    assert frames_of(StompDecoder(max_body=10).feed(ok))[0].body == b"\x00" * 10
    # refused from the header alone, before any of the body comes
    err = one_error(b"SEND\ncontent-length:11\n\n", max_body=10)
    assert err.code == "TOO_BIG" and "larger than 10 bytes" in err.message
    assert one_error(b"SEND\ncontent-length:" + b"9" * 40 + b"\n\n").code == "TOO_BIG"
    assert one_error(b"SEND\ncontent-length:%d\n\n" % (MAX_BODY + 1)).code == "TOO_BIG"


def test_the_body_size_limit_without_content_length() -> None:
    ok = b"SEND\n\n" + b"x" * 10 + b"\x00"
    assert frames_of(StompDecoder(max_body=10).feed(ok))[0].body == b"x" * 10
    assert one_error(b"SEND\n\n" + b"x" * 11 + b"\x00", max_body=10).code == "TOO_BIG"
    # refused once more than max_body bytes came without a NUL
    decoder = StompDecoder(max_body=10)
    assert decoder.feed(b"SEND\n\n" + b"x" * 10) == []
    (err,) = decoder.feed(b"x")
    assert isinstance(err, StompError) and err.code == "TOO_BIG"


@pytest.mark.parametrize(
    "value", [b"", b"abc", b"-1", b" 5", b"5 ", b"+5", b"0x5", b"1e3", "\u0665".encode()]
)
def test_a_bad_content_length(value: bytes) -> None:
    err = one_error(b"SEND\ncontent-length:" + value + b"\n\nhello\x00")
    assert err.code == "BAD_FRAME" and "bad content-length" in err.message and err.fatal


def test_a_missing_nul_after_a_content_length_body() -> None:
    err = one_error(b"SEND\ncontent-length:3\n\nabcd\x00")
    assert err.code == "BAD_FRAME" and "no NUL after the 3-byte body" in err.message


@pytest.mark.parametrize(
    ("line", "what"),
    [(b"no-colon", "no ':'"), (b":empty-name", "an empty name"), (b" ", "no ':'")],
)
def test_a_malformed_header_line(line: bytes, what: str) -> None:
    err = one_error(b"SEND\ndestination:q\n" + line + b"\n\n\x00")
    assert err.code == "BAD_FRAME" and f"malformed header line '{line.decode()}'" in err.message
    assert what in err.message


@pytest.mark.parametrize(
    "command", [b"send", b"Send", b"SEND ", b" SEND", b"FOO", b"\x00", b"\xff"]
)
def test_an_unknown_command(command: bytes) -> None:
    err = one_error(command + b"\n\n\x00")
    assert err.code == "BAD_COMMAND" and "unknown command" in err.message


def test_each_side_knows_only_the_other_sides_commands() -> None:
    assert one_error(b"MESSAGE\n\n\x00").code == "BAD_COMMAND"
    assert one_error(b"SEND\n\n\x00", commands=SERVER_COMMANDS).code == "BAD_COMMAND"


def test_frames_before_an_error_come_first_and_nothing_after() -> None:
    decoder = StompDecoder()
    items = decoder.feed(b"ACK\nid:1\n\n\x00\nBOGUS\n\n\x00ACK\nid:2\n\n\x00")
    assert items[0] == Frame("ACK", (("id", "1"),))
    assert items[1] == HEARTBEAT
    assert isinstance(items[2], StompError) and len(items) == 3
    assert decoder.feed(b"ACK\nid:3\n\n\x00") == []
    assert not decoder._buf


def test_error_messages_fit_on_one_header_line() -> None:
    err = one_error(b"\x01\n" * 1 + b"\n\x00")
    assert "\n" not in err.message
    err = one_error(b"SEND\n" + b"x\r\x07" * 30 + b"\n\n\x00")
    assert "\n" not in err.message and len(err.message) < 200
    # an ERROR frame can carry any of them, whatever the version
    for version in VERSIONS:
        encode(Frame("ERROR", (("message", err.message),)), version)


# ------------------------------------------------------------------ hypothesis

header_text = st.text(
    st.one_of(st.sampled_from(":\n\\\r,- "), st.characters(codec="utf-8")), max_size=12
)
commands = st.sampled_from(sorted(ALL_COMMANDS - UNESCAPED_COMMANDS))


def writable(name: str, value: str, version: str, command: str) -> bool:
    """Whether ``version`` can carry this header (what encode() refuses otherwise)."""
    if not name or name == "content-length":
        return False
    if version == "1.0" or command in UNESCAPED_COMMANDS:
        return ":" not in name and "\n" not in name + value and not value.endswith("\r")
    return version == "1.2" or not value.endswith("\r")


@st.composite
def frames_for(draw: Any, version: str, command_strategy: Any = commands) -> Frame:
    command = draw(command_strategy)
    pairs = draw(st.lists(st.tuples(header_text, header_text), max_size=6))
    headers = tuple((n, v) for n, v in pairs if writable(n, v, version, command))
    return Frame(command, headers, draw(st.binary(max_size=64)))


@st.composite
def streams(draw: Any) -> tuple[str, list[Frame], list[bool]]:
    version = draw(st.sampled_from(VERSIONS))
    frames = draw(st.lists(frames_for(version), min_size=1, max_size=5))
    lengths = draw(st.lists(st.booleans(), min_size=len(frames), max_size=len(frames)))
    return version, frames, lengths


def expected_after_round_trip(frame: Frame, content_length: bool) -> Frame:
    body = frame.body
    if body and (content_length or frame.command in ("MESSAGE", "ERROR") or b"\0" in body):
        return with_length(frame)
    return frame


@PROPS
@given(streams(), st.lists(st.integers(1, 40), max_size=30), st.sampled_from([b"", b"\n", b"\r\n"]))
def test_round_trip_in_any_split(
    stream: tuple[str, list[Frame], list[bool]], sizes: list[int], gap: bytes
) -> None:
    version, frames, lengths = stream
    data = gap.join(encode(f, version, content_length=c) for f, c in zip(frames, lengths))
    decoder = StompDecoder(version=version, commands=ALL_COMMANDS)
    items = feed_chunks(decoder, data, sizes)
    assert not errors_of(items)
    assert frames_of(items) == [expected_after_round_trip(f, c) for f, c in zip(frames, lengths)]
    assert not decoder._buf


@PROPS
@given(
    st.sampled_from(VERSIONS).flatmap(
        lambda v: st.tuples(st.just(v), frames_for(v, st.sampled_from(sorted(UNESCAPED_COMMANDS))))
    )
)
def test_connect_frames_round_trip_unescaped(pair: tuple[str, Frame]) -> None:
    version, frame = pair
    commands_ = SERVER_COMMANDS if frame.command == "CONNECTED" else CLIENT_COMMANDS
    decoder = StompDecoder(version=version, commands=commands_)
    assert decoder.feed(encode(frame, version)) == [with_length(frame)]


@PROPS
@given(
    st.sampled_from(VERSIONS),
    st.lists(
        st.one_of(
            st.binary(max_size=30),
            st.sampled_from([b"SEND\n", b"content-length:5\n", b"\n", b"\r\n", b"\x00", b":"]),
        ),
        max_size=20,
    ),
)
def test_any_bytes_give_items_or_one_error_and_a_bounded_buffer(
    version: str, chunks: list[bytes]
) -> None:
    decoder = StompDecoder(version=version, max_header_bytes=64, max_body=32, max_line=16)
    bound = max(64 + 3, 32 + 1)
    errors = 0
    for chunk in chunks:
        for item in decoder.feed(chunk):
            assert isinstance(item, (Frame, HeartBeat, StompError))
            errors += isinstance(item, StompError)
        assert len(decoder._buf) <= bound
    assert errors <= 1


# ------------------------------------------------------------------ linear scanning


class Work:
    """Bytes the decoder copies or searches: a search counts up to its match, or its range."""

    total = 0


class CountingBuffer(bytearray):
    """The decoder's buffer, counting the bytes each operation may touch."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        Work.total += len(self)  # a copy into a new buffer

    def __iadd__(self, other: Any) -> Any:  # type: ignore[misc]
        Work.total += len(other)
        return super().__iadd__(other)

    def __delitem__(self, key: Any) -> None:
        if isinstance(key, slice):
            Work.total += len(self)  # what is left is moved down
        super().__delitem__(key)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, _ = key.indices(len(self))
            Work.total += max(0, stop - start)
        return super().__getitem__(key)

    def find(self, sub: Any, start: Any = 0, end: Any = sys.maxsize) -> int:
        found = super().find(sub, start, end)
        Work.total += max(0, (found + 1 if found >= 0 else min(end, len(self))) - start)
        return found

    def rfind(self, sub: Any, start: Any = 0, end: Any = sys.maxsize) -> int:
        Work.total += max(0, min(end, len(self)) - start)
        return super().rfind(sub, start, end)


class CountingPattern:
    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern

    def search(self, buf: Any, pos: int = 0, endpos: int = sys.maxsize) -> Any:
        m = self.pattern.search(buf, pos, endpos)
        Work.total += max(0, (m.end() if m else min(endpos, len(buf))) - pos)
        return m

    def match(self, buf: Any, pos: int = 0) -> Any:
        m = self.pattern.match(buf, pos)
        Work.total += 1 + (m.end() - pos if m else 0)
        return m


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[Work]:
    monkeypatch.setattr(stomp, "bytearray", CountingBuffer, raising=False)
    monkeypatch.setattr(stomp, "_HEAD_END", CountingPattern(stomp._HEAD_END))
    monkeypatch.setattr(stomp, "_EOLS", CountingPattern(stomp._EOLS))
    Work.total = 0
    return Work


def work_to_decode(data: bytes, chunk: int, **kw: Any) -> tuple[int, list[Any]]:
    decoder = StompDecoder(**kw)
    assert isinstance(decoder._buf, CountingBuffer)
    Work.total = 0
    items: list[Any] = []
    for pos in range(0, len(data), chunk):
        items += decoder.feed(data[pos : pos + chunk])
    assert not errors_of(items)
    return Work.total, items


@pytest.mark.parametrize("size", [64 << 10, 1 << 20])
def test_a_large_body_in_small_chunks_is_linear(counting: type[Work], size: int) -> None:
    body = bytes(range(256)) * (size // 256)
    with_cl = encode(Frame("SEND", (("destination", "q"),), body))
    work, items = work_to_decode(with_cl, 16, max_body=size)
    assert frames_of(items)[0].body == body
    assert work <= 6 * len(with_cl), work  # about 3: append, slice, copy
    no_nul = body.replace(b"\x00", b"\x01")
    nul_terminated = encode(Frame("SEND", (), no_nul), content_length=False)
    work, items = work_to_decode(nul_terminated, 16, max_body=size)
    assert frames_of(items)[0].body == no_nul
    assert work <= 6 * len(nul_terminated), work  # about 4: append, find, slice, copy


def test_a_large_head_a_byte_at_a_time_is_linear(counting: type[Work]) -> None:
    head = b"SEND\n" + b"".join(b"header-%03d:%s\n" % (i, b"v" * 500) for i in range(100))
    data = head + b"\n\x00"
    work, items = work_to_decode(data, 1)
    assert len(frames_of(items)[0].headers) == 100
    assert work <= 12 * len(data), work


def test_many_small_frames_are_linear(counting: type[Work]) -> None:
    one = encode(Frame("SEND", (("destination", "/queue/a"),), b"payload")) + b"\n"
    data = one * 20_000
    for chunk in (len(data), 4096, 7):
        work, items = work_to_decode(data, chunk)
        assert len(frames_of(items)) == 20_000
        assert work <= 8 * len(data), (chunk, work)


def test_the_counters_would_catch_a_rescan(counting: type[Work]) -> None:
    # the measure itself: a decoder that forgot how far it had looked would count more
    decoder = StompDecoder()
    decoder.feed(b"SEND\n\n" + b"x" * 1000)
    before = Work.total
    decoder._scan = 0  # pretend it forgot
    decoder.feed(b"x")
    assert Work.total - before > 1000
