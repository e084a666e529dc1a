"""Tests for mbroker.wire: the sans-IO codec, both directions, example by example.

The hypothesis round-trip and fuzz properties live in ``test_wire_props.py``.
"""

from __future__ import annotations

import typing
from typing import Any

import pytest

from mbroker import errors
from mbroker.errors import BadArgs, BadCommand, BadFrame, LineTooLong, TooBig
from mbroker.wire import (
    CommandDecoder,
    ReplyDecoder,
    encode,
    encode_command,
    encode_frame,
    error_line,
    frames,
    grammar,
    hello_line,
    help_reply,
    msg_header,
    route_bytes,
    status,
    valid_key,
    valid_name,
    valid_pattern,
)
from mbroker.wire.frames import (
    Ack,
    Auth,
    Bind,
    Cancel,
    Create,
    Delete,
    Error,
    ExchangeInfo,
    Hello,
    Help,
    HelpLine,
    Msg,
    Nack,
    Ok,
    Ping,
    Pong,
    Publish,
    PublishRun,
    Pull,
    Purge,
    QueueInfo,
    QueueOptions,
    Quit,
    Stat,
    Stats,
    Subscribe,
    Touch,
    Unbind,
    Unsubscribe,
)


def decode(data: bytes, **kw: int) -> list[Any]:
    return CommandDecoder(**kw).feed(data)


def one(line: bytes, **kw: int) -> Any:
    items = decode(line, **kw)
    assert len(items) == 1, items
    return items[0]


