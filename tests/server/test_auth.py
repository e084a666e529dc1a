"""``mbroker.server.auth``: permission patterns, the users file, password checks."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbroker.server.auth import (
    ANYTHING,
    NOTHING,
    Authenticator,
    Pattern,
    Permissions,
    User,
    Users,
    UsersFileError,
    format_tags,
    hash_password,
    parse_tags,
    valid_user_name,
)
from tests.helpers.auth import CHEAP, cheap_hash, write_users

# ------------------------------------------------------------------ patterns


@pytest.mark.parametrize(
    "pattern, name, expected",
    [
        ("*", "anything", True),
        ("*", ".", True),
        ("jobs", "jobs", True),
        ("jobs", "jobs2", False),
        ("jobs", "job", False),
        ("alice.*", "alice.q", True),
        ("alice.*", "alice.", True),
        ("alice.*", "alice", False),
        ("alice.*", "aliceXq", False),  # '.' is a dot, not "any character"
        ("*.log", "app.log", True),
        ("*.log", "applog", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "acb", False),
        ("a*a", "a", False),
        ("a*a", "aa", True),
        ("jobs|logs", "logs", True),
        ("jobs|logs", "jobslogs", False),
        ("jobs|tmp.*", "tmp.x", True),
        ("", "jobs", False),
        ("-", "jobs", False),
        ("-", "-", False),
    ],
)
def test_pattern_matching(pattern: str, name: str, expected: bool) -> None:
    assert Pattern(pattern).matches(name) is expected


def test_a_dot_is_a_dot() -> None:
    # In a regex ".*" would match everything; here it is a dot and then anything.
    p = Pattern(".*")
    assert p.matches(".") and p.matches(".anything")
    assert not p.matches("anything")
    assert not Pattern("a.b").matches("axb")


@pytest.mark.parametrize(
    "text",
    [
        "(a+)+$",
        "^jobs$",
        "[a-z]*",
        "jobs\\d",
        "a{1,3}",
        "jobs?",
        "a+",
        "(?i)jobs",
        "jobs|",  # an empty alternative
        "|",
        "a b",
        "a:b",
        "é",
    ],
)
def test_regex_syntax_is_refused(text: str) -> None:
    with pytest.raises(UsersFileError):
        Pattern(text)


def test_pattern_limits() -> None:
    Pattern("|".join(["a"] * 64))
    with pytest.raises(UsersFileError, match="alternatives"):
        Pattern("|".join(["a"] * 65))
    Pattern("a" * 255)
    with pytest.raises(UsersFileError):
        Pattern("a" * 256)


def test_patterns_made_to_backtrack_stay_fast() -> None:
    # Each would take astronomically long as a backtracking regex (a*a*a*…b).
    evil = [Pattern("*a" * 120 + "*b"), Pattern("*" + "a*" * 127), Pattern("*.*.*.*.*.*.*.*.*x")]
    names = ["a" * 255, "a" * 254 + "c", "." * 255]
    started = time.perf_counter()
    for p in evil:
        for name in names:
            p.matches(name)
    assert time.perf_counter() - started < 0.5


def _glob_reference(pattern: str, name: str) -> bool:
    """Slow but obviously right: dynamic programming over (pattern, name) prefixes."""
    for alt in pattern.split("|") if pattern not in ("", "-") else []:
        m, n = len(alt), len(name)
        ok = [[False] * (n + 1) for _ in range(m + 1)]
        ok[0][0] = True
        for i in range(1, m + 1):
            c = alt[i - 1]
            for j in range(n + 1):
                if c == "*":
                    ok[i][j] = ok[i - 1][j] or (j > 0 and ok[i][j - 1])
                else:
                    ok[i][j] = j > 0 and ok[i - 1][j - 1] and name[j - 1] == c
        if ok[m][n]:
            return True
    return False


_glob_text = st.text(alphabet="ab.*", min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(st.lists(_glob_text, min_size=1, max_size=3), st.text(alphabet="ab.", max_size=12))
def test_pattern_agrees_with_a_reference_matcher(alternatives: list[str], name: str) -> None:
    text = "|".join(alternatives)
    assert Pattern(text).matches(name) == _glob_reference(text, name)


def test_permissions() -> None:
    p = Permissions(Pattern("alice.*"), Pattern("jobs|alice.*"), NOTHING)
    assert p.may_configure("alice.q") and not p.may_configure("jobs")
    assert p.may_write("jobs") and p.may_write("alice.x") and not p.may_write("bob")
    assert not p.may_read("jobs")
    assert p.may_see("jobs") and not p.may_see("bob")
    assert Permissions() == Permissions(ANYTHING, ANYTHING, ANYTHING)
    assert Pattern("-") == NOTHING and str(NOTHING) == "-"


# ------------------------------------------------------------------ the file


def test_user_names() -> None:
    assert valid_user_name("alice") and valid_user_name("svc-1.ops@example")
    assert valid_user_name("a" * 64)
    for bad in ("", "a" * 65, "a:b", "a b", "é", "a\n"):
        assert not valid_user_name(bad)


def test_parse_and_dump_round_trip(tmp_path: Path) -> None:
    h = cheap_hash("pw")
    path = write_users(
        tmp_path / "users",
        "# a comment",
        "",
        f"alice:{h}:alice.*:*:alice.*|jobs",
        f"  bob:{h}:-:-:jobs  ",
    )
    users = Users.load(path)
    assert len(users) == 2
    alice = users.get("alice")
    assert alice is not None and alice.hash == h
    assert alice.permissions.read == Pattern("alice.*|jobs")
    bob = users.get("bob")
    assert bob is not None and bob.permissions.configure == NOTHING
    assert Users.parse(users.dumps()) == users
    users.save(path)
    assert Users.load(path) == users
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    "line, message",
    [
        ("alice", "expected user:hash"),
        ("alice:x:*:*", "expected user:hash"),
        ("al ice:{h}:*:*:*", "bad user name"),
        ("alice:plaintext:*:*:*", "not an argon2 hash"),
        ("alice:$argon2id$garbage:*:*:*", "not a valid argon2 hash"),
        ("alice:{h}:(a+)+$:*:*", "only name characters"),
        ("alice:{h}:*:*:[a-z]", "only name characters"),
        ("alice:{h}:*:*:*:admin", "unknown tag 'admin'"),
        ("alice:{h}:*:*:*:monitoring,,administrator", "unknown tag ''"),
        ("alice:{h}:*:*:*:monitoring;administrator", "unknown tag"),
        ("alice:{h}:*:*:*:Monitoring", "unknown tag 'Monitoring'"),
        ("alice:{h}:*:*:*:monitoring:extra", "expected user:hash:configure:write:read"),
    ],
)
def test_bad_lines_are_refused_with_their_line_number(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write_users(tmp_path / "users", "# users", line.replace("{h}", cheap_hash("pw")))
    with pytest.raises(UsersFileError, match=message) as info:
        Users.load(path)
    assert "line 2" in str(info.value)


def test_tags_are_an_optional_sixth_field(tmp_path: Path) -> None:
    h = cheap_hash("pw")
    old = f"alice:{h}:alice.*:*:alice.*|jobs"
    path = write_users(
        tmp_path / "users",
        old,  # a line from before tags
        f"mon:{h}:-:-:-:monitoring",
        f"ops:{h}:-:-:-:administrator,monitoring",
        f"none:{h}:-:-:-:-",
        f"empty:{h}:-:-:-:",
        f"spaced:{h}:-:-:-: monitoring , administrator ",
    )
    users = Users.load(path)
    tags = {u.name: u.tags for u in users}
    assert tags == {
        "alice": frozenset(),
        "mon": {"monitoring"},
        "ops": {"monitoring", "administrator"},
        "none": frozenset(),
        "empty": frozenset(),
        "spaced": {"monitoring", "administrator"},
    }
    alice, mon, ops = users.get("alice"), users.get("mon"), users.get("ops")
    assert alice is not None and mon is not None and ops is not None
    assert not alice.may_monitor() and not alice.may_administer()
    assert mon.may_monitor() and not mon.may_administer()
    assert ops.may_monitor() and ops.may_administer()
    administrator = User("root", h, tags=frozenset({"administrator"}))
    assert administrator.may_monitor()  # administrator implies monitoring
    # written back: untagged users keep five fields (older brokers can read them)
    lines = users.dumps().splitlines()
    assert old in lines
    assert f"mon:{h}:-:-:-:monitoring" in lines
    assert f"ops:{h}:-:-:-:monitoring,administrator" in lines
    assert f"none:{h}:-:-:-" in lines and f"empty:{h}:-:-:-" in lines
    assert Users.parse(users.dumps()) == users


def test_parse_and_format_tags() -> None:
    assert parse_tags("") == parse_tags("-") == frozenset()
    assert parse_tags("administrator") == {"administrator"}
    assert parse_tags("monitoring,monitoring") == {"monitoring"}
    assert format_tags(frozenset()) == "-"
    assert format_tags(frozenset({"administrator", "monitoring"})) == "monitoring,administrator"
    for bad in ("management", "monitoring,", ",", "monitoring administrator", "*"):
        with pytest.raises(UsersFileError, match="unknown tag"):
            parse_tags(bad)


def test_a_user_twice_is_refused(tmp_path: Path) -> None:
    h = cheap_hash("pw")
    path = write_users(tmp_path / "users", f"a:{h}:*:*:*", f"a:{h}:*:*:*")
    with pytest.raises(UsersFileError, match="again"):
        Users.load(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="cannot read"):
        Users.load(tmp_path / "nope")


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "users"
    before = Users().with_user(User("alice", cheap_hash("pw")))
    before.save(path)
    text = path.read_text()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        before.with_user(User("bob", cheap_hash("pw"))).save(path)
    assert path.read_text() == text  # the old file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users"]  # no temporary left


def test_hash_password_is_argon2id() -> None:
    h = hash_password("s3cret", CHEAP)
    assert h.startswith("$argon2id$")
    assert "s3cret" not in h
    with pytest.raises(UsersFileError):
        hash_password("")


# ---------------------------------------------------------------- checking


def test_check(tmp_path: Path) -> None:
    path = write_users(tmp_path / "users", f"alice:{cheap_hash('s3cret')}:*:*:*")
    auth = Authenticator(path)
    user = auth.check("alice", "s3cret")
    assert user is not None and user.name == "alice"
    assert auth.check("alice", "wrong") is None
    assert auth.check("alice", "") is None
    assert auth.check("mallory", "s3cret") is None
    assert auth.check("alice", "\udcff") is None  # undecodable bytes on the wire


def test_default_hashes_verify(tmp_path: Path) -> None:
    path = write_users(tmp_path / "users", f"alice:{hash_password('s3cret')}:*:*:*")
    assert Authenticator(path).check("alice", "s3cret") is not None


def test_the_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = write_users(tmp_path / "users", f"alice:{cheap_hash('one')}:*:*:*")
    auth = Authenticator(path)
    assert auth.refresh() is None
    write_users(path, f"alice:{cheap_hash('two')}:*:*:*", f"bob:{cheap_hash('b')}:*:*:*")
    os.utime(path, ns=(1, 1))  # a different stamp even within one clock tick
    assert auth.refresh() is None
    assert auth.check("alice", "one") is None
    assert auth.check("alice", "two") is not None
    assert auth.check("bob", "b") is not None


def test_a_broken_file_keeps_the_users_known_before(tmp_path: Path) -> None:
    path = write_users(tmp_path / "users", f"alice:{cheap_hash('one')}:*:*:*")
    auth = Authenticator(path)
    write_users(path, "alice:broken")
    problem = auth.refresh()
    assert problem is not None and "expected user:hash" in problem
    assert auth.refresh() is None  # said once per change
    assert auth.check("alice", "one") is not None
    path.unlink()
    assert auth.refresh() is not None
    assert auth.check("alice", "one") is not None
