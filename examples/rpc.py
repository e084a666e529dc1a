#!/usr/bin/env python3
"""Request/reply over queues: a server computes Fibonacci numbers for callers.

    rpc.py --serve [--count N]     answer requests until Ctrl-C (or N of them)
    rpc.py --call N [--timeout S]  ask for fib(N), 0 <= N <= 10000, and print the answer

A caller makes an exclusive queue for its replies and subscribes to it, then
publishes ``{"n": N, "reply_to": <its queue>, "id": <correlation id>}`` to the
``rpc_requests`` queue, with a ttl equal to its timeout: a request nobody took in
time expires instead of waiting for a server after its caller gave up.  The server
publishes the answer, with the same id, straight to the caller's queue (publishing to
a queue's name puts the message in it); when that queue is gone (its caller gave up
and left), the request is dropped, not put back to come round again.  Several servers
may share the requests queue: each request goes to one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout

from mbroker.client import Client, ClientError, Message, connect, tcp_endpoint
from mbroker.errors import BrokerError, NotFound

REQUESTS = "rpc_requests"
#: The largest N served (fib(10000) has 2090 digits).
MAX_N = 10_000


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def serve(client: Client, count: int | None) -> None:
    done: Deferred[None] = Deferred()
    taken = answered = 0

    async def answer(message: Message) -> None:
        nonlocal taken, answered
        if count is not None and taken == count:
            await message.nack()  # one more than asked for: back for another server
            return
        taken += 1
        try:
            request = json.loads(message.payload)
            n, reply_to, correlation = request["n"], request["reply_to"], request["id"]
            if type(n) is not int or not 0 <= n <= MAX_N:
                raise ValueError(f"n must be a whole number from 0 to {MAX_N}")
        except (ValueError, KeyError, TypeError) as e:  # putting it back would not help
            print(f"dropped a bad request ({e}): {message.text[:80]}", file=sys.stderr)
        else:
            result = fib(n)
            reply = json.dumps({"id": correlation, "result": result})
            try:
                await client.publish(reply_to, reply)  # the reply queue's name
            except NotFound:  # its caller gave up and left: answering again will not help
                print(f"fib({n}): the caller is gone, request dropped", file=sys.stderr)
            else:
                print(f"fib({n}) = {result}", flush=True)
        answered += 1
        if answered == count:
            done.callback(None)
        # returning acknowledges the request; an exception would put it back

    subscription = await client.subscribe(REQUESTS, answer, ack="manual", prefetch=10)
    print("serving fib requests (Ctrl-C to stop)", file=sys.stderr, flush=True)
    await done
    # The last request is acknowledged when its callback returns: unsubscribing waits
    # for that (and gives back any request received and not started).
    await subscription.unsubscribe()


async def call(reactor: Any, client: Client, n: int, timeout: float) -> int:
    reply_queue = f"rpc-reply-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    await client.create(reply_queue, "queue", exclusive=True)
    correlation = uuid.uuid4().hex
    answer: Deferred[int] = Deferred()

    def on_reply(message: Message) -> None:
        reply = json.loads(message.payload)
        if reply["id"] == correlation and not answer.called:
            answer.callback(reply["result"])

    await client.subscribe(reply_queue, on_reply, ack="auto")
    request = {"n": n, "reply_to": reply_queue, "id": correlation}
    # The request lives as long as the caller waits for its answer.
    await client.publish(REQUESTS, json.dumps(request), ttl=max(1, round(timeout * 1000)))
    try:
        return await answer.addTimeout(timeout, reactor)
    except DeferredTimeout:
        print(
            f"error: no answer within {timeout:g} s (is a server running? rpc.py --serve)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


async def main(reactor: Any, args: argparse.Namespace) -> None:
    try:
        client = await connect(reactor, tcp_endpoint(args.host, args.port), timeout=10)
        await client.create(REQUESTS, "queue")
        if args.serve:
            await serve(client, args.count)
        else:
            print(f"fib({args.call}) = {await call(reactor, client, args.call, args.timeout)}")
        await client.close()
    except (BrokerError, ClientError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` (to ``high``)."""

    def check(text: str) -> int:
        value = int(text)  # a ValueError is argparse's "invalid whole value"
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"must be a whole number {bound}, not {text}")
        return value

    check.__name__ = "whole"
    return check


def seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Request/reply: Fibonacci numbers.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--serve", action="store_true", help="answer requests")
    action.add_argument("--call", type=whole(0, MAX_N), metavar="N", help="ask for fib(N)")
    parser.add_argument("--count", type=whole(1), help="with --serve: stop after N requests")
    parser.add_argument(
        "--timeout", type=seconds, default=10.0, help="with --call: seconds (default 10)"
    )
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=whole(1, 65535), default=5555)
    args = parser.parse_args()
    if args.count is not None and not args.serve:
        parser.error("--count goes with --serve")
    task.react(main, (args,))
