#!/usr/bin/env python3
"""Tutorial 4, topics: listeners choose messages by patterns of their routing key.

    topics.py emit KEY MESSAGE                send a log line, KEY like kern.critical
    topics.py listen PATTERN... [--count N]   print the lines whose key matches

A topic exchange matches dotted routing keys against the patterns queues are bound
with: ``*`` stands for one word, ``#`` for any number of them.  ``kern.*`` gets
everything from the kernel, ``*.critical`` everything critical, ``#`` everything.
"""

from __future__ import annotations

import os
import sys

from common import parser

from mbroker.blocking import Connection

EXCHANGE = "topic_logs"


def emit(conn: Connection, key: str, line: str) -> None:
    reached = conn.publish(EXCHANGE, line, key=key)
    print(f"sent [{key}] to {reached} listener(s)")


def listen(conn: Connection, patterns: list[str], count: int | None) -> None:
    queue = f"topic-listener-{os.getpid()}"
    conn.create(queue, "queue", exclusive=True)
    for pattern in patterns:
        conn.bind(queue, EXCHANGE, pattern)
    print(f"listening for {' '.join(patterns)}", file=sys.stderr, flush=True)
    received = 0
    while count is None or received < count:
        for message in conn.pull(queue, 100, wait=1000):
            print(f"[{message.routing_key}] {message.text}", flush=True)
            received += 1


if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0])
    action = args.add_subparsers(dest="action", required=True)
    emit_args = action.add_parser("emit")
    emit_args.add_argument("key")
    emit_args.add_argument("message")
    listen_args = action.add_parser("listen")
    listen_args.add_argument("patterns", nargs="+", metavar="PATTERN")
    listen_args.add_argument("--count", type=int)
    options = args.parse_args()
    with Connection(options.host, options.port) as conn:
        conn.create(EXCHANGE, "topic")
        if options.action == "emit":
            emit(conn, options.key, options.message)
        else:
            listen(conn, options.patterns, options.count)
