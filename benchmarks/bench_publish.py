"""Publish throughput: one pipelining publisher, 128-byte payloads, into a real broker.

The publisher writes pre-encoded ``PUBLISH`` frames in chunks of 1000, at most eight
chunks unanswered, and counts its ``+OK`` replies with one ``bytes.count`` per read;
each subscriber counts ``MSG`` frames the same way.  Cases:

* ``queue``: into a queue nobody consumes (the queue grows).
* ``queue -> 1 consumer``: the same with one ``ack=auto`` subscriber: publish -> deliver.
* ``fanout -> N``: a fanout exchange with N = 1, 4, 16 subscribers (each has a private
  queue that holds 10,000 messages and then drops its oldest: ``lost`` counts those).
* ``topic, 10k bindings``: 10,000 queues, each bound once (``stock.s<i>.trade`` or
  ``stock.s<i>.*``), and routing keys that cycle over all 10,000, so each message
  reaches one queue and the routing memo (4,096 keys) does not hold them all.

Each case runs on a fresh ``--memory`` broker (``--quick``: one broker for all), for
``--seconds`` or ``--max-messages``.  Columns: messages published per second (by the
publisher's replies), deliveries per second over all subscribers, the broker's CPU use
(100 % = one core: the broker is single-threaded), the share of the time it was ready
to run but waited for a CPU (other work on the machine: the rates are then low, and
the CPU seconds are the steadier figure), its CPU seconds per million published
messages, its peak RSS, and this client's own CPU use (all its threads).  Usage::

    python benchmarks/bench_publish.py [--seconds S] [--size BYTES] [--quick]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402
from rawclient import (  # noqa: E402
    BATCH,
    FlowResult,
    Reader,
    Subscriber,
    base_parser,
    command,
    connect,
    load_note,
    mbroker_publish,
    pipeline,
    print_table,
    read_until,
    run_flow,
)


def subscribe(broker: BrokerProcess, name: bytes, n: int) -> list[Subscriber]:
    subs = []
    for _ in range(n):
        s = connect(broker.host, broker.port)
        s.sendall(b"SUBSCRIBE " + name + b"\r\n")
        subs.append(Subscriber(s, Reader(b"MSG ")))
    for sub in subs:  # the +OK <sid> of each before any publish
        if not read_until(sub.sock, b"\r\n").startswith(b"+OK"):
            raise RuntimeError("SUBSCRIBE failed")
    return subs


def flow(
    broker: BrokerProcess,
    chunks: list[bytes],
    subs: list[Subscriber],
    seconds: float,
    max_messages: int,
    fanout: int | None = None,
) -> FlowResult:
    pub = connect(broker.host, broker.port)
    try:
        return run_flow(
            pub,
            chunks,
            subs,
            Reader(b"+OK"),
            seconds=seconds,
            max_messages=max_messages,
            fanout=fanout,
            cpu=broker.cpu_seconds,
            cpu_wait=broker.cpu_wait_seconds,
        )
    finally:
        for s in [pub, *(sub.sock for sub in subs)]:
            s.close()


def case_queue(consumers: int) -> Callable[[BrokerProcess, float, int, int], FlowResult]:
    def run(broker: BrokerProcess, seconds: float, max_messages: int, size: int) -> FlowResult:
        admin = connect(broker.host, broker.port)
        name = b"q%d" % consumers
        command(admin, b"CREATE " + name + b" queue")
        subs = subscribe(broker, name, consumers)
        chunk = mbroker_publish(name, size) * BATCH
        r = flow(broker, [chunk], subs, seconds, max_messages, fanout=1 if consumers else 0)
        admin.close()
        return r

    return run


def case_fanout(n: int) -> Callable[[BrokerProcess, float, int, int], FlowResult]:
    def run(broker: BrokerProcess, seconds: float, max_messages: int, size: int) -> FlowResult:
        admin = connect(broker.host, broker.port)
        name = b"f%d" % n
        command(admin, b"CREATE " + name + b" fanout")
        subs = subscribe(broker, name, n)
        r = flow(broker, [mbroker_publish(name, size) * BATCH], subs, seconds, max_messages)
        admin.close()
        return r

    return run


def case_topic(bindings: int) -> Callable[[BrokerProcess, float, int, int], FlowResult]:
    def run(broker: BrokerProcess, seconds: float, max_messages: int, size: int) -> FlowResult:
        admin = connect(broker.host, broker.port)
        command(admin, b"CREATE stock topic")
        setup = b"".join(
            b"CREATE t%d queue\r\nBIND t%d stock stock.s%d.%s\r\n"
            % (i, i, i, b"trade" if i % 2 else b"*")
            for i in range(bindings)
        )
        pipeline(admin, setup, 2 * bindings)
        keys = [b"stock.s%d.trade" % i for i in range(bindings)]
        chunks = [
            b"".join(mbroker_publish(b"stock", size, k) for k in keys[i : i + BATCH])
            for i in range(0, bindings, BATCH)
        ]
        r = flow(broker, chunks, [], seconds, max_messages)
        admin.close()
        return r

    return run


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=5.0, help="per case (default 5)")
    ap.add_argument("--max-messages", type=int, default=2_000_000, help="per case")
    ap.add_argument("--size", type=int, default=128, help="payload bytes (default 128)")
    ap.add_argument("--bindings", type=int, default=10_000, help="topic bindings (10,000)")
    args = ap.parse_args()
    seconds = 0.3 if args.quick else args.seconds
    bindings = 1000 if args.quick else args.bindings
    bindings = max(BATCH, bindings // BATCH * BATCH)
    cases: list[tuple[str, int, Callable[[BrokerProcess, float, int, int], FlowResult]]] = [
        ("queue", 0, case_queue(0)),
        ("queue -> 1 consumer", 1, case_queue(1)),
        ("fanout -> 1", 1, case_fanout(1)),
        ("fanout -> 4", 4, case_fanout(4)),
        ("fanout -> 16", 16, case_fanout(16)),
        (f"topic, {bindings:,} bindings", 0, case_topic(bindings)),
    ]
    print(f"# {load_note()}", flush=True)
    rows: list[list[object]] = []
    shared = BrokerProcess("--memory") if args.quick else None
    try:
        for label, nsubs, run in cases:
            broker = shared or BrokerProcess("--memory")
            try:
                r = run(broker, seconds, args.max_messages, args.size)
                rows.append(
                    [
                        label,
                        nsubs,
                        r.confirmed,
                        r.publish_rate,
                        r.deliver_rate if nsubs else float("nan"),
                        r.lost if nsubs else float("nan"),
                        100 * r.broker_cpu / r.seconds,
                        100 * r.broker_wait / r.seconds,
                        r.broker_cpu / (r.confirmed / 1e6) if r.confirmed else float("nan"),
                        broker.peak_rss_bytes() / (1 << 20),
                        100 * r.client_cpu / r.seconds,
                    ]
                )
            finally:
                if shared is None:
                    broker.stop()
    finally:
        if shared is not None:
            shared.stop()
    print_table(
        f"publish throughput, one pipelining publisher, {args.size}-byte payloads",
        [
            "target",
            "subs",
            "published",
            "publish/s",
            "deliveries/s",
            "lost",
            "broker CPU %",
            "CPU wait %",
            "CPU s/M msgs",
            "peak RSS MiB",
            "client CPU %",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
