"""The log store's replay alone, in process: how fast recovery decodes a log, against
how fast Python reads the same files.

Writes a log of ``--messages`` live messages in one durable queue, in 64 MiB segments
as the store does (frames made by the store's codec, 1,000 per write as a pipelining
publisher makes them), with payloads of ``--size`` bytes or, with ``--max-size``, of
pseudo-random sizes between the two.  The log is written in the format each tree's
store writes: batch frames (:mod:`mbroker.store.batch`) for a tree that has them, one
frame per message for an older one; ``--frames`` makes every tree replay the log of
one frame per message (the same bytes for all).  Then, for each source tree given
with ``--src`` (a checkout holding ``mbroker/``; default: this one), in alternating
rounds, a fresh process replays its log (``mbroker.store.replay.replay``) and reports
the CPU and wall seconds of the replay, and the user and system parts of the CPU (the
system part is mostly page faults: the memory the recovered messages take).  The files
are read whole by Python too (``--restore``: then ``Broker.restore`` is timed on what
replay recovered, the rest of a restart's work), cold (evicted from the page cache with
``posix_fadvise``) and warm, for the rate the disk and the page cache allow.
Comparing trees in one sitting is the point: on a shared machine absolute figures
move with the load.

Usage::

    python benchmarks/bench_replay.py [--messages N] [--size B] [--max-size B]
        [--rounds R] [--src DIR ...] [--frames] [--restore]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEGMENT = 64 * 2**20

CHILD = """
import gc, json, os, sys, time
sys.path.insert(0, sys.argv[2])
import mbroker.store.replay
assert mbroker.store.replay.__file__.startswith(sys.argv[2]), mbroker.store.replay.__file__
from mbroker.store.files import RealFileSystem
from mbroker.store.replay import replay
gc.disable()
cpu, wall, t0 = time.process_time(), time.perf_counter(), os.times()
res = replay(RealFileSystem(), sys.argv[1])
cpu, wall, t1 = time.process_time() - cpu, time.perf_counter() - wall, os.times()
user, system = t1.user - t0.user, t1.system - t0.system
restore = restore_user = restore_system = 0.0
if sys.argv[3] == "restore":  # then what the broker does with it (Broker.restore)
    from twisted.internet.task import Clock
    from mbroker.core.broker import Broker
    t0 = os.times()
    Broker(Clock()).restore(res.recovered)
    t1 = os.times()
    restore_user, restore_system = t1.user - t0.user, t1.system - t0.system
    restore = restore_user + restore_system
print(json.dumps({"cpu": cpu, "wall": wall, "user": user, "system": system,
                  "messages": res.recovered.message_count(), "restore": restore,
                  "restore_user": restore_user, "restore_system": restore_system}))
