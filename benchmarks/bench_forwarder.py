"""mbroker's publish -> deliver 1->1 beside a bare Twisted line forwarder, in the same run.

The forwarder (``benchmarks/forwarder.py``) is a ``LineOnlyReceiver`` that writes every
line it gets to the one subscriber connection and does nothing else: the ceiling of a
Twisted design on this CPython, not a competitor.  Both are driven by the same cheap
client (:func:`rawclient.run_flow`, as in ``bench_peers.py``): one publisher writing
pre-encoded, pipelined chunks of 1000 frames with 128-byte payloads, and one
subscriber counting deliveries with one ``bytes.count`` per read.

* ``forwarder``: lines of 128 ``x`` plus ``\\n``; the subscriber counts ``\\n``.  It
  gets no replies, so only TCP holds the publisher back.
* ``mbroker``: ``PUBLISH <queue> 128`` frames into a queue with one ``SUBSCRIBE``r
  (``ack=auto``) on ``twistd -n mbroker`` as ``bench_pubsub.py`` starts it; the
  publisher counts its ``+OK`` replies (at most 8 chunks unanswered), the subscriber
  ``MSG`` frames.

Both servers run for the whole script, unpinned; the cases alternate, forwarder then
mbroker, for ``--rounds`` rounds so that both see the same load on a busy machine.  The
rate is deliveries per second from the first write to the last delivery; beside it the
server's CPU use (100 % = one core), how long it was runnable but waited for a CPU, its
CPU seconds per million deliveries, and this client's CPU use.  ``mbroker/forwarder``
divides mbroker's rate by the forwarder's of the same round.  Usage::

    python benchmarks/bench_forwarder.py [--seconds S] [--rounds N] [--size B] [--quick]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402
from forwarder import ForwarderProcess  # noqa: E402
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
    print_table,
    run_flow,
)

MAX_MESSAGES = 100_000_000  # the runs are bounded by --seconds


def run_forwarder(fwd: ForwarderProcess, seconds: float, size: int) -> FlowResult:
    sub, pub = fwd.subscribed_pair()
    try:
        return run_flow(
            pub,
            [(b"x" * size + b"\n") * BATCH],
            [Subscriber(sub, Reader(b"\n"))],
            None,
            seconds=seconds,
            max_messages=MAX_MESSAGES,
            cpu=fwd.cpu_seconds,
            cpu_wait=fwd.cpu_wait_seconds,
        )
    finally:
        sub.close()
        pub.close()


def run_mbroker(broker: BrokerProcess, name: bytes, seconds: float, size: int) -> FlowResult:
    admin = connect(broker.host, broker.port)
    command(admin, b"CREATE " + name + b" queue")
    sub = connect(broker.host, broker.port)
    command(sub, b"SUBSCRIBE " + name)
    pub = connect(broker.host, broker.port)
    try:
        return run_flow(
            pub,
            [mbroker_publish(name, size) * BATCH],
            [Subscriber(sub, Reader(b"MSG "))],
            Reader(b"+OK"),
            seconds=seconds,
            max_messages=MAX_MESSAGES,
            cpu=broker.cpu_seconds,
            cpu_wait=broker.cpu_wait_seconds,
        )
    finally:
        for s in (pub, sub, admin):
            s.close()


def row(rnd: int, server: str, r: FlowResult, ratio: float) -> list[object]:
    nan = float("nan")
    elapsed = r.seconds
    return [
        server,
        rnd,
        r.delivered,
        r.deliver_rate,
        r.lost,
        100 * r.broker_cpu / elapsed if elapsed else nan,
        100 * r.broker_wait / elapsed if elapsed else nan,
        r.broker_cpu / (r.delivered / 1e6) if r.delivered else nan,
        100 * r.client_cpu / elapsed if elapsed else nan,
        ratio,
    ]


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--seconds", type=float, default=3.0, help="per case (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="forwarder, mbroker pairs (2)")
    ap.add_argument("--size", type=int, default=128, help="payload bytes (128)")
    args = ap.parse_args()
    seconds = 0.5 if args.quick else args.seconds
    print(f"# {load_note()}", flush=True)
    rows: list[list[object]] = []
    nan = float("nan")
    totals = {"forwarder": [0, 0.0], "mbroker": [0, 0.0]}
    with ForwarderProcess() as fwd, BrokerProcess() as broker:
        for rnd in range(1, args.rounds + 1):
            f = run_forwarder(fwd, seconds, args.size)
            m = run_mbroker(broker, b"fwdbench%d" % rnd, seconds, args.size)
            ratio = m.deliver_rate / f.deliver_rate if f.deliver_rate else nan
            rows.append(row(rnd, "forwarder", f, nan))
            rows.append(row(rnd, "mbroker", m, ratio))
            for name, r in (("forwarder", f), ("mbroker", m)):
                totals[name][0] += r.delivered
                totals[name][1] += r.deliver_seconds
    print_table(
        f"publish -> deliver 1->1, bare forwarder and mbroker (queue), one pipelining "
        f"publisher, {args.size}-byte payloads, {seconds:g} s per case",
        [
            "server",
            "round",
            "delivered",
            "lines or msgs/s",
            "lost",
            "server CPU %",
            "CPU wait %",
            "CPU s/M deliv",
            "client CPU %",
            "mbroker/forwarder",
        ],
        rows,
    )
    rate = {name: n / s if s else nan for name, (n, s) in totals.items()}
    ratio = rate["mbroker"] / rate["forwarder"] if rate["forwarder"] else nan
    print(
        f"all rounds: forwarder {rate['forwarder']:,.0f} lines/s, mbroker "
        f"{rate['mbroker']:,.0f} msgs/s, mbroker/forwarder {ratio:.3f}"
    )


if __name__ == "__main__":
    main()
