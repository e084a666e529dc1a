"""mbroker.config's number parsers: one set, used by ``mbroker …`` and ``twistd mbroker``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.python import usage

from mbroker import config
from mbroker.cli.parser import parse_args
from mbroker.server import tap


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (config.positive_int, "1", 1),
        (config.positive_int, "007", 7),
        (config.natural_int, "0", 0),
        (config.port_number, "65535", 65535),
        (config.positive_seconds, "0.5", 0.5),
        (config.seconds_or_zero, "0", 0.0),
        (config.byte_size, "0", 0),
        (config.byte_size, "512", 512),
        (config.byte_size, "1K", 1024),
        (config.byte_size, "512MiB", 512 * 1024**2),
        (config.byte_size, "1G", 1024**3),
        (config.byte_size, "2gb", 2 * 1024**3),
    ],
)
def test_good_numbers(parse: Callable[[str], float], text: str, value: float) -> None:
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (config.positive_int, "0", "a positive integer"),
        (config.positive_int, "-3", "a positive integer"),
        (config.positive_int, "1.5", "a positive integer"),
        (config.positive_int, "", "a positive integer"),
        (config.natural_int, "-1", "a non-negative integer"),
        (config.port_number, "0", "a port number (1-65535)"),
        (config.port_number, "65536", "a port number (1-65535)"),
        (config.port_number, "http", "a port number (1-65535)"),
        (config.positive_seconds, "0", "a positive number of seconds"),
        (config.positive_seconds, "inf", "a positive number of seconds"),
        (config.positive_seconds, "nan", "a positive number of seconds"),
        (config.seconds_or_zero, "-1", "a number of seconds >= 0"),
        (config.seconds_or_zero, "1e10", "a number of seconds >= 0"),
        (config.byte_size, "1X", "a size in bytes (or with K, M, G)"),
        (config.byte_size, "-1G", "a size in bytes (or with K, M, G)"),
        (config.byte_size, "G", "a size in bytes (or with K, M, G)"),
    ],
)
def test_bad_numbers_say_what_was_expected(
    parse: Callable[[str], float], text: str, expected: str
) -> None:
    with pytest.raises(config.BadNumber) as raised:
        parse(text)
    assert str(raised.value) == expected
    assert isinstance(raised.value, ValueError)


def test_the_cli_and_twistd_say_the_same_thing_in_their_own_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--port", "0", "ping"])
    assert "argument --port: not a port number (1-65535): '0'" in capsys.readouterr().err
    with pytest.raises(usage.UsageError, match=r"--max-line must be a positive integer, not '0'"):
        tap.Options().parseOptions(["--max-line", "0"])
    with pytest.raises(usage.UsageError, match=r"--memory-high-water must be a size in bytes"):
        tap.Options().parseOptions(["--memory-high-water", "1X"])
    options = tap.Options()
    options.parseOptions(["--memory-high-water", "2G", "--idle-timeout", "0"])
    assert options["memory-high-water"] == 2 * 1024**3
    assert options["idle-timeout"] == 0.0
