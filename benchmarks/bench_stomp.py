"""STOMP SEND -> MESSAGE 1->1: mbroker's STOMP listener beside RabbitMQ's STOMP plugin.

Both brokers run at once for the whole run: ``twistd -n mbroker --memory --stomp
tcp:0:interface=127.0.0.1`` and Debian's ``rabbitmq-server`` with ``rabbitmq_stomp`` on
a free loopback port (``peers/rabbitmq.py``, :class:`StompServer`).  The rounds
alternate between them (mbroker, RabbitMQ, mbroker, …) so that both see the same load
of a shared machine; each figure is given as the best and the median of ``--rounds``.

The client is raw sockets, STOMP 1.2, 100-byte bodies of ``x`` with ``content-length``:

* throughput: one publisher connection writes pre-encoded ``SEND`` frames in chunks of
  1000 (no receipts: only TCP holds it back, as in ``bench_peers.py``), one subscriber
  connection counts ``MESSAGE`` frames with one ``bytes.count`` per read.  Cases:
  ``/queue/Q`` with ``ack:auto``; ``/queue/Q`` with ``ack:client-individual`` (1.2's
  ``ack`` header of every ``MESSAGE`` answered by its own ``ACK``, all of one read sent
  in one write; ``prefetch-count:1000``); ``/queue/Q`` with ``ack:client`` (one
  cumulative ``ACK`` per read, of its last ``MESSAGE``); ``/topic/K`` with
  ``ack:auto``.  The rate is deliveries from the first ``SEND`` to the last ``MESSAGE``;
  ``CPU us/msg`` is the broker's CPU (all its threads) per delivery.
* latency, one at a time on ``/queue/Q`` (``ack:auto``): ``SEND`` -> ``MESSAGE``
  (send one, wait for it on the subscriber, send the next), and ``SEND`` with
  ``receipt`` -> ``RECEIPT`` on the publisher's connection; p50 and p99 in µs.

mbroker keeps ``/queue/`` queues durable (``--memory``: in memory only); RabbitMQ's are
durable queues too, and its messages are transient (no ``persistent:true``): neither
touches a disk.  ``mbroker/rabbitmq`` divides the medians.  ``--quick`` (the smoke
test) runs mbroker only, one short round; ``--latency-only`` runs the latency rounds
only.  ``MBROKER_SRC=<tree>`` runs another checkout's broker (``brokerproc.py``).
Usage::

    python benchmarks/bench_stomp.py [--rounds 5] [--seconds 3] [--latency 2000] [--quick]
        [--latency-only] [--no-rabbitmq]
"""

from __future__ import annotations

import math
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402
from peers import Unavailable  # noqa: E402
from peers.rabbitmq import StompServer  # noqa: E402
from rawclient import (  # noqa: E402
    BATCH,
    FlowResult,
    Reader,
    Subscriber,
    base_parser,
    connect,
    load_note,
    machine,
    print_table,
    run_flow,
)

HOST = "127.0.0.1"
SIZE = 100
MARKER = b"MESSAGE\n"
THROUGHPUT_TITLE = "STOMP SEND -> MESSAGE 1->1 throughput"
LATENCY_TITLE = "STOMP latency one at a time"


class StompBroker(BrokerProcess):
    """``twistd -n mbroker --memory --stomp …``; ``port`` is the STOMP port."""

    listening = re.compile(rb"mbroker STOMP listening on ([0-9.]+):(\d+)")
    name = "mbroker"

    def __init__(self) -> None:
        super().__init__("--memory", "--stomp", f"tcp:0:interface={HOST}")


# ---------------------------------------------------------------- the client