def flat(items: list[Any]) -> list[Any]:
    """Runs of PUBLISH (``PublishRun``) as the single ``Publish`` items they stand for."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, PublishRun):
            assert len(item.payloads) >= 2
            out += [Publish(item.name, item.key, p, item.ttl) for p in item.payloads]
        else:
            out.append(item)
    return out


def assert_any_split(data: bytes, **kw: int) -> list[Any]:
    """Every two-way split and the byte-at-a-time feed give what one feed gives
    (how PUBLISH commands are grouped into runs may differ; the commands may not)."""
    whole_decoder = CommandDecoder(**kw)
    whole = flat(whole_decoder.feed(data))
    for i in range(len(data) + 1):
        d = CommandDecoder(**kw)
        assert flat(d.feed(data[:i]) + d.feed(data[i:])) == whole, i
        assert d.closed == whole_decoder.closed
    d = CommandDecoder(**kw)
    assert [item for i in range(len(data)) for item in flat(d.feed(data[i : i + 1]))] == whole
    return whole


# ------------------------------------------------------------------ names and keys


@pytest.mark.parametrize(
    "name, ok",
    [
        ("q", True),
        ("A-z_0.9", True),
        ("x" * 255, True),
        ("x" * 256, False),
        ("", False),
        ("a b", False),
        ("a*", False),
        ("é", False),
        ("a/b", False),
        ("a=b", False),
    ],
)
def test_valid_name(name: str, ok: bool) -> None:
    assert valid_name(name) is ok


@pytest.mark.parametrize(
    "key, ok",
    [
        ("", True),
        ("a", True),
        ("sport.uk", True),
        ("a-b.c_d.9", True),
        ("-.a", True),
        ("-", False),
        (".a", False),
        ("a.", False),
        ("a..b", False),
        (".", False),
        ("a.*", False),
        ("#", False),
        ("a b", False),
        ("é", False),
        ("a" * 255, True),
        ("a" * 256, False),
    ],
)
def test_valid_key(key: str, ok: bool) -> None:
    assert valid_key(key) is ok


@pytest.mark.parametrize(
    "pattern, ok",
    [
        ("", True),
        ("#", True),
        ("*", True),
        ("*.uk.#", True),
        ("sport.*", True),
        ("a.b", True),
        ("a*", False),
        ("a.#b", False),
        ("**", False),
        ("#.", False),
        ("a..#", False),
        ("-", False),
        ("a" * 256, False),
    ],
)
def test_valid_pattern(pattern: str, ok: bool) -> None:
    assert valid_pattern(pattern) is ok


# ------------------------------------------------------------------ commands, valid

Q = QueueOptions

VALID = [
    (b"CREATE q", Create("q")),
    (b"CREATE q queue", Create("q", "queue")),
    (b"create Q QUEUE", Create("Q", "queue")),
    (b"CREATE x direct", Create("x", "direct")),
    (b"CREATE x fanout DURABLE", Create("x", "fanout", Q(durable=True))),
    (b"CREATE x topic durable", Create("x", "topic", Q(durable=True))),
    (b"CREATE x durable", Create("x", "topic", Q(durable=True))),
    (
        b"CREATE q queue durable max-length=10 max-bytes=0 overflow=reject ttl=5000 "
        b"dead-letter=dlq max-deliver=3 exclusive",
        Create("q", "queue", Q(True, 10, 0, "reject", 5000, "dlq", 3, True)),
    ),
    (
        b"CREATE q queue exclusive MAX-LENGTH=007",
        Create("q", "queue", Q(max_length=7, exclusive=True)),
    ),
    (b"CREATE q queue overflow=drop-head ttl=0", Create("q", "queue", Q(ttl=0))),
    (b"CREATE q queue max-length=" + b"9" * 18, Create("q", "queue", Q(max_length=10**18 - 1))),
    (b"CREATE " + b"n" * 255, Create("n" * 255)),
    (b"DELETE q", Delete("q")),
    (b"DELETE q if-empty", Delete("q", if_empty=True)),
    (b"delete q IF-UNUSED if-empty", Delete("q", True, True)),
    (b"DELETE durable", Delete("durable")),
    (b"BIND q ex", Bind("q", "ex")),
    (b"BIND q ex sport.uk", Bind("q", "ex", "sport.uk")),
    (b"BIND q ex *.uk.#", Bind("q", "ex", "*.uk.#")),
    (b"bind q ex #", Bind("q", "ex", "#")),
    (b"UNBIND q ex", Unbind("q", "ex")),
    (b"UNBIND q ex a.*", Unbind("q", "ex", "a.*")),
    (b"SUBSCRIBE q", Subscribe("q")),
    (b"SUBSCRIBE ex sport.#", Subscribe("ex", "sport.#")),
    (b"SUBSCRIBE q prefetch=0", Subscribe("q", prefetch=0)),
    (
        b"SUBSCRIBE q ack-timeout=30000 prefetch=5 ACK=manual",
        Subscribe("q", None, 5, True, 30000),
    ),
    (b"SUBSCRIBE q ack=auto", Subscribe("q")),
    (b"UNSUBSCRIBE 5", Unsubscribe(5)),
    (b"PULL q", Pull("q")),
    (
        b"PULL q max=10 wait=500 ack=manual ack-timeout=1000",
        Pull("q", 10, 500, True, 1000),
    ),
    (b"PULL q wait=0", Pull("q", wait=0)),
    (b"ACK 1", Ack(((1, 1),))),
    (b"ACK 1,3-5,7,9-9", Ack(((1, 1), (3, 5), (7, 7), (9, 9)))),
    (b"NACK 2", Nack(((2, 2),))),
    (b"NACK 2 requeue=0 delay=100", Nack(((2, 2),), False, 100)),
    (b"NACK 2-4 requeue=1", Nack(((2, 4),))),
    (b"TOUCH 3-4", Touch(((3, 4),))),
    (b"PURGE q", Purge("q")),
    (b"PING", Ping()),
    (b"ping", Ping()),
    (b"QUIT", Quit()),
    (b"LIST", frames.List()),
    (b"AUTH alice s3cret", Auth("alice", "s3cret")),
    (b"AUTH alice p=w:x", Auth("alice", "p=w:x")),
    (b"AUTH al\xc3\xafce p\xff", Auth("al\xefce", "p\udcff")),
    (b"STATS", Stats()),
    (b"STATS q", Stats("q")),
    (b"\t CREATE \t q\t\tqueue  ", Create("q", "queue")),
    # a flag may be written flag=1 (set) or flag=0 (as if left out)
    (b"CREATE q queue durable=1", Create("q", "queue", Q(durable=True))),
    (b"CREATE q queue DURABLE=1 exclusive=0", Create("q", "queue", Q(durable=True))),
    (b"CREATE q queue durable=0 exclusive=1", Create("q", "queue", Q(exclusive=True))),
    (b"CREATE q queue durable=0", Create("q", "queue")),
    # queue lifetime (section 7)
    (b"CREATE q queue auto-delete", Create("q", "queue", Q(auto_delete=True))),
    (b"CREATE q queue AUTO-DELETE=1", Create("q", "queue", Q(auto_delete=True))),
    (b"CREATE q queue auto-delete=0", Create("q", "queue")),
    (b"CREATE q queue expires=60000", Create("q", "queue", Q(expires=60000))),
    (
        b"CREATE q queue durable auto-delete expires=1",
        Create("q", "queue", Q(durable=True, auto_delete=True, expires=1)),
    ),
    (b"CREATE x fanout durable=1", Create("x", "fanout", Q(durable=True))),
    (b"CREATE x topic exclusive=0", Create("x", "topic")),
    (b"CREATE x durable=1", Create("x", "topic", Q(durable=True))),
    (b"DELETE q if-empty=1 if-unused=0", Delete("q", True, False)),
    (b"DELETE q if-unused=1 IF-EMPTY", Delete("q", True, True)),
    (b"HELP", Help()),
    (b"help create", Help("CREATE")),
    (b"HELP Pong", Help("PONG")),
    (b"HELP help", Help("HELP")),
    (b"PONG", Pong()),
    (b"AUTH al\x0bice p\x0cw\x00\rx", Auth("al\x0bice", "p\x0cw\x00\rx")),
]


@pytest.mark.parametrize("line, expected", VALID, ids=[repr(v[0][:40]) for v in VALID])
def test_valid_command(line: bytes, expected: Any) -> None:
    assert decode(line + b"\r\n") == [expected]
    assert decode(line + b"\n") == [expected]


def test_max_tags() -> None:
    tags = b",".join(b"%d" % i for i in range(1, 1001))
    assert one(b"ACK " + tags + b"\r\n") == Ack(tuple((i, i) for i in range(1, 1001)))
    assert isinstance(one(b"ACK " + tags + b",1001\r\n"), BadArgs)


# ------------------------------------------------------------------ commands, refused

INVALID = [
    b"CREATE",
    b"CREATE bad!name",
    b"CREATE " + b"n" * 256,
    b"CREATE q bogus",
    b"CREATE q queue extra",
    b"CREATE q durable queue",
    b"CREATE q queue foo=1",
    b"CREATE q queue overflow=REJECT",
    b"CREATE q queue overflow=",
    b"CREATE q queue max-length",
    b"CREATE q queue max-length=-1",
    b"CREATE q queue max-length=+1",
    b"CREATE q queue max-length=1_000",
    b"CREATE q queue max-length=1.5",
    b"CREATE q queue max-length=\xd9\xa3",
    b"CREATE q queue max-length=" + b"9" * 19,
    b"CREATE q queue max-bytes=x",
    b"CREATE q queue ttl=1s",
    b"CREATE q queue max-deliver=0",
    b"CREATE q queue expires=0",
    b"CREATE q queue expires=-1",
    b"CREATE q queue expires=1s",
    b"CREATE q queue expires",
    b"CREATE q queue auto-delete=2",
    b"CREATE q queue auto-delete auto-delete",
    b"CREATE x topic auto-delete",
    b"CREATE x fanout expires=1000",
    b"CREATE q queue dead-letter=bad!",
    b"CREATE q queue durable=2",
    b"CREATE q queue durable=01",
    b"CREATE q queue durable=yes",
    b"CREATE q queue durable=",
    b"CREATE q queue durable durable",
    b"CREATE q queue durable=1 durable",
    b"CREATE q queue durable=0 durable=1",
    b"CREATE q queue durable=0 DURABLE=0",
    b"CREATE x direct exclusive=1",
    b"CREATE q queue ttl=1 TTL=2",
    b"CREATE x topic max-length=5",
    b"CREATE x direct exclusive",
    b"CREATE q exclusive",
    b"CREATE x fanout ttl=5",
    b"CREATE mbroker.sub.1 queue",
    b"DELETE",
    b"DELETE q if-full",
    b"DELETE q if-empty=true",
    b"DELETE q if-unused=",
    b"DELETE q if-empty if-empty",
    b"DELETE q r",
    b"BIND q",
    b"BIND q ex a..b",
    b"BIND q ex a b",
    b"BIND q ex a*",
    b"BIND q ex -",
    b"BIND q ex .a",
    b"BIND q! ex",
    b"BIND q ex! k",
    b"BIND q ex key=1",
    b"UNBIND q",
    b"UNBIND q ex #.",
    b"SUBSCRIBE",
    b"SUBSCRIBE q ack=AUTO",
    b"SUBSCRIBE q ack=manual ack-timeout=0",
    b"SUBSCRIBE q ack-timeout=5",
    b"SUBSCRIBE q prefetch=x",
    b"SUBSCRIBE q prefetch=-1",
    b"SUBSCRIBE q prefetch=1 a.b",
    b"SUBSCRIBE q a.b c.d",
    b"SUBSCRIBE q a..b",
    b"SUBSCRIBE q max=5",
    b"UNSUBSCRIBE",
    b"UNSUBSCRIBE 0",
    b"UNSUBSCRIBE x",
    b"UNSUBSCRIBE 1 2",
    b"PULL",
    b"PULL q 5",
    b"PULL q max=0",
    b"PULL q wait=-1",
    b"PULL q ack=yes",
    b"PULL q ack-timeout=100",
    b"PULL q prefetch=1",
    b"ACK",
    b"ACK 0",
    b"ACK 5-3",
    b"ACK 1,,2",
    b"ACK 1,",
    b"ACK ,1",
    b"ACK a",
    b"ACK -3",
    b"ACK 3-",
    b"ACK 1-2-3",
    b"ACK 1 2",
    b"ACK " + b"1" * 19,
    b"ACK 1 requeue=0",
    b"NACK",
    b"NACK 1 requeue=yes",
    b"NACK 1 requeue=2",
    b"NACK 1 delay=x",
    b"NACK 1 delay=1 delay=2",
    b"TOUCH",
    b"TOUCH 0-1",
    b"PURGE",
    b"PURGE a b",
    b"PURGE bad!",
    b"PING x",
    b"PING x=1",
    b"PONG x",
    b"HELP nosuch",
    b"HELP PUBLISHRUN",
    b"HELP create x",
    b"HELP create=1",
    b"QUIT now",
    b"LIST all",
    b"AUTH",
    b"AUTH alice",
    b"AUTH alice pw extra",
    b"STATS bad!",
    b"STATS a b",
    # only space and tab separate tokens: any other byte is part of its token
    b"CREATE q\x0bqueue",
    b"CREATE q queue\x0cdurable",
    b"CREATE q queue durable\x00",
    b"PULL q max=1\x0b",
    b"ACK 1\r",
    b"ACK 1\x1c2",
    b"STATS q\xa0",
    b"STATS q\xc2\x85",
    b"AUTH alice\x0bs3cret",
    b"PUBLISH q\x0b5",
]


@pytest.mark.parametrize("line", INVALID, ids=[repr(v[:40]) for v in INVALID])
def test_refused_command(line: bytes) -> None:
    d = CommandDecoder()
    items = d.feed(line + b"\r\nPING\r\n")
    assert len(items) == 2 and items[1] == Ping(), items
    err = items[0]
    assert type(err) is BadArgs, err
    assert err.text and "\r" not in err.text and "\n" not in err.text
    assert not d.closed


@pytest.mark.parametrize(
    "line, text",
    [
        (b"SUBSCRIBE q foo=1", "unknown option 'foo' for SUBSCRIBE"),
        (b"FOO", "unknown command 'FOO'"),
        (b"CREATE q queue ttl=1 TTL=2", "duplicate option 'TTL'"),
        (b"SUBSCRIBE q ack-timeout=5", "ack-timeout needs ack=manual"),
        (b"SUBSCRIBE q ack=AUTO", "ack must be auto|manual, not 'AUTO'"),
        (
            b"CREATE mbroker.x",
            "reserved name 'mbroker.x': names beginning with 'mbroker.' are the server's",
        ),
        (
            b"CREATE x topic ttl=5",
            "'ttl' is for queues; a topic exchange takes only 'durable' and 'dedup-window'",
        ),
        (b"DELETE", "missing arguments; usage: DELETE <name> [if-empty] [if-unused]"),
        (
            b"BIND q ex a b",
            "unexpected argument 'b'; usage: BIND <queue> <exchange> [key-or-pattern]",
        ),
        (b"PULL q max=0", "max must be at least 1"),
        (b"ACK 5-3", "bad tag '5-3': tags are positive, with a <= b in a range a-b"),
        (b"DELETE q if-empty=yes", "flag 'if-empty' takes no value but 1 or 0"),
        (b"CREATE q queue durable=0 durable", "duplicate option 'durable'"),
        (b"HELP nosuch", "unknown command 'nosuch'; HELP lists them"),
        (b"HELP ping b", "unexpected argument 'b'; usage: HELP [command]"),
        (b"AUTH alice", "usage: AUTH <user> <password>"),
        (b"NACK 1 delay=", "option 'delay' needs a value"),
    ],
)
def test_error_texts(line: bytes, text: str) -> None:
    assert one(line + b"\r\n").text == text


def test_error_text_quotes_garbage_safely() -> None:
    err = one(b"\x00\xff" + b"Z" * 100 + b"\r\n")
    assert type(err) is BadCommand
    assert err.text == "unknown command '\\x00\\xff" + "Z" * 38 + "...'"
    assert err.text.isprintable()


@pytest.mark.parametrize("line", [b"FOO", b"foo bar", b"PUBLISHX q 1", b"\xff", b"+OK"])
def test_unknown_command(line: bytes) -> None:
    items = decode(line + b"\r\nPING\r\n")
    assert [type(i) for i in items] == [BadCommand, Ping]


def test_unknown_command_consumes_no_payload() -> None:
    assert decode(b"FOO q 3\r\nPING\r\n") == [BadCommand("unknown command 'FOO'"), Ping()]


# ------------------------------------------------------------------ framing


def test_empty_and_blank_lines_are_ignored() -> None:
    assert decode(b"\r\n\n   \r\n\t\r\n \t \nPING\r\n\r\n") == [Ping()]


def test_lf_and_crlf_and_stray_cr() -> None:
    items = decode(b"PING\nPING\r\nPING\r\r\nPING\r \n\r\r\n")
    # one CR right before the LF is dropped; any other CR is part of a token
    assert items == [Ping(), Ping()] + [BadCommand("unknown command 'PING\\r'")] * 2 + [
        BadCommand("unknown command '\\r'")
    ]


ODD_BYTES = [b"\x0b", b"\x0c", b"\r", b"\x00", b"\x1c", b"\x1f", b"\x85", b"\xa0", b"\xc2\xa0"]


@pytest.mark.parametrize("odd", ODD_BYTES, ids=repr)
def test_only_space_and_tab_separate_tokens(odd: bytes) -> None:
    """``PUBLISH q<VT>5`` is one refused PUBLISH and an unknown command, not a publish of
    ``hello`` (what a proxy that follows the contract sees too: no smuggling)."""
    data = b"PUBLISH q" + odd + b"5\r\nhello\r\nPING\r\n"
    items = assert_any_split(data)
    assert [type(i) for i in items] == [BadArgs, BadCommand, Ping], items
    assert items[1].text == "unknown command 'hello'"
    for line in [b"PING" + odd, odd + b"PING", b"PI" + odd + b"NG", odd]:
        assert [type(i) for i in decode(line + b"\r\nPING\r\n")] == [BadCommand, Ping], line
    assert type(one(b"CREATE q" + odd + b"queue\r\n")) is BadArgs
    assert type(one(b"PUBLISH q k" + odd + b":x\r\n")) is BadArgs  # not the inline form
    assert one(b"AUTH u p" + odd + b"w\r\n") == Auth(
        "u", "p" + odd.decode("utf-8", "surrogateescape") + "w"
    )


@pytest.mark.parametrize(
    "size",
    [
        b"+5",
        b"-5",
        b"\xd9\xa5",
        b"\xef\xbc\x95",
        b"\xc2\xb2",
        b"5\x0b",
        b"\x0c5",
        b"0x5",
        b"5_0",
        b"5.0",
        b"1e1",
        b"5\x00",
    ],
    ids=repr,
)
def test_a_size_is_ascii_digits_only(size: bytes) -> None:
    """A size with a sign, another script's digits or anything inside is no size: the
    PUBLISH is refused and reads no payload (the next line is a command)."""
    items = assert_any_split(b"PUBLISH q " + size + b"\r\nhello\r\nPING\r\n")
    assert [type(i) for i in items] == [BadArgs, BadCommand, Ping], items
    assert items[0].text.startswith("PUBLISH needs a size or :payload")


def test_a_size_among_spaces_and_tabs() -> None:
    assert decode(b"PUBLISH\tq \t5 \t \r\nhello\r\n") == [Publish("q", "", b"hello")]


def test_one_feed_many_commands_and_partial_line_kept() -> None:
    d = CommandDecoder()
    assert d.feed(b"PING\r\nQUIT\r\nLI") == [Ping(), Quit()]
    assert d.feed(b"S") == []
    assert d.feed(b"T\r") == []
    assert d.feed(b"\n") == [frames.List()]
    assert d.feed(b"") == []


def test_line_too_long_with_lf() -> None:
    d = CommandDecoder(max_line=10)
    items = d.feed(b"PING\r\n" + b"A" * 11 + b"\r\nPING\r\n")
    assert items == [Ping(), LineTooLong("line longer than 10 bytes")]
    assert d.closed
    assert d.feed(b"PING\r\n") == []


def test_line_at_the_limit() -> None:
    assert decode(b"PING      \r\n", max_line=10) == [Ping()]
    assert decode(b"PING      \n", max_line=10) == [Ping()]
    assert_any_split(b"PING      \r\nPING       \r\n", max_line=10)


def test_line_too_long_without_lf() -> None:
    d = CommandDecoder(max_line=10)
    assert d.feed(b"A" * 10) == []
    assert d.feed(b"\r") == []  # the CR may be the line end's
    assert len(d._buf) == 11
    assert [type(i) for i in d.feed(b"A")] == [LineTooLong]
    assert d.closed
    d = CommandDecoder(max_line=10)
    assert [type(i) for i in d.feed(b"A" * 11)] == [LineTooLong]
    d = CommandDecoder(max_line=10)
    for _ in range(10):
        assert d.feed(b"B") == []
    assert [type(i) for i in d.feed(b"B")] == [LineTooLong]


def test_huge_chunk_without_lf_is_refused_at_once() -> None:
    d = CommandDecoder(max_line=100)
    assert [type(i) for i in d.feed(b"PING\r\n" + b"x" * 10_000_000)] == [Ping, LineTooLong]


def test_buffer_never_grows_past_the_limit() -> None:
    d = CommandDecoder(max_line=64)
    for i in range(64):
        d.feed(b"x")
        assert len(d._buf) == i + 1
    assert type(d.feed(b"x\r")[0]) is LineTooLong
    assert len(d._buf) == 0


def test_closed_decoder_discards_everything() -> None:
    d = CommandDecoder(max_payload=5)
    assert d.feed(b"PING\r\nPUBLISH q 6\r\nabcdef\r\nPING\r\n") == [
        Ping(),
        TooBig("payload over 5 bytes"),
    ]
    assert d.closed
    assert d.feed(b"PING\r\n") == []


# ------------------------------------------------------------------ PUBLISH


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"PUBLISH q 5\r\nhello\r\n", Publish("q", "", b"hello")),
        (b"PUBLISH news sport.uk 3\nabc\n", Publish("news", "sport.uk", b"abc")),
        (b"publish q TTL=100 2\r\nab\r\n", Publish("q", "", b"ab", 100)),
        (b"PUBLISH q k ttl=0 2\r\nab\r\n", Publish("q", "k", b"ab", 0)),
        (b"PUBLISH q 0\r\n\r\n", Publish("q", "", b"")),
        (b"PUBLISH q 0\n\n", Publish("q", "", b"")),
        (b"PUBLISH q 123 2\r\nab\r\n", Publish("q", "123", b"ab")),
        (b"PUBLISH q 005\r\nabcde\r\n", Publish("q", "", b"abcde")),
        (b"PUBLISH q 6\r\n\r\n\x00\n\r\xff\r\n", Publish("q", "", b"\r\n\x00\n\r\xff")),
        (b"PUBLISH q 4\r\nPING\r\n", Publish("q", "", b"PING")),
    ],
)
def test_publish(data: bytes, expected: Publish) -> None:
    assert decode(data) == [expected]
    assert assert_any_split(data + b"PING\r\n") == [expected, Ping()]


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"PUBLISH news sport.uk :Goal! 1-0", Publish("news", "sport.uk", b"Goal! 1-0")),
        (b"PUBLISH q :", Publish("q", "", b"")),
        (b"PUBLISH q ::x", Publish("q", "", b":x")),
        (b"PUBLISH q : spaced  ", Publish("q", "", b" spaced  ")),
        (b"PUBLISH q\t:tab", Publish("q", "", b"tab")),
        (b"PUBLISH q ttl=5 :x", Publish("q", "", b"x", 5)),
        (b"PUBLISH q k TTL=5 :a:b :c", Publish("q", "k", b"a:b :c", 5)),
        (b"PUBLISH q :a 5", Publish("q", "", b"a 5")),
        (b"PUBLISH q :\xff\x00\t", Publish("q", "", b"\xff\x00\t")),
    ],
)
def test_publish_inline(line: bytes, expected: Publish) -> None:
    assert decode(line + b"\r\n") == [expected]
    assert decode(line + b"\n") == [expected]


def test_publish_inline_colon_inside_a_token_is_not_inline() -> None:
    items = decode(b"PUBLISH q k:v 1\r\nx\r\nPING\r\n")
    assert [type(i) for i in items] == [BadArgs, Ping]


@pytest.mark.parametrize(
    "line",
    [
        b"PUBLISH :x",
        b"PUBLISH bad! :x",
        b"PUBLISH q a..b :x",
        b"PUBLISH q k extra :x",
        b"PUBLISH q foo=1 :x",
        b"PUBLISH q ttl=x :x",
        b"PUBLISH q -:x",
    ],
)
def test_publish_inline_refused(line: bytes) -> None:
    assert [type(i) for i in decode(line + b"\r\nPING\r\n")] == [BadArgs, Ping]


@pytest.mark.parametrize(
    "header",
    [
        b"PUBLISH 3",
        b"PUBLISH bad! 3",
        b"PUBLISH q a..b 3",
        b"PUBLISH q - 3",
        b"PUBLISH q k extra 3",
        b"PUBLISH q foo=1 3",
        b"PUBLISH q ttl=x 3",
        b"PUBLISH q ttl=1 ttl=2 3",
        b"PUBLISH q ttl=1 k 3",
        b"PUBLISH q k ttl 3",
        b"PUBLISH q k ttl= 3",
    ],
)
def test_refused_publish_consumes_its_payload(header: bytes) -> None:
    data = header + b"\r\nQUI\r\nPING\r\n"
    items = assert_any_split(data)
    assert [type(i) for i in items] == [BadArgs, Ping]


def test_refused_publish_with_a_bad_frame_is_bad_frame_only() -> None:
    d = CommandDecoder()
    assert d.feed(b"PUBLISH bad! 3\r\nabcX\r\nPING\r\n") == [
        BadFrame("payload not followed by a line end")
    ]
    assert d.closed


@pytest.mark.parametrize("line", [b"PUBLISH q key", b"PUBLISH", b"PUBLISH q", b"PUBLISH q 1x"])
def test_publish_without_a_payload(line: bytes) -> None:
    assert [type(i) for i in decode(line + b"\r\nPING\r\n")] == [BadArgs, Ping]


@pytest.mark.parametrize(
    "data",
    [
        b"PUBLISH q 3\r\nabcX\r\n",
        b"PUBLISH q 3\r\nabc\rX",
        b"PUBLISH q 3\r\nabc\r\r\n",
        b"PUBLISH q 3\r\nabcd",
        b"PUBLISH q 0\r\nx\r\n",
    ],
)
def test_bad_frame(data: bytes) -> None:
    d = CommandDecoder()
    assert d.feed(b"PING\r\n" + data + b"PING\r\n") == [
        Ping(),
        BadFrame("payload not followed by a line end"),
    ]
    assert d.closed
    assert assert_any_split(data) == [BadFrame("payload not followed by a line end")]


def test_payload_line_end_split_after_cr() -> None:
    d = CommandDecoder()
    assert d.feed(b"PUBLISH q 2\r\nab\r") == []
    assert d.feed(b"\nPING\r\n") == [Publish("q", "", b"ab"), Ping()]
    d = CommandDecoder()
    assert d.feed(b"PUBLISH q 2\r\nab\r") == []
    assert d.feed(b"P") == [BadFrame("payload not followed by a line end")]


@pytest.mark.parametrize(
    "line",
    [
        b"PUBLISH q 11",
        b"PUBLISH bad! 11",
        b"PUBLISH q " + b"9" * 19,
        b"PUBLISH q " + b"9" * 5000,
        b"PUBLISH q :" + b"x" * 11,
    ],
)
def test_too_big(line: bytes) -> None:
    d = CommandDecoder(max_payload=10)
    assert d.feed(b"PING\r\n" + line + b"\r\n" + b"x" * 11 + b"\r\nPING\r\n") == [
        Ping(),
        TooBig("payload over 10 bytes"),
    ]
    assert d.closed


def test_payload_at_the_limit() -> None:
    assert decode(b"PUBLISH q 10\r\n0123456789\r\n", max_payload=10) == [
        Publish("q", "", b"0123456789")
    ]
    assert decode(b"PUBLISH q :0123456789\r\n", max_payload=10) == [Publish("q", "", b"0123456789")]


def test_payload_larger_than_the_line_limit() -> None:
    payload = bytes(range(256)) * 40
    data = b"PUBLISH q %d\r\n" % len(payload) + payload + b"\r\n"
    assert decode(data, max_line=20) == [Publish("q", "", payload)]


def test_big_payload_byte_at_a_time() -> None:
    payload = b"\r\n\x00" * 10_000
    d = CommandDecoder()
    out = d.feed(b"PUBLISH q k %d\r\n" % len(payload))
    for i in range(len(payload)):
        out += d.feed(payload[i : i + 1])
    out += d.feed(b"\r")
    out += d.feed(b"\n")
    assert out == [Publish("q", "k", payload)]


def test_payload_in_big_chunks_is_not_copied_when_whole() -> None:
    payload = b"z" * 100_000
    d = CommandDecoder()
    assert d.feed(b"PUBLISH q 100000\r\n") == []
    assert d.feed(payload) == []
    (msg,) = d.feed(b"\r\n")
    assert isinstance(msg, Publish)
    assert msg.payload is payload


# ------------------------------------------------------------------ pipelining

BATCH = b"".join(
    [
        b"CREATE q queue durable max-length=10\r\n",
        b"\r\n",
        b"PUBLISH q k 5\r\n\r\n\x00\r\n\r\n",
        b"publish q :inline x\n",
        b"PUBLISH bad! 3\r\nabc\r\n",
        b"SUBSCRIBE q ack=manual prefetch=10\r\n",
        b"FOO bar\r\n",
        b"ACK 1,2-3\r\n",
        b"NACK 4 requeue=0\r\n",
        b"PUBLISH q 0\n\n",
        b"   \t  \r\n",
        b"AUTH u p\r\n",
        b"PING\r\n",
    ]
)


def test_pipelined_batch_at_every_split() -> None:
    items = assert_any_split(BATCH)
    assert items == [
        Create("q", "queue", Q(durable=True, max_length=10)),
        Publish("q", "k", b"\r\n\x00\r\n"),
        Publish("q", "", b"inline x"),
        BadArgs("bad name 'bad!': 1-255 characters of A-Z a-z 0-9 _ - ."),
        Subscribe("q", None, 10, True),
        BadCommand("unknown command 'FOO'"),
        Ack(((1, 1), (2, 3))),
        Nack(((4, 4),), False),
        Publish("q", "", b""),
        Auth("u", "p"),
        Ping(),
    ]


def test_pipelined_batch_with_fatal_error_at_every_split() -> None:
    data = BATCH + b"PUBLISH q 3\r\nabcdPING\r\n" + BATCH
    items = assert_any_split(data)
    assert items[-1] == BadFrame("payload not followed by a line end")
    assert len(items) == 12


# ------------------------------------------------------------- runs of PUBLISH


def test_a_run_of_one_publish_line_is_one_item() -> None:
    d = CommandDecoder()
    frame = b"PUBLISH q k 3\r\n%s\r\n"
    # the first line is parsed (and remembered); the next ones are matched whole
    items = d.feed(b"".join(frame % p for p in (b"aaa", b"bbb", b"ccc", b"ddd")))
    assert items == [Publish("q", "k", b"aaa"), PublishRun("q", "k", [b"bbb", b"ccc", b"ddd"])]
    assert d.feed(frame % b"eee" + frame % b"fff" + b"PING\r\n" + frame % b"ggg") == [
        PublishRun("q", "k", [b"eee", b"fff"]),
        Ping(),
        Publish("q", "k", b"ggg"),
    ]


def test_a_run_ends_at_another_head_size_or_ttl() -> None:
    d = CommandDecoder()
    lines = [b"PUBLISH q k 1", b"PUBLISH q k 2", b"PUBLISH q j 1", b"PUBLISH q k ttl=5 1"]
    d.feed(b"".join(b"%s\r\n%s\n" % (line, b"x" * int(line[-1:])) for line in lines))
    data = b"".join(b"%s\r\n%s\r\n" % (line, b"x" * int(line[-1:])) for line in lines * 2)
    assert (
        d.feed(data)
        == [
            Publish("q", "k", b"x"),
            Publish("q", "k", b"xx"),
            Publish("q", "j", b"x"),
            Publish("q", "k", b"x", 5),
        ]
        * 2
    )


def test_a_run_keeps_its_framing_checks() -> None:
    d = CommandDecoder()
    assert d.feed(b"PUBLISH q 3\r\nabc\r\n") == [Publish("q", "", b"abc")]
    items = d.feed(b"PUBLISH q 3\r\nabc\nPUBLISH q 3\r\nabc\r\nPUBLISH q 3\r\nabcdPING\r\n")
    assert items == [
        PublishRun("q", "", [b"abc", b"abc"]),
        BadFrame("payload not followed by a line end"),
    ]
    assert d.closed


def test_a_payload_split_across_reads_ends_the_run() -> None:
    d = CommandDecoder()
    d.feed(b"PUBLISH q 3\r\nabc\r\n")
    assert d.feed(b"PUBLISH q 3\r\nabc\r\nPUBLISH q 3\r\nab") == [Publish("q", "", b"abc")]
    assert d.feed(b"c\r\nPUBLISH q 3\r\nxyz\r\nPUBLISH q 3\r\nxyz\r\n") == [
        Publish("q", "", b"abc"),
        PublishRun("q", "", [b"xyz", b"xyz"]),
    ]


def test_the_publish_line_caches_stay_small() -> None:
    d = CommandDecoder()
    d.feed(b"".join(b"PUBLISH q%d 1\r\nx\r\n" % i for i in range(3000)))
    assert 0 < len(d._heads) <= 1024 and 0 < len(d._prefixes) <= 1024
    padded = b"PUBLISH" + b" " * 2000 + b"q 1\r\nx\r\n"
    d = CommandDecoder()
    assert flat(d.feed(padded * 3)) == [Publish("q", "", b"x")] * 3
    assert d._heads == {} and d._prefixes == {}


def test_a_run_encodes_as_its_publishes() -> None:
    run = PublishRun("q", "k", [b"a", b"bc"], 7)
    data = encode_command(run)
    assert data == b"PUBLISH q k ttl=7 1\r\na\r\nPUBLISH q k ttl=7 2\r\nbc\r\n"
    assert flat(CommandDecoder().feed(data)) == flat([run])


def test_80k_pipelined_lines_in_one_chunk() -> None:
    lines = b"PING\r\n" * 40_000 + b"PUBLISH q 1\r\nx\r\n" * 20_000 + b"ACK 7\n" * 20_000
    items = flat(CommandDecoder().feed(lines))
    assert len(items) == 80_000
    assert items[0] == items[39_999] == Ping()
    assert items[40_000] == items[59_999] == Publish("q", "", b"x")
    assert items[-1] == Ack(((7, 7),))


def test_80k_lines_in_a_few_odd_chunks() -> None:
    data = b"PUBLISH q :hi\r\n" * 80_000
    d = CommandDecoder()
    items = []
    for i in range(0, len(data), 65_537):
        items += d.feed(data[i : i + 65_537])
    assert len(items) == 80_000 and items[-1] == Publish("q", "", b"hi")


# ------------------------------------------------------------------ encoders


def test_status_and_error_line() -> None:
    assert status("OK created") == b"+OK created\r\n"
    assert status("PONG") == b"+PONG\r\n"
    assert status("OK\r\nDELETE x") == b"+OK  DELETE x\r\n"
    assert error_line(errors.NotFound("no queue 'q'")) == b"-ERR NOT_FOUND no queue 'q'\r\n"
    assert error_line(errors.AuthFailed()) == b"-ERR AUTH\r\n"
    assert error_line(errors.Internal("a\nb")) == b"-ERR INTERNAL a b\r\n"
    assert error_line(errors.error_for_code("NEW_CODE", "x")) == b"-ERR NEW_CODE x\r\n"


def test_msg_header_and_route() -> None:
    route = route_bytes("news", "sport.uk")
    assert route == b"news sport.uk"
    assert route_bytes("q", "") == b"q -"
    assert msg_header(1, 2, route, 9) == b"MSG 1 2 news sport.uk 9\r\n"
    assert msg_header(0, 3, b"q -", 0, 2) == b"MSG 0 3 q - redelivered=2 0\r\n"
    assert msg_header(1, 4, b"q -", 5, 0, b"expired") == b"MSG 1 4 q - reason=expired 5\r\n"
    assert (
        msg_header(1, 4, b"q -", 5, 1, b"rejected")
        == b"MSG 1 4 q - redelivered=1 reason=rejected 5\r\n"
    )


def test_hello_line() -> None:
    assert hello_line("0.1.0", False, 1048576) == (
        b"HELLO mbroker 0.1.0 proto=1 auth=none max-payload=1048576\r\n"
    )
    assert hello_line("1", True, 5, (("node", "a"),)) == (
        b"HELLO mbroker 1 proto=1 auth=required max-payload=5 node=a\r\n"
    )


@pytest.mark.parametrize(
    "cmd, data",
    [
        (Publish("q", "", b"hi"), b"PUBLISH q 2\r\nhi\r\n"),
        (Publish("q", "a.b", b"", 100), b"PUBLISH q a.b ttl=100 0\r\n\r\n"),
        (Create("x"), b"CREATE x\r\n"),
        (Create("x", "fanout", Q(durable=True)), b"CREATE x fanout durable\r\n"),
        (
            Create("q", "queue", Q(True, 1, 2, "reject", 3, "dl", 4, True)),
            b"CREATE q queue durable exclusive max-length=1 max-bytes=2 overflow=reject ttl=3 "
            b"dead-letter=dl max-deliver=4\r\n",
        ),
        (Delete("q", True, True), b"DELETE q if-empty if-unused\r\n"),
        (Bind("q", "x"), b"BIND q x\r\n"),
        (Unbind("q", "x", "a.#"), b"UNBIND q x a.#\r\n"),
        (Subscribe("x", "#", 0, True, 5), b"SUBSCRIBE x # prefetch=0 ack=manual ack-timeout=5\r\n"),
        (Unsubscribe(3), b"UNSUBSCRIBE 3\r\n"),
        (Pull("q"), b"PULL q\r\n"),
        (Pull("q", 5, 0, True), b"PULL q max=5 wait=0 ack=manual\r\n"),
        (Ack(((1, 1), (3, 5))), b"ACK 1,3-5\r\n"),
        (Nack(((2, 2),), False, 10), b"NACK 2 requeue=0 delay=10\r\n"),
        (Nack(((2, 2),)), b"NACK 2\r\n"),
        (Touch(((9, 9),)), b"TOUCH 9\r\n"),
        (Purge("q"), b"PURGE q\r\n"),
        (Ping(), b"PING\r\n"),
        (Quit(), b"QUIT\r\n"),
        (frames.List(), b"LIST\r\n"),
        (Auth("u", "p=w"), b"AUTH u p=w\r\n"),
        (Stats(), b"STATS\r\n"),
        (Stats("q"), b"STATS q\r\n"),
    ],
)
def test_encode_command(cmd: Any, data: bytes) -> None:
    assert encode_command(cmd) == data
    assert decode(data) == [cmd]


@pytest.mark.parametrize(
    "cmd",
    [
        Publish("q\r\nDELETE x", "", b""),
        Publish("q", "a b", b""),
        Publish("q", "-", b""),
        Create(""),
        Create("q", "queue", Q(dead_letter="a b")),
        Bind("q", "x", "a..b"),
        Subscribe("x", ""),
        Subscribe("x", "a b"),
        Auth("u", "p w"),
        Auth("", "p"),
        Auth("u", "p\n"),
        Ack(()),
        Stats("a\nb"),
    ],
)
def test_encode_command_refuses_what_the_broker_would(cmd: Any) -> None:
    with pytest.raises(BadArgs):
        encode_command(cmd)


def test_encode_non_frames() -> None:
    with pytest.raises(TypeError):
        encode_command(Ok("x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_frame(Ping())  # type: ignore[arg-type]


# ------------------------------------------------------------------ replies

FRAMES = [
    (
        b"HELLO mbroker 0.1.0 proto=1 auth=none max-payload=1048576",
        Hello("0.1.0", 1, False, 1048576),
    ),
    (
        b"HELLO mbroker 2.0 proto=2 auth=required max-payload=5 node=a x=y=z",
        Hello("2.0", 2, True, 5, (("node", "a"), ("x", "y=z"))),
    ),
    (b"+OK created", Ok("OK created")),
    (b"+PONG", Ok("PONG")),
    (b"+", Ok("")),
    (b"-ERR NOT_FOUND no queue 'q'", Error("NOT_FOUND", "no queue 'q'")),
    (b"-ERR INTERNAL", Error("INTERNAL")),
    (b"CANCEL 3 deleted", Cancel(3, "deleted")),
    (b"EXCHANGE ex topic durable=1 bindings=4", ExchangeInfo("ex", "topic", True, 4)),
    (b"EXCHANGE ex topic bindings=4 durable=0 new=1", ExchangeInfo("ex", "topic", False, 4)),
    (
        b"QUEUE q messages=1 unacked=2 consumers=3 durable=0",
        QueueInfo("q", 1, 2, 3, False),
    ),
    (
        b"QUEUE q durable=1 consumers=3 unacked=2 messages=1 dropped=7",
        QueueInfo("q", 1, 2, 3, True),
    ),
    (b"STAT uptime 12.5 s", Stat("uptime", "12.5 s")),
    (b"STAT empty", Stat("empty", "")),
]


@pytest.mark.parametrize("line, frame", FRAMES, ids=[repr(f[0][:30]) for f in FRAMES])
def test_reply_decoding(line: bytes, frame: Any) -> None:
    assert ReplyDecoder().feed(line + b"\r\n") == [frame]
    assert ReplyDecoder().feed(line + b"\n") == [frame]


@pytest.mark.parametrize(
    "data, frame",
    [
        (b"MSG 1 2 news sport.uk 3\r\nabc\r\n", Msg(1, 2, "news", "sport.uk", b"abc")),
        (b"MSG 0 7 q - 0\r\n\r\n", Msg(0, 7, "q", "", b"")),
        (b"MSG 1 2 q - redelivered=2 1\nx\n", Msg(1, 2, "q", "", b"x", 2)),
        (
            b"MSG 1 2 q k reason=expired prio=4 redelivered=1 x=a=b 4\r\n\r\n\x00\n\r\n",
            Msg(1, 2, "q", "k", b"\r\n\x00\n", 1, "expired", (("prio", "4"), ("x", "a=b"))),
        ),
    ],
)
def test_msg_decoding(data: bytes, frame: Msg) -> None:
    data = b"+OK 1\r\n" + data + b"+PONG\r\n"
    expected = [Ok("OK 1"), frame, Ok("PONG")]
    assert ReplyDecoder().feed(data) == expected
    for i in range(len(data) + 1):
        d = ReplyDecoder()
        assert d.feed(data[:i]) + d.feed(data[i:]) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n",
        b"-ERRX\r\n",
        b"-ERR\r\n",
        b"-OOPS\r\n",
        b"HELLO redis 1\r\n",
        b"HELLO mbroker 1 auth=maybe\r\n",
        b"HELLO mbroker 1 proto=x\r\n",
        b"MSG 1 2 q k\r\n",
        b"MSG 1 2 q k x\r\n",
        b"MSG x 2 q k 1\r\na\r\n",
        b"MSG 1 2 q k attr 1\r\na\r\n",
        b"MSG 1 2 q k redelivered=x 1\r\na\r\n",
        b"MSG 1 2 q k 1\r\nab\r\n",
        b"MSG 1 2 q k 11\r\n",
        b"CANCEL 1\r\n",
        b"CANCEL x y\r\n",
        b"EXCHANGE ex topic durable=2 bindings=1\r\n",
        b"EXCHANGE ex topic durable=1\r\n",
        b"EXCHANGE ex\r\n",
        b"QUEUE q messages=1\r\n",
        b"QUEUE\r\n",
        b"STAT\r\n",
        b"+" + b"x" * 20 + b"\r\n",
        b"+" + b"x" * 21,
    ],
)
def test_reply_garbage(data: bytes) -> None:
    d = ReplyDecoder(max_line=20, max_payload=10)
    with pytest.raises(BadFrame):
        d.feed(b"+OK\r\n" + data)
    assert d.closed
    assert d.feed(b"+OK\r\n") == []


def test_reply_empty_lines_skipped() -> None:
    assert ReplyDecoder().feed(b"\r\n+OK\r\n\n") == [Ok("OK")]


def test_reply_big_payload_in_pieces() -> None:
    payload = bytes(range(256)) * 1000
    data = encode_frame(Msg(1, 1, "q", "", payload))
    d = ReplyDecoder()
    out = []
    for i in range(0, len(data), 1000):
        out += d.feed(data[i : i + 1000])
    assert out == [Msg(1, 1, "q", "", payload)]


@pytest.mark.parametrize(
    "frame, data",
    [
        (Ok("OK 3"), b"+OK 3\r\n"),
        (Error("NOT_FOUND", "no q"), b"-ERR NOT_FOUND no q\r\n"),
        (Error("EXISTS"), b"-ERR EXISTS\r\n"),
        (Hello("1", 1, True, 9), b"HELLO mbroker 1 proto=1 auth=required max-payload=9\r\n"),
        (Msg(1, 2, "ex", "a.b", b"xy"), b"MSG 1 2 ex a.b 2\r\nxy\r\n"),
        (
            Msg(1, 2, "q", "", b"", 3, "maxlen", (("k", "v"),)),
            b"MSG 1 2 q - redelivered=3 reason=maxlen k=v 0\r\n\r\n",
        ),
        (Cancel(4, "deleted"), b"CANCEL 4 deleted\r\n"),
        (ExchangeInfo("x", "direct", True, 2), b"EXCHANGE x direct durable=1 bindings=2\r\n"),
        (
            QueueInfo("q", 1, 2, 3, False),
            b"QUEUE q messages=1 unacked=2 consumers=3 durable=0\r\n",
        ),
        (Stat("uptime", "5"), b"STAT uptime 5\r\n"),
        (Stat("empty", ""), b"STAT empty\r\n"),
    ],
)
def test_encode_frame(frame: Any, data: bytes) -> None:
    assert encode_frame(frame) == data
    assert ReplyDecoder().feed(data) == [frame]


def test_error_codes_of_the_codec() -> None:
    """Every error the codec produces, with its wire code and fatality."""
    produced = {
        type(one(b"FOO\r\n")),
        type(one(b"PING 1\r\n")),
        type(one(b"x" * 20 + b"\r\n", max_line=10)),
        type(one(b"PUBLISH q 99\r\n", max_payload=10)),
        type(one(b"PUBLISH q 1\r\nab\r\n")),
    }
    assert produced == {BadCommand, BadArgs, LineTooLong, TooBig, BadFrame}
    assert {(c.code, c.fatal) for c in produced} == {
        ("BAD_COMMAND", False),
        ("BAD_ARGS", False),
        ("LINE_TOO_LONG", True),
        ("TOO_BIG", True),
        ("BAD_FRAME", True),
    }


# ------------------------------------------------------------------ HELP and flags

#: one valid line per command that has flags, to add each flag to
FLAGGED = {b"CREATE": b"CREATE q queue", b"DELETE": b"DELETE q"}


def test_every_command_with_flags_is_checked_below() -> None:
    assert set(FLAGGED) == {verb for verb, spec in grammar.SPECS.items() if spec.flags}


@pytest.mark.parametrize(
    "verb, flag",
    [(verb, flag) for verb, spec in grammar.SPECS.items() for flag in spec.flags],
    ids=lambda v: v.decode(),
)
def test_every_flag_takes_1_and_0(verb: bytes, flag: bytes) -> None:
    base = FLAGGED[verb]
    bare, left_out = one(base + b" " + flag + b"\r\n"), one(base + b"\r\n")
    assert bare != left_out
    assert one(base + b" " + flag + b"=1\r\n") == bare
    assert one(base + b" " + flag.upper() + b"=1\r\n") == bare
    assert one(base + b" " + flag + b"=0\r\n") == left_out
    for value in (b"2", b"01", b"", b"true", b"yes", b"on", b"-1", b"1 1"):
        assert type(one(base + b" " + flag + b"=" + value + b"\r\n")) is BadArgs, value
    for twice in (b"=1 " + flag, b"=0 " + flag + b"=0", b" " + flag + b"=0"):
        assert type(one(base + b" " + flag + twice + b"\r\n")) is BadArgs, twice


def test_help_lists_every_command_once_in_the_table_order() -> None:
    frames_ = ReplyDecoder().feed(help_reply(None))
    assert frames_[-1] == Ok("OK")
    lines = frames_[:-1]
    assert all(type(f) is HelpLine and f.text for f in lines)
    help_lines = [f for f in lines if isinstance(f, HelpLine)]  # all of them, as just checked
    assert [f.command for f in help_lines] == [v.decode() for v in grammar.SPECS]
    assert {"PONG", "HELP", "AUTH", "PUBLISH", "PING"} <= {f.command for f in help_lines}
    assert help_reply(None).startswith(b"CREATE makes an exchange")


def test_every_command_class_has_a_help_entry() -> None:
    """The table is the grammar: every command the decoder makes is in it, and every
    verb HELP lists is one the decoder takes (no drift either way)."""
    classes = set(typing.get_args(frames.Command)) - {PublishRun}
    assert classes == {spec.cls for spec in grammar.SPECS.values()}
    for verb in grammar.SPECS:
        items = decode(verb + b"\r\n")
        assert not any(type(i) is BadCommand for i in items), verb
        assert verb.decode() in encode._HELP_ONE


@pytest.mark.parametrize("verb", list(grammar.SPECS), ids=lambda v: v.decode())
def test_help_for_one_command(verb: bytes) -> None:
    assert one(b"HELP " + verb.lower() + b"\r\n") == Help(verb.decode())
    data = help_reply(verb.decode())
    assert data.endswith(b"\r\n+OK\r\n") and data.count(b"\r\n") == data.count(b"\n")
    lines = data.split(b"\r\n")[:-2]
    assert len(lines) >= 3  # the usage line and at least two lines on what it does
    assert all(line.startswith(verb + b" ") for line in lines)
    spec = grammar.SPECS[verb]
    usage = grammar.usage(verb, spec)  # what a refusal quotes
    if spec.positional or spec.options or spec.flags:
        assert usage == "usage: " + lines[0].decode()
    else:
        assert (usage, lines[0]) == ("usage: " + verb.decode(), verb + b" takes no arguments")
    for word in [*spec.flags, *spec.options]:
        assert word in lines[0], word
    decoded = ReplyDecoder().feed(data)
    assert decoded[-1] == Ok("OK")
    assert all(
        f == HelpLine(verb.decode(), line[len(verb) + 1 :].decode())
        for f, line in zip(decoded, lines)
    )


def test_help_for_a_flagged_command_says_how_to_write_flags() -> None:
    assert (
        b"CREATE takes the flags durable, exclusive and auto-delete: durable or durable=1 "
        b"sets one, " in help_reply("CREATE")
    )
    assert b"DELETE takes the flags if-empty and if-unused" in help_reply("DELETE")


def test_help_and_pong_encode() -> None:
    assert encode_command(Help()) == b"HELP\r\n"
    assert encode_command(Help("CREATE")) == b"HELP CREATE\r\n"
    assert encode_command(Pong()) == b"PONG\r\n"
    with pytest.raises(BadArgs):
        encode_command(Help("NOSUCH"))
    with pytest.raises(BadArgs):
        encode_command(Help("PING\r\nQUIT"))


def test_help_lines_round_trip() -> None:
    line = HelpLine("PING", "replies +PONG")
    assert encode_frame(line) == b"PING replies +PONG\r\n"
    assert ReplyDecoder().feed(b"PING \t replies +PONG  \r\n") == [
        HelpLine("PING", "replies +PONG  ")
    ]


def test_a_bare_command_name_from_the_server_is_no_help_line() -> None:
    with pytest.raises(BadFrame):
        ReplyDecoder().feed(b"QUIT\r\n")


def test_replies_split_at_space_and_tab_only() -> None:
    d = ReplyDecoder()
    assert d.feed(b"STAT key a\x0bb \tc\r\n-ERR\tCODE\x0b x\r\n") == [
        Stat("key", "a\x0bb \tc"),
        Error("CODE\x0b", "x"),
    ]
    with pytest.raises(BadFrame):  # a size with a VT in it is no size
        ReplyDecoder().feed(b"MSG 1 2 q k 1\x0b\r\na\r\n")
    assert ReplyDecoder().feed(b"MSG 1 2 q\x0bx k 1\r\na\r\n") == [Msg(1, 2, "q\x0bx", "k", b"a")]
