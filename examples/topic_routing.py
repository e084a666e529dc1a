#!/usr/bin/env python3
"""Topic routing: listeners choose messages by routing-key patterns.

    topic_routing.py --emit KEY MESSAGE                 e.g. --emit kern.critical "disk full"
    topic_routing.py --listen PATTERN [PATTERN ...] [--count N]
                                                        e.g. --listen 'kern.*' '*.critical'

A routing key is words joined by dots; in a pattern ``*`` stands for one word and
``#`` for any number.  A listener makes a queue of its own (exclusive: the broker
deletes it when the listener goes) and binds it once per pattern; a message that
matches two patterns still arrives once.
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.internet import task
from twisted.internet.defer import Deferred

from mbroker.client import Client, ClientError, Message, connect, tcp_endpoint
from mbroker.errors import BrokerError

EXCHANGE = "topic_logs"


async def emit(client: Client, key: str, text: str) -> None:
    reached = await client.publish(EXCHANGE, text, key)
    print(f"sent [{key}] to {reached} listener(s)")


async def listen(client: Client, patterns: list[str], count: int | None) -> None:
    queue = f"topic-listener-{os.getpid()}"
    await client.create(queue, "queue", exclusive=True)
    for pattern in patterns:
        await client.bind(queue, EXCHANGE, pattern)
    done: Deferred[None] = Deferred()
    seen = 0

    def show(message: Message) -> None:
        nonlocal seen
        print(f"[{message.routing_key}] {message.text}", flush=True)
        seen += 1
        if count is not None and seen == count:
            done.callback(None)

    await client.subscribe(queue, show, ack="auto")
    print(f"listening for {' '.join(patterns)} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    await done


async def main(reactor: object, args: argparse.Namespace) -> None:
    try:
        client = await connect(reactor, tcp_endpoint(args.host, args.port), timeout=10)
        await client.create(EXCHANGE, "topic")
        if args.emit:
            await emit(client, *args.emit)
        else:
            await listen(client, args.listen, args.count)
        await client.close()
    except (BrokerError, ClientError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    # Repeated in each example on purpose: every example is one file that runs alone.
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text}")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Topic routing.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--emit", nargs=2, metavar=("KEY", "MESSAGE"))
    action.add_argument("--listen", nargs="+", metavar="PATTERN")
    parser.add_argument("--count", type=at_least_one, help="with --listen: stop after N messages")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    args = parser.parse_args()
    if args.count is not None and not args.listen:
        parser.error("--count goes with --listen")
    task.react(main, (args,))
