"""mbroker beside other brokers, in the same run, with the same cheap client.

Each broker is Debian's package (``redis-server``, ``nats-server``, ``mosquitto``,
``rabbitmq-server``, ``beanstalkd``), started on a free 127.0.0.1 port with a private
temporary directory and stopped at the end (``benchmarks/peers/``).  Every one is driven
by :func:`rawclient.run_flow`: one publisher writing pre-encoded, pipelined frames of
128-byte payloads in chunks of 1000, and subscribers that count deliveries with one
scan per read.  Cases:

* ``pubsub 1->1`` and ``fanout 1->4``: every subscriber gets every message (mbroker: a
  fanout exchange, ``ack=auto``; Redis PUBLISH/SUBSCRIBE; NATS PUB/SUB; MQTT QoS 0;
  RabbitMQ a fanout exchange and one exclusive queue per subscriber, ``no-ack``).
* ``queue 1->1, acked``: a work queue whose consumer acknowledges what it gets (mbroker:
  ``ack=manual`` and one ``ACK a-b`` per read; beanstalkd put/reserve/delete; RabbitMQ
  ``basic.ack`` with ``multiple`` per read, prefetch 1000).

The figure is deliveries per second (all subscribers together), from the first publish
to the last delivery; ``mbroker/peer`` divides mbroker's figure by the peer's.  Beside
it: the broker's CPU use (all its threads; 100 % = one core), how long it was ready to
run but waited for a CPU (other work on the machine), its CPU seconds per million
deliveries, its RSS, and this client's own CPU use.  A peer
that is not installed or does not start is reported as ``unavailable: <why>``; one
without the case as ``n/a``.  Publishers of NATS, MQTT QoS 0 and RabbitMQ (no confirms)
get no replies, so only TCP holds them back; ``lost`` counts what a broker dropped.
Usage::

    python benchmarks/bench_peers.py [--peers redis,nats,...] [--seconds S] [--quick]
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import PeerServer, Setup, Unavailable  # noqa: E402
from rawclient import FlowResult, base_parser, load_note, print_table, run_flow  # noqa: E402

PEERS = ["redis", "nats", "mosquitto", "rabbitmq", "beanstalkd"]

CASES: list[tuple[str, Callable[[PeerServer, int], Setup]]] = [
    ("pubsub 1->1", lambda srv, size: srv.setup_pubsub(1, size)),
    ("fanout 1->4", lambda srv, size: srv.setup_pubsub(4, size)),
    ("queue 1->1, acked", lambda srv, size: srv.setup_queue(size)),
]


def run_target(
    server_class: type[PeerServer], seconds: float, size: int
) -> tuple[str, dict[str, FlowResult | str]]:
    """(version or 'unavailable: why', {case: result or 'n/a: why'})."""
    why = server_class.unavailable()
    if why:
        return f"unavailable: {why}", {}
    server = server_class()
    try:
        t = time.monotonic()
        server.start()
        started = time.monotonic() - t
    except (Unavailable, OSError) as e:
        server.stop()
        return f"unavailable: {e}", {}
    results: dict[str, FlowResult | str] = {}
    try:
        version = f"{server.version()} (up in {started:.1f} s)"
        for case, setup_case in CASES:
            try:
                setup = setup_case(server, size)
            except Unavailable as e:
                results[case] = f"n/a: {e}"
                continue
            try:
                r = run_flow(
                    setup.pub,
                    setup.chunks,
                    setup.subs,
                    setup.ack_reader,
                    seconds=seconds,
                    max_messages=5_000_000,
                    fanout=setup.fanout,
                    cpu=server.cpu_seconds,
                    cpu_wait=server.cpu_wait_seconds,
                )
                r.extra["rss_mib"] = server.rss_bytes() / (1 << 20)
                results[case] = r
            finally:
                setup.close()
    except Exception as e:  # a peer misbehaving must not stop the others
        results.setdefault("error", f"{type(e).__name__}: {e}")
        version = f"failed: {type(e).__name__}: {e}"
    finally:
        server.stop()
    return version, results


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated peer modules")
    ap.add_argument("--seconds", type=float, default=3.0, help="per case (default 3)")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    seconds = 0.5 if args.quick else args.seconds
    names = ["mbroker"] + [p for p in args.peers.split(",") if p and p != "mbroker"]
    print(f"# {load_note()}", flush=True)
    versions: dict[str, str] = {}
    results: dict[str, dict[str, FlowResult | str]] = {}
    for name in names:
        module = importlib.import_module(f"peers.{name}")
        versions[name], results[name] = run_target(module.Server, seconds, args.size)
        print(f"# {name}: {versions[name]}", flush=True)
    print_table("brokers", ["broker", "version"], [[n, versions[n]] for n in names])
    rows: list[list[object]] = []
    notes: list[str] = []
    nan = float("nan")
    for case, _ in CASES:
        ours = results["mbroker"].get(case)
        for name in names:
            r = results[name].get(case)
            if r is None:
                if versions[name].startswith(("unavailable", "failed")):
                    rows.append([case, name, versions[name].split(":")[0]] + [nan] * 8)
                continue
            if isinstance(r, str):
                notes.append(f"{case}, {name}: {r}")
                continue
            elapsed = r.seconds
            ratio = (
                ours.deliver_rate / r.deliver_rate
                if isinstance(ours, FlowResult) and r.deliver_rate
                else nan
            )
            rows.append(
                [
                    case,
                    name,
                    r.delivered,
                    r.deliver_rate,
                    r.lost,
                    100 * r.broker_cpu / elapsed if elapsed else nan,
                    100 * r.broker_wait / elapsed if elapsed else nan,
                    r.broker_cpu / (r.delivered / 1e6) if r.delivered else nan,
                    r.extra.get("rss_mib", nan),
                    100 * r.client_cpu / elapsed if elapsed else nan,
                    ratio,
                ]
            )
    for name in names:
        if versions[name].startswith(("unavailable", "failed")):
            notes.append(f"{name}: {versions[name]}")
    print_table(
        f"publish -> deliver, one pipelining publisher, {args.size}-byte payloads, "
        f"{seconds:g} s per case",
        [
            "case",
            "broker",
            "delivered",
            "deliveries/s",
            "lost",
            "broker CPU %",
            "CPU wait %",
            "CPU s/M deliv",
            "RSS MiB",
            "client CPU %",
            "mbroker/peer",
        ],
        rows,
    )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
