#!/usr/bin/env python3
"""Receive the messages of a topic (a topic exchange), with the Deferred API.

    subscriber.py --subscribe TOPIC
        Print each message as it arrives, until Ctrl-C.  Messages published while
        it is not running are not kept for it.

    subscriber.py --pull TOPIC --name NAME
        Print what arrived since subscriber NAME last pulled.  NAME is a durable queue
        of its own, bound to TOPIC with '#': the first run makes it (and prints
        nothing yet); every later run empties it.

Both take --host and --port (default localhost 5555).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet import task

from mbroker.client import Client, ClientError, Message, connect, tcp_endpoint
from mbroker.errors import BrokerError

BATCH = 100  # messages per PULL


async def subscribe(reactor: Any, client: Client, topic: str) -> None:
    def show(message: Message) -> None:
        print(message.text, flush=True)

    # ack="auto": a live feed; what this subscriber misses while away is not kept.
    subscription = await client.subscribe(topic, show, "#", ack="auto")
    print(f"subscribed to {topic}; waiting for messages (Ctrl-C to stop)", file=sys.stderr)
    sys.stderr.flush()
    # Ctrl-C stops the reactor; before it does, unsubscribe while still connected.
    reactor.addSystemEventTrigger("before", "shutdown", subscription.unsubscribe)
    reason = await subscription.when_ended()
    print(f"the subscription ended: {reason}", file=sys.stderr)


async def pull(client: Client, topic: str, name: str) -> None:
    created = await client.create(name, "queue", durable=True)
    try:
        await client.bind(name, topic, "#")  # binding again changes nothing
    except BrokerError:  # no such topic: a queue made for it would only linger
        if created:
            await client.delete(name)
        raise
    if created:
        print(f"created queue {name}; it keeps what {topic} gets from now on", file=sys.stderr)
    while True:
        messages = await client.pull(name, BATCH, ack="auto")
        for message in messages:
            print(message.text)
        if len(messages) < BATCH:
            break


async def main(reactor: Any, args: argparse.Namespace) -> None:
    try:
        client = await connect(reactor, tcp_endpoint(args.host, args.port), timeout=10)
        try:
            if args.subscribe:
                await subscribe(reactor, client, args.subscribe)
            else:
                await pull(client, args.pull, args.name)
        finally:
            if client.connected:
                await client.close()
    except (BrokerError, ClientError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Receive the messages of a topic.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--subscribe", metavar="TOPIC", help="print messages as they arrive")
    action.add_argument("--pull", metavar="TOPIC", help="print what arrived since the last pull")
    parser.add_argument("--name", help="with --pull: this subscriber's durable queue")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    args = parser.parse_args()
    if args.pull and not args.name:
        parser.error("--pull needs --name NAME")
    return args


if __name__ == "__main__":
    task.react(main, (parse_args(),))
