"""Dedup windows (contract section 7): what a remembered id costs in memory, and what ids
cost a publisher, on a 2-minute window at full publish rate.

Memory: ``--ids`` ids (default 1,000,000; ``order-`` and 8 digits, as a publisher's
order numbers, or ``--uuid`` for 36-character UUIDs) are remembered by one queue's
:class:`~mbroker.core.dedup.Window` on a fake clock advancing 10 us per id (100,000
publishes a second: all within the 2-minute window), measured with ``tracemalloc``:
the window's own structures (dict, FIFO buckets) per id, the id string itself (which
the message's properties hold anyway while it is queued), and, for a durable object,
the store's copy (:class:`~mbroker.store.state.Declarations`, what the log store keeps
in memory until the window ends).

Throughput: the real ``BrokerFactory`` and ``BrokerProtocol`` in one process (as
``bench_inprocess.py``), runs of 400 pipelined PUBLISH of 128 bytes per read into a
queue with one ack=auto subscriber: without properties; with one header and no id; with
a new id on every PUBLISH (window on: the server's default of 2 minutes and 100,000
ids, so the bound is reached and the oldest are forgotten early, as at full rate; and
window off); and into a durable queue (log store, ``fsync=never``, jobs inline) with
and without ids.  Each case is run ``--repeat`` times and the best is printed.  Usage::

    python benchmarks/bench_dedup.py [--ids 1000000] [--uuid] [--repeat 3]
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_inprocess import connect  # noqa: E402
from rawclient import base_parser, print_table  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from mbroker.config import Config  # noqa: E402
from mbroker.core.broker import Broker  # noqa: E402
from mbroker.core.dedup import Dedup  # noqa: E402
from mbroker.core.model import Queue  # noqa: E402
from mbroker.core.records import IdRemembered  # noqa: E402
from mbroker.server.factory import BrokerFactory  # noqa: E402
from mbroker.server.service import GC_THRESHOLD  # noqa: E402
from mbroker.store.bridge import journal_for  # noqa: E402
from mbroker.store.executor import SyncExecutor  # noqa: E402
from mbroker.store.logstore import LogStore  # noqa: E402
from mbroker.store.state import Declarations  # noqa: E402
from mbroker.wire.frames import QueueOptions  # noqa: E402

WINDOW_MS = 120_000
PAYLOAD = b"x" * 128
PER_READ = 400


def make_ids(n: int, use_uuid: bool) -> list[str]:
    if use_uuid:
        return [str(uuid.uuid4()) for _ in range(n)]
    return [f"order-{i:08d}" for i in range(n)]


def memory(ids: list[str]) -> list[list[object]]:
    """Bytes per id: the core's window, the id string, the store's copy."""
    n = len(ids)
    clock = Clock()
    clock.advance(1.7e9)  # (wall-clock-like times: floats, not small ints)
    dedup = Dedup(clock, Config(dedup_window=WINDOW_MS, dedup_max_ids=n + 1), None)
    q = Queue("q", QueueOptions())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for msg_id in ids:
        w, _first = dedup.check(q, msg_id)
        dedup.remember(w, msg_id, 1)
        clock.advance(1e-5)
    window = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert dedup.figures(q) == (n, 0, 0)
    # the same again, untraced, for the time (then every check finds its id: duplicates)
    clock = Clock()
    clock.advance(1.7e9)
    dedup = Dedup(clock, Config(dedup_window=WINDOW_MS, dedup_max_ids=n + 1), None)
    t0 = time.perf_counter()
    for msg_id in ids:
        w, _first = dedup.check(q, msg_id)
        dedup.remember(w, msg_id, 1)
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    for msg_id in ids:
        dedup.check(q, msg_id)
    duplicate = time.perf_counter() - t0
    strings = sum(sys.getsizeof(i) for i in ids)

    decls = Declarations()
    decls.declare_queue("q", QueueOptions(durable=True), 1)
    now = 1.7e9
    records = [IdRemembered("q", i, now, now + WINDOW_MS / 1000, 1) for i in ids]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for r in records:
        decls.remember_id(r)
    store = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return [
        ["bytes: core window (dict + FIFO buckets)", window / n, window / 2**20],
        [f"bytes: the id string (len {len(ids[0])})", strings / n, strings / 2**20],
        ["bytes: store's copy (durable objects)", store / n, store / 2**20],
        ["us: a new id, check + remember", 1e6 * elapsed / n, float("nan")],
        ["us: a duplicate, check", 1e6 * duplicate / n, float("nan")],
    ]


Case = Callable[[], tuple[Callable[[], None], int]]


def case(option: bytes, window_ms: int, durable: bool = False, reads: int = 500) -> Case:
    """Runs of PUBLISH with ``option`` (``%d``: a new number each) into queue b."""

    def make() -> tuple[Callable[[], None], int]:
        clock = Clock()
        clock.advance(1.7e9)
        config = Config(dedup_window=window_ms)
        journal = None
        if durable:
            directory = tempfile.mkdtemp(prefix="mbroker-dedup-", dir="/var/tmp")
            store = LogStore(clock, directory, fsync="never", executor=SyncExecutor())
            recovered: list[object] = []
            store.open().addCallback(recovered.append)
            journal = journal_for(store, clock)
        broker = Broker(clock, config, journal)
        if durable:
            broker.restore(recovered[0])  # type: ignore[arg-type]
        factory = BrokerFactory(broker, config, clock)
        pub = connect(factory)
        pub.dataReceived(b"CREATE b queue%s\r\n" % (b" durable" if durable else b""))
        connect(factory).dataReceived(b"SUBSCRIBE b\r\n")
        clock.advance(0)
        head = b"PUBLISH b " + option + b" 128\r\n" if option else b"PUBLISH b 128\r\n"
        numbered = b"%d" in head
        chunks = []
        for r in range(reads):
            if numbered:
                frames = [head % (r * PER_READ + i) + PAYLOAD + b"\r\n" for i in range(PER_READ)]
                chunks.append(b"".join(frames))
            else:
                chunks.append((head + PAYLOAD + b"\r\n") * PER_READ)

        def run() -> None:
            for chunk in chunks:
                pub.dataReceived(chunk)
                clock.advance(1e-3)  # (a reactor turn: the journal commits; time passes)

        return run, PER_READ * reads

    return make


CASES: dict[str, tuple[str, Case]] = {
    "plain": ("no properties", case(b"", WINDOW_MS)),
    "header": ("h.k=v, no id", case(b"h.k=v", WINDOW_MS)),
    "id": ("id=order-N, window 2 min", case(b"id=order-%d", WINDOW_MS)),
    "id-off": ("id=order-N, window off", case(b"id=order-%d", 0)),
    "durable": ("durable, no properties", case(b"", WINDOW_MS, durable=True)),
    "durable-id": ("durable, id=order-N, 2 min", case(b"id=order-%d", WINDOW_MS, durable=True)),
}


def best(make: Case, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        run, messages = make()
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) / messages)
    return min(times)


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--ids", type=int, default=1_000_000)
    ap.add_argument("--uuid", action="store_true", help="ids are UUIDs (36 characters)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = 20_000 if args.quick else args.ids
    repeat = 1 if args.quick else args.repeat
    print_table(
        f"dedup memory per remembered id, {n:,} ids in one 2-minute window",
        ["what", "per id", "MiB"],
        memory(make_ids(n, args.uuid)),
    )
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    rows = []
    for name, (title, make) in CASES.items():
        if args.quick and name.startswith("durable"):
            continue
        per = best(make, repeat)
        rows.append([name, title, 1e6 * per, 1 / per])
    print_table(
        f"publish throughput with ids, in-process, runs of {PER_READ}, best of {repeat}",
        ["case", "what", "us/msg", "msgs/s"],
        rows,
    )


if __name__ == "__main__":
    main()
