"""``--config FILE``: the options of ``twistd mbroker`` read from a TOML file.

A key is an option's long name, with dashes or underscores (``max-payload`` or
``max_payload``); a value is a string or a number for an option that takes one, a
boolean for a flag, a list of strings for a repeatable option (``listen``).  Every value
goes through the very handler the command line uses (the option's coerce function, or
its ``opt_`` method), so the file has no rules of its own.  The command line wins over
the file, whichever comes first.

Problems (an unreadable file, bad TOML, an unknown key, a bad value) are collected into
one line that names the file and the key: :func:`apply_file` returns it, and
:class:`FailedStart` says it as the broker's other start-up failures are said.
"""

from __future__ import annotations

import getopt
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.python import usage

#: ``tomllib`` from Python 3.11 on, the ``tomli`` package (the same code) before it.
_toml: Any = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")

#: Options that only make sense on the command line.
COMMAND_LINE_ONLY = frozenset({"config", "help", "version"})


class ConfigFileError(Exception):
    """The config file cannot be used; the message is one line naming the file."""


def read(path: str) -> dict[str, Any]:
    """The table in the TOML file at ``path``, or a :class:`ConfigFileError`."""
    try:
        with open(path, "rb") as f:
            return dict(_toml.load(f))
    except OSError as e:
        raise ConfigFileError(f"cannot read config file {path}: {e.strerror or e}") from None
    except _toml.TOMLDecodeError as e:
        raise ConfigFileError(f"config file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"config file {path} is not UTF-8: {e}") from None


def known_options(options: usage.Options) -> dict[str, str]:
    """The options a file may set: long name -> ``flag``, ``parameter`` or ``repeatable``."""
    kinds: dict[str, str] = {}
    for flag in getattr(options, "optFlags", []):
        kinds[flag[0]] = "flag"
    for parameter in getattr(options, "optParameters", []):
        kinds[parameter[0]] = "parameter"
    for attribute in dir(type(options)):
        if attribute.startswith("opt_"):
            name = attribute[4:].replace("_", "-")
            kinds.setdefault(name, "repeatable")
    for name in COMMAND_LINE_ONLY:
        kinds.pop(name, None)
    return kinds


def given_on_command_line(options: usage.Options, argv: Sequence[str]) -> set[str]:
    """The long names of the options ``argv`` sets (``argv`` parsed already, so valid).

    The same scan :meth:`usage.Options.parseOptions` makes, over its public tables."""
    opts, _ = getopt.getopt(list(argv), options.shortOpt, options.longOpt)
    given = set()
    for opt, _value in opts:
        name = opt[2:] if opt.startswith("--") else opt[1:]
        if name not in options.synonyms:
            name = name.replace("-", "_")
        given.add(options.synonyms.get(name, name).replace("_", "-"))
    return given


def _as_text(key: str, value: Any) -> str:
    """A scalar TOML value as the text the command line would carry."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    raise ConfigFileError(f"{key}: expected a string or a number, not {_kind(value)}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {value!r}"


def _coerce(options: usage.Options, name: str) -> Any:
    for parameter in getattr(options, "optParameters", []):
        if parameter[0] == name:
            return parameter[4] if len(parameter) > 4 else None
    return None


def _apply(options: usage.Options, name: str, kind: str, key: str, value: Any) -> None:
    """Set option ``name`` from the file's ``key = value``, as the command line would."""
    try:
        if kind == "flag":
            if not isinstance(value, bool):
                raise ConfigFileError(f"{key}: expected true or false, not {_kind(value)}")
            options[name] = 1 if value else 0
        elif kind == "parameter":
            coerce = _coerce(options, name)
            text = _as_text(key, value)
            options[name] = coerce(text) if coerce is not None else text
        else:
            values = value if isinstance(value, list) else [value]
            handler = getattr(options, "opt_" + name.replace("-", "_"))
            for item in values:
                if not isinstance(item, str):
                    raise ConfigFileError(
                        f"{key}: expected a string or a list of strings, not {_kind(item)}"
                    )
                handler(item)
    except (usage.UsageError, ValueError) as e:
        raise ConfigFileError(f"{key}: {e}") from None


def apply_file(options: usage.Options, path: str, argv: Sequence[str]) -> str | None:
    """Set every option the file at ``path`` gives and ``argv`` does not.

    Returns ``None``, or the one line that says what is wrong with the file (every
    problem, each naming its key; the good keys are applied all the same)."""
    try:
        table = read(path)
    except ConfigFileError as e:
        return str(e)
    kinds = known_options(options)
    given = given_on_command_line(options, argv)
    problems: list[str] = []
    seen: dict[str, str] = {}
    for key, value in table.items():
        name = key.replace("_", "-")
        if name in COMMAND_LINE_ONLY or name not in kinds:
            problems.append(f"unknown key {key!r}")
            continue
        if name in seen:
            problems.append(f"{key}: given twice (also as {seen[name]})")
            continue
        seen[name] = key
        if name in given:
            continue  # the command line wins
        try:
            _apply(options, name, kinds[name], key, value)
        except ConfigFileError as e:
            problems.append(str(e))
    if problems:
        return f"bad config file {path}: " + "; ".join(problems)
    return None


class FailedStart(Service):
    """Stands in for the broker when its options cannot be used: says why in one
    critical line once the reactor runs, and makes twistd exit with status 1."""

    log = Logger()

    def __init__(self, reactor: IReactorCore, reason: str) -> None:
        self.reactor = reactor
        self.reason = reason

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._fail)

    def _fail(self) -> None:
        from mbroker.server.service import exit_failed

        self.log.critical("mbroker cannot start: {reason}", reason=self.reason)
        self.reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
        self.reactor.stop()
