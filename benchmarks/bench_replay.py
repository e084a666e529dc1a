"""The log store's replay alone, in process: how fast recovery decodes a log, against
how fast Python reads the same files.

Writes a log of ``--messages`` live messages in one durable queue, in 64 MiB segments
as the store does (frames made by the store's codec, 1,000 per write as a pipelining
publisher makes them), with payloads of ``--size`` bytes or, with ``--max-size``, of
pseudo-random sizes between the two.  Then, for each source tree given with ``--src``
(a checkout holding ``mbroker/``; default: this one), in alternating rounds, a fresh
process replays it (``mbroker.store.replay.replay``) and reports the CPU and wall
seconds of the replay.  The files are read whole by Python too, cold (evicted from the
page cache with ``posix_fadvise``) and warm, for the rate the disk and the page cache
allow.  Comparing trees in one sitting is the point: on a shared machine absolute
figures move with the load.

Usage::

    python benchmarks/bench_replay.py [--messages N] [--size B] [--max-size B]
        [--rounds R] [--src DIR ...]
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
import gc, json, sys, time
sys.path.insert(0, sys.argv[2])
import mbroker.store.replay
assert mbroker.store.replay.__file__.startswith(sys.argv[2]), mbroker.store.replay.__file__
from mbroker.store.files import RealFileSystem
from mbroker.store.replay import replay
gc.disable()
cpu, wall = time.process_time(), time.perf_counter()
res = replay(RealFileSystem(), sys.argv[1])
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu": cpu, "wall": wall, "messages": res.recovered.message_count()}))
"""


def write_log(directory: str, messages: int, size: int, max_size: int) -> None:
    sys.path.insert(0, ROOT)
    from mbroker.core.records import MessageStored, QueueDeclared
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
        batch = [
            MessageStored(msg_id + i, ("big",), "", "big", blob[i : i + sizes[i]])
            for i in range(min(1000, messages - msg_id + 1))
        ]
        data, _sizes = encode_batch(batch)
        out.write(data)
        written += len(data)
        msg_id += len(batch)
        if written >= SEGMENT and msg_id <= messages:
            out.close()
            number, written = number + 1, 0
            out = open(os.path.join(directory, segment_name(number)), "wb")
            snapshot = Snapshot(msg_id, (), (("big", options, 1),), ())
            out.write(file_header(number) + encode_snapshot(snapshot))
    out.close()


def evict(directory: str) -> None:
    for entry in os.scandir(directory):
        fd = os.open(entry.path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(directory: str) -> float:
    t = time.perf_counter()
    for entry in os.scandir(directory):
        with open(entry.path, "rb") as f:
            f.read()
    return time.perf_counter() - t


def replay_in(src: str, directory: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, directory, os.path.abspath(src)],
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
    args = ap.parse_args()
    trees = args.src or [ROOT]
    with tempfile.TemporaryDirectory(prefix="mbroker-replay-") as directory:
        write_log(directory, args.messages, args.size, args.max_size)
        disk = sum(e.stat().st_size for e in os.scandir(directory)) / 2**20
        evict(directory)
        cold = disk / read_all(directory)
        warm = disk / min(read_all(directory) for _ in range(3))
        rows: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
        for _ in range(args.rounds):
            for tree in trees:
                rows[tree].append(replay_in(tree, directory))
    sizes = f"{args.size}-{args.max_size}" if args.max_size > args.size else f"{args.size}"
    print(f"replay of {args.messages:,} live messages of {sizes} bytes ({disk:.1f} MiB of log)")
    print(f"Python reads the files at {cold:,.0f} MiB/s cold, {warm:,.0f} MiB/s warm")
    print(f"{'tree':<32} {'CPU s, each round':<28} {'best CPU s':>10} {'MiB/s':>6} {'wall s':>7}")
    print(f"{'-' * 32} {'-' * 28} {'-' * 10} {'-' * 6} {'-' * 7}")
    for tree, runs in rows.items():
        cpus = [r["cpu"] for r in runs]
        each = " ".join(f"{c:.2f}" for c in cpus)
        best = min(cpus)
        wall = min(r["wall"] for r in runs)
        print(f"{tree[-32:]:<32} {each:<28} {best:>10.2f} {disk / best:>6.0f} {wall:>7.2f}")


if __name__ == "__main__":
    main()
