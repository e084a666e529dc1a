#!/usr/bin/env python3
"""Tutorial 3, routing: listeners choose messages by their routing key.

    routing.py emit SEVERITY MESSAGE               send a log line with a severity
    routing.py listen SEVERITY... [--count N]      print the lines of these severities

A direct exchange sends a message to the queues bound with exactly its routing key:
a listener binds its queue once per severity it wants.
"""

from __future__ import annotations

import os
import sys

from common import parser

from mbroker.blocking import Connection

EXCHANGE = "direct_logs"


def emit(conn: Connection, severity: str, line: str) -> None:
    reached = conn.publish(EXCHANGE, line, key=severity)
    print(f"sent [{severity}] to {reached} listener(s)")


def listen(conn: Connection, severities: list[str], count: int | None) -> None:
    queue = f"direct-listener-{os.getpid()}"
    conn.create(queue, "queue", exclusive=True)
    for severity in severities:
        conn.bind(queue, EXCHANGE, severity)
    print(f"listening for {' '.join(severities)}", file=sys.stderr, flush=True)
    received = 0
    while count is None or received < count:
        for message in conn.pull(queue, 100, wait=1000):
            print(f"[{message.routing_key}] {message.text}", flush=True)
            received += 1


if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0])
    action = args.add_subparsers(dest="action", required=True)
    emit_args = action.add_parser("emit")
    emit_args.add_argument("severity")
    emit_args.add_argument("message")
    listen_args = action.add_parser("listen")
    listen_args.add_argument("severities", nargs="+", metavar="SEVERITY")
    listen_args.add_argument("--count", type=int)
    options = args.parse_args()
    with Connection(options.host, options.port) as conn:
        conn.create(EXCHANGE, "direct")
        if options.action == "emit":
            emit(conn, options.severity, options.message)
        else:
            listen(conn, options.severities, options.count)
