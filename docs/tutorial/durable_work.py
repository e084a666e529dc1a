#!/usr/bin/env python3
"""Tutorial 6, durable work with acknowledgements: no task is lost, whatever stops.

    durable_work.py send TASK...                        store tasks durably
    durable_work.py work [--count N] [--crash-on TASK]  do tasks, acknowledging each

The queue is durable and so are the messages sent to it: they survive a restart of
the broker.  A worker takes a task with ``ack="manual"`` and acknowledges it only
once done; if the worker dies first (``--crash-on`` makes it die on that task), the
broker gives the task to the next worker, marked ``redelivered``.
"""

from __future__ import annotations

import os
import sys

from common import parser

from mbroker.blocking import Connection

QUEUE = "durable_tasks"


def send(conn: Connection, tasks: list[str]) -> None:
    for task in tasks:
        conn.publish(QUEUE, task)  # confirmed once it is on disk
        print(f"sent {task}")


def work(conn: Connection, count: int | None, crash_on: str | None) -> None:
    print("waiting for tasks", file=sys.stderr, flush=True)
    done = 0
    while count is None or done < count:
        for message in conn.pull(QUEUE, 1, wait=1000, ack="manual"):
            if message.text == crash_on:
                print(f"crashing on {message.text}", file=sys.stderr, flush=True)
                os._exit(3)  # dies without acknowledging: the task goes back
            again = " (redelivered)" if message.redelivered else ""
            print(f"done {message.text}{again}", flush=True)
            message.ack()
            done += 1


if __name__ == "__main__":
    args = parser(__doc__.splitlines()[0])
    action = args.add_subparsers(dest="action", required=True)
    action.add_parser("send").add_argument("tasks", nargs="+", metavar="TASK")
    work_args = action.add_parser("work")
    work_args.add_argument("--count", type=int)
    work_args.add_argument("--crash-on", metavar="TASK")
    options = args.parse_args()
    with Connection(options.host, options.port) as conn:
        conn.create(QUEUE, "queue", durable=True)
        if options.action == "send":
            send(conn, options.tasks)
        else:
            work(conn, options.count, options.crash_on)