"""


def write_log(directory: str, messages: int, size: int, max_size: int, batch: bool) -> None:
    """The log, in batch frames or (``batch`` false) one frame per message."""
    sys.path.insert(0, ROOT)
    from mbroker.core.records import MessageStored, QueueDeclared
    from mbroker.store.batch import encode_records
    from mbroker.store.codec import (
        Snapshot,
        encode_batch,
        encode_record,
        encode_snapshot,
        file_header,
    )
    from mbroker.store.segment import segment_name
    from mbroker.wire.frames import QueueOptions

    options = QueueOptions(durable=True)
    sizes = random.Random(11).choices(range(size, max(size, max_size) + 1), k=1000)
    blob = os.urandom(max(size, max_size) + 1000)
    number, written, msg_id = 1, 0, 1
    out = open(os.path.join(directory, segment_name(number)), "wb")
    out.write(file_header(number) + encode_record(QueueDeclared("big", options)))
    while msg_id <= messages:
        records = [
            MessageStored(msg_id + i, ("big",), "", "big", blob[i : i + sizes[i]])
            for i in range(min(1000, messages - msg_id + 1))
        ]
        data, _sizes = (encode_records if batch else encode_batch)(records)
        out.write(data)
        written += len(data)
        msg_id += len(records)
        if written >= SEGMENT and msg_id <= messages:
            out.close()
            number, written = number + 1, 0
            out = open(os.path.join(directory, segment_name(number)), "wb")
            snapshot = Snapshot(msg_id, (), (("big", options, 1),), ())
            out.write(file_header(number) + encode_snapshot(snapshot))
    out.close()


def evict(directory: str) -> None:
    for entry in os.scandir(directory):
        if not entry.is_file():
            continue
        fd = os.open(entry.path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(directory: str) -> float:
    t = time.perf_counter()
    for entry in os.scandir(directory):
        if not entry.is_file():
            continue
        with open(entry.path, "rb") as f:
            f.read()
    return time.perf_counter() - t


def replay_in(src: str, directory: str, restore: bool) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, directory, os.path.abspath(src), str(restore and "restore")],
        capture_output=True,
        text=True,
        cwd=directory,
    )
    if done.returncode:
        raise RuntimeError(done.stderr)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--max-size", type=int, default=0, help="payload sizes from --size to this")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--src", action="append", help="a source tree to replay with (repeatable)")
    ap.add_argument("--frames", action="store_true", help="one frame per message for all trees")
    ap.add_argument("--restore", action="store_true", help="time Broker.restore after replay")
    args = ap.parse_args()
    trees = args.src or [ROOT]
    batch = {
        tree: not args.frames and os.path.exists(os.path.join(tree, "mbroker/store/batch.py"))
        for tree in trees
    }
    with tempfile.TemporaryDirectory(prefix="mbroker-replay-") as top:
        logs: dict[bool, str] = {}
        for kind in sorted(set(batch.values())):
            logs[kind] = os.path.join(top, "batch" if kind else "frames")
            os.mkdir(logs[kind])
            write_log(logs[kind], args.messages, args.size, args.max_size, kind)
        disk = {k: sum(e.stat().st_size for e in os.scandir(d)) / 2**20 for k, d in logs.items()}
        first = logs[min(logs)]
        evict(first)
        cold = disk[min(logs)] / read_all(first)
        warm = disk[min(logs)] / min(read_all(first) for _ in range(3))
        rows: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
        for _ in range(args.rounds):
            for tree in trees:
                rows[tree].append(replay_in(tree, logs[batch[tree]], args.restore))
    sizes = f"{args.size}-{args.max_size}" if args.max_size > args.size else f"{args.size}"
    logs_text = ", ".join(
        f"{disk[k]:.1f} MiB in {'batch frames' if k else 'one frame per message'}" for k in logs
    )
    print(f"replay of {args.messages:,} live messages of {sizes} bytes ({logs_text})")
    print(f"Python reads the files at {cold:,.0f} MiB/s cold, {warm:,.0f} MiB/s warm")
    print(
        f"{'tree':<28} {'log':<6} {'CPU s, each round':<28} {'best CPU s':>10} {'MiB/s':>6} "
        f"{'msg/s':>10} {'wall s':>7} {'user s':>6} {'sys s':>6}"
    )
    print(
        f"{'-' * 28} {'-' * 6} {'-' * 28} {'-' * 10} {'-' * 6} {'-' * 10} {'-' * 7} ------ ------"
    )
    for tree, runs in rows.items():
        cpus = [r["cpu"] for r in runs]
        each = " ".join(f"{c:.2f}" for c in cpus)
        best = min(cpus)
        wall = min(r["wall"] for r in runs)
        user = min(r["user"] for r in runs)
        system = min(r["system"] for r in runs)
        assert all(r["messages"] == args.messages for r in runs), runs
        mib = disk[batch[tree]]
        kind = "batch" if batch[tree] else "frames"
        print(
            f"{tree[-28:]:<28} {kind:<6} {each:<28} {best:>10.2f} {mib / best:>6.0f} "
            f"{args.messages / best:>10,.0f} {wall:>7.2f} {user:>6.2f} {system:>6.2f}"
        )
    if args.restore:
        print("then Broker.restore of what replay recovered (CPU s: best, its user and system)")
        for tree, runs in rows.items():
            best_run = min(runs, key=lambda r: r["restore"])
            print(
                f"{tree[-28:]:<28} {best_run['restore']:>6.2f} {best_run['restore_user']:>6.2f} "
                f"{best_run['restore_system']:>6.2f}"
            )


if __name__ == "__main__":
    main()
