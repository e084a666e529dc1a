"""Broker core against a reference model: one queue, many sessions, random steps.

The model knows, for every message ever published, where it is: held back by a
``delay=MS`` of its PUBLISH, ready in the queue, held back by a NACK delay, out on one
delivery of one session, acknowledged, or dead-lettered (rejected, or past
``max-deliver``).  Messages have priorities 0-2 (section 7).  After every step the
broker must agree, no message may be lost or duplicated, fresh messages of one priority
leave in the order they became ready, the queue holds higher priorities first and a
requeued message at the head of its own priority, a message's delivery count is the
number of times it was seen, and no ready message may sit in the queue while a
consumer has room for it.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mbroker import errors
from mbroker.core.broker import Pulled
from mbroker.core.model import QueuedMessage
from mbroker.wire.frames import Props
from tests.helpers.world import Client, World

MAX_DELIVER = 3
#: clock steps and timeouts are multiples of 1/8 s: exact in floating point
STEP = 0.125
TIMEOUTS = st.sampled_from([None, 250, 500])
PICK = st.integers(min_value=0, max_value=1000)


class MClient:
    """A session as the model sees it."""

    def __init__(self, client: Client) -> None:
        self.c = client
        #: sid -> (manual, prefetch, ack-timeout ms)
        self.subs: dict[int, tuple[bool, int, int | None]] = {}
        #: tag -> (message id, sid or 0 for a PULL, ack-timeout ms)
        self.out: dict[int, tuple[int, int, int | None]] = {}
        #: tag -> clock time its ack-timeout runs out
        self.deadline: dict[int, float] = {}
        self.seen_tags: set[int] = set()
        self.writable = True
        #: deliveries handed to a waiting PULL, not yet looked at
        self.pulled: list[tuple[Pulled, bool, int | None]] = []
        self.waiting = 0


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = World()
        self.w.queue("dl")
        self.w.queue("q", dead_letter="dl", max_deliver=MAX_DELIVER)
        self.open: list[MClient] = []
        self.closed: list[MClient] = []
        self.published = 0
        self.ready: set[int] = set()
        self.delayed: dict[int, float] = {}
        self.nack_seq: dict[int, int] = {}
        self.acked: set[int] = set()
        self.dead: set[int] = set()
        self.count: dict[int, int] = {}
        #: messages delivered at least once: always the oldest ones of their
        #: priority (FIFO within one)
        self.fresh: set[int] = set()
        #: each message's priority, and per priority the messages in the order they
        #: became ready the first time (published, or released by their delay)
        self.priority: dict[int, int] = {}
        self.arrivals: dict[int, list[int]] = {0: [], 1: [], 2: []}
        #: published with a delay and not yet due: id -> (due time, timer order)
        self.scheduled: dict[int, tuple[float, int]] = {}
        #: the order entries went into the broker's one timer structure
        self.timer_seq = 0

    # ----------------------------------------------------------- bookkeeping

    @property
    def now(self) -> float:
        return self.w.clock.seconds()

    def back(self, mid: int) -> None:
        """A delivery of ``mid`` ended without an ack: requeued or dead-lettered."""
        if self.count[mid] >= MAX_DELIVER:
            self.dead.add(mid)
        else:
            self.ready.add(mid)

    def end(self, mc: MClient, tag: int) -> int:
        mid, _, _ = mc.out.pop(tag)
        mc.deadline.pop(tag, None)
        return mid

    def delivered(
        self, mc: MClient, sid: int, tag: int, m: QueuedMessage, manual: bool, timeout: int | None
    ) -> None:
        mid = int(m.payload)
        assert mid in self.ready, f"message {mid} delivered but not ready in the model"
        assert tag not in mc.seen_tags and tag > 0
        mc.seen_tags.add(tag)
        self.ready.remove(mid)
        self.count[mid] += 1
        assert m.deliveries == self.count[mid]
        if self.count[mid] == 1:
            self.fresh.add(mid)
        assert (m.source, m.key, m.reason) == ("q", "", None)
        assert (m.props.priority if m.props else 0) == self.priority[mid]
        if manual:
            mc.out[tag] = (mid, sid, timeout)
            if timeout is not None:
                mc.deadline[tag] = self.now + timeout / 1000.0
        else:
            self.acked.add(mid)

    def settle(self) -> None:
        """Account for everything the broker pushed (or handed to a waiting PULL)."""
        for mc in self.closed:
            assert mc.c.target.pushed == [], "a closed session got a delivery"
        for mc in self.open:
            for sid, tag, m in mc.c.target.take():
                manual, _, timeout = mc.subs[sid]
                self.delivered(mc, sid, tag, m, manual, timeout)
            pulled, mc.pulled = mc.pulled, []
            for out, manual, timeout in pulled:
                for tag, m in out:
                    self.delivered(mc, 0, tag, m, manual, timeout)
        # Deliveries of one step may come in any order here (pushes, waiting PULLs),
        # but fresh messages leave the queue in FIFO order within their priority:
        # those ever delivered are always the oldest ones of it.
        for arrived in self.arrivals.values():
            gone = [mid for mid in arrived if mid in self.fresh]
            assert gone == arrived[: len(gone)], "fresh messages leave in FIFO order"

    def pick(self, i: int) -> MClient:
        return self.open[i % len(self.open)]

    # ------------------------------------------------------------------ rules

    @rule(n=st.integers(min_value=1, max_value=4))
    def publish(self, n: int) -> None:
        for _ in range(n):
            mid = self.published
            self.published += 1
            self.count[mid] = 0
            self.priority[mid] = 0
            self.ready.add(mid)
            self.arrivals[0].append(mid)
            assert self.w.broker.publish("q", "", b"%d" % mid) == 1
        self.settle()

    @rule(
        priority=st.integers(min_value=0, max_value=2),
        delay=st.sampled_from([None, 0, 125, 250, 500]),
    )
    def publish_props(self, priority: int, delay: int | None) -> None:
        mid = self.published
        self.published += 1
        self.count[mid] = 0
        self.priority[mid] = priority
        if delay:
            self.scheduled[mid] = (self.now + delay / 1000.0, self.timer_seq)
            self.timer_seq += 1
        else:
            self.ready.add(mid)
            self.arrivals[priority].append(mid)
        props = Props(priority=priority, delay=delay)
        assert self.w.broker.publish_props("q", "", b"%d" % mid, None, props) == (1, False)
        self.settle()

    @precondition(lambda self: len(self.open) < 4)
    @rule()
    def open_session(self) -> None:
        self.open.append(MClient(self.w.client()))

    @precondition(lambda self: self.open)
    @rule(
        i=PICK,
        manual=st.booleans(),
        prefetch=st.integers(min_value=1, max_value=3),
        timeout=TIMEOUTS,
    )
    def subscribe(self, i: int, manual: bool, prefetch: int, timeout: int | None) -> None:
        mc = self.pick(i)
        if manual:
            c = mc.c.sub("q", manual=True, prefetch=prefetch, ack_timeout=timeout)
        else:
            c = mc.c.sub("q")
        mc.subs[c.sid] = (manual, prefetch, timeout)
        self.settle()

    @precondition(lambda self: any(mc.subs for mc in self.open))
    @rule(i=PICK, j=PICK)
    def unsubscribe(self, i: int, j: int) -> None:
        mcs = [mc for mc in self.open if mc.subs]
        mc = mcs[i % len(mcs)]
        sids = sorted(mc.subs)
        sid = sids[j % len(sids)]
        del mc.subs[sid]
        mine = [t for t, (_, s, _) in mc.out.items() if s == sid]
        for t in mine:
            self.back(self.end(mc, t))
        self.w.broker.unsubscribe(mc.c.session, sid)
        self.settle()

    @precondition(lambda self: any(mc.out for mc in self.open))
    @rule(i=PICK, j=PICK)
    def ack(self, i: int, j: int) -> None:
        mcs = [mc for mc in self.open if mc.out]
        mc = mcs[i % len(mcs)]
        tag = sorted(mc.out)[j % len(mc.out)]
        self.acked.add(self.end(mc, tag))
        assert mc.c.ack(tag) == 1
        self.settle()

    @precondition(lambda self: self.open)
    @rule(i=PICK)
    def ack_everything(self, i: int) -> None:
        mc = self.pick(i)
        n = len(mc.out)
        for tag in list(mc.out):
            self.acked.add(self.end(mc, tag))
        if n:
            assert mc.c.ack((1, 10**9)) == n
        else:
            try:
                mc.c.ack((1, 10**9))
            except errors.NotFound as e:
                assert e.text == f"1-{10**9}"
            else:
                raise AssertionError("a range covering no tag must be NOT_FOUND")
        self.settle()

    @precondition(lambda self: self.open)
    @rule(i=PICK, extra=st.integers(min_value=1, max_value=3))
    def ack_a_stale_tag(self, i: int, extra: int) -> None:
        mc = self.pick(i)
        stale = sorted(mc.seen_tags - set(mc.out))
        tag = (
            stale[extra % len(stale)]
            if stale and extra < 3
            else max(mc.seen_tags, default=0) + extra
        )
        try:
            mc.c.ack(tag)
        except errors.NotFound as e:
            assert e.text == str(tag)
        else:
            raise AssertionError(f"tag {tag} is not outstanding")
        self.settle()

    @precondition(lambda self: any(mc.out for mc in self.open))
    @rule(
        i=PICK,
        j=PICK,
        how=st.sampled_from(["requeue", "reject", "delay"]),
        k=st.integers(min_value=1, max_value=3),
    )
    def nack(self, i: int, j: int, how: str, k: int) -> None:
        mcs = [mc for mc in self.open if mc.out]
        mc = mcs[i % len(mcs)]
        tags = sorted(mc.out)
        lo = j % len(tags)
        chosen = tags[lo : lo + k]
        for tag in chosen:
            mid = self.end(mc, tag)
            if how == "requeue":
                self.back(mid)
            elif how == "reject":
                self.dead.add(mid)
            else:
                self.delayed[mid] = self.now + 0.25
                self.timer_seq += 1
                self.nack_seq[mid] = self.timer_seq
        rng = ((chosen[0], chosen[-1]),)
        if how == "requeue":
            n = self.w.broker.nack(mc.c.session, rng)
        elif how == "reject":
            n = self.w.broker.nack(mc.c.session, rng, requeue=False)
        else:
            n = self.w.broker.nack(mc.c.session, rng, delay=250)
        assert n == len(chosen)
        self.settle()

    @precondition(lambda self: any(mc.deadline for mc in self.open))
    @rule(i=PICK, j=PICK)
    def touch(self, i: int, j: int) -> None:
        mcs = [mc for mc in self.open if mc.deadline]
        mc = mcs[i % len(mcs)]
        tag = sorted(mc.deadline)[j % len(mc.deadline)]
        timeout = mc.out[tag][2]
        assert timeout is not None
        mc.deadline[tag] = self.now + timeout / 1000.0
        assert mc.c.touch(tag) == 1
        self.settle()

    @precondition(lambda self: self.open)
    @rule(
        i=PICK,
        n=st.integers(min_value=1, max_value=3),
        manual=st.booleans(),
        timeout=TIMEOUTS,
        wait=st.booleans(),
    )
    def pull(self, i: int, n: int, manual: bool, timeout: int | None, wait: bool) -> None:
        mc = self.pick(i)

        def done(out: Pulled) -> None:
            mc.waiting -= 1
            mc.pulled.append((out, manual, timeout))

        out = mc.c.pull(
            "q", max=n, manual=manual, ack_timeout=timeout, wait=250 if wait else None, on_done=done
        )
        if out is None:
            assert wait and not self.ready
            mc.waiting += 1
        else:
            assert len(out) == min(n, len(self.ready))
            mc.pulled.append((out, manual, timeout))
        self.settle()

    @precondition(lambda self: self.open)
    @rule(i=PICK)
    def toggle_writable(self, i: int) -> None:
        mc = self.pick(i)
        mc.writable = not mc.writable
        self.w.broker.set_writable(mc.c.session, mc.writable)
        self.settle()

    @precondition(lambda self: self.open)
    @rule(i=PICK)
    def close(self, i: int) -> None:
        mc = self.pick(i)
        for tag in sorted(mc.out):
            self.back(self.end(mc, tag))
        self.open.remove(mc)
        self.closed.append(mc)
        mc.c.close()
        self.settle()

    @rule()
    def tick(self) -> None:
        self.w.clock.advance(STEP)
        now = self.now
        for mc in self.open:
            for tag, at in list(mc.deadline.items()):
                if at <= now:
                    self.back(self.end(mc, tag))
        # the one timer structure fires in (due, order) order
        due = [(at, self.nack_seq[mid], mid, "nack") for mid, at in self.delayed.items()]
        due += [(at, seq, mid, "publish") for mid, (at, seq) in self.scheduled.items()]
        for at, _, mid, what in sorted(due):
            if at > now:
                continue
            if what == "nack":
                del self.delayed[mid]
                self.back(mid)
            else:
                del self.scheduled[mid]
                self.ready.add(mid)
                self.arrivals[self.priority[mid]].append(mid)
        self.settle()

    # ------------------------------------------------------------- invariants

    @invariant()
    def nothing_lost_or_duplicated(self) -> None:
        out = [mid for mc in self.open for mid, _, _ in mc.out.values()]
        places = [
            set(self.ready),
            set(self.delayed),
            set(self.scheduled),
            set(out),
            self.acked,
            self.dead,
        ]
        assert len(out) == len(set(out))
        assert sum(len(p) for p in places) == self.published
        assert set().union(*places) == set(range(self.published))

    @invariant()
    def broker_agrees(self) -> None:
        q = self.w.broker.queue("q")
        ready = [int(m.payload) for m in q.ready]
        assert len(ready) == len(set(ready)) and set(ready) == self.ready
        delayed = [int(m.payload) for m in q.delayed]
        assert sorted(delayed) == sorted(self.delayed)
        assert q.scheduled == len(self.scheduled)
        stats = dict(self.w.broker.stats("q"))
        assert stats["delayed"] == str(len(self.delayed) + len(self.scheduled))
        assert self.w.queue_info("q").messages == len(self.ready) + len(self.delayed)
        assert q.unacked == sum(len(mc.out) for mc in self.open)
        for mc in self.open:
            assert set(mc.c.session.outstanding) == set(mc.out)
        assert sorted(int(m.payload) for m in self.w.broker.queue("dl").ready) == sorted(self.dead)
        for m in self.w.broker.queue("dl").ready:
            assert m.reason in ("rejected", "delivery-limit")

    @invariant()
    def redeliveries_at_the_head_fresh_in_order_behind(self) -> None:
        ids = [int(m.payload) for m in self.w.broker.queue("q").ready]
        prios = [self.priority[i] for i in ids]
        assert prios == sorted(prios, reverse=True), "higher priorities first"
        for p, arrived in self.arrivals.items():
            level = [i for i in ids if self.priority[i] == p]
            counts = [self.count[i] for i in level]
            fresh = [i for i in level if not self.count[i]]
            # requeued ones at the head of their priority, fresh ones behind, in order
            assert not any(c == 0 for c in counts[: len(counts) - len(fresh)])
            order = {mid: n for n, mid in enumerate(arrived)}
            assert fresh == sorted(fresh, key=order.__getitem__)

    @invariant()
    def one_timer_per_thing_that_waits(self) -> None:
        # ack-timeouts of outstanding deliveries, waiting PULLs, and one for the timer
        # structure that holds every NACK delay and delayed publish: every other timer
        # was cancelled when what it guarded went away
        expected = (
            sum(len(mc.deadline) for mc in self.open)
            + (1 if self.delayed or self.scheduled else 0)
            + sum(mc.waiting for mc in self.open)
        )
        assert len(self.w.clock.getDelayedCalls()) == expected

    @invariant()
    def nothing_ready_while_someone_has_room(self) -> None:
        if not self.ready:
            return
        for mc in self.open:
            assert mc.waiting == 0, "a waiting PULL while messages are ready"
            if not mc.writable:
                continue
            for sid, (manual, prefetch, _) in mc.subs.items():
                if not manual:
                    raise AssertionError("an auto-ack consumer left messages ready")
                held = sum(1 for _, s, _ in mc.out.values() if s == sid)
                assert held >= prefetch, "a consumer with room left messages ready"


QueueMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestQueueMachine = pytest.mark.slow(QueueMachine.TestCase)
