"""Authentication, permissions and attacks on a real ``twistd -n mbroker --users FILE``.

Every attack ends the same way: the broker answers with the right error (or closes
that one connection), keeps serving the others, and its memory stays bounded.
"""

from __future__ import annotations

import io
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mbroker.cli import users as usercli
from mbroker.server.auth import hash_password
from tests.helpers.auth import CHEAP, cheap_hash
from tests.helpers.broker import BrokerProcess, start_broker, twistd_command
from tests.helpers.contract import Client, connect, rss_bytes, unique

MiB = 1024 * 1024
NO_AUTH = "-ERR NO_AUTH log in first: AUTH <user> <password>"


def write_users_file(path: Path) -> Path:
    lines = [
        # alice's hash has argon2's real parameters: checked in the broker's threads
        f"alice:{hash_password('s3cret')}:alice.*:*:alice.*|jobs",
        f"bob:{cheap_hash('b0b')}:-:-:jobs",
        f"admin:{cheap_hash('root')}:*:*:*",
        # a regex-minded admin: '.*' is a dot and then anything, not "everything"
        f"dot:{cheap_hash('dot')}:.*:.*:.*",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    tmp = tmp_path_factory.mktemp("secured")
    users = write_users_file(tmp / "users")
    broker = start_broker(
        tmp,
        "--users",
        str(users),
        "--auth-timeout",
        "1",
        "--max-subscriptions",
        "100",
        memory_only=True,
    )
    try:
        yield broker
    finally:
        broker.stop()


def login(broker: BrokerProcess, user: str, password: str) -> Client:
    c = connect(broker)
    assert c.ok(f"AUTH {user} {password}") == "+OK"
    return c


def alive(broker: BrokerProcess) -> None:
    """The broker still serves a fresh connection."""
    with connect(broker) as c:
        assert c.ok("PING") == "+PONG"


# ------------------------------------------------------------------ auth


def test_greeting_and_login(secured: BrokerProcess) -> None:
    with connect(secured) as c:
        assert b" auth=required " in c.hello
        assert c.err("CREATE alice.q queue") == NO_AUTH
        assert c.ok("PING") == "+PONG"
        started = time.monotonic()
        assert c.err("AUTH alice wrong") == "-ERR AUTH wrong user or password"
        assert time.monotonic() - started >= 0.45  # failures are slowed
        assert c.ok("AUTH alice s3cret") == "+OK"
        assert c.ok("CREATE alice.q queue") == "+OK created"
        assert c.ok("DELETE alice.q") == "+OK 0"
    secured.wait_for_line(rb"failed AUTH as 'alice' from 127\.0\.0\.1:\d+", 5)
    secured.wait_for_line(rb"alice logged in from 127\.0\.0\.1:\d+", 5)
    assert "wrong" not in secured.output()  # passwords are never logged


def test_an_unknown_user_takes_as_long_as_a_wrong_password(secured: BrokerProcess) -> None:
    with connect(secured) as c:
        started = time.monotonic()
        assert c.err("AUTH mallory s3cret").startswith("-ERR AUTH ")
        assert time.monotonic() - started >= 0.45


def test_the_reactor_is_not_blocked_by_password_checks(secured: BrokerProcess) -> None:
    clients = [connect(secured) for _ in range(4)]
    try:
        for c in clients:  # four real argon2 checks, two at a time in threads
            c.send(b"AUTH alice s3cret\r\n")
        with connect(secured) as other:
            started = time.monotonic()
            assert other.ok("PING") == "+PONG"
            assert time.monotonic() - started < 0.5
        for c in clients:
            assert c.read_reply(30) == ([], b"+OK")
    finally:
        for c in clients:
            c.close()


def test_commands_pipelined_after_auth_wait_for_it(secured: BrokerProcess) -> None:
    with connect(secured) as c:
        q = f"alice.{unique()}"
        c.send(f"AUTH alice s3cret\r\nCREATE {q} queue\r\nPUBLISH {q} :x\r\n".encode())
        assert [c.read_reply()[1] for _ in range(3)] == [b"+OK", b"+OK created", b"+OK 1"]
        c.ok(f"DELETE {q}")


def test_permissions(secured: BrokerProcess) -> None:
    with login(secured, "admin", "root") as admin, login(secured, "bob", "b0b") as bob:
        admin.ok("CREATE jobs queue")
        admin.ok("CREATE secret queue")
        admin.ok("PUBLISH jobs :job")
        assert bob.err("CREATE bobs queue") == "-ERR FORBIDDEN bob may not configure bobs"
        assert bob.err("PUBLISH jobs :x") == "-ERR FORBIDDEN bob may not write to jobs"
        assert bob.err("PULL secret") == "-ERR FORBIDDEN bob may not read from secret"
        assert bob.err("DELETE jobs") == "-ERR FORBIDDEN bob may not configure jobs"
        assert [m.payload for m in bob.pull("PULL jobs")] == [b"job"]
        assert list(bob.listing()) == ["jobs"]
        with login(secured, "dot", "dot") as dot:
            assert dot.code("PULL jobs") == "FORBIDDEN"  # '.*' is not "everything"
            assert dot.ok("CREATE .dotted queue") == "+OK created"
            dot.ok("DELETE .dotted")
        admin.ok("DELETE jobs")
        admin.ok("DELETE secret")


def test_a_user_added_while_running_can_log_in(secured: BrokerProcess, tmp_path: Path) -> None:
    args = secured.process.args
    assert isinstance(args, list)
    users = Path(args[args.index("--users") + 1])
    with connect(secured) as c:
        assert c.err("AUTH carol c4rol").startswith("-ERR AUTH ")
    before = users.read_text()
    try:
        with pytest.MonkeyPatch.context() as mp:
            real = usercli.hash_password
            mp.setattr(usercli, "hash_password", lambda pw: real(pw, CHEAP))
            code = usercli.main(
                ["add", "carol", "--users", str(users), "--password-stdin", "--read=*"],
                stdin=io.StringIO("c4rol\n"),
                stdout=io.StringIO(),
            )
        assert code == 0
        with connect(secured) as c:
            assert c.ok("AUTH carol c4rol") == "+OK"
            assert c.code("CREATE carols queue") == "FORBIDDEN"
    finally:
        users.write_text(before)


# ------------------------------------------------------------ before AUTH


def test_a_huge_declared_size_before_auth(secured: BrokerProcess) -> None:
    with connect(secured) as c:
        c.send(b"PUBLISH jobs 99999999999999\r\n")
        assert c.readline() == b"-ERR TOO_BIG payload over 1048576 bytes"
        assert c.expect_closed()
    with connect(secured) as c:  # within max-payload, but more than a login needs
        c.send(b"PUBLISH jobs 1000000\r\n")
        c.send(b"x" * 200_000)
        assert c.readline() == b"-ERR LIMIT more than 65536 bytes before AUTH"
        assert c.expect_closed()
    alive(secured)


def test_every_command_before_auth(secured: BrokerProcess) -> None:
    with connect(secured) as c:
        for line in [
            "CREATE q queue",
            "DELETE q",
            "BIND q x",
            "UNBIND q x",
            "SUBSCRIBE q",
            "UNSUBSCRIBE 1",
            "PULL q wait=10000",
            "ACK 1",
            "NACK 1",
            "TOUCH 1",
            "PURGE q",
            "LIST",
            "STATS",
        ]:
            assert c.err(line) == NO_AUTH, line
        assert c.publish("jobs", b"x" * 1000) == NO_AUTH  # its payload is read all the same
        assert c.ok("PING") == "+PONG"
        assert c.ok("QUIT") == "+OK bye"
        assert c.expect_closed()


def test_a_connection_that_never_logs_in(secured: BrokerProcess) -> None:
    with connect(secured) as silent, connect(secured) as chatty:
        chatty.ok("PING")
        started = time.monotonic()
        assert silent.readline(10) == b"-ERR LIMIT no AUTH within 1 s"
        assert silent.expect_closed()
        assert 0.8 < time.monotonic() - started < 5
        # Talking is not logging in: chatty had the same deadline.
        assert chatty.readline(10) == b"-ERR LIMIT no AUTH within 1 s"
        assert chatty.expect_closed()
    with login(secured, "bob", "b0b") as c:  # logged in: no deadline
        assert c.quiet(1.2)
        assert c.ok("PING") == "+PONG"


# ------------------------------------------------------------- bad input


def test_server_frames_from_a_client(secured: BrokerProcess) -> None:
    with login(secured, "admin", "root") as c:
        for line in [
            "MSG 1 1 q - 5",
            "CANCEL 1 deleted",
            "HELLO mbroker 1.0 proto=1 auth=none max-payload=1",
            "+OK",
            "-ERR INTERNAL x",
            "STAT uptime 1",
            "QUEUE q messages=0 unacked=0 consumers=0 durable=0",
            "EXCHANGE x topic durable=0 bindings=0",
        ]:
            assert c.code(line) == "BAD_COMMAND", line
        assert c.ok("PING") == "+PONG"


def test_a_payload_shorter_than_declared(secured: BrokerProcess) -> None:
    with login(secured, "admin", "root") as c:
        q = unique("q")
        c.ok(f"CREATE {q} queue")
        # 10 declared, 5 sent: the next command is read as the rest of the payload
        c.send(f"PUBLISH {q} 10\r\nhello\r\nPING\r\n".encode())
        assert c.readline() == b"-ERR BAD_FRAME payload not followed by a line end"
        assert c.expect_closed()
    with login(secured, "admin", "root") as c:
        assert c.stats(q)["messages"] == "0"  # nothing was published
        c.ok(f"DELETE {q}")


def test_a_payload_longer_than_declared(secured: BrokerProcess) -> None:
    with login(secured, "admin", "root") as c:
        q = unique("q")
        c.ok(f"CREATE {q} queue")
        c.send(f"PUBLISH {q} 3\r\nhello\r\n".encode())
        assert c.readline() == b"-ERR BAD_FRAME payload not followed by a line end"
        assert c.expect_closed()
    with login(secured, "admin", "root") as c:
        assert c.stats(q)["messages"] == "0"
        c.ok(f"DELETE {q}")


@pytest.mark.parametrize(
    "line, code",
    [
        (b"PUBLISH q -5", "BAD_ARGS"),  # "-5" is a routing key... that is not valid
        (b"PUBLISH q five", "BAD_ARGS"),
        (b"PUBLISH q 0x10", "BAD_ARGS"),
        (b"PUBLISH q 1e3", "BAD_ARGS"),
        (b"CREATE q queue colour=red", "BAD_ARGS"),
        (b"CREATE q queue max-length=-1", "BAD_ARGS"),
        (b"CREATE q queue max-length=99999999999999999999", "BAD_ARGS"),
        (b"SUBSCRIBE q prefetch=lots", "BAD_ARGS"),
        (b"PULL q wait=", "BAD_ARGS"),
        (b"ACK -1", "BAD_ARGS"),
        (b"ACK 3-1", "BAD_ARGS"),
        (b"CREATE " + b"n" * 256 + b" queue", "BAD_ARGS"),
        (b"BIND q x " + b"k" * 256, "BAD_ARGS"),
        (b"CREATE q\x00 queue", "BAD_ARGS"),
        (b"CREATE mbroker.mine queue", "BAD_ARGS"),
        (b"\xff\xfe\x00garbage", "BAD_COMMAND"),
        (b"\x1b[2J\x07", "BAD_COMMAND"),
    ],
)
def test_bad_input_is_refused_and_the_connection_stays(
    secured: BrokerProcess, line: bytes, code: str
) -> None:
    with login(secured, "admin", "root") as c:
        assert c.code(line) == code
        assert c.ok("PING") == "+PONG"


def test_names_at_the_length_limit(secured: BrokerProcess) -> None:
    with login(secured, "admin", "root") as c:
        name = "n" * 255
        assert c.ok(f"CREATE {name} queue") == "+OK created"
        assert c.ok(f"PUBLISH {name} {'k' * 255} :x") == "+OK 1"
        assert c.code(f"PUBLISH {name} {'k' * 256} :x") == "BAD_ARGS"
        assert c.code(f"PUBLISH {name}n :x") == "BAD_ARGS"
        c.ok(f"DELETE {name}")


def test_binary_garbage_and_truncated_frames(secured: BrokerProcess) -> None:
    rss_before = rss_bytes(secured)
    garbage = bytes(range(256)) * 40  # no line longer than 16 KiB: LF every 256 bytes
    with login(secured, "admin", "root") as c:
        c.send(garbage + b"\r\nPING\r\n")
        while True:
            _, status = c.read_reply()
            if status == b"+PONG":
                break
            assert status.startswith(b"-ERR BAD_COMMAND "), status
    with login(secured, "admin", "root") as c:  # a line that never ends
        c.send(b"PUBLISH x " + b"k" * 20_000)
        assert c.readline() == b"-ERR LINE_TOO_LONG line longer than 16384 bytes"
        assert c.expect_closed()
    with login(secured, "admin", "root") as c:  # a payload that never ends: cut
        c.send(b"PUBLISH jobs 1000\r\n" + b"x" * 10)
    alive(secured)
    assert rss_bytes(secured) - rss_before < 16 * MiB


# ------------------------------------------------------------------ floods


def test_a_flood_of_subscribes(secured: BrokerProcess) -> None:
    rss_before = rss_bytes(secured)
    with login(secured, "admin", "root") as c:
        ex = unique("ex")
        c.ok(f"CREATE {ex} topic")
        c.send(f"SUBSCRIBE {ex} a.b\r\n".encode() * 20_000)
        statuses = [c.read_reply(30)[1] for _ in range(20_000)]
        assert statuses[:100] == [b"+OK %d" % i for i in range(1, 101)]
        assert set(statuses[100:]) == {b"-ERR LIMIT at most 100 subscriptions per connection"}
        assert c.stats()["queues"] != ""
        assert int(c.stats(ex)["bindings"]) == 100
        grown = rss_bytes(secured) - rss_before
        c.ok(f"DELETE {ex}")
    alive(secured)
    print(f"20,000 SUBSCRIBEs on one connection: RSS grew {grown / MiB:.1f} MiB")
    assert grown < 24 * MiB


def test_thousands_of_bindings_from_one_connection(secured: BrokerProcess) -> None:
    n = 5000
    rss_before = rss_bytes(secured)
    with login(secured, "admin", "root") as c:
        ex, q = unique("ex"), unique("q")
        c.ok(f"CREATE {ex} topic")
        c.ok(f"CREATE {q} queue max-length=10")
        c.send(b"".join(f"BIND {q} {ex} k{i}.*.#\r\n".encode() for i in range(n)))
        assert [c.read_reply(30)[1] for _ in range(n)] == [b"+OK"] * n
        grown = rss_bytes(secured) - rss_before
        started = time.monotonic()
        for i in range(0, n, 50):
            assert c.ok(f"PUBLISH {ex} k{i}.x.y :m") == "+OK 1"
        per_publish = (time.monotonic() - started) / (n / 50)
        assert c.stats(ex)["bindings"] == str(n)
        c.ok(f"DELETE {ex}")
        c.ok(f"DELETE {q}")
    alive(secured)
    print(
        f"{n} bindings: RSS grew {grown / MiB:.1f} MiB; a publish took {per_publish * 1e3:.2f} ms"
    )
    assert grown < 32 * MiB
    assert per_publish < 0.05


def test_patterns_made_to_blow_up_matching(secured: BrokerProcess) -> None:
    with login(secured, "admin", "root") as c:
        ex, q = unique("ex"), unique("q")
        c.ok(f"CREATE {ex} topic")
        c.ok(f"CREATE {q} queue max-length=10")
        hashes = ".".join(["#"] * 127)  # 253 bytes of '#.#.#…'
        alternating = ".".join(["#", "a"] * 63) + ".b"
        c.ok(f"BIND {q} {ex} {hashes}")
        c.ok(f"BIND {q} {ex} {alternating}")
        c.ok(f"BIND {q} {ex} " + ".".join(["*"] * 127))
        started = time.monotonic()
        for key in [".".join(["a"] * 127), ".".join(["a"] * 126) + ".c", "a", "b"]:
            assert c.ok(f"PUBLISH {ex} {key} :m") == "+OK 1"
        assert time.monotonic() - started < 1.0
        c.ok(f"DELETE {ex}")
        c.ok(f"DELETE {q}")


def test_a_users_file_with_regex_syntax_is_refused(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(f"eve:{cheap_hash('e')}:(a+)+$:*:*\n")
    done = subprocess.run(
        [*twistd_command(), "-n", "--pidfile=", "mbroker", "--memory", "--users", str(users)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "only name characters" in done.stdout + done.stderr


# ----------------------------------------------------------- open brokers


def test_an_open_broker_on_the_network_warns(tmp_path: Path) -> None:
    broker = start_broker(
        tmp_path, "--listen", "tcp:0:interface=0.0.0.0", "--idle-timeout", "1", memory_only=True
    )
    try:
        output = broker.output()
        assert "mbroker is open: no --users file" in output
        # once, for 0.0.0.0: not for the loopback endpoint that start_broker adds
        assert len(re.findall(r"mbroker is open to the network on 0\.0\.0\.0:\d+", output)) == 1
        assert "open to the network on 127.0.0.1" not in output
        with broker.connect() as idle:  # --idle-timeout: nobody may sit there
            assert b" auth=none " in idle.hello
            started = time.monotonic()
            assert idle.readline(10) == b"-ERR LIMIT idle for 1 s"
            assert idle.expect_closed()
            assert time.monotonic() - started > 0.8
    finally:
        broker.stop()
