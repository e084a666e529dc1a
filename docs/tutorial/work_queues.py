#!/usr/bin/env python3
"""Tutorial 1, work queues: tasks shared among workers, one at a time each.

    work_queues.py send TASK...          put tasks in the queue
    work_queues.py work [--count N]      do tasks as they come (N of them, or for ever)

A task ``name:seconds`` takes that many seconds.  Start two workers, then send six
tasks: each worker takes the next task only when it has finished the last one.
"""

from __future__ import annotations

import sys
import time

from common import parser

from mbroker.blocking import Connection

QUEUE = "task_queue"


def send(conn: Connection, tasks: list[str]) -> None:
    for task in tasks:
        conn.publish(QUEUE, task)
        print(f"sent {task}")


def work(conn: Connection, count: int | None) -> None:
    print("waiting for tasks", file=sys.stderr, flush=True)
    done = 0
    while count is None or done < count:
        # one task at a time, waiting up to a second for it
        for message in conn.pull(QUEUE, 1, wait=1000):
            name, _, seconds = message.text.partition(":")
            time.sleep(float(seconds or 0))
            print(f"done {name}", flush=True)
            done += 1


if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0])
    action = args.add_subparsers(dest="action", required=True)
    action.add_parser("send").add_argument("tasks", nargs="+", metavar="TASK")
    action.add_parser("work").add_argument("--count", type=int)
    options = args.parse_args()
    with Connection(options.host, options.port) as conn:
        conn.create(QUEUE, "queue")  # the same on both sides: whoever comes first makes it
        if options.action == "send":
            send(conn, options.tasks)
        else:
            work(conn, options.count)
