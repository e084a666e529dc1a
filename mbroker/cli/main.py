"""The ``mbroker`` command: every broker command from a shell.

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

The commands run on the Deferred client (:mod:`mbroker.client.connection`) under
:func:`twisted.internet.task.react`.  ``python -m mbroker`` is this command too.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from types import FrameType
from typing import Any, NoReturn

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import DNSLookupError
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from mbroker import __version__
from mbroker.cli.output import Output, Progress, message_text, table
from mbroker.client.connection import Client, ClientError, Message, connect, tcp_endpoint
from mbroker.client.subscription import AckMode
from mbroker.errors import AuthFailed, BrokerError, NoAuth
from mbroker.wire.frames import ExchangeInfo, QueueInfo

__all__ = ["build_parser", "main", "parse_args", "run"]

#: Publishes in flight at once when publishing many messages.
PUBLISH_WINDOW = 1000
#: Bytes ``publish`` reads at a time: what is there, up to this much.
READ_SIZE = 1 << 18
#: The exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130
#: Where a password may come from when ``--password`` is not given.
PASSWORD_ENV = "MBROKER_PASSWORD"

Command = Callable[[Any, Client, argparse.Namespace], Coroutine[Any, Any, int]]


# ------------------------------------------------------------------ parser


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def _natural(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a non-negative integer: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"not a port number (1-65535): {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _endpoint(text: str) -> str:
    """A client endpoint string that Twisted can parse (checked, not connected)."""
    from twisted.internet import reactor

    try:
        clientFromString(reactor, text)
    except Exception as e:  # Twisted raises ValueError, TypeError, KeyError, …
        detail = str(e) or type(e).__name__
        if isinstance(e, TypeError):  # a missing part, e.g. "tcp:localhost" (no port)
            detail = "a part is missing"
        raise argparse.ArgumentTypeError(
            f"not a client endpoint: {text!r} ({detail}; e.g. tcp:HOST:PORT)"
        ) from None
    parts = re.split(r"(?<!\\):", text)
    if parts[0] in ("tcp", "tls", "ssl"):
        positional = [p for p in parts[1:] if "=" not in p]
        named = [p[5:] for p in parts[1:] if p.startswith("port=")]
        for port in (positional[1:2] or named)[:1]:
            try:
                _port(port)
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentTypeError(f"in {text!r}: {e}") from None
    return text


def _connection_options(parser: argparse.ArgumentParser, top: bool) -> None:
    # On the top parser the defaults are real; on the subcommands they are SUPPRESS,
    # so that "mbroker --host h list" and "mbroker list --host h" both work.
    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("connection")
    group.add_argument(
        "--host", default=default("localhost"), help="broker host (default: localhost)"
    )
    group.add_argument(
        "--port", type=_port, default=default(5555), help="broker port (default: 5555)"
    )
    group.add_argument(
        "--connect",
        metavar="ENDPOINT",
        type=_endpoint,
        default=default(None),
        help="a Twisted client endpoint string instead of --host/--port "
        "(tcp:HOST:PORT, tls:HOST:PORT:trustRoots=DIR, unix:PATH)",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=default(10.0),
        help="seconds to wait for the connection (default: 10)",
    )
    group.add_argument("--user", default=default(None), help="authenticate as this user")
    group.add_argument(
        "--password",
        default=default(None),
        help=f"the user's password (visible to other users of the machine: prefer "
        f"--password-file, ${PASSWORD_ENV} or the prompt)",
    )
    group.add_argument(
        "--password-file",
        metavar="PATH",
        default=default(None),
        help="read the password from the first line of PATH",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log more"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser of the ``mbroker`` command."""
    parser = _Parser(
        prog="mbroker",
        description="Talk to an mbroker message broker.",
        epilog="'mbroker user add|set|remove|list --users FILE' manages a users file "
        "(see 'mbroker user --help'). With --user and no --password or --password-file, "
        f"the password comes from ${PASSWORD_ENV}, else from a prompt on the terminal. "
        "Exit status: 0 ok, 1 error (broker or connection), 2 usage, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"mbroker {__version__}")
    _connection_options(parser, top=True)
    common = _Parser(add_help=False)
    _connection_options(common, top=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    p = command("create", _create, "create an exchange or a queue")
    p.add_argument("name", help="the exchange's or queue's name")
    p.add_argument("kind", nargs="?", help="queue, direct, fanout or topic (default: topic)")
    p.add_argument("--durable", action="store_true", help="survive a broker restart")
    p.add_argument("--max-length", type=_positive, metavar="N", help="queue: most messages")
    p.add_argument("--max-bytes", type=_positive, metavar="N", help="queue: most bytes")
    p.add_argument("--overflow", choices=["drop-head", "reject"], help="queue: when full")
    p.add_argument("--ttl", type=_natural, metavar="MS", help="queue: message time to live")
    p.add_argument("--dead-letter", metavar="NAME", help="queue: where dead messages go")
    p.add_argument("--max-deliver", type=_positive, metavar="N", help="queue: delivery limit")
    p.add_argument(
        "--exclusive",
        action="store_true",
        help="queue: owned by this command's connection, deleted when it ends",
    )

    p = command("delete", _delete, "delete an exchange or a queue")
    p.add_argument("name", help="the exchange's or queue's name")
    p.add_argument("--if-empty", action="store_true", help="only if it holds no messages")
    p.add_argument("--if-unused", action="store_true", help="only if it has no consumers")

    for name, run, verb in (("bind", _bind, "bind"), ("unbind", _unbind, "unbind")):
        p = command(name, run, f"{verb} a queue {'to' if verb == 'bind' else 'from'} an exchange")
        p.add_argument("queue", help="the queue's name")
        p.add_argument("exchange", help="the exchange's name")
        p.add_argument("key", nargs="?", help="routing key or (topic) pattern")

    p = command(
        "publish",
        _publish,
        "publish a message (from the argument, else one per line of --file or stdin, "
        "each line as it comes)",
    )
    p.add_argument("name", help="exchange or queue")
    p.add_argument("message", nargs="?", help="the message (default: read --file or stdin)")
    p.add_argument("-k", "--key", default="", help="routing key")
    p.add_argument("--ttl", type=_natural, metavar="MS", help="message time to live")
    p.add_argument("-f", "--file", metavar="PATH", help="publish each line of PATH ('-': stdin)")
    p.add_argument(
        "--raw", action="store_true", help="stdin or --file is one message, not one per line"
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: for large inputs on a terminal)",
    )

    p = command("subscribe", _subscribe, "print messages as they arrive")
    p.add_argument("name", help="exchange or queue")
    p.add_argument("pattern", nargs="?", help="topic pattern or direct key (exchanges)")
    p.add_argument(
        "-n",
        "--count",
        type=_positive,
        help="exit after this many messages (the others stay in the queue)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    p.add_argument(
        "--ack",
        choices=["auto", "manual"],
        default="manual",
        help="manual (default): acknowledge each message once printed; "
        "auto: the broker forgets it once sent",
    )
    p.add_argument("--prefetch", type=_positive, help="unacknowledged messages at most")

    def pull_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("queue", help="the queue's name")
        p.add_argument("-n", "--max", type=_positive, default=1, help="at most N (default 1)")
        p.add_argument("--wait", type=_natural, metavar="MS", help="wait this long for one")
        p.add_argument("--json", action="store_true", help="one JSON object per message")

    p = command("pull", _pull, "take messages from a queue and print them")
    pull_options(p)
    p.add_argument(
        "--ack",
        choices=["auto", "manual"],
        default="manual",
        help="manual (default): acknowledge each message once printed, what was not "
        "printed stays in the queue; auto: the broker forgets them once sent",
    )
    p.add_argument(
        "--requeue",
        action="store_true",
        help="print the messages and give them all back to the queue (as 'peek')",
    )

    p = command(
        "peek", _pull, "print messages of a queue and give them back (they are marked redelivered)"
    )
    pull_options(p)
    p.set_defaults(ack="manual", requeue=True)

    p = command("list", _list, "list exchanges and queues")
    p.add_argument("--all", action="store_true", help="include private subscription queues")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")

    p = command("stats", _stats, "show the broker's counters, or an object's")
    p.add_argument("name", nargs="?", help="an exchange or queue (default: the broker's)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = command("purge", _purge, "drop a queue's ready messages")
    p.add_argument("queue", help="the queue's name")

    command("ping", _ping, "check that the broker answers")

    p = command("bench", _bench, "measure publish and delivery rates (a first version)")
    p.add_argument("--messages", type=_positive, default=20_000, help="how many (default: 20000)")
    p.add_argument("--size", type=_natural, default=128, help="payload bytes (default: 128)")
    return parser


# ---------------------------------------------------------------- entry point


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


#: The optional positional arguments of each command, in order.  argparse matches
#: positionals in one go, so in ``publish news -k key "text"`` it gives ``text`` back
#: as unrecognized: :func:`parse_args` puts such words where they belong.
_OPTIONAL_POSITIONALS = {
    "create": ("kind",),
    "bind": ("key",),
    "unbind": ("key",),
    "publish": ("message",),
    "subscribe": ("pattern",),
    "stats": ("name",),
}
_KINDS = ("queue", "direct", "fanout", "topic")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (exits with status 2 on a usage error).

    Also checks what needs no broker: a message and ``--file`` together, options
    that go together.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    slots = [d for d in _OPTIONAL_POSITIONALS.get(args.command, ()) if getattr(args, d) is None]
    while extra and slots and not extra[0].startswith("-"):
        setattr(args, slots.pop(0), extra.pop(0))
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "create":
        args.kind = args.kind or "topic"
        if args.kind not in _KINDS:
            parser.error(f"argument kind: invalid choice: {args.kind!r} (choose from {_KINDS})")
    if args.command in ("bind", "unbind"):
        args.key = args.key or ""
    if args.command == "publish" and args.message is not None and args.file is not None:
        parser.error("give a message or --file, not both")
    if args.command == "pull" and args.requeue and args.ack == "auto":
        parser.error("--requeue gives messages back: it cannot go with --ack auto")
    if args.password is not None and args.password_file is not None:
        parser.error("give --password or --password-file, not both")
    if args.user is None and (args.password is not None or args.password_file is not None):
        parser.error("a password needs --user")
    return args


class _Failed(Exception):
    """A problem found before connecting: one line on stderr, exit status 1."""


def prepare(args: argparse.Namespace, stdin: Any = None) -> int:
    """What can be done before connecting: read the password, open the input.

    Returns 0, or the exit status after printing why not.
    """
    args.prepared = True
    try:
        args.password = _password(args, sys.stdin if stdin is None else stdin)
        if args.command == "publish" and args.message is None:
            args.source = _open_input(args.file)
    except _Failed as e:
        _error(str(e))
        return 1
    except (KeyboardInterrupt, EOFError):  # Ctrl-C or Ctrl-D at the prompt
        sys.stderr.write("\n")
        return INTERRUPTED
    return 0


def _password(args: argparse.Namespace, stdin: Any) -> str | None:
    """--password, else the first line of --password-file, else $MBROKER_PASSWORD,
    else (with --user, on a terminal) a prompt."""
    if args.user is None or args.password is not None:
        return args.password  # type: ignore[no-any-return]
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
            _error("reading messages from stdin, one per line; end with Ctrl-D")
        return sys.stdin.fileno()
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as e:
        raise _Failed(f"cannot read {path}: {e.strerror}") from None


async def _main(reactor: Any, args: argparse.Namespace) -> None:
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


def _error(text: str) -> None:
    sys.stderr.write(f"mbroker: {text}\n")
    sys.stderr.flush()


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
    reactor: Any, args: argparse.Namespace, interrupt: Deferred[None] | None = None
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
        _error(str(e) if client is None else f"connection: {e}")
        return 1
    except BrokerError as e:
        _error(_refused(e, args))
        return 1
    except (DNSLookupError, OSError) as e:
        _error(f"cannot connect to {endpoint}: {e}" if client is None else f"error: {e}")
        return 1
    except Exception as e:
        _error(f"failed: {type(e).__name__}: {e}")
        if args.verbose:
            import traceback

            traceback.print_exc()
        return 1
    finally:
        finished = True
        if client is not None and client.connected:
            await client.close().addTimeout(5, reactor).addErrback(lambda _: None)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


# ---------------------------------------------------------------- commands


async def _create(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"durable": args.durable}
    if args.exclusive:
        options["exclusive"] = True
    for key in ("max_length", "max_bytes", "overflow", "ttl", "dead_letter", "max_deliver"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    created = await client.create(args.name, args.kind, **options)
    text = f"created {args.kind} {args.name}" if created else f"{args.kind} {args.name} exists"
    if args.exclusive:
        text += " (exclusive: it is deleted as this command ends)"
    _out(text)
    return 0


async def _delete(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    dropped = await client.delete(args.name, if_empty=args.if_empty, if_unused=args.if_unused)
    _out(f"deleted {args.name} ({dropped} message{'s' if dropped != 1 else ''} dropped)")
    return 0


async def _bind(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    await client.bind(args.queue, args.exchange, args.key)
    _out(f"bound {args.queue} to {args.exchange}" + (f" with {args.key}" if args.key else ""))
    return 0


async def _unbind(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    await client.unbind(args.queue, args.exchange, args.key)
    _out(f"unbound {args.queue} from {args.exchange}" + (f" ({args.key})" if args.key else ""))
    return 0


async def _publish(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    if args.message is not None:
        reached = await client.publish(args.name, args.message, args.key, ttl=args.ttl)
        _out(f"published 1 message to {args.name}, reached {_queues(reached)}")
        return 0
    fd: int = args.source
    try:
        progress = Progress(_size_of(fd), args.progress)
        publisher = _Publisher(client, args, progress)
        try:
            await publisher.publish_all(_Reader(reactor, fd))
        except CancelledError:
            sent = publisher.confirmed()
            plural = "s" if sent != 1 else ""
            _error(f"interrupted: published {sent} message{plural} to {args.name}")
            raise
    finally:
        if fd != sys.stdin.fileno():
            os.close(fd)
    sent, unroutable = publisher.sent, publisher.unroutable
    text = f"published {sent} message{'s' if sent != 1 else ''} to {args.name}"
    _out(text + (f" ({unroutable} reached no queue)" if unroutable else ""))
    return 0


def _queues(n: int) -> str:
    return f"{n} queue{'s' if n != 1 else ''}"


def _size_of(fd: int) -> int | None:
    import stat

    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class _Reader:
    """Reads a file descriptor in a daemon thread: :meth:`read` fires with what is
    there (up to :data:`READ_SIZE` bytes, ``b""`` at the end) as soon as it is there.

    A daemon thread, not the reactor's pool: a read blocked on a terminal must not
    keep the program from exiting after Ctrl-C.
    """

    def __init__(self, reactor: Any, fd: int) -> None:
        self._reactor = reactor
        self._fd = fd
        self._wanted = threading.Semaphore(0)
        self._waiting: Deferred[bytes] | None = None
        threading.Thread(target=self._run, name="mbroker-reader", daemon=True).start()

    def read(self) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self._waiting = d
        self._wanted.release()
        return d

    def _run(self) -> None:
        while True:
            self._wanted.acquire()
            try:
                data = os.read(self._fd, READ_SIZE)
            except OSError as e:
                self._reactor.callFromThread(self._fire, e)
                return
            self._reactor.callFromThread(self._fire, data)
            if not data:
                return

    def _fire(self, result: bytes | OSError) -> None:
        d, self._waiting = self._waiting, None
        if d is None or d.called:  # cancelled (Ctrl-C)
            return
        if isinstance(result, OSError):
            d.errback(result)
        else:
            d.callback(result)


class _Publisher:
    """Publishes lines (or, ``--raw``, the whole input) with up to
    :data:`PUBLISH_WINDOW` publishes in flight."""

    def __init__(self, client: Client, args: argparse.Namespace, progress: Progress) -> None:
        self.client = client
        self.args = args
        self.progress = progress
        self.window: deque[Deferred[int]] = deque()
        self.sent = self.unroutable = self.done_bytes = 0

    async def publish_all(self, reader: _Reader) -> None:
        try:
            if self.args.raw:
                chunks = []
                while chunk := await reader.read():
                    chunks.append(chunk)
                await self._publish([b"".join(chunks)])
            else:
                rest = b""
                while chunk := await reader.read():
                    lines = (rest + chunk if rest else chunk).split(b"\n")
                    rest = lines.pop()
                    await self._publish(lines, strip_cr=True)
                if rest:
                    await self._publish([rest])
            while self.window:
                self.unroutable += not await self.window.popleft()
        except BaseException:
            for d in self.window:
                d.addErrback(lambda _: None)
            raise
        finally:
            self.progress.finish(self.sent, self.done_bytes)

    async def _publish(self, payloads: list[bytes], strip_cr: bool = False) -> None:
        window, publish, args = self.window, self.client.publish, self.args
        for payload in payloads:
            if strip_cr and payload.endswith(b"\r"):
                payload = payload[:-1]
            if len(window) >= PUBLISH_WINDOW:
                self.unroutable += not await window.popleft()
            window.append(publish(args.name, payload, args.key, ttl=args.ttl))
            self.sent += 1
            self.done_bytes += len(payload) + 1
        self.progress.update(self.sent, self.done_bytes)

    def confirmed(self) -> int:
        """How many publishes the broker confirmed."""
        unconfirmed = 0
        for d in self.window:
            if not d.called:
                unconfirmed += 1
        return self.sent - unconfirmed


async def _subscribe(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    """Print messages as they come.  With ``ack=manual`` each is acknowledged once
    :class:`Output` says it was printed (read, on a pipe); a message that was not
    (the reader is gone, ``--count`` reached, Ctrl-C) is left unsettled, and the
    broker gives it back to its queue when the connection closes."""
    out = Output(reactor)
    finished: Deferred[int] = Deferred()
    limit = args.count
    ack: AckMode = "manual" if limit is not None else args.ack  # --count takes exactly N
    prefetch = args.prefetch
    if prefetch is None and ack == "manual":
        if out.pipe:
            prefetch = 1  # on a pipe, one at a time: nothing taken that was not read
        elif limit is not None:
            prefetch = min(limit, 1000)  # nothing more is taken than will be printed
    taken = shown = 0

    def finish(code: int) -> None:
        if not finished.called:
            finished.callback(code)

    def hold() -> Deferred[None]:
        # Never fires: the message stays unacknowledged until the connection closes.
        return Deferred()

    def printed(ok: bool) -> Deferred[None] | None:
        nonlocal shown
        if not ok:  # the reader is gone (| head): stop quietly
            finish(0)
            return hold()
        shown += 1
        if limit is not None and shown >= limit:
            # after this callback returns, once the subscription sent its ACK
            reactor.callLater(0, finish, 0)
        return None

    def show(message: Message) -> Deferred[None] | None:
        nonlocal taken
        if finished.called or out.closed or (limit is not None and taken >= limit):
            return hold()
        taken += 1
        return out.show(message_text(message, args.json)).addCallback(printed)

    sub = await client.subscribe(args.name, show, args.pattern, ack=ack, prefetch=prefetch)
    if args.verbose:
        _error(f"subscribed to {args.name}; waiting for messages")

    def ended(reason: str) -> None:
        if not finished.called:
            _error(f"the subscription ended: {reason}")
            finished.callback(1)

    def lost(failure: Failure) -> None:
        if not finished.called:
            finished.errback(failure)

    sub.when_ended().addCallbacks(ended, lost)
    try:
        return await finished
    finally:
        out.last_look()


async def _pull(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    """PULL and print.  With ``--ack manual`` (the default) a message is acknowledged
    once printed; on a pipe they are pulled one at a time, so that what the reader
    did not read (``| head -2``) was never taken.  ``--requeue`` (``peek``) gives
    every message back at the end."""
    out = Output(reactor)
    manual = args.ack == "manual"
    requeue: bool = args.requeue
    remaining: int = args.max
    wait: int | None = args.wait
    held: list[Message] = []
    acks: list[Deferred[int]] = []
    try:
        while remaining > 0 and not out.closed:
            batch = 1 if out.pipe else remaining
            messages = await client.pull(
                args.queue, batch, wait=wait, ack="manual" if manual else "auto"
            )
            if not messages:
                break
            wait = None
            remaining -= len(messages)
            printed: list[Message] = []
            for i, message in enumerate(messages):
                if not await out.show(message_text(message, args.json)):
                    held += messages[i:]
                    break
                printed.append(message)
            if requeue:
                held += printed
            elif manual and printed:
                acks.append(client.ack(printed))
    finally:
        if held and client.connected:
            # --requeue, or not printed: back to the queue (marked redelivered)
            acks.append(client.nack(held))
        for d in acks:
            await d
    return 0


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


async def _list(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    rows = sorted(await client.list(), key=lambda r: r.name)
    if not args.all:
        rows = [r for r in rows if not r.name.startswith("mbroker.")]
    if args.json:
        out = []
        for r in rows:
            if isinstance(r, ExchangeInfo):
                out.append({"name": r.name, "type": r.kind, "durable": r.durable,
                            "bindings": r.bindings})  # fmt: skip
            else:
                out.append({"name": r.name, "type": "queue", "durable": r.durable,
                            "messages": r.messages, "unacked": r.unacked,
                            "consumers": r.consumers})  # fmt: skip
        _out(json.dumps(out, indent=2))
        return 0
    grid: list[tuple[str, ...]] = [
        ("NAME", "TYPE", "DURABLE", "MESSAGES", "UNACKED", "CONSUMERS", "BINDINGS")
    ]
    for r in rows:
        if isinstance(r, QueueInfo):
            grid.append(
                (r.name, "queue", _yes(r.durable), str(r.messages), str(r.unacked),
                 str(r.consumers), "-")
            )  # fmt: skip
        else:
            grid.append((r.name, r.kind, _yes(r.durable), "-", "-", "-", str(r.bindings)))
    _out(table(grid))
    if not rows:
        _out("(no exchanges or queues)")
    return 0


async def _stats(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    stats = await client.stats(args.name)
    if args.json:
        if "durable" in stats:  # a flag: the same JSON type as in `list --json`
            stats["durable"] = bool(stats["durable"])
        _out(json.dumps(stats, indent=2))
        return 0
    width = max((len(k) for k in stats), default=0)
    for key, value in stats.items():
        _out(f"{key.ljust(width)}  {value}")
    return 0


async def _purge(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    dropped = await client.purge(args.queue)
    _out(f"purged {args.queue} ({dropped} message{'s' if dropped != 1 else ''} dropped)")
    return 0


async def _ping(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    seconds = await client.ping()
    hello = client.hello
    version = hello.version if hello is not None else "?"
    _out(f"PONG from mbroker {version} in {seconds * 1000:.2f} ms")
    return 0


async def _bench(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    """Publish ``--messages`` pipelined to a private queue, then consume them.

    A first measurement; benchmarks/ holds the fuller ones.
    """
    limit = client.hello.max_payload if client.hello is not None else None
    if limit is not None and args.size > limit:
        _error(f"--size {args.size} is over the broker's largest payload ({limit} bytes)")
        return 1
    name = f"mbroker-bench-{os.getpid()}"
    await client.create(name, "queue", exclusive=True)
    payload = b"x" * args.size
    n = args.messages
    start = time.perf_counter()
    window: deque[Deferred[int]] = deque()
    try:
        for _ in range(n):
            if len(window) >= PUBLISH_WINDOW:
                await window.popleft()
            window.append(client.publish(name, payload))
        while window:
            await window.popleft()
    except BaseException:
        for d in window:  # one error is enough: not one per publish in flight
            d.addErrback(lambda _: None)
        raise
    published = time.perf_counter() - start

    received: Deferred[None] = Deferred()
    got = 0

    def count(message: Message) -> None:
        nonlocal got
        got += 1
        if got == n:
            received.callback(None)

    start = time.perf_counter()
    sub = await client.subscribe(name, count, ack="auto")
    await received
    delivered = time.perf_counter() - start
    await sub.unsubscribe()
    await client.delete(name)
    _out(f"{n:,} messages of {args.size} bytes, one connection")
    _out(f"publish (pipelined, confirmed): {n / published:>12,.0f} msg/s")
    _out(f"deliver (subscribe, ack=auto):  {n / delivered:>12,.0f} msg/s")
    _out("(a first measurement: the performance work brings a fuller benchmark)")
    return 0


if __name__ == "__main__":
    main()
