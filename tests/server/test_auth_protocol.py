"""AUTH, NO_AUTH and FORBIDDEN in ``BrokerProtocol``, over StringTransport with a Clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from mbroker import __version__
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.auth import User
from mbroker.server.factory import BrokerFactory
from tests.helpers.auth import cheap_hash, write_users
from tests.helpers.conn import Conn
from tests.helpers.logs import logged
from tests.helpers.state import now

USERS = [
    # alice: her own names, publish anywhere, read hers and "jobs"
    ("alice", "s3cret", "alice.*", "*", "alice.*|jobs"),
    # bob: reads "jobs" and nothing else
    ("bob", "b0b", "-", "-", "jobs"),
    # admin: everything
    ("admin", "root", "*", "*", "*"),
    # nobody: no right on any name
    ("nobody", "n0ne", "-", "-", "-"),
]


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "users"
    return write_users(path, *(f"{u}:{cheap_hash(p)}:{c}:{w}:{r}" for u, p, c, w, r in USERS))


class Setup:
    def __init__(self, users_file: Path, **config: object) -> None:
        self.clock = Clock()
        self.config = Config(users_file=str(users_file), **config)  # type: ignore[arg-type]
        self.broker = Broker(self.clock, self.config)
        self.factory = BrokerFactory(self.broker, self.config, self.clock)

    def conn(self) -> Conn:
        return Conn(self.factory)

    def login(self, user: str, password: str) -> Conn:
        c = self.conn()
        c.send(f"AUTH {user} {password}\r\n".encode())
        assert c.lines() == [b"+OK"]
        return c


@pytest.fixture
def setup(users_file: Path) -> Setup:
    return Setup(users_file)


def test_greeting_says_auth_required(setup: Setup) -> None:
    c = setup.conn()
    assert c.greeting == (
        f"HELLO mbroker {__version__} proto=1 auth=required max-payload=1048576\r\n".encode()
    )


def test_everything_but_auth_ping_quit_needs_auth(setup: Setup) -> None:
    c = setup.conn()
    commands = [
        b"CREATE q queue",
        b"DELETE q",
        b"BIND q x",
        b"UNBIND q x",
        b"PUBLISH q :x",
        b"PUBLISH q 3\r\nabc",  # its payload is read all the same
        b"SUBSCRIBE q",
        b"UNSUBSCRIBE 1",
        b"PULL q",
        b"ACK 1",
        b"NACK 1",
        b"TOUCH 1",
        b"PURGE q",
        b"LIST",
        b"STATS",
    ]
    c.send(b"".join(cmd + b"\r\n" for cmd in commands) + b"PING\r\n")
    no_auth = b"-ERR NO_AUTH log in first: AUTH <user> <password>"
    assert c.lines() == [no_auth] * len(commands) + [b"+PONG"]
    # a run of pipelined publishes gets one refusal each
    c.send(b"PUBLISH q 1\r\nx\r\n" * 4 + b"PING\r\n")
    assert c.lines() == [no_auth] * 4 + [b"+PONG"]
    # Syntax errors are still syntax errors.
    c.send(b"FLY\r\nPUBLISH\r\n")
    assert [line.split()[1] for line in c.lines()] == [b"BAD_COMMAND", b"BAD_ARGS"]
    assert setup.broker.list_objects() == []
    c.send(b"QUIT\r\n")
    assert c.lines() == [b"+OK bye"]
    assert c.transport.disconnecting


def test_login_then_commands(setup: Setup) -> None:
    c = setup.login("alice", "s3cret")
    c.send(b"CREATE alice.q queue\r\nPUBLISH alice.q :hi\r\nPULL alice.q\r\n")
    assert c.lines() == [b"+OK created", b"+OK 1", b"MSG 0 1 alice.q - 2", b"hi", b"+OK 1"]
    assert c.server.user is not None and c.server.user.name == "alice"


def test_a_wrong_password_is_answered_late_and_logged(setup: Setup) -> None:
    with logged() as events:
        c = setup.conn()
        c.send(b"AUTH alice wrong\r\nPING\r\n")
        assert c.take() == b""  # the answer waits, and so does PING behind it
        assert c.transport.producerState == "paused"
        setup.clock.advance(0.49)
        assert c.take() == b""
        setup.clock.advance(0.01)
        assert c.lines() == [b"-ERR AUTH wrong user or password", b"+PONG"]
        assert c.transport.producerState == "producing"
        c.send(b"AUTH nobody s3cret\r\n")
        setup.clock.advance(0.5)
        assert c.lines() == [b"-ERR AUTH wrong user or password"]
    failed = [e for e in events if e.get("log_format", "").startswith("failed AUTH")]
    assert [e["user"] for e in failed] == ["alice", "nobody"]
    assert all("peer" in e for e in failed)
    assert not any("wrong" in repr(e) or "s3cret" in repr(e) for e in events)


def test_auth_holds_later_commands_until_checked(users_file: Path) -> None:
    setup = Setup(users_file)
    pending: list[Deferred[tuple[User | None, str | None]]] = []

    def check_later(user: str, password: str) -> Deferred[tuple[User | None, str | None]]:
        d: Deferred[tuple[User | None, str | None]] = Deferred()
        pending.append(d)
        return d

    setup.factory.check_password = check_later  # type: ignore[method-assign]
    c = setup.conn()
    c.send(b"PING\r\nAUTH alice s3cret\r\nCREATE alice.q queue\r\nPING\r\n")
    assert c.lines() == [b"+PONG"]
    c.send(b"PUBLISH alice.q :x\r\n")  # arrives while AUTH is checked: held too
    assert c.take() == b""
    assert setup.broker.list_objects() == []
    auth = setup.factory.auth
    assert auth is not None
    alice = auth.users.get("alice")
    pending[0].callback((alice, None))
    assert c.lines() == [b"+OK", b"+OK created", b"+PONG", b"+OK 1"]


def test_already_logged_in(setup: Setup) -> None:
    c = setup.login("alice", "s3cret")
    c.send(b"AUTH admin root\r\n")
    assert c.lines() == [b"-ERR FORBIDDEN already logged in as alice"]


def test_an_open_broker_accepts_any_auth() -> None:
    clock = Clock()
    broker = Broker(clock, Config())
    c = Conn(BrokerFactory(broker, Config(), clock))
    assert b"auth=none" in c.greeting
    c.send(b"AUTH whoever whatever\r\nCREATE q\r\n")
    assert c.lines() == [b"+OK", b"+OK created"]


def test_auth_required_without_users_lets_nobody_in() -> None:
    clock = Clock()
    config = Config(auth_required=True)
    c = Conn(BrokerFactory(Broker(clock, config), config, clock))
    assert b"auth=required" in c.greeting
    c.send(b"AUTH alice s3cret\r\n")
    clock.advance(1)
    assert c.lines() == [b"-ERR AUTH wrong user or password"]


# ---------------------------------------------------------------- limits before AUTH


def test_auth_timeout(users_file: Path) -> None:
    setup = Setup(users_file, auth_timeout=5.0)
    idle = setup.conn()
    ok = setup.login("alice", "s3cret")
    setup.clock.advance(4.9)
    assert idle.take() == b"" and not idle.transport.disconnecting
    setup.clock.advance(0.1)
    assert idle.lines() == [b"-ERR LIMIT no AUTH within 5 s"]
    assert now(lambda: idle.transport.disconnecting)
    assert not ok.transport.disconnecting
    idle.close()
    ok.close()
    assert not setup.clock.getDelayedCalls()  # no timer left behind


def test_auth_timeout_waits_for_a_check_under_way(users_file: Path) -> None:
    setup = Setup(users_file, auth_timeout=0.3)
    c = setup.conn()
    c.send(b"AUTH alice wrong\r\n")  # answered after 0.5 s
    setup.clock.advance(0.4)  # the deadline passes while the answer is delayed
    assert c.take() == b""
    setup.clock.advance(0.1)
    assert c.lines() == [b"-ERR AUTH wrong user or password"]
    setup.clock.advance(1.0)  # a second more after the deadline (seen at 0.4)
    assert c.lines() == [b"-ERR LIMIT no AUTH within 0.3 s"]


def test_no_auth_timeout_for_an_open_broker() -> None:
    clock = Clock()
    c = Conn(BrokerFactory(Broker(clock, Config()), Config(), clock))
    assert not clock.getDelayedCalls()
    c.close()


def test_a_connection_may_send_little_before_auth(users_file: Path) -> None:
    setup = Setup(users_file, pre_auth_max_bytes=1000)
    c = setup.conn()
    c.send(b"PUBLISH q 900\r\n" + b"x" * 900 + b"\r\n")
    assert c.lines() == [b"-ERR NO_AUTH log in first: AUTH <user> <password>"]
    c.send(b"PUBLISH q 900\r\n" + b"x" * 300)
    assert c.lines() == [b"-ERR LIMIT more than 1000 bytes before AUTH"]
    assert c.transport.disconnecting


def test_bytes_that_come_with_an_auth_are_not_counted(users_file: Path) -> None:
    setup = Setup(users_file, pre_auth_max_bytes=100)
    c = setup.conn()
    payload = b"y" * 5000
    c.send(b"AUTH alice s3cret\r\nCREATE alice.q queue\r\nPUBLISH alice.q 5000\r\n" + payload)
    c.send(b"\r\nPULL alice.q\r\n")
    assert c.lines() == [
        b"+OK",
        b"+OK created",
        b"+OK 1",
        b"MSG 0 1 alice.q - 5000",
        payload,
        b"+OK 1",
    ]


def test_a_huge_declared_size_before_auth(setup: Setup) -> None:
    c = setup.conn()
    c.send(b"PUBLISH q 999999999999\r\n")
    assert c.lines() == [b"-ERR TOO_BIG payload over 1048576 bytes"]
    assert c.transport.disconnecting


# ---------------------------------------------------------------- permissions


def test_configure(setup: Setup) -> None:
    admin = setup.login("admin", "root")
    admin.send(b"CREATE jobs queue\r\nCREATE x topic\r\nCREATE dl queue\r\n")
    admin.take()
    c = setup.login("alice", "s3cret")
    c.send(
        b"CREATE alice.q queue\r\n"
        b"CREATE other queue\r\n"
        b"CREATE alice.d queue dead-letter=alice.q\r\n"
        b"BIND alice.q x\r\n"
        b"BIND jobs x\r\n"
        b"DELETE alice.q\r\n"
        b"DELETE jobs\r\n"
        b"UNBIND alice.q x\r\n"
    )
    assert c.lines() == [
        b"+OK created",
        b"-ERR FORBIDDEN alice may not configure other",
        b"+OK created",
        b"-ERR FORBIDDEN alice may not read from x",  # binding reads the exchange
        b"-ERR FORBIDDEN alice may not configure jobs",
        b"+OK 0",
        b"-ERR FORBIDDEN alice may not configure jobs",
        b"-ERR FORBIDDEN alice may not read from x",
    ]
    bob = setup.login("bob", "b0b")
    bob.send(b"CREATE bob.q queue dead-letter=dl\r\n")
    assert bob.lines() == [b"-ERR FORBIDDEN bob may not configure bob.q"]


def test_dead_letter_target_needs_write(users_file: Path, tmp_path: Path) -> None:
    path = write_users(tmp_path / "u", f"carol:{cheap_hash('c')}:carol.*:carol.*:carol.*")
    setup = Setup(path)
    c = setup.login("carol", "c")
    c.send(b"CREATE carol.q queue dead-letter=elsewhere\r\n")
    c.send(b"CREATE carol.r queue dead-letter=carol.x\r\n")
    assert c.lines() == [b"-ERR FORBIDDEN carol may not write to elsewhere", b"+OK created"]


def test_write(setup: Setup) -> None:
    admin = setup.login("admin", "root")
    admin.send(b"CREATE jobs queue\r\n")
    admin.take()
    bob = setup.login("bob", "b0b")
    bob.send(b"PUBLISH jobs :x\r\nPUBLISH jobs 3\r\nabc\r\nPUBLISH nosuch :x\r\nPING\r\n")
    assert bob.lines() == [
        b"-ERR FORBIDDEN bob may not write to jobs",
        b"-ERR FORBIDDEN bob may not write to jobs",
        b"-ERR FORBIDDEN bob may not write to nosuch",  # says nothing about existence
        b"+PONG",
    ]
    alice = setup.login("alice", "s3cret")
    alice.send(b"PUBLISH jobs :x\r\n")
    assert alice.lines() == [b"+OK 1"]
    # a run of pipelined publishes is checked as a whole and refused one by one
    bob.send(b"PUBLISH jobs 1\r\nx\r\n" * 4 + b"PING\r\n")
    assert bob.lines() == [b"-ERR FORBIDDEN bob may not write to jobs"] * 4 + [b"+PONG"]
    alice.send(b"PUBLISH jobs 1\r\nx\r\n" * 4)
    assert alice.lines() == [b"+OK 1"] * 4


def test_the_write_cache_is_bounded(setup: Setup) -> None:
    bob = setup.login("bob", "b0b")
    bob.send(b"".join(b"PUBLISH n%d :x\r\n" % i for i in range(5000)))
    assert len(bob.lines()) == 5000
    assert len(bob.server.commands.may_write) <= 4096


def test_read(setup: Setup) -> None:
    admin = setup.login("admin", "root")
    admin.send(b"CREATE jobs queue\r\nCREATE secret queue\r\nCREATE x fanout\r\n")
    admin.send(b"PUBLISH jobs :j\r\nPUBLISH secret :s\r\n")
    admin.take()
    bob = setup.login("bob", "b0b")
    bob.send(b"SUBSCRIBE secret\r\nPULL secret\r\nPURGE secret\r\nSUBSCRIBE x\r\nPULL jobs\r\n")
    assert bob.lines() == [
        b"-ERR FORBIDDEN bob may not read from secret",
        b"-ERR FORBIDDEN bob may not read from secret",
        b"-ERR FORBIDDEN bob may not read from secret",
        b"-ERR FORBIDDEN bob may not read from x",
        b"MSG 0 1 jobs - 1",
        b"j",
        b"+OK 1",
    ]


def test_list_and_stats_show_what_the_user_may_touch(setup: Setup) -> None:
    admin = setup.login("admin", "root")
    admin.send(b"CREATE jobs queue\r\nCREATE secret queue\r\nCREATE x fanout\r\n")
    admin.take()
    bob = setup.login("bob", "b0b")
    bob.send(b"LIST\r\nSTATS secret\r\nSTATS nosuch\r\n")
    assert bob.lines() == [
        b"QUEUE jobs messages=0 unacked=0 consumers=0 durable=0",
        b"+OK 1",
        b"-ERR FORBIDDEN bob may not see secret",
        b"-ERR FORBIDDEN bob may not see nosuch",
    ]
    bob.send(b"STATS\r\n")
    assert bob.lines()[-1] == b"+OK"
    alice = setup.login("alice", "s3cret")
    alice.send(b"CREATE alice.x fanout\r\nSUBSCRIBE alice.x\r\nLIST\r\n")
    lines = alice.lines()
    private = [line for line in lines if line.startswith(b"QUEUE mbroker.sub.")]
    assert len(private) == 1  # her own private queue, not others'
    name = private[0].split()[1]
    alice.send(b"STATS " + name + b"\r\n")
    assert alice.lines()[-1] == b"+OK"
    bob.send(b"STATS " + name + b"\r\n")
    assert bob.lines() == [b"-ERR FORBIDDEN bob may not see " + name]


def test_a_user_with_no_right_on_any_name_does_not_see_the_broker_s_figures(
    setup: Setup,
) -> None:
    nobody = setup.login("nobody", "n0ne")
    nobody.send(b"STATS\r\nLIST\r\nPING\r\n")
    assert nobody.lines() == [
        b"-ERR FORBIDDEN nobody may not see the broker's figures (no right on any name)",
        b"+OK 0",
        b"+PONG",
    ]
    bob = setup.login("bob", "b0b")  # a right on one name is enough
    bob.send(b"STATS\r\n")
    assert b"STAT connections 2" in bob.lines()


def test_acks_and_unsubscribe_need_no_rights(setup: Setup) -> None:
    admin = setup.login("admin", "root")
    admin.send(b"CREATE jobs queue\r\nPUBLISH jobs :a\r\nPUBLISH jobs :b\r\n")
    admin.take()
    bob = setup.login("bob", "b0b")
    bob.send(b"SUBSCRIBE jobs ack=manual\r\n")
    assert bob.lines()[0] == b"+OK 1"
    bob.send(b"ACK 1\r\nNACK 2 requeue=0\r\nUNSUBSCRIBE 1\r\n")
    assert bob.lines() == [b"+OK 1", b"+OK 1", b"+OK"]


def test_a_user_with_every_right_skips_the_checks(setup: Setup) -> None:
    admin = setup.login("admin", "root")
    assert admin.server.commands.perms is None
    alice = setup.login("alice", "s3cret")
    assert alice.server.commands.perms is not None
