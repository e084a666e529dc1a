"""The ``mbroker`` command's subcommands: each runs on a connected client and returns
the exit status (:data:`Command`); :mod:`mbroker.cli.parser` names them."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.python.failure import Failure

from mbroker.cli.output import (
    Output,
    Progress,
    complain,
    message_text,
    objects_json,
    objects_table,
    say,
)
from mbroker.client.connection import Client, Message
from mbroker.client.subscription import AckMode

__all__ = [
    "PUBLISH_WINDOW",
    "READ_SIZE",
    "Command",
    "CommandReactor",
    "bench",
    "bind",
    "create",
    "delete",
    "list_objects",
    "ping",
    "publish",
    "pull",
    "purge",
    "stats",
    "subscribe",
    "unbind",
]

#: Publishes in flight at once when publishing many messages.
PUBLISH_WINDOW = 1000
#: Bytes ``publish`` reads at a time: what is there, up to this much.
READ_SIZE = 1 << 18


class CommandReactor(IReactorTime, IReactorFromThreads):
    """What the commands ask of the reactor: timers, and calls from the input thread."""


#: A subcommand: ``(reactor, client, args)`` -> the exit status.
Command = Callable[[CommandReactor, Client, argparse.Namespace], Coroutine[Any, Any, int]]


async def create(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    options: dict[str, Any] = {"durable": args.durable}
    if args.exclusive:
        options["exclusive"] = True
    if args.auto_delete:
        options["auto_delete"] = True
    for key in (
        "max_length",
        "max_bytes",
        "overflow",
        "ttl",
        "dead_letter",
        "max_deliver",
        "expires",
        "dedup_window",
    ):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    created = await client.create(args.name, args.kind, **options)
    text = f"created {args.kind} {args.name}" if created else f"{args.kind} {args.name} exists"
    if args.exclusive:
        text += " (exclusive: it is deleted as this command ends)"
    say(text)
    return 0


async def delete(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    dropped = await client.delete(args.name, if_empty=args.if_empty, if_unused=args.if_unused)
    say(f"deleted {args.name} ({dropped} message{'s' if dropped != 1 else ''} dropped)")
    return 0


async def bind(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    await client.bind(args.queue, args.exchange, args.key)
    say(f"bound {args.queue} to {args.exchange}" + (f" with {args.key}" if args.key else ""))
    return 0


async def unbind(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    await client.unbind(args.queue, args.exchange, args.key)
    say(f"unbound {args.queue} from {args.exchange}" + (f" ({args.key})" if args.key else ""))
    return 0


async def publish(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    if args.message is not None:
        reached = await client.publish(
            args.name, args.message, args.key, ttl=args.ttl, **publish_props(args)
        )
        text = f"published 1 message to {args.name}, reached {_queues(reached)}"
        if getattr(reached, "duplicate", False):
            text = f"{args.name} already had id {args.id}: not routed again ({_queues(reached)})"
        say(text)
        return 0
    fd: int = args.source
    try:
        progress = Progress(_size_of(fd), args.progress)
        publisher = _Publisher(client, args, progress)
        try:
            await publisher.publish_all(_Reader(reactor, fd))
        except CancelledError:
            confirmed = publisher.confirmed()
            plural = "s" if confirmed != 1 else ""
            unsure = publisher.sent - confirmed
            more = f" ({unsure} more sent, not confirmed)" if unsure else ""
            complain(f"interrupted: published {confirmed} message{plural} to {args.name}{more}")
            raise
    finally:
        if fd != sys.stdin.fileno():
            os.close(fd)
    sent, unroutable = publisher.sent, publisher.unroutable
    text = f"published {sent} message{'s' if sent != 1 else ''} to {args.name}"
    say(text + (f" ({unroutable} reached no queue)" if unroutable else ""))
    return 0


def publish_props(args: argparse.Namespace) -> dict[str, Any]:
    """The message properties of ``mbroker publish`` (none: the plain, fast path)."""
    props = {"headers": args.header, "id": args.id, "delay": args.delay, "priority": args.priority}
    return {k: v for k, v in props.items() if v is not None}


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

    def __init__(self, reactor: IReactorFromThreads, fd: int) -> None:
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
        self.props = publish_props(args)
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
            window.append(publish(args.name, payload, args.key, ttl=args.ttl, **self.props))
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


async def subscribe(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
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
        complain(f"subscribed to {args.name}; waiting for messages")

    def ended(reason: str) -> None:
        if not finished.called:
            complain(f"the subscription ended: {reason}")
            finished.callback(1)

    def lost(failure: Failure) -> None:
        if not finished.called:
            finished.errback(failure)

    sub.when_ended().addCallbacks(ended, lost)
    try:
        return await finished
    finally:
        out.last_look()


async def pull(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
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


async def list_objects(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    rows = sorted(await client.list(), key=lambda r: r.name)
    if not args.all:
        rows = [r for r in rows if not r.name.startswith("mbroker.")]
    say(objects_json(rows) if args.json else objects_table(rows))
    return 0


async def stats(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    stats = await client.stats(args.name)
    if args.json:
        if "durable" in stats:  # a flag: the same JSON type as in `list --json`
            stats["durable"] = bool(stats["durable"])
        say(json.dumps(stats, indent=2))
        return 0
    width = max((len(k) for k in stats), default=0)
    for key, value in stats.items():
        say(f"{key.ljust(width)}  {value}")
    return 0


async def purge(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    dropped = await client.purge(args.queue)
    say(f"purged {args.queue} ({dropped} message{'s' if dropped != 1 else ''} dropped)")
    return 0


async def ping(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    seconds = await client.ping()
    hello = client.hello
    version = hello.version if hello is not None else "?"
    say(f"PONG from mbroker {version} in {seconds * 1000:.2f} ms")
    return 0


async def bench(reactor: CommandReactor, client: Client, args: argparse.Namespace) -> int:
    """Publish ``--messages`` pipelined to a private queue, then consume them.

    A first measurement; benchmarks/ holds the fuller ones.
    """
    limit = client.hello.max_payload if client.hello is not None else None
    if limit is not None and args.size > limit:
        complain(f"--size {args.size} is over the broker's largest payload ({limit} bytes)")
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
    say(f"{n:,} messages of {args.size} bytes, one connection")
    say(f"publish (pipelined, confirmed): {n / published:>12,.0f} msg/s")
    say(f"deliver (subscribe, ack=auto):  {n / delivered:>12,.0f} msg/s")
    say("(a first measurement: the performance work brings a fuller benchmark)")
    return 0
