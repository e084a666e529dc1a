"""``mbroker user add|set|remove|list --users FILE``: manage a broker's users file.

:func:`main` takes the arguments after ``user`` (``mbroker user add alice --users
users.txt`` calls ``main(["add", "alice", "--users", "users.txt"])``); it is also
``python -m mbroker.cli.users``.  Passwords are read from the terminal (twice) or,
with ``--password-stdin``, from the first line of standard input; they are never
command-line arguments (other users of the machine could read those).  Only the
argon2id hash is stored.  The file is rewritten atomically under a lock, and a
running broker picks the change up at the next AUTH.

A new user has no rights until ``--configure``, ``--write`` and ``--read`` give some:
patterns of names, ``*`` for all (see :mod:`mbroker.server.auth` and docs/security.rst).
``--tags monitoring`` or ``--tags administrator`` (``-`` for none) opens the HTTP API
wider to the user: every figure, or every figure and every action.
"""

from __future__ import annotations

import argparse
import fcntl
import getpass
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from mbroker.server.auth import (
    NOTHING,
    TAGS,
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

#: exit statuses
OK, FAILED, USAGE = 0, 1, 2


class _Failed(Exception):
    """An error to print (without a traceback), exit status 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbroker user",
        description="Manage the users file of an mbroker broker (twistd mbroker --users FILE).",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def users_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--users", required=True, metavar="FILE", help="the users file")

    def rights(p: argparse.ArgumentParser, default: str | None) -> None:
        what = {
            "configure": "names the user may CREATE, DELETE, BIND and UNBIND",
            "write": "names the user may PUBLISH to",
            "read": "names the user may SUBSCRIBE to, PULL from, PURGE and bind to",
        }
        for right, text in what.items():
            p.add_argument(
                f"--{right}",
                default=default,
                metavar="PATTERN",
                help=f"{text}: globs separated by '|', '*' for any run of name "
                "characters, '-' for none" + (" (default: none)" if default is not None else ""),
            )
        p.add_argument(
            "--tags",
            default=default,
            metavar="TAGS",
            help=f"the user's HTTP API tags, comma-separated ({', '.join(TAGS)}), '-' for "
            "none: monitoring reads every figure, administrator also takes every action"
            + (" (default: none)" if default is not None else ""),
        )

    def password(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input",
        )

    add = sub.add_parser("add", help="add a user (asks for the password)")
    add.add_argument("name", help="the user's name")
    users_option(add)
    rights(add, "-")
    password(add)

    change = sub.add_parser("set", help="change a user's rights, or password (--password)")
    change.add_argument("name", help="the user's name")
    users_option(change)
    rights(change, None)
    change.add_argument("--password", action="store_true", help="ask for a new password")
    password(change)

    remove = sub.add_parser("remove", help="remove a user")
    remove.add_argument("name", help="the user's name")
    users_option(remove)

    listing = sub.add_parser("list", help="list the users and their rights")
    users_option(listing)
    return parser


@contextmanager
def _locked(path: str) -> Iterator[None]:
    """Holds ``<path>.lock`` so that two commands do not lose each other's change."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load(path: str, missing_ok: bool = False) -> Users:
    if missing_ok and not os.path.exists(path):
        return Users()
    try:
        return Users.load(path)
    except UsersFileError as e:
        raise _Failed(str(e)) from None


def _pattern(text: str, right: str) -> Pattern:
    try:
        return Pattern(text)
    except UsersFileError as e:
        raise _Failed(f"--{right}: {e}") from None


def _tags(text: str) -> frozenset[str]:
    try:
        return parse_tags(text)
    except UsersFileError as e:
        raise _Failed(f"--tags: {e}") from None


def _read_password(from_stdin: bool, stdin: TextIO) -> str:
    if from_stdin:
        line = stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    elif stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise _Failed("the passwords differ")
    else:
        raise _Failed("no terminal to ask the password on: use --password-stdin")
    if not password:
        raise _Failed("the password is empty")
    if password != password.strip() or len(password.split()) != 1:
        raise _Failed("a password cannot hold white space (AUTH sends it as one token)")
    return password


def _describe(user: User) -> str:
    p = user.permissions
    text = f"{user.name} configure={p.configure} write={p.write} read={p.read}"
    return f"{text} tags={format_tags(user.tags)}" if user.tags else text


def _run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
    path: str = args.users
    if args.action == "list":
        for listed in sorted(_load(path), key=lambda u: u.name):
            print(_describe(listed), file=stdout)
        return
    name: str = args.name
    if not valid_user_name(name):
        raise _Failed(f"bad user name {name!r}: 1-64 characters of A-Z a-z 0-9 _ - . @")
    user: User | None
    with _locked(path):
        if args.action == "add":
            users = _load(path, missing_ok=True)
            if users.get(name) is not None:
                raise _Failed(f"{name} exists (change it with 'mbroker user set')")
            permissions = Permissions(
                _pattern(args.configure, "configure"),
                _pattern(args.write, "write"),
                _pattern(args.read, "read"),
            )
            tags = _tags(args.tags)
            password = _read_password(args.password_stdin, stdin)
            user = User(name, hash_password(password), permissions, tags)
            users = users.with_user(user)
            if permissions == Permissions(NOTHING, NOTHING, NOTHING) and not tags:
                print(
                    f"note: {name} may do nothing yet; give rights with "
                    f"'mbroker user set {name} --configure … --write … --read …'",
                    file=stderr,
                )
        elif args.action == "set":
            users = _load(path)
            old = users.get(name)
            if old is None:
                raise _Failed(f"no user {name} in {path}")
            p = old.permissions
            permissions = Permissions(
                p.configure if args.configure is None else _pattern(args.configure, "configure"),
                p.write if args.write is None else _pattern(args.write, "write"),
                p.read if args.read is None else _pattern(args.read, "read"),
            )
            tags = old.tags if args.tags is None else _tags(args.tags)
            hashed = old.hash
            if args.password or args.password_stdin:
                hashed = hash_password(_read_password(args.password_stdin, stdin))
            user = User(name, hashed, permissions, tags)
            users = users.with_user(user)
        else:  # remove
            users = _load(path)
            if users.get(name) is None:
                raise _Failed(f"no user {name} in {path}")
            users = users.without(name)
            user = None
        try:
            users.save(path)
        except OSError as e:
            raise _Failed(f"cannot write {path}: {e}") from None
    if user is not None:
        print(_describe(user), file=stdout)
    else:
        print(f"{name} removed", file=stdout)


def main(
    argv: list[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``mbroker user ARGS``; returns the exit status (0 done, 1 failed, 2 usage)."""
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # argparse printed the usage
        return USAGE if e.code else OK
    try:
        _run(args, stdin, stdout, stderr)
    except _Failed as e:
        print(f"mbroker user: {e}", file=stderr)
        return FAILED
    except KeyboardInterrupt:
        return FAILED
    return OK


if __name__ == "__main__":
    sys.exit(main())
