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
        name, _, seconds = message.text.partition(":")
        again = f" (again, {message.redelivered} time(s) before)" if message.redelivered else ""
        print(f"{me} got {name}{again}", flush=True)
        await task.deferLater(reactor, float(seconds or 0.1))  # the work
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
    action.add_argument("--send", nargs="+", metavar="TASK", help="queue these tasks")
    action.add_argument("--work", action="store_true", help="do tasks")
    parser.add_argument("--count", type=int, help="with --work: stop after N tasks")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    task.react(main, (parser.parse_args(),))
