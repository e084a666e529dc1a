#!/usr/bin/env python3
"""Tutorial 2, publish/subscribe: every listener gets every message.

    publish_subscribe.py emit MESSAGE             send a log line to every listener
    publish_subscribe.py listen [--count N]       print log lines as they come

A fanout exchange copies each message to every queue bound to it.  Each listener
makes a queue of its own (exclusive: it goes when the listener does) and binds it.
"""

from __future__ import annotations

import os
import sys

from common import parser

from mbroker.blocking import Connection

EXCHANGE = "logs"


def emit(conn: Connection, line: str) -> None:
    reached = conn.publish(EXCHANGE, line)
    print(f"sent to {reached} listener(s)")


def listen(conn: Connection, count: int | None) -> None:
    queue = f"logs-listener-{os.getpid()}"
    conn.create(queue, "queue", exclusive=True)
    conn.bind(queue, EXCHANGE)
    print("listening", file=sys.stderr, flush=True)
    received = 0
    while count is None or received < count:
        for message in conn.pull(queue, 100, wait=1000):
            print(message.text, flush=True)
            received += 1


if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0])
    action = args.add_subparsers(dest="action", required=True)
    action.add_parser("emit").add_argument("message")
    action.add_parser("listen").add_argument("--count", type=int)
    options = args.parse_args()
    with Connection(options.host, options.port) as conn:
        conn.create(EXCHANGE, "fanout")
        if options.action == "emit":
            emit(conn, options.message)
        else:
            listen(conn, options.count)