def read_frame(s: socket.socket, timeout: float = 10.0) -> bytes:
    """Bytes from *s* until a NUL (RabbitMQ writes a newline after it: not an end)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\x00" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited for a frame, got {buf[-200:]!r}")
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed while waiting for a frame: {buf[-200:]!r}")
        buf += chunk
    return buf


def stomp_connect(port: int) -> socket.socket:
    """A STOMP 1.2 connection (no heart-beats) once ``CONNECTED`` came."""
    s = connect(HOST, port, greeting=False)
    s.sendall(
        b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n\x00"
    )
    reply = read_frame(s)
    if not reply.startswith(b"CONNECTED"):
        raise RuntimeError(f"CONNECT -> {reply[:300]!r}")
    return s


def receipted(s: socket.socket, frame_head: bytes, receipt: bytes) -> None:
    """Send a body-less frame with a ``receipt`` header and wait for its ``RECEIPT``."""
    s.sendall(frame_head + b"receipt:" + receipt + b"\n\n\x00")
    reply = read_frame(s)
    if not reply.startswith(b"RECEIPT") or receipt not in reply:
        command_name = frame_head.split(b"\n")[0]
        raise RuntimeError(f"{command_name!r} -> {reply[:300]!r}")


def send_frame(destination: bytes, receipt: bytes = b"") -> bytes:
    head = b"SEND\ndestination:%s\ncontent-length:%d\n" % (destination, SIZE)
    if receipt:
        head += b"receipt:" + receipt + b"\n"
    return head + b"\n" + b"x" * SIZE + b"\x00"


def subscribe(s: socket.socket, destination: bytes, ack: bytes) -> None:
    head = b"SUBSCRIBE\nid:0\ndestination:%s\nack:%s\nprefetch-count:1000\n" % (
        destination,
        ack,
    )
    receipted(s, head, b"sub")


class IndividualAcker(Reader):
    """Counts ``MESSAGE`` frames whole and answers each with ``ACK id:<its ack header>``.

    Frames end with NUL, which no 100-byte body of ``x`` holds: everything up to the
    last NUL of a read is complete, the rest waits for the next read.
    """

    _ack = re.compile(rb"\nack:([^\n]*)\n")

    def __init__(self) -> None:
        super().__init__(MARKER)
        self._rest = b""

    def feed(self, chunk: bytes) -> tuple[int, bytes]:
        data = self._rest + chunk
        end = data.rfind(b"\x00") + 1
        done, self._rest = data[:end], data[end:]
        n = done.count(MARKER)
        if not n:
            return 0, b""
        ids = self._ack.findall(done)
        return n, b"".join([b"ACK\nid:" + i + b"\n\n\x00" for i in ids])


class CumulativeAcker(IndividualAcker):
    """``ack:client``: one ``ACK`` per read, of the read's last ``MESSAGE`` (and all before)."""

    def feed(self, chunk: bytes) -> tuple[int, bytes]:
        data = self._rest + chunk
        end = data.rfind(b"\x00") + 1
        done, self._rest = data[:end], data[end:]
        n = done.count(MARKER)
        if not n:
            return 0, b""
        i = done.rfind(b"\nack:") + 5
        return n, b"ACK\nid:" + done[i : done.index(b"\n", i)] + b"\n\n\x00"


# ---------------------------------------------------------------- a target


@dataclass
class Target:
    name: str
    port: int
    cpu: Callable[[], float]
    cpu_wait: Callable[[], float]
    version: str
    throughput: dict[str, list[FlowResult]] = field(default_factory=dict)
    latency: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    n: int = 0

    def fresh(self, prefix: str) -> bytes:
        self.n += 1
        return f"{prefix}bench{self.n}".encode()


CASES = {
    "queue, ack:auto": (b"/queue/", b"auto"),
    "queue, ack:client-individual": (b"/queue/", b"client-individual"),
    "queue, ack:client": (b"/queue/", b"client"),
    "topic, ack:auto": (b"/topic/", b"auto"),
}


def throughput(t: Target, case: str, seconds: float, max_messages: int) -> FlowResult:
    kind, ack = CASES[case]
    dest = t.fresh(kind.decode())
    sub = stomp_connect(t.port)
    pub = stomp_connect(t.port)
    try:
        subscribe(sub, dest, ack)
        readers = {b"client-individual": IndividualAcker, b"client": CumulativeAcker}
        reader = readers.get(ack, lambda: Reader(MARKER))()
        r = run_flow(
            pub,
            [send_frame(dest) * BATCH],
            [Subscriber(sub, reader)],
            None,
            seconds=seconds,
            max_messages=max_messages,
            cpu=t.cpu,
            cpu_wait=t.cpu_wait,
        )
    finally:
        pub.close()
        sub.close()
    if r.lost:
        print(f"# {t.name} {case}: {r.lost} of {r.expected} not delivered", flush=True)
    return r


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[max(1, math.ceil(q * len(sorted_values))) - 1]


def wait_for(s: socket.socket, marker: bytes, rest: bytes) -> bytes:
    """Read *s* until a whole frame starting with *marker* is in; return what follows."""
    data = rest
    while True:
        i = data.find(marker)
        if i >= 0:
            j = data.find(b"\x00", i)
            if j >= 0:
                return data[j + 1 :]
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed while waiting for {marker!r}")
        data += chunk


def latency(t: Target, messages: int, warmup: int) -> None:
    dest = t.fresh("/queue/")
    sub = stomp_connect(t.port)
    pub = stomp_connect(t.port)
    try:
        subscribe(sub, dest, b"auto")
        sub.settimeout(10)
        pub.settimeout(10)
        plain = send_frame(dest)
        with_receipt = send_frame(dest, b"r")
        deliver: list[float] = []
        receipt: list[float] = []
        rest_sub = rest_pub = b""
        perf = time.perf_counter
        for i in range(warmup + messages):
            t0 = perf()
            pub.sendall(plain)
            rest_sub = wait_for(sub, MARKER, rest_sub)
            t1 = perf()
            pub.sendall(with_receipt)
            rest_pub = wait_for(pub, b"RECEIPT\n", rest_pub)
            t2 = perf()
            rest_sub = wait_for(sub, MARKER, rest_sub)  # the receipted one, off the clock
            if i >= warmup:
                deliver.append(1e6 * (t1 - t0))
                receipt.append(1e6 * (t2 - t1))
    finally:
        pub.close()
        sub.close()
    for name, values in (("SEND -> MESSAGE", deliver), ("SEND -> RECEIPT", receipt)):
        values.sort()
        t.latency.setdefault(name, []).append((percentile(values, 0.5), percentile(values, 0.99)))


