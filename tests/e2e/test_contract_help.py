"""Contract section 4, for people typing: HELP, PONG, and flags written ``flag=1``/``flag=0``.

Against a real ``twistd -n mbroker`` (an open one, and one that requires AUTH), read
with the independent line reader.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.auth import cheap_hash
from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, running_broker, unique
from tests.helpers.targets import figures, node_args

#: every command a client may send, in the contract's words (section 4 and 7)
COMMANDS = (
    "CREATE DELETE BIND UNBIND PUBLISH SUBSCRIBE UNSUBSCRIBE PULL ACK NACK TOUCH PURGE "
    "PING PONG HEARTBEAT QUIT HELP AUTH LIST STATS"
).split()


def help_lines(c: Client, line: str) -> list[bytes]:
    data, status = c.request(line)
    assert status == b"+OK", (line, status)
    assert all(isinstance(d, bytes) for d in data), data
    return [d for d in data if isinstance(d, bytes)]


# ---------------------------------------------------------------- HELP


def test_help_lists_every_command_once(client: Client) -> None:
    lines = help_lines(client, "HELP")
    names = [line.split(b" ", 1)[0].decode() for line in lines]
    assert sorted(names) == sorted(COMMANDS)
    assert all(len(line.split()) > 1 for line in lines)  # a name, and what it does
    # and each one it lists is a command the broker takes
    for name in names:
        data, status = client.request(f"{name} bogus-argument=1")
        assert not status.startswith(b"-ERR BAD_COMMAND"), (name, status)
        if name == "QUIT":  # (refused, so the connection stays)
            assert status.startswith(b"-ERR BAD_ARGS")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_one_command(client: Client, command: str) -> None:
    for spelled in (command, command.lower(), command.capitalize()):
        lines = help_lines(client, f"HELP {spelled}")
        assert len(lines) >= 2, lines
        assert all(line.startswith(command.encode() + b" ") for line in lines), lines
    assert lines == help_lines(client, f"help\t{command.lower()}")


def test_help_shows_the_usage_line(client: Client) -> None:
    usage = help_lines(client, "HELP create")[0].decode()
    assert usage.startswith("CREATE <name> [queue|direct|fanout|topic] [durable] [exclusive] ")
    for option in ("max-length=N", "overflow=drop-head|reject", "dead-letter=NAME"):
        assert option in usage
    # the same usage the refusals quote
    refusal = client.err(f"CREATE {unique()} max-length=1 queue")
    assert refusal.endswith("usage: " + usage)
    assert help_lines(client, "HELP PUBLISH")[0].endswith(b"<size>|:payload")


@pytest.mark.parametrize("line", ["HELP nosuch", "HELP PING PONG", "HELP cmd=PING", "HELP MSG"])
def test_help_for_an_unknown_command_is_bad_args(client: Client, line: str) -> None:
    assert client.code(line) == "BAD_ARGS"
    assert client.ok("PING") == "+PONG"


def test_pong_gets_no_reply(client: Client) -> None:
    client.send(b"PONG\r\npong\r\nPING\r\n")
    assert client.read_reply() == ([], b"+PONG")
    assert client.code("PONG now") == "BAD_ARGS"


# ---------------------------------------------------------------- before AUTH


@pytest.fixture(scope="module")
def secured(
    request: pytest.FixtureRequest, target: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    users = Path(tmp_path_factory.mktemp("users")) / "users"
    users.write_text(f"bob:{cheap_hash('b0b')}:-:-:jobs\n")
    yield from running_broker(tmp_path_factory, "--users", str(users), *node_args(request))


def test_help_and_pong_are_allowed_before_auth(secured: BrokerProcess) -> None:
    with connect(secured) as c:
        assert c.hello.split()[4] == b"auth=required"
        assert c.code("LIST") == "NO_AUTH"
        names = [line.split(b" ", 1)[0].decode() for line in help_lines(c, "HELP")]
        assert sorted(names) == sorted(COMMANDS)
        assert help_lines(c, "HELP auth")[0] == b"AUTH <user> <password>"
        assert c.code("HELP nosuch") == "BAD_ARGS"
        c.send(b"PONG\r\nPING\r\n")
        assert c.readline() == b"+PONG"
        assert c.ok("AUTH bob b0b") == "+OK"
        assert len(help_lines(c, "HELP")) == len(COMMANDS)


# ---------------------------------------------------------------- flags


def test_flags_written_1_and_0_on_create(client: Client) -> None:
    q = unique("q")
    assert client.ok(f"CREATE {q} queue durable=1") == "+OK created"
    assert client.listing()[q]["durable"] == "1"
    assert client.ok(f"CREATE {q} queue durable") == "+OK exists"
    assert client.ok(f"CREATE {q} queue DURABLE=1 exclusive=0") == "+OK exists"
    assert client.code(f"CREATE {q} queue durable=0") == "EXISTS"  # not durable: other options
    assert client.ok(f"DELETE {q}") == "+OK 0"
    assert client.ok(f"CREATE {q} queue durable=0") == "+OK created"
    assert client.listing()[q]["durable"] == "0"
    assert client.ok(f"CREATE {q} queue") == "+OK exists"
    ex = unique("ex")
    assert client.ok(f"CREATE {ex} fanout durable=1") == "+OK created"
    assert client.ok(f"CREATE {ex} fanout durable") == "+OK exists"
    assert client.ok(f"CREATE {ex} fanout exclusive=0 durable=1") == "+OK exists"
    assert client.code(f"CREATE {ex} fanout exclusive=1") == "BAD_ARGS"


def test_every_line_list_prints_is_a_create_that_matches(client: Client) -> None:
    """What LIST prints (``durable=1``/``durable=0``) is accepted back by CREATE."""
    for kind, durable in [("queue", "1"), ("queue", "0"), ("topic", "1"), ("direct", "0")]:
        name = unique("o")
        assert client.ok(f"CREATE {name} {kind} durable={durable}") == "+OK created"
        assert client.listing()[name]["durable"] == durable
        assert client.ok(f"CREATE {name} {kind} durable={durable}") == "+OK exists"


def test_an_exclusive_queue_made_with_exclusive_1_goes_with_its_connection(
    broker: BrokerProcess,
) -> None:
    q = unique("q")
    with connect(broker) as owner:
        assert owner.ok(f"CREATE {q} queue exclusive=1") == "+OK created"
        assert owner.ok(f"CREATE {q} queue exclusive") == "+OK exists"
        assert owner.code(f"CREATE {unique()} queue exclusive=1 durable=1") == "BAD_ARGS"
    deadline = time.monotonic() + 10
    with connect(broker) as other:
        while other.request(f"STATS {q}")[1] != f"-ERR NOT_FOUND {q}".encode():
            assert time.monotonic() < deadline, "the exclusive queue outlived its connection"


def test_flags_written_1_and_0_on_delete(client: Client, on_node: bool) -> None:
    q = unique("q")
    client.ok(f"CREATE {q} queue")
    client.ok(f"PUBLISH {q} :x")
    figures(on_node, lambda: client.listing()[q]["messages"] == "1")  # (a node judges by them)
    assert client.code(f"DELETE {q} if-empty=1") == "NOT_EMPTY"
    assert client.ok(f"SUBSCRIBE {q} ack=manual") == "+OK 1"
    client.read_msg()
    assert client.code(f"DELETE {q} if-unused=1") == "IN_USE"
    assert client.code(f"DELETE {q} if-unused=1 if-empty=0") == "IN_USE"
    assert client.ok(f"DELETE {q} if-unused=0 if-empty=0") == "+OK 1"
    assert client.read_push() == b"CANCEL 1 deleted"


@pytest.mark.parametrize(
    "line",
    [
        "CREATE {n} queue durable=2",
        "CREATE {n} queue durable=true",
        "CREATE {n} queue durable=",
        "CREATE {n} queue durable=1 durable",
        "CREATE {n} queue exclusive=0 exclusive=0",
        "DELETE {n} if-empty=yes",
        "DELETE {n} if-unused=-1",
    ],
)
def test_other_flag_values_are_bad_args(client: Client, line: str) -> None:
    assert client.code(line.format(n=unique())) == "BAD_ARGS"
