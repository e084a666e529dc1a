"""``mbroker user add|set|remove|list`` (``mbroker.cli.users``) and ``--users``."""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.python import usage

from mbroker.cli import users as usercli
from mbroker.server.auth import Authenticator, Pattern, Users
from mbroker.server.tap import Options, makeService
from tests.helpers.broker import BrokerProcess, start_broker

ROOT = Path(__file__).resolve().parents[2]


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*argv: str, stdin: str = "", tty: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    source = TTY(stdin) if tty else io.StringIO(stdin)
    code = usercli.main(list(argv), stdin=source, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def users(tmp_path: Path) -> Path:
    return tmp_path / "users"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2's real cost is tested once (test_the_real_command); here it is tiny."""
    from tests.helpers.auth import CHEAP

    real = usercli.hash_password
    monkeypatch.setattr(usercli, "hash_password", lambda pw: real(pw, CHEAP))


def test_add_list_set_remove(users: Path) -> None:
    code, out, err = run(
        "add",
        "alice",
        "--users",
        str(users),
        "--password-stdin",
        "--configure=alice.*",
        "--write=*",
        "--read=alice.*|jobs",
        stdin="s3cret\n",
    )
    assert (code, out, err) == (0, "alice configure=alice.* write=* read=alice.*|jobs\n", "")
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    assert "s3cret" not in users.read_text()
    assert Authenticator(users).check("alice", "s3cret") is not None

    code, out, err = run("add", "bob", "--users", str(users), "--password-stdin", stdin="pw")
    assert code == 0 and out == "bob configure=- write=- read=-\n"
    assert "bob may do nothing yet" in err

    code, out, _ = run("list", "--users", str(users))
    assert (code, out) == (
        0,
        "alice configure=alice.* write=* read=alice.*|jobs\nbob configure=- write=- read=-\n",
    )

    code, out, _ = run("set", "bob", "--users", str(users), "--read=jobs")
    assert (code, out) == (0, "bob configure=- write=- read=jobs\n")
    bob = Users.load(users).get("bob")
    assert bob is not None and bob.permissions.read == Pattern("jobs")
    assert Authenticator(users).check("bob", "pw") is not None  # password kept

    code, _, _ = run("set", "bob", "--users", str(users), "--password-stdin", stdin="new\n")
    assert code == 0
    assert Authenticator(users).check("bob", "pw") is None
    assert Authenticator(users).check("bob", "new") is not None

    code, out, _ = run("remove", "bob", "--users", str(users))
    assert (code, out) == (0, "bob removed\n")
    assert [u.name for u in Users.load(users)] == ["alice"]


def test_tags(users: Path) -> None:
    code, out, err = run(
        "add", "mon", "--users", str(users), "--password-stdin", "--tags", "monitoring", stdin="pw"
    )
    assert (code, out, err) == (0, "mon configure=- write=- read=- tags=monitoring\n", "")
    mon = Users.load(users).get("mon")
    assert mon is not None and mon.tags == {"monitoring"}

    code, out, _ = run("set", "mon", "--users", str(users), "--read=jobs")
    assert (code, out) == (0, "mon configure=- write=- read=jobs tags=monitoring\n")  # kept

    code, out, _ = run("set", "mon", "--users", str(users), "--tags=administrator,monitoring")
    assert (code, out) == (0, "mon configure=- write=- read=jobs tags=monitoring,administrator\n")
    run("add", "bob", "--users", str(users), "--password-stdin", "--read=jobs", stdin="pw")
    code, out, _ = run("list", "--users", str(users))
    assert (code, out) == (
        0,
        "bob configure=- write=- read=jobs\n"
        "mon configure=- write=- read=jobs tags=monitoring,administrator\n",
    )
    assert Authenticator(users).check("mon", "pw") is not None  # password kept

    code, out, _ = run("set", "mon", "--users", str(users), "--tags=-")
    assert (code, out) == (0, "mon configure=- write=- read=jobs\n")
    mon = Users.load(users).get("mon")
    assert mon is not None and mon.tags == frozenset()


def test_bad_tags_are_refused_and_change_nothing(users: Path) -> None:
    run("add", "mon", "--users", str(users), "--password-stdin", "--tags=monitoring", stdin="pw")
    before = users.read_text()
    code, out, err = run("set", "mon", "--users", str(users), "--tags=admin")
    assert (code, out) == (1, "")
    assert err.startswith("mbroker user: --tags: unknown tag 'admin'")
    assert "monitoring, administrator" in err
    code, _, err = run(
        "add", "x", "--users", str(users), "--password-stdin", "--tags=monitoring,", stdin="pw"
    )
    assert code == 1 and "--tags: unknown tag ''" in err
    assert users.read_text() == before


def test_a_user_with_only_a_tag_gets_no_nothing_yet_note(users: Path) -> None:
    code, _, err = run(
        "add", "mon", "--users", str(users), "--password-stdin", "--tags=monitoring", stdin="pw"
    )
    assert (code, err) == (0, "")


def test_password_from_the_terminal(users: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["pw1", "pw1", "pw2", "other"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert run("add", "alice", "--users", str(users), tty=True)[0] == 0
    code, _, err = run("add", "bob", "--users", str(users), tty=True)
    assert (code, err) == (1, "mbroker user: the passwords differ\n")
    assert Authenticator(users).check("alice", "pw1") is not None


@pytest.mark.parametrize(
    "argv, stdin, message",
    [
        (["add", "alice"], "pw\n", "no terminal to ask the password on"),
        (["add", "alice", "--password-stdin"], "\n", "the password is empty"),
        (["add", "alice", "--password-stdin"], "two words\n", "cannot hold white space"),
        (["add", "al:ice", "--password-stdin"], "pw\n", "bad user name"),
        (["add", "x", "--password-stdin", "--read=(a+)+$"], "pw\n", "--read: pattern"),
        (["set", "nobody", "--read=*"], "", "no user nobody"),
        (["remove", "nobody"], "", "no user nobody"),
    ],
)
def test_failures(users: Path, argv: list[str], stdin: str, message: str) -> None:
    assert run("add", "carol", "--users", str(users), "--password-stdin", stdin="c")[0] == 0
    before = users.read_text()
    code, out, err = run(*argv, "--users", str(users), stdin=stdin)
    assert code == 1 and out == ""
    assert err.startswith("mbroker user: ") and message in err
    assert users.read_text() == before


def test_adding_twice(users: Path) -> None:
    assert run("add", "alice", "--users", str(users), "--password-stdin", stdin="a")[0] == 0
    code, _, err = run("add", "alice", "--users", str(users), "--password-stdin", stdin="b")
    assert code == 1 and "alice exists" in err
    assert Authenticator(users).check("alice", "a") is not None


def test_a_broken_file_is_not_overwritten(users: Path) -> None:
    users.write_text("garbage\n")
    code, _, err = run("add", "alice", "--users", str(users), "--password-stdin", stdin="a")
    assert code == 1 and "expected user:hash" in err
    assert users.read_text() == "garbage\n"


def test_usage_errors(users: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert usercli.main([]) == 2
    assert usercli.main(["add", "alice"]) == 2  # no --users
    assert usercli.main(["fly", "--users", str(users)]) == 2
    assert usercli.main(["--help"]) == 0
    assert "add" in capsys.readouterr().out


def test_the_real_command(users: Path) -> None:
    """``python -m mbroker.cli.users``, with argon2's real (slow) parameters."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "mbroker.cli.users"]
    done = subprocess.run(
        [*command, "add", "alice", "--users", str(users), "--password-stdin", "--write=*"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "$argon2id$v=19$m=65536,t=3,p=4$" in users.read_text()
    listed = subprocess.run(
        [*command, "list", "--users", str(users)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert listed.stdout == "alice configure=- write=* read=-\n"
    assert Authenticator(users).check("alice", "s3cret") is not None


def test_twistd_option_checks_the_file(users: Path) -> None:
    with pytest.raises(usage.UsageError, match="cannot read the users file"):
        Options().parseOptions(["--users", str(users)])
    users.write_text("alice:plain:*:*:*\n")
    with pytest.raises(usage.UsageError, match="not an argon2 hash"):
        Options().parseOptions(["--users", str(users)])
    assert run("add", "alice", "--users", str(users), "--password-stdin", stdin="a")[0] == 1
    users.unlink()
    assert run("add", "alice", "--users", str(users), "--password-stdin", stdin="a")[0] == 0
    options = Options()
    options.parseOptions(["--users", str(users), "--memory"])
    service = makeService(options)
    assert service.config.users_file == str(users)  # type: ignore[attr-defined]


# ------------------------------------------- logging in from the mbroker command


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[BrokerProcess]:
    from tests.helpers.auth import cheap_hash

    users = tmp_path / "users"
    users.write_text(f"bob:{cheap_hash('b0b')}:*:*:*\n")
    broker = start_broker(tmp_path, "--users", str(users), memory_only=True)
    try:
        yield broker
    finally:
        broker.stop()


def mbroker(broker: BrokerProcess, *args: str, env: dict[str, str] | None = None) -> Any:
    from tests.helpers.proc import child_env, mbroker_command

    return subprocess.run(
        [*mbroker_command(), "--host", broker.host, "--port", str(broker.port), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**child_env(), **(env or {})},
    )


def test_the_password_from_a_file_or_the_environment(
    secured: BrokerProcess, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("b0b\n")
    from_file = mbroker(secured, "--user", "bob", "--password-file", str(secret), "list")
    assert (from_file.returncode, from_file.stderr) == (0, "")
    from_env = mbroker(secured, "list", "--user", "bob", env={"MBROKER_PASSWORD": "b0b"})
    assert (from_env.returncode, from_env.stderr) == (0, "")
    wrong = mbroker(secured, "list", "--user", "bob", env={"MBROKER_PASSWORD": "nope"})
    assert wrong.returncode == 1 and "AUTH" in wrong.stderr and "bob" in wrong.stderr
    nothing = mbroker(secured, "list", "--user", "bob", env={"MBROKER_PASSWORD": ""})
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("mbroker: no password for bob: give --password-file")
    missing = mbroker(secured, "--user", "bob", "--password-file", str(tmp_path / "no"), "list")
    assert missing.returncode == 1 and "cannot read the password file" in missing.stderr


def test_no_auth_says_which_flags_to_use(secured: BrokerProcess) -> None:
    refused = mbroker(secured, "list")
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert "NO_AUTH" in line and "--user NAME" in line and "--password-file" in line


def test_the_password_prompt_on_a_terminal(secured: BrokerProcess) -> None:
    """``--user`` alone on a terminal asks (getpass, no echo), as redis-cli and nats do."""
    import pty

    from tests.helpers.proc import child_env, mbroker_command

    argv = [*mbroker_command(), "--port", str(secured.port), "--user", "bob", "list"]
    argv[argv.index("--port") : argv.index("--port")] = ["--host", secured.host]
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of its own
        os.execve(argv[0], argv, child_env())
    seen = b""
    deadline = time.monotonic() + 60
    answered = False
    while True:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"Password for bob: " in seen:
            os.write(fd, b"b0b\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert answered and b"NAME" in seen and b"b0b" not in seen  # not echoed
