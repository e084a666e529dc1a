"""Contract section 1, framing: lines, tokens, options, payloads, replies, pipelining."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from mbroker import __version__
from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, running_broker, unique
from tests.helpers.lineclient import Msg
from tests.helpers.targets import node_args

MAX_LINE = 200
MAX_PAYLOAD = 100


@pytest.fixture(scope="module")
def small(
    request: pytest.FixtureRequest, target: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """A broker with tiny limits, to reach them cheaply."""
    args = ("--max-line", str(MAX_LINE), "--max-payload", str(MAX_PAYLOAD))
    yield from running_broker(tmp_path_factory, *args, *node_args(request))


def make_queue(c: Client) -> str:
    name = unique("q")
    assert c.ok(f"CREATE {name} queue") == "+OK created"
    return name


# ---------------------------------------------------------------- the greeting


def test_greeting(client: Client) -> None:
    assert client.hello == (
        f"HELLO mbroker {__version__} proto=1 auth=none max-payload=1048576".encode()
    )


def test_greeting_announces_the_configured_max_payload(small: BrokerProcess) -> None:
    with connect(small) as c:
        assert c.hello.split()[3:] == [b"proto=1", b"auth=none", b"max-payload=%d" % MAX_PAYLOAD]


def test_the_server_writes_crlf(broker: BrokerProcess) -> None:
    q = unique("q")
    with socket.create_connection(broker.address, timeout=10) as sock:
        sock.sendall(f"CREATE {q} queue\nPUBLISH {q} :x\nPING\nLIST\nSTATS {q}\n".encode())
        sock.sendall(f"BOGUS\nPULL {q}\nSUBSCRIBE {q}\nPUBLISH {q} :y\nQUIT\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.startswith(b"HELLO ") and raw.endswith(b"+OK bye\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n") > 20
    assert b"\r\r" not in raw


# ---------------------------------------------------------------- lines and tokens


def test_lf_crlf_and_the_cr_before_lf(client: Client) -> None:
    client.send(b"PING\nPING\r\nPING\r\r\nPING\r \n")
    # "PING\r\r\n": one CR is dropped, the other is part of the token; "PING\r " likewise.
    assert [client.readline() for _ in range(4)] == [b"+PONG"] * 2 + [
        b"-ERR BAD_COMMAND unknown command 'PING\\r'"
    ] * 2


ODD_BYTES = [b"\x0b", b"\x0c", b"\r", b"\x00", b"\x1c", b"\x85", b"\xc2\xa0"]


@pytest.mark.parametrize("odd", ODD_BYTES, ids=repr)
def test_no_byte_but_space_and_tab_separates_tokens(client: Client, odd: bytes) -> None:
    """``PUBLISH q<VT>5`` then ``hello``: two errors, nothing published (issue 11.3)."""
    q = make_queue(client)
    client.send(b"PUBLISH " + q.encode() + odd + b"5\r\nhello\r\n")
    assert client.read_reply()[1].startswith(b"-ERR BAD_ARGS ")
    assert client.read_reply() == ([], b"-ERR BAD_COMMAND unknown command 'hello'")
    client.send(b"PUBLISH " + q.encode() + b" k" + odd + b":x\r\n")  # no inline form either
    assert client.read_reply()[1].startswith(b"-ERR BAD_ARGS ")
    for line in [b"PING" + odd, odd + b"PING", b"CREATE " + q.encode() + odd + b"queue"]:
        assert client.code(line) in ("BAD_COMMAND", "BAD_ARGS"), line
    assert client.ok(f"CREATE {q}\t\tqueue \t") == "+OK exists"
    assert client.payloads(f"PULL {q} max=5") == []
    assert client.stats(q)["published"] == "0"


@pytest.mark.parametrize(
    "size", [b"+5", b"-5", b"\xd9\xa5", b"\xef\xbc\x95", b"5\x0b", b"0x5", b"5_0"], ids=repr
)
def test_a_size_is_ascii_digits_only(client: Client, size: bytes) -> None:
    q = make_queue(client)
    client.send(b"PUBLISH " + q.encode() + b" " + size + b"\r\nhello\r\n")
    assert client.read_reply()[1].startswith(b"-ERR BAD_ARGS PUBLISH needs a size")
    assert client.read_reply() == ([], b"-ERR BAD_COMMAND unknown command 'hello'")
    assert client.payloads(f"PULL {q} max=5") == []


def test_empty_and_blank_lines_get_no_reply(client: Client) -> None:
    client.send(b"\n\r\n   \n\t \t\r\n \r\nPING\n")
    assert client.readline() == b"+PONG"
    assert client.quiet(0.1)


def test_runs_of_spaces_and_tabs_separate_tokens(client: Client) -> None:
    name = unique("q")
    assert client.ok(f" \t CREATE \t\t {name}   queue\t \tmax-length=5 ") == "+OK created"
    assert client.ok(f"CREATE {name} queue max-length=5") == "+OK exists"


def test_keywords_are_case_insensitive(client: Client) -> None:
    name = unique("q")
    assert client.ok(f"cReAtE {name} QUEUE Durable MAX-LENGTH=3 Overflow=reject") == "+OK created"
    assert client.ok(f"create {name} queue durable max-length=3 overflow=reject") == "+OK exists"
    assert client.ok("ping") == "+PONG"
    assert client.ok(f"publish {name} :x") == "+OK 1"
    assert client.payloads(f"pull {name} MAX=2 ACK=auto") == [b"x"]


def test_names_keys_and_values_are_case_sensitive(client: Client) -> None:
    name = unique("Case")
    assert client.ok(f"CREATE {name} queue") == "+OK created"
    assert client.code(f"PUBLISH {name.lower()} :x") == "NOT_FOUND"
    assert client.code(f"CREATE {unique('q')} queue overflow=REJECT") == "BAD_ARGS"
    assert client.code(f"PULL {name} ack=AUTO") == "BAD_ARGS"
    ex, q = unique("ex"), unique("q")
    client.ok(f"CREATE {ex} direct")
    client.ok(f"CREATE {q} queue")
    client.ok(f"BIND {q} {ex} Key")
    assert client.ok(f"PUBLISH {ex} key :x") == "+OK 0"
    assert client.ok(f"PUBLISH {ex} Key :x") == "+OK 1"


def test_options_in_any_order(client: Client) -> None:
    name, dl = unique("q"), unique("dl")
    client.ok(
        f"CREATE {name} queue ttl=60000 dead-letter={dl} max-deliver=3 durable max-length=10 "
        "max-bytes=1000 overflow=reject"
    )
    assert (
        client.ok(
            f"CREATE {name} queue overflow=reject max-bytes=1000 max-length=10 durable "
            f"max-deliver=3 dead-letter={dl} ttl=60000"
        )
        == "+OK exists"
    )
    client.ok(f"PUBLISH {name} :x")
    assert len(client.pull(f"PULL {name} ack-timeout=1000 ack=manual max=5")) == 1


@pytest.mark.parametrize(
    "line",
    [
        "CREATE {n} queue colour=blue",  # unknown option
        "CREATE {n} queue max-length=many",  # bad value
        "CREATE {n} queue max-length=-1",
        "CREATE {n} queue max-length=",  # option without a value
        "CREATE {n} queue durable=2",  # flag with a value but 1 or 0
        "CREATE {n} queue durable=yes",
        "CREATE {n} queue max-length=1 max-length=1",  # repeated
        "CREATE {n} max-length=1 queue",  # positional after an option
        "CREATE {n} queue overflow=drop",
        "CREATE {n} queue max-deliver=0",
        "CREATE {n} queue exclusive durable",
        "CREATE {n} fanout max-length=3",
        "CREATE {n} exchange",
        "CREATE",
        "PULL {q} max=0",
        "PULL {q} wait=soon",
        "PULL {q} ack=sometimes",
        "PULL {q} ack-timeout=100",  # needs ack=manual
        "PULL {q} ack=manual ack-timeout=0",
        "SUBSCRIBE {q} prefetch=-1",
        "NACK 1 requeue=2",
        "NACK 1 delay=x",
        "ACK 0",
        "ACK 3-1",
        "ACK 1,,2",
        "ACK",
        pytest.param("ACK " + ",".join(map(str, range(1, 1002))), id="ACK 1001 tags"),
        "UNSUBSCRIBE 0",
        "PING now",
        "QUIT now",
        "LIST all",
        "PUBLISH {q} k1 k2 :x",
        "PUBLISH {q} ttl=-5 :x",
        "PUBLISH {q} nosize",
        "PUBLISH",
        "AUTH onlyuser",
    ],
)
def test_bad_arguments_and_options_are_bad_args(client: Client, line: str) -> None:
    q = make_queue(client)
    assert client.code(line.format(q=q, n=unique())) == "BAD_ARGS"
    assert client.ok("PING") == "+PONG"  # never closes the connection


def test_unknown_command(client: Client) -> None:
    assert client.err("FLY away") == "-ERR BAD_COMMAND unknown command 'FLY'"
    assert client.ok("PING") == "+PONG"


def test_numbers_take_leading_zeros(client: Client) -> None:
    q = make_queue(client)
    for i in range(3):
        client.ok(f"PUBLISH {q} :{i}")
    assert client.payloads(f"PULL {q} max=0002") == [b"0", b"1"]


def test_a_line_of_exactly_max_line_bytes_is_accepted(small: BrokerProcess) -> None:
    with connect(small) as c:
        q = unique("q")
        pad = "x" * (MAX_LINE - len(f"CREATE {q} queue dead-letter="))
        line = f"CREATE {q} queue dead-letter={pad}"
        assert len(line) == MAX_LINE
        assert c.ok(line) == "+OK created"  # with CRLF: the CR does not count
        c.send(line.encode() + b"\n")
        assert c.readline() == b"+OK exists"
        assert c.err(line + "x") == f"-ERR LINE_TOO_LONG line longer than {MAX_LINE} bytes"
        assert c.expect_closed()


def test_line_too_long_without_a_line_end_closes_at_once(small: BrokerProcess) -> None:
    with connect(small) as c:
        c.send(b"PING " + b"x" * MAX_LINE)  # no LF: the server need not wait for one
        assert c.readline().startswith(b"-ERR LINE_TOO_LONG ")
        assert c.expect_closed()


def test_line_too_long_on_the_default_broker(client: Client) -> None:
    client.send(b"PING " + b" " * (16 * 1024) + b"\r\n")
    assert client.readline().startswith(b"-ERR LINE_TOO_LONG ")
    assert client.expect_closed()


def test_a_16_kib_line_is_accepted(client: Client) -> None:
    line = b"PING" + b" " * (16 * 1024 - 4)
    assert len(line) == 16 * 1024
    assert client.ok(line) == "+PONG"


# ---------------------------------------------------------------- payloads


def test_binary_payload_with_crlf_and_nul(client: Client) -> None:
    q = make_queue(client)
    payload = b"\r\n\x00line\r\nPING\r\n\n\r" + bytes(range(256))
    assert client.publish(q, payload) == "+OK 1"
    assert client.publish(q, b"") == "+OK 1"
    (first, empty) = client.pull(f"PULL {q} max=2")
    assert first.payload == payload
    assert first.header == b"MSG 0 1 %s - %d" % (q.encode(), len(payload))
    assert empty.payload == b"" and empty.header.endswith(b" 0")


def test_payload_followed_by_lf_only(client: Client) -> None:
    q = make_queue(client)
    client.send(f"PUBLISH {q} 3\nabc\nPUBLISH {q} 3\r\nab\r\n\n".encode())
    assert client.read_reply() == ([], b"+OK 1")
    assert client.read_reply() == ([], b"+OK 1")
    assert client.payloads(f"PULL {q} max=5") == [b"abc", b"ab\r"]


def test_payload_split_across_many_writes(client: Client) -> None:
    q = make_queue(client)
    frame = f"PUBLISH {q} key 10\r\n0123456789\r\nPING\r\n".encode()
    for i in range(len(frame)):
        client.send(frame[i : i + 1])
    assert client.read_reply() == ([], b"+OK 1")
    assert client.readline() == b"+PONG"
    (m,) = client.pull(f"PULL {q}")
    assert (m.key, m.payload) == ("key", b"0123456789")


def test_inline_payload(client: Client) -> None:
    q = make_queue(client)
    assert client.ok(f"PUBLISH {q} sport.uk :Goal! 1-0") == "+OK 1"
    assert client.ok(f"PUBLISH {q} :  spaces: kept, and :colons: too  ") == "+OK 1"
    assert client.ok(f"PUBLISH {q} :") == "+OK 1"
    assert client.ok(f"PUBLISH {q} ttl=60000 :with an option") == "+OK 1"
    assert client.ok(f"PUBLISH {q}\tk\t:tab") == "+OK 1"
    msgs = client.pull(f"PULL {q} max=10")
    assert [(m.key, m.payload) for m in msgs] == [
        ("sport.uk", b"Goal! 1-0"),
        ("", b"  spaces: kept, and :colons: too  "),
        ("", b""),
        ("", b"with an option"),
        ("k", b"tab"),
    ]
    assert msgs[0].header == f"MSG 0 1 {q} sport.uk 9".encode()


def test_a_colon_inside_a_token_is_not_the_inline_form(client: Client) -> None:
    q = make_queue(client)
    assert client.code(f"PUBLISH {q} a:b") == "BAD_ARGS"
    # a digits-only last token is the size, even after a colon inside a token
    client.send(f"PUBLISH {q} a:b 3\r\nxyz\r\nPING\r\n".encode())
    assert client.read_reply()[1].startswith(b"-ERR BAD_ARGS")
    assert client.readline() == b"+PONG"


def test_a_digits_only_last_token_is_the_size(client: Client) -> None:
    q = make_queue(client)
    client.send(f"PUBLISH {q} 2024 5\r\nhello\r\nPUBLISH {q} 4\r\n2024\r\n".encode())
    assert client.read_reply() == ([], b"+OK 1")
    assert client.read_reply() == ([], b"+OK 1")
    msgs = client.pull(f"PULL {q} max=2")
    assert [(m.key, m.payload) for m in msgs] == [("2024", b"hello"), ("", b"2024")]


@pytest.mark.parametrize(
    "head",
    [
        "PUBLISH nosuch-{n} {size}",  # unknown name
        "PUBLISH {q} colour=red {size}",  # unknown option
        "PUBLISH {q} bad..key {size}",  # bad key
        "PUBLISH {q} k1 k2 {size}",  # too many arguments
        "PUBLISH {q} ttl=x {size}",  # bad value
        "PUBLISH bad/name {size}",  # bad name
    ],
)
def test_a_refused_publish_consumes_its_payload(client: Client, head: str) -> None:
    q = make_queue(client)
    payload = b"PING\r\nQUIT\r\n"  # commands, if the server read them as lines
    line = head.format(q=q, n=unique(), size=len(payload))
    client.send(line.encode() + b"\r\n" + payload + b"\r\nPUBLISH " + q.encode() + b" :ok\r\n")
    status = client.read_reply()[1]
    assert status.startswith(b"-ERR NOT_FOUND") or status.startswith(b"-ERR BAD_ARGS"), status
    assert client.read_reply() == ([], b"+OK 1")
    assert client.payloads(f"PULL {q} max=5") == [b"ok"]


def test_a_payload_of_exactly_max_payload_bytes(small: BrokerProcess) -> None:
    with connect(small) as c:
        q = make_queue(c)
        assert c.publish(q, b"x" * MAX_PAYLOAD) == "+OK 1"
        assert c.ok(f"PUBLISH {q} :" + "y" * MAX_PAYLOAD) == "+OK 1"
        assert c.payloads(f"PULL {q} max=2") == [b"x" * MAX_PAYLOAD, b"y" * MAX_PAYLOAD]


def test_too_big_closes_before_the_payload(small: BrokerProcess) -> None:
    with connect(small) as c:
        q = make_queue(c)
        c.send(f"PUBLISH {q} {MAX_PAYLOAD + 1}\r\n".encode())  # no payload sent at all
        assert c.readline() == b"-ERR TOO_BIG payload over %d bytes" % MAX_PAYLOAD
        assert c.expect_closed()
    with connect(small) as c:
        assert c.payloads(f"PULL {q}") == []


def test_too_big_on_the_default_broker(client: Client) -> None:
    client.send(b"PUBLISH anything 1048577\r\n")
    assert client.readline() == b"-ERR TOO_BIG payload over 1048576 bytes"
    assert client.expect_closed()


def test_a_size_of_more_than_18_digits_is_too_big(client: Client) -> None:
    client.send(b"PUBLISH anything 0000000000000000001\r\nx\r\n")
    assert client.readline().startswith(b"-ERR TOO_BIG ")
    assert client.expect_closed()


def test_an_inline_payload_over_max_payload_is_too_big(small: BrokerProcess) -> None:
    with connect(small) as c:
        q = make_queue(c)
        assert c.err(f"PUBLISH {q} :" + "x" * (MAX_PAYLOAD + 1)).startswith("-ERR TOO_BIG ")
        assert c.expect_closed()


@pytest.mark.parametrize("after", [b"XY\r\nPING\r\n", b"\rX\nPING\r\n", b" \r\n"])
def test_bad_frame_publishes_nothing_and_closes(client: Client, after: bytes) -> None:
    q = make_queue(client)
    client.send(f"PUBLISH {q} 5\r\nhello".encode() + after)
    assert client.readline() == b"-ERR BAD_FRAME payload not followed by a line end"
    assert client.expect_closed()
    with connect_like(client) as other:
        assert other.payloads(f"PULL {q}") == []
        assert other.stats(q)["published"] == "0"


def test_bad_frame_after_a_refused_publish(client: Client) -> None:
    client.send(b"PUBLISH nosuch 3\r\nabcd\r\n")
    assert client.readline() == b"-ERR BAD_FRAME payload not followed by a line end"
    assert client.expect_closed()


def connect_like(c: Client) -> Client:
    host, port = c.sock.getpeername()[:2]
    return Client(host, port, timeout=c.timeout)


# ---------------------------------------------------------------- replies


def test_one_status_line_per_command_in_order(client: Client) -> None:
    q = make_queue(client)
    client.send(
        f"PING\nBOGUS\nCREATE {q} queue\nPUBLISH {q} :a\nPUBLISH nosuch :b\n"
        f"PULL {q}\nPULL {q}\nSTATS nosuch\nLIST\nPING\n".encode()
    )
    assert client.read_reply() == ([], b"+PONG")
    assert client.read_reply() == ([], b"-ERR BAD_COMMAND unknown command 'BOGUS'")
    assert client.read_reply() == ([], b"+OK exists")
    assert client.read_reply() == ([], b"+OK 1")
    assert client.read_reply() == ([], b"-ERR NOT_FOUND nosuch")
    data, status = client.read_reply()
    assert status == b"+OK 1" and [m.payload for m in data if isinstance(m, Msg)] == [b"a"]
    assert client.read_reply() == ([], b"+OK 0")
    assert client.read_reply() == ([], b"-ERR NOT_FOUND nosuch")
    data, status = client.read_reply()
    assert status == b"+OK %d" % len(data) and data
    assert client.read_reply() == ([], b"+PONG")


def test_errors_never_close_the_connection(client: Client) -> None:
    q = make_queue(client)
    for line in [
        "BOGUS",
        "CREATE bad/name",
        f"PULL nosuch-{q}",
        f"BIND {q} {q}",
        f"CREATE {q} topic",
        f"DELETE {q} if-unused if-empty if-empty",
        "ACK 99",
        "UNSUBSCRIBE 5",
    ]:
        client.err(line)
    assert client.ok("PING") == "+PONG"


def test_quit(client: Client) -> None:
    client.send(b"QUIT\r\nPING\r\n")
    assert client.readline() == b"+OK bye"
    assert client.expect_closed()
    with pytest.raises((TimeoutError, ConnectionError)):
        client.readline(0.1)


# ---------------------------------------------------------------- pipelining


def test_10000_pipelined_commands_in_one_write(client: Client) -> None:
    q = make_queue(client)
    commands = []
    for i in range(2500):
        commands += [f"PUBLISH {q} :{i}", "PING", f"PULL {q}", f"STATS nosuch-{i}"]
    client.send("".join(line + "\r\n" for line in commands).encode())
    for i in range(2500):
        assert client.read_reply(10) == ([], b"+OK 1")
        assert client.read_reply(10) == ([], b"+PONG")
        data, status = client.read_reply(10)
        assert status == b"+OK 1"
        assert [m.payload for m in data if isinstance(m, Msg)] == [str(i).encode()]
        assert client.read_reply(10) == ([], f"-ERR NOT_FOUND nosuch-{i}".encode())
    assert client.ok("PING") == "+PONG"


def test_pipelined_payloads_in_one_write(client: Client) -> None:
    q = make_queue(client)
    frames = b"".join(
        f"PUBLISH {q} k{i} {len(str(i)) + 2}\r\n<{i}>\r\n".encode() for i in range(1000)
    )
    client.send(frames)
    for _ in range(1000):
        assert client.read_reply() == ([], b"+OK 1")
    msgs = client.pull(f"PULL {q} max=1000")
    assert [(m.key, m.payload) for m in msgs] == [(f"k{i}", f"<{i}>".encode()) for i in range(1000)]
    assert [m.tag for m in msgs] == list(range(1, 1001))
    assert all(re.fullmatch(rb"MSG 0 \d+ \S+ k\d+ \d+", m.header) for m in msgs)
