"""Crash the log store at hundreds of generated points; it must keep its promises.

Each example runs rounds of random operations (declarations, publishes to one
or several queues, acks, queue deletions, I/O progress, full disks, failing
fsyncs, timer ticks) against a LogStore on CrashFS with a manual executor, so
that writes are in flight when the crash comes.  Then the power is cut (each
file keeps its fsync'd content plus a random, possibly torn or garbled, part
of the rest) or the process is killed (everything written survives), and a new
store opens on what is left.  After every crash:

- the store opens;
- every message whose store was confirmed, and that no removal or queue
  deletion was ever issued for, is recovered in its queue, payload intact;
- no message whose removal (or whose queue's deletion) was confirmed returns;
- with ``fsync`` "interval" or "never" a power cut may take what was confirmed
  since the last fsync, so there only what the previous recovery found (on disk
  for sure) must survive: compaction must never lose it;
- nothing is recovered that was not written; ``next_msg_id`` is beyond every
  confirmed id;
- when no declaration was in flight, the declarations are exactly the model's.

Small segments make rotation, snapshots, deletions and rewrites happen often.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from mbroker.core.records import (
    Bound,
    ExchangeDeclared,
    MessagesRemoved,
    QueueDeclared,
    QueueDeleted,
    Record,
    Recovered,
    Unbound,
)
from mbroker.store.executor import ManualExecutor
from mbroker.store.files import CrashFS
from mbroker.store.logstore import LogStore
from tests.helpers.store import DATA, DURABLE, msg, result

QUEUES = ("q0", "q1", "q2")


@attrs.define
class Entry:
    """One message in one queue incarnation, as the broker saw it."""

    payload: bytes
    stored: str = "pending"  # pending | ok | failed
    removal: str = "none"  # none | pending | ok | failed
    durable: bool = False  # recovered after the last crash: on disk for sure


@attrs.define
class Model:
    next_id: int
    queues: dict[str, int]  # name -> incarnation
    bindings: set[tuple[str, str, str]]
    entries: dict[tuple[int, str, int], Entry] = attrs.Factory(dict)
    incarnations: int = 0
    decl_pending: int = 0
    #: whether every confirmation was a promise of durability: fsync=always, or
    #: a crash that only killed the process (else only ``durable`` entries count)
    strict: bool = True

    @classmethod
    def from_recovered(cls, rec: Recovered) -> Model:
        model = cls(rec.next_msg_id, {}, set(rec.bindings))
        for name in rec.queues:
            model.queues[name] = model.new_incarnation()
            for m in rec.messages[name]:
                key = (m[0], name, model.queues[name])
                model.entries[key] = Entry(m[3], stored="ok", durable=True)
        return model

    def new_incarnation(self) -> int:
        self.incarnations += 1
        return self.incarnations

    def live(self, queue: str) -> list[tuple[int, str, int]]:
        inc = self.queues[queue]
        return [
            key
            for key, e in self.entries.items()
            if key[1] == queue
            and key[2] == inc
            and e.stored != "failed"
            and e.removal in ("none", "failed")
        ]

    def check(self, rec: Recovered, decls_settled: bool) -> None:
        got: dict[tuple[int, str], bytes] = {
            (m[0], q): m[3] for q, msgs in rec.messages.items() for m in msgs
        }
        by_id: dict[tuple[int, str], list[Entry]] = {}
        for (mid, q, _inc), e in self.entries.items():
            by_id.setdefault((mid, q), []).append(e)
        for (mid, q, inc), e in self.entries.items():
            current = self.queues.get(q) == inc
            if e.stored == "ok" and e.removal == "none" and current and (e.durable or self.strict):
                assert got.get((mid, q)) == e.payload, f"lost confirmed message {mid} in {q}"
            if e.removal == "ok" and self.strict:
                assert (mid, q) not in got, f"removed message {mid} came back in {q}"
        for (mid, q), payload in got.items():
            assert any(e.payload == payload for e in by_id.get((mid, q), [])), (
                f"message {mid} in {q} was never written"
            )
        confirmed = [
            mid
            for (mid, _q, _i), e in self.entries.items()
            if e.stored == "ok" and (e.durable or self.strict)
        ]
        assert rec.next_msg_id > max([0, *confirmed, *(mid for mid, _q in got)])
        if decls_settled and self.strict:
            assert set(rec.queues) == set(self.queues)
            assert set(rec.bindings) == self.bindings
            assert rec.exchanges == {"x": "topic"}


class Driver:
    """Issues operations to the store and keeps the model up to date."""

    def __init__(
        self,
        fs: CrashFS,
        model: Model | None,
        policy: str = "always",
        segment_size: int = 600,
        compact_ratio: float = 0.25,
    ) -> None:
        self.fs = fs
        self.clock = Clock()
        self.executor = ManualExecutor()
        self.store = LogStore(
            self.clock,
            DATA,
            fsync=policy,  # type: ignore[arg-type]
            segment_size=segment_size,
            compact_ratio=compact_ratio,
            copy_chunk=250,
            interval_ms=100,
            fs=fs,
            executor=self.executor,
        )
        d = self.store.open()
        self.executor.run_all()
        rec = result(d)
        if model is not None:
            model.check(rec, decls_settled=model.decl_pending == 0)
        self.model = Model.from_recovered(rec)
        if "x" not in rec.exchanges:
            self.write_decl([ExchangeDeclared("x", "topic")])

    def write(self, records: list[Record], entries: list[Entry], removals: list[Entry]) -> None:
        for e in removals:
            e.removal = "pending"
        d = self.store.write(records)

        def done(outcome: Any) -> None:
            status = "failed" if outcome is not None else "ok"
            for e in entries:
                e.stored = status
            for e in removals:
                e.removal = status

        d.addBoth(done)

    def can_declare(self) -> bool:
        return not self.fs.faults and self.store.stats()["available"] == 1

    def write_decl(self, records: list[Record], removals: Sequence[Entry] = ()) -> None:
        model = self.model
        model.decl_pending += 1
        for e in removals:
            e.removal = "pending"

        def done(outcome: Any) -> None:
            assert outcome is None, outcome  # declarations are only issued when they succeed
            model.decl_pending -= 1
            for e in removals:
                e.removal = "ok"

        self.store.write(records).addBoth(done)

    def do(self, op: tuple[Any, ...]) -> None:
        kind, a, b = op
        model = self.model
        if kind == "declare":
            name = QUEUES[a % 3]
            if self.can_declare():
                if name not in model.queues:
                    model.queues[name] = model.new_incarnation()
                self.write_decl([QueueDeclared(name, DURABLE)])
        elif kind == "delete":
            name = QUEUES[a % 3]
            if name in model.queues and self.can_declare():
                doomed = [model.entries[k] for k in model.live(name)]
                del model.queues[name]
                model.bindings = {bd for bd in model.bindings if bd[0] != name}
                self.write_decl([QueueDeleted(name)], doomed)
        elif kind == "recreate":
            name = QUEUES[a % 2]
            if name in model.queues and self.can_declare():
                doomed = [model.entries[k] for k in model.live(name)]
                model.queues[name] = model.new_incarnation()
                model.bindings = {bd for bd in model.bindings if bd[0] != name}
                self.write_decl([QueueDeleted(name), QueueDeclared(name, DURABLE)], doomed)
        elif kind == "bind":
            name = QUEUES[a % 3]
            if name in model.queues and self.can_declare():
                binding = (name, "x", f"k{b % 2}")
                if binding in model.bindings:
                    model.bindings.discard(binding)
                    self.write_decl([Unbound(*binding)])
                else:
                    model.bindings.add(binding)
                    self.write_decl([Bound(*binding)])
        elif kind == "publish":
            targets = [q for i, q in enumerate(QUEUES) if a & (1 << i) and q in model.queues]
            records: list[Record] = []
            entries: list[Entry] = []
            for _ in range(1 + b % 3):
                mid = model.next_id
                model.next_id += 1
                payload = b"m%d-" % mid + b"p" * (b * 7 % 200)
                records.append(msg(mid, targets, payload))
                for q in targets:
                    e = Entry(payload)
                    model.entries[(mid, q, model.queues[q])] = e
                    entries.append(e)
            self.write(records, entries, [])
        elif kind in ("ack", "consume"):
            name = QUEUES[a % 3]
            if kind == "consume":
                name = QUEUES[a % 2]  # q2 is never consumed: its messages pin old segments
            if name in model.queues:
                live = model.live(name)
                if kind == "consume":  # the oldest ones, as a consumer would
                    picked = live[: 1 + b % 8]
                elif live:
                    picked = sorted({live[(b + i * 7) % len(live)] for i in range(1 + b % 3)})
                if live:
                    self.write(
                        [MessagesRemoved(name, tuple(k[0] for k in picked))],
                        [],
                        [model.entries[k] for k in picked],
                    )
        elif kind == "burst":  # a run of messages that all die: dead segments
            name = QUEUES[a % 2]
            if name in model.queues:
                for _ in range(5 + b % 10):
                    self.do(("publish", 1 << (a % 2), b))
                    self.executor.run_one()
                self.do(("consume", a % 2, 7))
                self.do(("consume", a % 2, 7))
        elif kind == "run":
            for _ in range(a):
                self.executor.run_one()
        elif kind == "settle":
            self.executor.run_all()
        elif kind == "tick":
            self.clock.advance(1.0)
        elif kind == "enospc":
            self.executor.run_all()
            self.fs.inject("write", errno.ENOSPC, times=1 + b % 2)
        elif kind == "eio":
            self.executor.run_all()
            self.fs.inject("fsync", errno.EIO, times=1)
        if kind in ("tick", "settle", "run") and self.fs.faults:
            if all(f.times == 0 for f in self.fs.faults):
                self.fs.clear()


OPS = st.tuples(
    st.sampled_from(
        ["publish"] * 6
        + ["ack"] * 3
        + ["consume"] * 3
        + ["run"] * 5
        + ["burst", "settle", "settle"]
        + ["declare", "declare", "delete", "recreate", "recreate", "bind", "tick", "tick"]
        + ["enospc", "eio"]
    ),
    st.integers(0, 7),
    st.integers(0, 50),
)
ROUND = st.tuples(
    st.lists(OPS, min_size=5, max_size=80),
    st.sampled_from(["always", "always", "always", "interval", "never"]),
    st.booleans(),  # power cut (else kill -9)
    st.integers(0, 2**32 - 1),  # what survives the power cut
    st.sampled_from([300, 600, 2000]),  # segment size
    st.sampled_from([0.0, 0.0, 0.25, 0.6]),  # compaction ratio
)


@pytest.mark.slow
@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rounds=st.lists(ROUND, min_size=1, max_size=3))
def test_crashes_keep_confirmed_state(rounds: list[tuple[Any, ...]]) -> None:
    fs = CrashFS()
    model: Model | None = None
    for ops, policy, power_cut, seed, segment_size, ratio in rounds:
        driver = Driver(fs, model, policy, segment_size, ratio)
        rng = random.Random(seed)
        progress = rng.choice([0.0, 0.5, 0.9])  # how often the I/O thread gets a turn
        for op in [("declare", 0, 0), ("declare", 1, 0), ("declare", 2, 0), *ops]:
            driver.do(op)
            if rng.random() < progress:
                driver.executor.run_one()
        model = driver.model
        model.strict = policy == "always" or not power_cut
        fs = driver.fs.power_cut(rng) if power_cut else driver.fs.kill9()
    Driver(fs, model)  # opens and checks
