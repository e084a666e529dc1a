#!/usr/bin/env python3
"""Fan-out logs: every listener gets every log line.

    fanout_logs.py --emit LEVEL MESSAGE      publish one log line
    fanout_logs.py --listen [--count N]      print log lines as they come

A fanout exchange ignores routing keys and gives each message to every queue bound
to it; each listener's subscription has a private queue of its own.
"""

from __future__ import annotations

import argparse
import sys

from twisted.internet import task
from twisted.internet.defer import Deferred

from mbroker.client import Client, ClientError, Message, connect, tcp_endpoint
from mbroker.errors import BrokerError

EXCHANGE = "logs"


async def emit(client: Client, level: str, text: str) -> None:
    reached = await client.publish(EXCHANGE, f"{level.upper()}: {text}")
    print(f"sent to {reached} listener(s)")


async def listen(client: Client, count: int | None) -> None:
    done: Deferred[None] = Deferred()
    seen = 0

    def show(message: Message) -> None:
        nonlocal seen
        print(message.text, flush=True)
        seen += 1
        if count is not None and seen == count:
            done.callback(None)

    await client.subscribe(EXCHANGE, show, ack="auto")
    print("listening to the logs (Ctrl-C to stop)", file=sys.stderr, flush=True)
    await done


async def main(reactor: object, args: argparse.Namespace) -> None:
    try:
        client = await connect(reactor, tcp_endpoint(args.host, args.port), timeout=10)
        await client.create(EXCHANGE, "fanout")
        if args.emit:
            await emit(client, *args.emit)
        else:
            await listen(client, args.count)
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
    parser = argparse.ArgumentParser(description="Fan-out logs.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--emit", nargs=2, metavar=("LEVEL", "MESSAGE"))
    action.add_argument("--listen", action="store_true")
    parser.add_argument("--count", type=at_least_one, help="with --listen: stop after N lines")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    args = parser.parse_args()
    if args.count is not None and not args.listen:
        parser.error("--count goes with --listen")
    task.react(main, (args,))
