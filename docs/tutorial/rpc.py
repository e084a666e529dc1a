#!/usr/bin/env python3
"""Tutorial 5, RPC: a caller sends a request and waits for its answer.

    rpc.py serve [--count N]          answer fib(n) requests (N of them, or for ever)
    rpc.py call N [--timeout S]       ask for fib(N) and print the answer

The caller makes a queue of its own for the answer (exclusive: it goes with the
caller) and sends ``{"n": N, "reply_to": <that queue>, "id": <a fresh id>}`` to the
``rpc_queue``; the server publishes the answer, with the same id, to the queue named
in ``reply_to``.  A request lives no longer than the caller waits (``ttl``), so a
server that comes late does not answer a caller who has gone.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

from common import parser

from mbroker.blocking import Connection

QUEUE = "rpc_queue"


def fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def serve(conn: Connection, count: int | None) -> None:
    print("serving fib requests", file=sys.stderr, flush=True)
    answered = 0
    while count is None or answered < count:
        for request in conn.pull(QUEUE, 1, wait=1000, ack="manual"):
            asked = json.loads(request.payload)
            result = fib(int(asked["n"]))
            conn.publish(asked["reply_to"], json.dumps({"id": asked["id"], "result": result}))
            request.ack()  # answered: the request can go
            print(f"fib({asked['n']}) = {result}", flush=True)
            answered += 1


def call(conn: Connection, n: int, timeout: float) -> int:
    reply_queue = f"rpc-reply-{os.getpid()}"
    conn.create(reply_queue, "queue", exclusive=True)
    request_id = uuid.uuid4().hex
    request = {"n": n, "reply_to": reply_queue, "id": request_id}
    conn.publish(QUEUE, json.dumps(request), ttl=int(timeout * 1000))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for reply in conn.pull(reply_queue, 1, wait=500):
            answer = json.loads(reply.payload)
            if answer["id"] == request_id:
                return int(answer["result"])
    raise SystemExit(f"no answer in {timeout} s: is a server running?")


if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0])
    action = args.add_subparsers(dest="action", required=True)
    action.add_parser("serve").add_argument("--count", type=int)
    call_args = action.add_parser("call")
    call_args.add_argument("n", type=int)
    call_args.add_argument("--timeout", type=float, default=10.0)
    options = args.parse_args()
    with Connection(options.host, options.port) as conn:
        conn.create(QUEUE, "queue")
        if options.action == "serve":
            serve(conn, options.count)
        else:
            print(f"fib({options.n}) = {call(conn, options.n, options.timeout)}")
