#!/usr/bin/env python3
"""Create, publish to, and delete a topic (a topic exchange), with the blocking API.

    publisher.py --create TOPIC
    publisher.py --publish TOPIC MESSAGE [--key ROUTING.KEY]
    publisher.py --delete TOPIC

Both take --host and --port (default localhost 5555).  This script has no reactor of
its own: mbroker.blocking.Connection runs one in a thread (crochet) and every call
waits for the broker's answer.
"""

from __future__ import annotations

import argparse
import sys

from mbroker.blocking import Connection
from mbroker.client import ClientError
from mbroker.errors import BrokerError


def main() -> int:
    parser = argparse.ArgumentParser(description="Create, publish to, or delete a topic.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--create", metavar="TOPIC", help="create the topic")
    action.add_argument(
        "--publish", nargs=2, metavar=("TOPIC", "MESSAGE"), help="publish MESSAGE to TOPIC"
    )
    action.add_argument("--delete", metavar="TOPIC", help="delete the topic")
    parser.add_argument("--key", default="", help="routing key of the message (default: none)")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=5555)
    args = parser.parse_args()

    try:
        with Connection(args.host, args.port, timeout=10) as conn:
            if args.create:
                created = conn.create(args.create, "topic")
                print(f"created topic {args.create}" if created else f"topic {args.create} exists")
            elif args.publish:
                topic, message = args.publish
                reached = conn.publish(topic, message, args.key)
                print(f"published to {topic} ({reached} subscriber queue(s) reached)")
            else:
                conn.delete(args.delete)
                print(f"deleted topic {args.delete}")
    except BrokerError as e:  # NOT_FOUND, EXISTS, ...: the broker said no
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ClientError, TimeoutError) as e:  # no broker there, or no answer
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
