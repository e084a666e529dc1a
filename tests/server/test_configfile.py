"""``--config FILE``: options from a TOML file, through the command line's own rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from mbroker import config
from mbroker.server import configfile
from mbroker.server.service import BrokerService
from mbroker.server.tap import DEFAULT_LISTEN, Options, makeService
from tests.helpers.auth import cheap_hash, write_users
from tests.helpers.logs import logged
from tests.helpers.state import now

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "contrib" / "mbroker.toml"


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def with_file(tmp_path: Path, text: str, *args: str) -> Options:
    path = tmp_path / "mbroker.toml"
    path.write_text(text, encoding="utf-8")
    return parse("--config", str(path), *args)


def problem_of(tmp_path: Path, text: str, *args: str) -> str:
    options = with_file(tmp_path, text, *args)
    assert options.config_problem is not None
    assert "\n" not in options.config_problem
    assert str(tmp_path / "mbroker.toml") in options.config_problem
    return options.config_problem


def test_without_a_file_nothing_changes() -> None:
    options = parse()
    assert options["config"] is None and options.config_problem is None
    assert options["listen"] == [DEFAULT_LISTEN]


def test_every_command_line_option_may_be_in_the_file() -> None:
    options = Options()
    long_names = {name.rstrip("=") for name in options.longOpt}
    expected = long_names - {"config", "help", "version"}
    assert set(configfile.known_options(options)) == expected
    assert {"listen", "http", "data-dir", "memory", "log-format", "users"} <= expected


def test_the_example_file_loads(tmp_path: Path) -> None:
    options = parse("--config", str(EXAMPLE))
    assert options.config_problem is None
    assert options["listen"] == ["tcp:5555:interface=127.0.0.1"]
    assert options["data-dir"] == "/var/lib/mbroker"
    assert options["fsync"] == "always"
    assert options["max-payload"] == config.DEFAULT_MAX_PAYLOAD
    assert options["max-line"] == config.DEFAULT_MAX_LINE
    assert options["memory-high-water"] == config.DEFAULT_MEMORY_HIGH_WATER
    assert options["auth-timeout"] == config.DEFAULT_AUTH_TIMEOUT
    assert options["log-format"] == "text"
    assert options["http"] == ["tcp:15672:interface=127.0.0.1"]
    assert not options["memory"] and not options["disconnect-slow"]
    # every key of the example is an option (a typo would be a start-up error)
    assert set(configfile.read(str(EXAMPLE))) <= set(configfile.known_options(options))


def test_every_kind_of_value(tmp_path: Path) -> None:
    users = write_users(tmp_path / "users", f"alice:{cheap_hash('pw')}:*:*:*")
    options = with_file(
        tmp_path,
        f"""
        listen = ["tcp:1", "unix:/tmp/x.sock"]   # repeatable: a list
        http = ["tcp:15672"]                     # repeatable too
        data-dir = "/srv/mbroker"                # a path
        fsync = "interval"                       # a choice
        max-payload = 4096                       # an integer
        memory-high-water = "512M"               # a size with a unit
        private-max-bytes = 1048576              # a size as a number
        idle-timeout = 2.5                       # seconds, a float
        auth-timeout = 3                         # seconds, an integer
        disconnect-slow = true                   # a flag
        memory = false                           # a flag left off
        users = "{users}"                        # a users file, loaded to check it
        log-format = "text"
        """,
    )
    assert options.config_problem is None
    assert options["listen"] == ["tcp:1", "unix:/tmp/x.sock"]
    assert options["http"] == ["tcp:15672"]
    assert options["data-dir"] == "/srv/mbroker"
    assert options["fsync"] == "interval"
    assert options["max-payload"] == 4096
    assert options["memory-high-water"] == 512 * 1024**2
    assert options["private-max-bytes"] == 1048576
    assert options["idle-timeout"] == 2.5 and options["auth-timeout"] == 3.0
    assert options["disconnect-slow"] == 1 and options["memory"] == 0
    assert options["users"] == str(users)


def test_underscores_and_a_single_listen_string(tmp_path: Path) -> None:
    options = with_file(tmp_path, 'max_payload = 10\nlisten = "tcp:7"\ndata_dir = "d"\n')
    assert options.config_problem is None
    assert (options["max-payload"], options["listen"], options["data-dir"]) == (10, ["tcp:7"], "d")


def test_what_the_file_sets_reaches_the_service(tmp_path: Path) -> None:
    options = with_file(tmp_path, 'listen = ["tcp:0"]\nmax-line = 200\nmemory = true\n')
    service = makeService(options)
    assert isinstance(service, BrokerService)
    assert service.endpoints == ["tcp:0"]
    assert service.config == config.Config(max_line=200)
    assert service.data_dir is None


@pytest.mark.parametrize("before", [True, False])
def test_the_command_line_wins(tmp_path: Path, before: bool) -> None:
    args = ["--max-payload=200", "--listen", "tcp:9", "--memory", "--fsync", "never"]
    path = tmp_path / "mbroker.toml"
    path.write_text(
        'max-payload = 100\nlisten = ["tcp:1", "tcp:2"]\nmemory = false\nfsync = "interval"\n'
        "max-line = 300\n",
        encoding="utf-8",
    )
    config_args = ["--config", str(path)]
    options = parse(*(config_args + args if before else args + config_args))
    assert options.config_problem is None
    assert options["max-payload"] == 200
    assert options["listen"] == ["tcp:9"]  # replaces the file's list, not added to it
    assert options["memory"] == 1
    assert options["fsync"] == "never"
    assert options["max-line"] == 300  # not on the command line: the file's


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    problem = problem_of(tmp_path, "max-payload = 10\nmax-paylod = 10\n")
    assert problem.endswith("unknown key 'max-paylod'")


@pytest.mark.parametrize("key", ["config", "help", "version"])
def test_command_line_only_options_are_unknown_keys(tmp_path: Path, key: str) -> None:
    assert f"unknown key '{key}'" in problem_of(tmp_path, f'{key} = "x"\n')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max-payload = 0", "max-payload: --max-payload must be a positive integer, not '0'"),
        ("max-payload = 1.5", "--max-payload must be a positive integer, not '1.5'"),
        ('max-payload = "ten"', "--max-payload must be a positive integer, not 'ten'"),
        ("max-payload = true", "max-payload: expected a string or a number, not a boolean"),
        ("max-payload = [1]", "max-payload: expected a string or a number, not a list"),
        ('fsync = "sometimes"', "--fsync must be always, interval or never, not 'sometimes'"),
        ("idle-timeout = -1", "--idle-timeout must be a number of seconds >= 0, not '-1'"),
        ("idle-timeout = inf", "--idle-timeout must be a number of seconds >= 0, not 'inf'"),
        ('memory-high-water = "lots"', "--memory-high-water must be a size in bytes"),
        ('memory = "yes"', "memory: expected true or false, not str 'yes'"),
        ("disconnect-slow = 1", "disconnect-slow: expected true or false, not int 1"),
        ("listen = [5555]", "listen: expected a string or a list of strings, not int 5555"),
        ('log-format = "xml"', "--log-format must be text or json, not 'xml'"),
        ('users = "missing-users"', "missing-users"),
        ("[data-dir]\npath = 'x'", "data-dir: expected a string or a number, not a table"),
        ("max-payload = 1\nmax_payload = 2", "max_payload: given twice (also as max-payload)"),
    ],
)
def test_a_bad_value_is_named(tmp_path: Path, text: str, expected: str) -> None:
    problem = problem_of(tmp_path, text + "\n")
    assert problem.startswith(f"bad config file {tmp_path / 'mbroker.toml'}: ")
    assert expected in problem


def test_every_problem_is_said_in_one_line(tmp_path: Path) -> None:
    problem = problem_of(tmp_path, "max-line = 0\nwhat = 1\nmax-payload = 64\n")
    assert "max-line: --max-line must be a positive integer" in problem
    assert "unknown key 'what'" in problem


def test_a_bad_value_on_the_command_line_hides_the_files_own(tmp_path: Path) -> None:
    # the command line wins: the file's value is not even looked at
    options = with_file(tmp_path, "max-payload = 0\n", "--max-payload=5")
    assert options.config_problem is None and options["max-payload"] == 5


def test_a_missing_file(tmp_path: Path) -> None:
    options = parse("--config", str(tmp_path / "nope.toml"))
    assert options.config_problem == (
        f"cannot read config file {tmp_path / 'nope.toml'}: No such file or directory"
    )


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    problem = problem_of(tmp_path, "max-payload = \n")
    assert problem.startswith(f"config file {tmp_path / 'mbroker.toml'} is not valid TOML: ")
    assert "line 1" in problem


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "mbroker.toml").write_bytes(b'data-dir = "caf\xe9"\n')
    options = parse("--config", str(tmp_path / "mbroker.toml"))
    assert options.config_problem is not None
    assert options.config_problem.startswith(f"config file {tmp_path / 'mbroker.toml'} is not")


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    options = parse("--config", str(tmp_path))
    assert options.config_problem == f"cannot read config file {tmp_path}: Is a directory"


def test_a_bad_file_makes_a_service_that_fails_in_one_line(tmp_path: Path) -> None:
    options = with_file(tmp_path, "bogus = 1\n")
    service = makeService(options)
    assert isinstance(service, configfile.FailedStart)
    reactor = MemoryReactorClock()
    with logged() as events:
        failing = configfile.FailedStart(reactor, "bad config file x: unknown key 'bogus'")
        failing.startService()
        assert not events  # only once the reactor runs
        assert not stopped(reactor)
        for hook, args, kwargs in reactor.whenRunningHooks:
            hook(*args, **kwargs)
    critical = [e for e in events if e["log_level"].name == "critical"]
    assert [e["reason"] for e in critical] == ["bad config file x: unknown key 'bogus'"]
    assert stopped(reactor)
    triggers: Any = reactor.triggers
    assert triggers["after"]["shutdown"]  # exits with status 1 once stopped


def stopped(reactor: MemoryReactorClock) -> bool:
    """Whether the reactor was stopped (read afresh: mypy keeps an attribute narrowed)."""
    return bool(now(lambda: reactor.hasStopped))
