"""The ``mbroker`` command's arguments: the argparse parser, every option with its help,
and the checks that need no broker (:func:`parse_args`)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

from twisted.internet.endpoints import clientFromString

from mbroker import __version__
from mbroker.cli import commands
from mbroker.config import (
    BadNumber,
    natural_int,
    port_number,
    positive_int,
    positive_seconds,
)

__all__ = ["PASSWORD_ENV", "build_parser", "parse_args"]

T = TypeVar("T")

#: Where a password may come from when ``--password`` is not given.
PASSWORD_ENV = "MBROKER_PASSWORD"


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _option(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` from one of :mod:`mbroker.config`'s number parsers."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except BadNumber as e:
            raise argparse.ArgumentTypeError(f"not {e}: {text!r}") from None

    return convert


_positive = _option(positive_int)
_natural = _option(natural_int)
_port = _option(port_number)
_seconds = _option(positive_seconds)


def _header(text: str) -> tuple[str, str]:
    """``--header NAME=VALUE`` (the broker checks the name)."""
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    return name, value


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

    def command(name: str, run: commands.Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    p = command("create", commands.create, "create an exchange or a queue")
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
    p.add_argument(
        "--auto-delete",
        action="store_true",
        help="queue: deleted when its last subscriber goes",
    )
    p.add_argument(
        "--expires", type=_positive, metavar="MS", help="queue: deleted once unused for MS"
    )
    p.add_argument(
        "--dedup-window",
        type=_natural,
        metavar="MS",
        help="remember the ids of publishes to it for MS (0: off; default: the broker's)",
    )

    p = command("delete", commands.delete, "delete an exchange or a queue")
    p.add_argument("name", help="the exchange's or queue's name")
    p.add_argument("--if-empty", action="store_true", help="only if it holds no messages")
    p.add_argument("--if-unused", action="store_true", help="only if it has no consumers")

    for name, run, verb in (("bind", commands.bind, "bind"), ("unbind", commands.unbind, "unbind")):
        p = command(name, run, f"{verb} a queue {'to' if verb == 'bind' else 'from'} an exchange")
        p.add_argument("queue", help="the queue's name")
        p.add_argument("exchange", help="the exchange's name")
        p.add_argument("key", nargs="?", help="routing key or (topic) pattern")

    p = command(
        "publish",
        commands.publish,
        "publish a message (from the argument, else one per line of --file or stdin, "
        "each line as it comes)",
    )
    p.add_argument("name", help="exchange or queue")
    p.add_argument("message", nargs="?", help="the message (default: read --file or stdin)")
    p.add_argument("-k", "--key", default="", help="routing key")
    p.add_argument("--ttl", type=_natural, metavar="MS", help="message time to live")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        type=_header,
        metavar="NAME=VALUE",
        help="a message header (repeatable; VALUE sent as UTF-8)",
    )
    p.add_argument(
        "--id",
        metavar="ID",
        help="the message id: the broker drops a repeat within its dedup window (one message only)",
    )
    p.add_argument(
        "--delay", type=_natural, metavar="MS", help="deliver the messages MS milliseconds later"
    )
    p.add_argument(
        "--priority",
        type=int,
        choices=range(10),
        metavar="N",
        help="0-9, higher first (default 0)",
    )
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

    p = command("subscribe", commands.subscribe, "print messages as they arrive")
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

    p = command("pull", commands.pull, "take messages from a queue and print them")
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
        "peek",
        commands.pull,
        "print messages of a queue and give them back (they are marked redelivered)",
    )
    pull_options(p)
    p.set_defaults(ack="manual", requeue=True)

    p = command("list", commands.list_objects, "list exchanges and queues")
    p.add_argument("--all", action="store_true", help="include private subscription queues")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")

    p = command("stats", commands.stats, "show the broker's counters, or an object's")
    p.add_argument("name", nargs="?", help="an exchange or queue (default: the broker's)")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = command("purge", commands.purge, "drop a queue's ready messages")
    p.add_argument("queue", help="the queue's name")

    command("ping", commands.ping, "check that the broker answers")

    p = command("bench", commands.bench, "measure publish and delivery rates (a first version)")
    p.add_argument("--messages", type=_positive, default=20_000, help="how many (default: 20000)")
    p.add_argument("--size", type=_natural, default=128, help="payload bytes (default: 128)")
    return parser


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
    if args.command == "publish":
        if args.message is not None and args.file is not None:
            parser.error("give a message or --file, not both")
        if args.id is not None and args.message is None and not args.raw:
            parser.error("--id names one message: give the message, or --raw")
        headers: dict[str, str] = {}
        for name, value in args.header or ():
            if name in headers:
                parser.error(f"argument --header: {name!r} given twice")
            headers[name] = value
        args.header = headers or None
    if args.command == "pull" and args.requeue and args.ack == "auto":
        parser.error("--requeue gives messages back: it cannot go with --ack auto")
    if args.password is not None and args.password_file is not None:
        parser.error("give --password or --password-file, not both")
    if args.user is None and (args.password is not None or args.password_file is not None):
        parser.error("a password needs --user")
    return args
