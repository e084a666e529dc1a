"""The ``mbroker`` command: every broker command from a shell.

::

    mbroker create jobs queue
    mbroker publish jobs "hello"
    seq 100000 | mbroker publish jobs          # one message per line, with a progress bar
    mbroker subscribe jobs --count 10 --json
    mbroker list

It connects to ``localhost:5555`` unless told ``--host``/``--port`` or a Twisted
endpoint string (``--connect tls:broker:5555``).  Exit status: 0 ok, 1 an error
(the broker's, printed with its code, or no connection), 2 a usage error.

The commands run on the Deferred client (:mod:`mbroker.client.connection`) under
:func:`twisted.internet.task.react`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import IO, Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure

from mbroker import __version__
from mbroker.cli.output import Progress, message_text, table
from mbroker.client.connection import Client, ClientError, Message, connect, tcp_endpoint
from mbroker.errors import BrokerError
from mbroker.wire.frames import ExchangeInfo, QueueInfo

__all__ = ["build_parser", "main", "parse_args", "run"]

#: Publishes in flight at once when publishing many messages.
PUBLISH_WINDOW = 1000

Command = Callable[[Any, Client, argparse.Namespace], Coroutine[Any, Any, int]]


# ------------------------------------------------------------------ parser


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
        "--port", type=_positive, default=default(5555), help="broker port (default: 5555)"
    )
    group.add_argument(
        "--connect",
        metavar="ENDPOINT",
        default=default(None),
        help="a Twisted client endpoint string instead of --host/--port "
        "(tcp:HOST:PORT, tls:HOST:PORT:trustRoots=DIR, unix:PATH)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=default(10.0),
        help="seconds to wait for the connection (default: 10)",
    )
    group.add_argument("--user", default=default(None), help="authenticate as this user")
    group.add_argument("--password", default=default(None), help="the user's password")
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log more"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser of the ``mbroker`` command."""
    parser = argparse.ArgumentParser(
        prog="mbroker",
        description="Talk to an mbroker message broker.",
        epilog="'mbroker user add|set|remove|list --users FILE' manages a users file "
        "(see 'mbroker user --help'). "
        "Exit status: 0 ok, 1 error (broker or connection), 2 usage.",
    )
    parser.add_argument("--version", action="version", version=f"mbroker {__version__}")
    _connection_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, top=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    p = command("create", _create, "create an exchange or a queue")
    p.add_argument("name")
    p.add_argument("kind", nargs="?", help="queue, direct, fanout or topic (default: topic)")
    p.add_argument("--durable", action="store_true", help="survive a broker restart")
    p.add_argument("--max-length", type=_positive, metavar="N", help="queue: most messages")
    p.add_argument("--max-bytes", type=_positive, metavar="N", help="queue: most bytes")
    p.add_argument("--overflow", choices=["drop-head", "reject"], help="queue: when full")
    p.add_argument("--ttl", type=_natural, metavar="MS", help="queue: message time to live")
    p.add_argument("--dead-letter", metavar="NAME", help="queue: where dead messages go")
    p.add_argument("--max-deliver", type=_positive, metavar="N", help="queue: delivery limit")

    p = command("delete", _delete, "delete an exchange or a queue")
    p.add_argument("name")
    p.add_argument("--if-empty", action="store_true", help="only if it holds no messages")
    p.add_argument("--if-unused", action="store_true", help="only if it has no consumers")

    for name, run, verb in (("bind", _bind, "bind"), ("unbind", _unbind, "unbind")):
        p = command(name, run, f"{verb} a queue {'to' if verb == 'bind' else 'from'} an exchange")
        p.add_argument("queue")
        p.add_argument("exchange")
        p.add_argument("key", nargs="?", help="routing key or (topic) pattern")

    p = command(
        "publish",
        _publish,
        "publish a message (from the argument, else one per line of --file or stdin)",
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
    p.add_argument("-n", "--count", type=_positive, help="exit after this many messages")
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    p.add_argument("--ack", choices=["auto", "manual"], default="manual")
    p.add_argument("--prefetch", type=_positive, help="unacknowledged messages at most")

    p = command("pull", _pull, "take messages from a queue and print them")
    p.add_argument("queue")
    p.add_argument("-n", "--max", type=_positive, default=1, help="at most N (default 1)")
    p.add_argument("--wait", type=_natural, metavar="MS", help="wait this long for one")
    p.add_argument("--json", action="store_true", help="one JSON object per message")

    p = command("list", _list, "list exchanges and queues")
    p.add_argument("--all", action="store_true", help="include private subscription queues")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")

    p = command("stats", _stats, "show the broker's counters, or an object's")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = command("purge", _purge, "drop a queue's ready messages")
    p.add_argument("queue")

    command("ping", _ping, "check that the broker answers")

    p = command("bench", _bench, "measure publish and delivery rates (a first version)")
    p.add_argument("--messages", type=_positive, default=20_000)
    p.add_argument("--size", type=_natural, default=128, help="payload bytes")
    return parser


# ---------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``mbroker`` console script."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["user"]:  # ``mbroker user …`` edits a users file: no broker needed
        from mbroker.cli import users as usercli

        raise SystemExit(usercli.main(words[1:]))
    args = parse_args(argv)
    from twisted.internet import task

    task.react(_main, (args,))
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
    """Parse the command line (exits with status 2 on a usage error)."""
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
    return args


async def _main(reactor: Any, args: argparse.Namespace) -> None:
    _start_logging(args.verbose)
    code = await run(reactor, args)
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


async def run(reactor: Any, args: argparse.Namespace) -> int:
    """Connect as ``args`` says, run ``args.run``; the exit status."""
    endpoint = args.connect or tcp_endpoint(args.host, args.port)
    try:
        client = await connect(
            reactor, endpoint, timeout=args.timeout, user=args.user, password=args.password
        )
    except BrokerError as e:
        _error(f"error: {e}")
        return 1
    except ClientError as e:
        _error(str(e))
        return 1
    try:
        code: int = await args.run(reactor, client, args)
        return code
    except BrokerError as e:
        _error(f"error: {e}")
        return 1
    except ClientError as e:
        _error(f"connection: {e}")
        return 1
    finally:
        if client.connected:
            await client.close().addTimeout(5, reactor).addErrback(lambda _: None)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


# ---------------------------------------------------------------- commands


async def _create(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"durable": args.durable}
    for key in ("max_length", "max_bytes", "overflow", "ttl", "dead_letter", "max_deliver"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    created = await client.create(args.name, args.kind, **options)
    _out(f"created {args.kind} {args.name}" if created else f"{args.kind} {args.name} exists")
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
        if args.file is not None:
            _error("give a message or --file, not both")
            return 2
        reached = await client.publish(args.name, args.message, args.key, ttl=args.ttl)
        _out(f"published 1 message to {args.name}, reached {_queues(reached)}")
        return 0
    source: IO[bytes]
    if args.file is None or args.file == "-":
        source = sys.stdin.buffer
        if source.isatty():
            _error("reading messages from stdin, one per line; end with Ctrl-D")
    else:
        try:
            source = open(args.file, "rb")  # noqa: SIM115 (closed below)
        except OSError as e:
            _error(f"cannot read {args.file}: {e.strerror}")
            return 1
    try:
        size = _size_of(source)
        messages: Iterator[bytes] = iter([source.read()]) if args.raw else _lines(source)
        progress = Progress(size, args.progress)
        sent, unroutable = await _publish_all(client, args, messages, progress)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    text = f"published {sent} message{'s' if sent != 1 else ''} to {args.name}"
    _out(text + (f" ({unroutable} reached no queue)" if unroutable else ""))
    return 0


def _queues(n: int) -> str:
    return f"{n} queue{'s' if n != 1 else ''}"


def _size_of(source: IO[bytes]) -> int | None:
    try:
        st = os.fstat(source.fileno())
    except (OSError, io.UnsupportedOperation):
        return None
    import stat

    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _lines(source: IO[bytes]) -> Iterator[bytes]:
    for line in source:
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        yield line


async def _publish_all(
    client: Client, args: argparse.Namespace, messages: Iterator[bytes], progress: Progress
) -> tuple[int, int]:
    """Publish with up to :data:`PUBLISH_WINDOW` in flight; (sent, unroutable)."""
    window: deque[Deferred[int]] = deque()
    sent = unroutable = done_bytes = 0
    try:
        for payload in messages:
            if len(window) >= PUBLISH_WINDOW:
                unroutable += not await window.popleft()
            window.append(client.publish(args.name, payload, args.key, ttl=args.ttl))
            sent += 1
            done_bytes += len(payload) + 1
            progress.update(sent, done_bytes)
        while window:
            unroutable += not await window.popleft()
    except BaseException:
        for d in window:
            d.addErrback(lambda _: None)
        progress.finish(sent, done_bytes)
        raise
    progress.finish(sent, done_bytes)
    return sent, unroutable


async def _subscribe(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    finished: Deferred[int] = Deferred()
    count = 0
    limit = args.count
    prefetch = args.prefetch
    if prefetch is None and limit is not None and args.ack == "manual":
        prefetch = min(limit, 1000)  # nothing more is taken than will be printed

    def show(message: Message) -> None:
        nonlocal count
        if limit is not None and count >= limit:
            if message.manual:
                message.nack()
            return
        count += 1
        _out(message_text(message, args.json))
        sys.stdout.flush()
        if limit is not None and count >= limit and not finished.called:
            finished.callback(0)

    sub = await client.subscribe(args.name, show, args.pattern, ack=args.ack, prefetch=prefetch)
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
    stopped: Deferred[None] = Deferred()

    def interrupted() -> Deferred[None]:
        # Ctrl-C stops the reactor: finish cleanly (unsubscribe) while still connected.
        if not finished.called:
            finished.callback(0)
        return stopped

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    try:
        code = await finished
        if sub.active:
            await sub.unsubscribe()
    finally:
        stopped.callback(None)
    return code


async def _pull(reactor: Any, client: Client, args: argparse.Namespace) -> int:
    for message in await client.pull(args.queue, args.max, wait=args.wait):
        _out(message_text(message, args.json))
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
    name = f"mbroker-bench-{os.getpid()}"
    await client.create(name, "queue", exclusive=True)
    payload = b"x" * args.size
    n = args.messages
    start = time.perf_counter()
    window: deque[Deferred[int]] = deque()
    for _ in range(n):
        if len(window) >= PUBLISH_WINDOW:
            await window.popleft()
        window.append(client.publish(name, payload))
    while window:
        await window.popleft()
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
