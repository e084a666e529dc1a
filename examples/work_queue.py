#!/usr/bin/env python3
"""A work queue: tasks shared among workers, each acknowledged once it is done.

    work_queue.py --send TASK [TASK ...]     queue tasks; a task "name:SECONDS" takes
                                             that long to do (default 0.1 s)
    work_queue.py --work [--count N]         do tasks, one at a time, until Ctrl-C
                                             (or N tasks)

Run two workers and send a few tasks: they take turns.  A worker acknowledges a task
(``message.ack()``) only once it is done, so a worker that dies mid-task loses
nothing: the broker gives the task to another worker, marked redelivered.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from mbroker.client import Client, ClientError, Message, connect, tcp_endpoint
from mbroker.errors import BrokerError

QUEUE = "tasks"
#: The longest a task may say it takes, in seconds.
MAX_SECONDS = 3600.0


def parse_task(text: str) -> tuple[str, float]:
    """``"name:SECONDS"`` (or ``"name"``: 0.1 s) -> (name, seconds); ValueError if bad."""
    name, colon, seconds = text.partition(":")
    try:
        took = float(seconds) if colon else 0.1
    except ValueError:
        took = -1.0
    if not name or not 0 <= took <= MAX_SECONDS:  # nan and inf are refused here too
        raise ValueError(f"a task is NAME or NAME:SECONDS (0 to {MAX_SECONDS:g}), not {text!r}")
    return name, took


def task_arg(text: str) -> str:
    """An argparse type: a task as :func:`parse_task` takes it."""
    try:
        parse_task(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    # Repeated in each example on purpose: every example is one file that runs alone.
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text}")
    return value


async def send(client: Client, tasks: list[str]) -> None:
    for text in tasks:
        await client.publish(QUEUE, text)
        print(f"sent {text}")


async def work(reactor: Any, client: Client, count: int | None) -> None:
    done: Deferred[None] = Deferred()
    finished = 0
    me = f"worker {os.getpid()}"

    async def handle(message: Message) -> None:
        nonlocal finished
        try:
            name, seconds = parse_task(message.text)
        except ValueError as e:  # doing it again would fail again: drop it
            await message.nack(requeue=False)
            print(f"{me} dropped a bad task: {e}", file=sys.stderr, flush=True)
            return
        again = f" (again, {message.redelivered} time(s) before)" if message.redelivered else ""
        print(f"{me} got {name}{again}", flush=True)
        await task.deferLater(reactor, seconds)  # the work
        await message.ack()  # only now may the broker forget the task
        print(f"{me} done {name}", flush=True)
        finished += 1
        if count is not None and finished == count and not done.called:
            done.callback(None)

    # prefetch=1: a worker gets one task at a time, so a slow one does not hoard work.
    subscription = await client.subscribe(QUEUE, handle, ack="manual", prefetch=1)
    print(f"{me} waiting for tasks (Ctrl-C to stop)", file=sys.stderr, flush=True)
    await done
    await subscription.unsubscribe()


async def main(reactor: Any, args: argparse.Namespace) -> None:
    try:
        client = await connect(reactor, tcp_endpoint(args.host, args.port), timeout=10)
        await client.create(QUEUE, "queue", durable=True)
        if args.send:
            await send(client, args.send)
        else:
            await work(reactor, client, args.count)
        await client.close()
    except (BrokerError, ClientError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A work queue with manual acks.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--send", nargs="+", type=task_arg, metavar="TASK", help="queue these tasks"
    )
    action.add_argument("--work", action="store_true", help="do tasks")
    parser.add_argument("--count", type=at_least_one, help="with --work: stop after N tasks")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    args = parser.parse_args()
    if args.count is not None and not args.work:
        parser.error("--count goes with --work")
    task.react(main, (args,))
