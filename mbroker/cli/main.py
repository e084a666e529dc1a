"""The ``mbroker`` command's entry point (:func:`main`): parse, connect, run a subcommand,
turn every failure into one line and an exit status.

::

    mbroker create jobs queue
    mbroker publish jobs "hello"
    seq 100000 | mbroker publish jobs          # one message per line, with a progress bar
    mbroker subscribe jobs --count 10 --json
    mbroker list

It connects to ``localhost:5555`` unless told ``--host``/``--port`` or a Twisted
endpoint string (``--connect tls:broker:5555``).  Exit status: 0 ok, 1 an error
(the broker's, printed with its code, or no connection), 2 a usage error, 130
interrupted (Ctrl-C).  Every error is one line on stderr, never a traceback.

``pull`` and ``subscribe`` acknowledge a message only once it is written and
flushed (read, on a pipe: see :class:`~mbroker.cli.output.Output`); what they did
not print stays in the queue.  ``publish`` reads its input as it comes, so
``tail -f log | mbroker publish logs`` publishes each line at once.

The arguments are :mod:`mbroker.cli.parser`'s, the subcommands :mod:`mbroker.cli.commands`'
(on the Deferred client, under :func:`twisted.internet.task.react`), what they print
:mod:`mbroker.cli.output`'s; ``mbroker user …`` is :mod:`mbroker.cli.users`.
``python -m mbroker`` is this command too.
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn, TextIO

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import DNSLookupError
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from mbroker.cli.commands import CommandReactor
from mbroker.cli.output import complain
from mbroker.cli.parser import PASSWORD_ENV, parse_args
from mbroker.client.connection import Client, ClientError, connect, tcp_endpoint
from mbroker.errors import AuthFailed, BrokerError, NoAuth

__all__ = ["INTERRUPTED", "main", "prepare", "run"]

#: The exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``mbroker`` console script (and ``python -m mbroker``)."""
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        if words[:1] == ["user"]:  # ``mbroker user …`` edits a users file: no broker needed
            from mbroker.cli import users as usercli

            raise SystemExit(usercli.main(words[1:]))
        args = parse_args(words)
        code = prepare(args)
        if code:
            raise SystemExit(code)
        from twisted.internet import task

        task.react(_main, (args,))
    except KeyboardInterrupt:  # before the reactor took Ctrl-C over
        sys.stderr.write("\n")
        raise SystemExit(INTERRUPTED) from None
    raise SystemExit(0)  # not reached: react exits


class _Failed(Exception):
    """A problem found before connecting: one line on stderr, exit status 1."""


def prepare(args: argparse.Namespace, stdin: TextIO | None = None) -> int:
    """What can be done before connecting: read the password, open the input.

    Returns 0, or the exit status after printing why not.
    """
    args.prepared = True
    try:
        args.password = _password(args, sys.stdin if stdin is None else stdin)
        if args.command == "publish" and args.message is None:
            args.source = _open_input(args.file)
    except _Failed as e:
        complain(str(e))
        return 1
    except (KeyboardInterrupt, EOFError):  # Ctrl-C or Ctrl-D at the prompt
        sys.stderr.write("\n")
        return INTERRUPTED
    return 0


def _password(args: argparse.Namespace, stdin: TextIO) -> str | None:
    """--password, else the first line of --password-file, else $MBROKER_PASSWORD,
    else (with --user, on a terminal) a prompt."""
    if args.user is None or args.password is not None:
        given: str | None = args.password
        return given
    if args.password_file is not None:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                line = f.readline()
        except (OSError, UnicodeDecodeError) as e:
            raise _Failed(f"cannot read the password file {args.password_file}: {e}") from None
        password = line.rstrip("\r\n")
        if not password:
            raise _Failed(f"the password file {args.password_file} starts with an empty line")
        return password
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if not stdin.isatty():
        raise _Failed(
            f"no password for {args.user}: give --password-file PATH or set {PASSWORD_ENV} "
            "(or run on a terminal to be asked)"
        )
    return getpass.getpass(f"Password for {args.user}: ")


def _open_input(path: str | None) -> int:
    """The file descriptor ``publish`` reads: stdin, or the file at ``path``."""
    if path is None or path == "-":
        if sys.stdin.isatty():
            complain("reading messages from stdin, one per line; end with Ctrl-D")
        return sys.stdin.fileno()
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as e:
        raise _Failed(f"cannot read {path}: {e.strerror}") from None


async def _main(reactor: CommandReactor, args: argparse.Namespace) -> None:
    _start_logging(args.verbose)
    interrupt: Deferred[None] = Deferred()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if interrupt.called:  # a second Ctrl-C: do not wait any longer
            os._exit(INTERRUPTED)

        def fire() -> None:
            if not interrupt.called:
                interrupt.callback(None)

        reactor.callFromThread(fire)

    signal.signal(signal.SIGINT, on_sigint)
    code = await run(reactor, args, interrupt)
    if code:
        raise SystemExit(code)


def _start_logging(verbose: bool) -> None:
    level = LogLevel.info if verbose else LogLevel.warn
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(defaultLogLevel=level)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def _refused(e: BrokerError, args: argparse.Namespace) -> str:
    """The broker's refusal, with what a CLI user can do about a missing login."""
    text = f"error: {e}"
    if isinstance(e, NoAuth):
        text += (
            "; this broker wants a login: give --user NAME (the password from "
            f"--password-file PATH, ${PASSWORD_ENV} or the prompt)"
        )
    elif isinstance(e, AuthFailed) and args.user is not None:
        text += f" (the broker refused user {args.user} with this password)"
    return text


async def run(
    reactor: CommandReactor, args: argparse.Namespace, interrupt: Deferred[None] | None = None
) -> int:
    """Connect as ``args`` says, run ``args.run``; the exit status.

    When ``interrupt`` fires (Ctrl-C), the command stops and the status is 130.
    """
    if not getattr(args, "prepared", False):
        status = prepare(args)
        if status:
            return status
    endpoint = args.connect or tcp_endpoint(args.host, args.port)
    task: Deferred[Any] = connect(
        reactor, endpoint, timeout=args.timeout, user=args.user, password=args.password
    )
    interrupted = finished = False

    def stop(_: object) -> None:
        nonlocal interrupted
        if not finished:
            interrupted = True
            task.cancel()

    if interrupt is not None:
        interrupt.addCallback(stop)
    client: Client | None = None
    try:
        client = await task
        task = Deferred.fromCoroutine(args.run(reactor, client, args))
        code: int = await task
        return code
    except CancelledError:
        if interrupted:
            return INTERRUPTED
        raise
    except ClientError as e:
        if interrupted:
            return INTERRUPTED
        complain(str(e) if client is None else f"connection: {e}")
        return 1
    except BrokerError as e:
        complain(_refused(e, args))
        return 1
    except (DNSLookupError, OSError) as e:
        complain(f"cannot connect to {endpoint}: {e}" if client is None else f"error: {e}")
        return 1
    except Exception as e:
        complain(f"failed: {type(e).__name__}: {e}")
        if args.verbose:
            import traceback

            traceback.print_exc()
        return 1
    finally:
        finished = True
        if client is not None and client.connected:
            await client.close().addTimeout(5, reactor).addErrback(lambda _: None)


if __name__ == "__main__":
    main()
