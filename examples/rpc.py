#!/usr/bin/env python3
"""Request/reply over queues: a server computes Fibonacci numbers for callers.

    rpc.py --serve [--count N]     answer requests until Ctrl-C (or N of them)
    rpc.py --call N [--timeout S]  ask for fib(N) and print the answer

A caller makes an exclusive queue for its replies and subscribes to it, then
publishes ``{"n": N, "reply_to": <its queue>, "id": <correlation id>}`` to the
``rpc_requests`` queue.  The server publishes the answer, with the same id, straight
to the caller's queue (publishing to a queue's name puts the message in it).
Several servers may share the requests queue: each request goes to one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred

from mbroker.client import Client, ClientError, Message, connect, tcp_endpoint
from mbroker.errors import BrokerError

REQUESTS = "rpc_requests"


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def serve(client: Client, count: int | None) -> None:
    done: Deferred[None] = Deferred()
    answered = 0

    async def answer(message: Message) -> None:
        nonlocal answered
        request = json.loads(message.payload)
        result = fib(int(request["n"]))
        reply = json.dumps({"id": request["id"], "result": result})
        await client.publish(request["reply_to"], reply)  # the reply queue's name
        print(f"fib({request['n']}) = {result}", flush=True)
        answered += 1
        if count is not None and answered == count:
            done.callback(None)
        # returning acknowledges the request; an exception would put it back

    await client.subscribe(REQUESTS, answer, ack="manual", prefetch=10)
    print("serving fib requests (Ctrl-C to stop)", file=sys.stderr, flush=True)
    await done


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
    if not await client.publish(REQUESTS, json.dumps(request)):
        raise SystemExit("no request queue")
    return await answer.addTimeout(timeout, reactor)


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Request/reply: Fibonacci numbers.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--serve", action="store_true")
    action.add_argument("--call", type=int, metavar="N")
    parser.add_argument("--count", type=int, help="with --serve: stop after N requests")
    parser.add_argument("--timeout", type=float, default=10.0, help="with --call: seconds")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    task.react(main, (parser.parse_args(),))