# ---------------------------------------------------------------- the run


def start_rabbitmq() -> tuple[StompServer | None, str]:
    why = StompServer.unavailable()
    if why:
        return None, f"unavailable: {why}"
    server = StompServer()
    try:
        t = time.monotonic()
        server.start()
    except (Unavailable, OSError) as e:
        server.stop()
        return None, f"unavailable: {e}"
    return server, f"{server.version()} + rabbitmq_stomp (up in {time.monotonic() - t:.1f} s)"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--rounds", type=int, default=5, help="rounds per broker (default 5)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per throughput case")
    ap.add_argument("--latency", type=int, default=2000, help="messages per latency round")
    ap.add_argument("--no-rabbitmq", action="store_true", help="mbroker only")
    ap.add_argument(
        "--latency-only", action="store_true", help="the latency rounds only (no throughput)"
    )
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    seconds = 0.5 if args.quick else args.seconds
    lat_messages = 200 if args.quick else args.latency
    max_messages = 5_000_000
    print(f"# {machine()}", flush=True)
    print(f"# {load_note()}", flush=True)
    from mbroker import __version__

    broker = StompBroker()
    rabbit: StompServer | None = None
    try:
        targets = [
            Target(
                "mbroker",
                broker.port,
                broker.cpu_seconds,
                broker.cpu_wait_seconds,
                f"mbroker {__version__} (this tree), --memory",
            )
        ]
        rabbit_note = "not run (--quick or --no-rabbitmq)"
        if not (args.quick or args.no_rabbitmq):
            rabbit, rabbit_note = start_rabbitmq()
            if rabbit is not None:
                targets.append(
                    Target(
                        "rabbitmq",
                        rabbit.stomp_port,
                        rabbit.cpu_seconds,
                        rabbit.cpu_wait_seconds,
                        rabbit_note,
                    )
                )
        for t in targets:
            print(f"# {t.name}: {t.version}", flush=True)
        if rabbit is None:
            print(f"# rabbitmq: {rabbit_note}", flush=True)
        cases = [] if args.latency_only else list(CASES)
        for t in targets:  # a warm-up each, not counted
            throughput(t, "queue, ack:auto", min(seconds, 0.5), 200_000)
        for n in range(rounds):
            for t in targets:
                for case in cases:
                    r = throughput(t, case, seconds, max_messages)
                    t.throughput.setdefault(case, []).append(r)
                latency(t, lat_messages, warmup=max(20, lat_messages // 20))
            print(f"# round {n + 1} of {rounds} done", flush=True)
    finally:
        broker.stop()
        if rabbit is not None:
            rabbit.stop()
    report(targets, rounds, seconds, lat_messages)


def report(targets: list[Target], rounds: int, seconds: float, lat_messages: int) -> None:
    nan = float("nan")
    ours = targets[0]
    peer = targets[1] if len(targets) > 1 else None

    def rates(t: Target, case: str) -> list[float]:
        return [r.deliver_rate for r in t.throughput.get(case, [])]

    lat_rows: list[list[object]] = []
    for name in ours.latency:
        for t in targets:
            p50s = [p for p, _ in t.latency[name]]
            p99s = [p for _, p in t.latency[name]]
            ratio = nan
            if peer is not None and t is peer:
                ratio = median(p50s) / median([p for p, _ in ours.latency[name]])
            lat_rows.append([name, t.name, min(p50s), median(p50s), min(p99s), median(p99s), ratio])
    print_table(
        f"{LATENCY_TITLE}, /queue/, {SIZE}-byte bodies, {lat_messages} messages x "
        f"{rounds} rounds (best and median of the rounds' percentiles)",
        ["case", "broker", "p50 best", "p50 median", "p99 best", "p99 median", "peer/mbroker p50"],
        lat_rows,
    )
    rows: list[list[object]] = []
    for case in CASES:
        if case not in ours.throughput:  # (--latency-only)
            continue
        for t in targets:
            results = t.throughput[case]
            rs = rates(t, case)
            cpu_per = [1e6 * r.broker_cpu / r.delivered for r in results if r.delivered]
            waits = [100 * r.broker_wait / r.seconds for r in results if r.seconds]
            ratio = nan
            if peer is not None and t is ours:
                ratio = median(rs) / median(rates(peer, case))
            rows.append(
                [
                    case,
                    t.name,
                    max(rs),
                    median(rs),
                    min(cpu_per) if cpu_per else nan,
                    median(cpu_per),
                    median(waits),
                    sum(r.lost for r in results),
                    ratio,
                ]
            )
    if not rows:
        return
    print_table(
        f"{THROUGHPUT_TITLE}, {SIZE}-byte bodies, {seconds:g} s x {rounds} rounds, "
        "pipelined SENDs (msgs/s: best and median; broker CPU us per message)",
        [
            "case",
            "broker",
            "msgs/s best",
            "msgs/s median",
            "CPU us/msg best",
            "CPU us/msg median",
            "CPU wait %",
            "lost",
            "mbroker/rabbitmq",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
