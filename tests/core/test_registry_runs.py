"""``Broker.publish_many`` (a run of pipelined PUBLISH) does what one ``publish`` per
payload does.

Each case builds the same scene in two brokers, publishes the same payloads one at a
time in the first and as one run in the second, and compares everything a client or
STATS can see: replies, deliveries (per subscription, in order, with their redelivery
counts and reasons), what stays ready in each queue, and every counter.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from twisted.internet import task

from mbroker import errors
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.core.model import QueuedMessage
from mbroker.core.records import Recovered
from mbroker.store.bridge import journal_for
from mbroker.store.executor import SyncExecutor
from mbroker.store.files import CrashFS
from mbroker.store.logstore import LogStore
from mbroker.wire.frames import QueueInfo, QueueOptions
from tests.helpers.world import Client, World

PAYLOADS = [b"m%d" % i for i in range(12)]


class Scene:
    """A world and its clients, built by a case's ``setup``."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.clients: list[Client] = []

    def client(self) -> Client:
        c = self.w.client()
        self.clients.append(c)
        return c


Setup = Callable[[Scene], tuple[str, str]]  # -> (name, key) to publish to


def view(scene: Scene) -> dict[str, object]:
    """Everything observable, with deliveries grouped per subscription."""
    b = scene.w.broker
    machine = ("uptime_s", "memory_rss", "memory_peak_rss")
    seen: dict[str, object] = {"broker": [kv for kv in b.stats() if kv[0] not in machine]}
    for obj in b.list_objects():
        queue = isinstance(obj, QueueInfo)
        seen[obj.name] = (b.stats(obj.name), scene.w.ready(obj.name) if queue else None)
    for i, c in enumerate(scene.clients):
        per_sid: dict[int, list[tuple[bytes, int, str | None]]] = {}
        for sid, _tag, m in c.target.pushed:
            per_sid.setdefault(sid, []).append((m.payload, m.deliveries, m.reason))
        seen[f"client{i}"] = (per_sid, sorted(c.tags), c.target.slows, c.target.cancels)
    return seen


def one_at_a_time(b: Broker, name: str, key: str, ttl: int | None) -> list[object]:
    out: list[object] = []
    for p in PAYLOADS:
        try:
            out.append(b.publish(name, key, p, ttl))
        except errors.BrokerError as e:
            out.append(e)
    return out


def as_a_run(b: Broker, name: str, key: str, ttl: int | None) -> list[object]:
    try:
        reached, refused = b.publish_many(name, key, list(PAYLOADS), ttl)
    except errors.BrokerError as e:
        return [e] * len(PAYLOADS)
    return [refused.get(i, reached) for i in range(len(PAYLOADS))]


def queue_one_auto(s: Scene) -> tuple[str, str]:
    s.w.queue("q")
    s.client().sub("q")
    return "q", ""


def queue_one_manual_prefetch(s: Scene) -> tuple[str, str]:
    s.w.queue("q")
    s.client().sub("q", manual=True, prefetch=3)
    return "q", ""


def queue_competing(s: Scene) -> tuple[str, str]:
    s.w.queue("q")
    a, b = s.client(), s.client()
    a.sub("q")
    b.sub("q", manual=True, prefetch=2)
    a.sub("q")
    return "q", ""


def queue_no_consumer(s: Scene) -> tuple[str, str]:
    s.w.queue("q", max_bytes=20)
    return "q", ""


def drop_head_with_dead_letter(s: Scene) -> tuple[str, str]:
    s.w.queue("dl")
    s.w.queue("q", max_length=3, dead_letter="dl")
    s.client().sub("q", manual=True, prefetch=2)
    s.client().sub("dl")
    return "q", ""


def reject_overflow(s: Scene) -> tuple[str, str]:
    s.w.queue("q", max_length=4, overflow="reject")
    s.client().sub("q", manual=True, prefetch=3)
    return "q", ""


def queue_ttl(s: Scene) -> tuple[str, str]:
    s.w.queue("q", ttl=50)
    s.client().sub("q", manual=True, prefetch=1)
    return "q", ""


def paused_consumer(s: Scene) -> tuple[str, str]:
    s.w.queue("q")
    c = s.client()
    c.sub("q")
    s.w.broker.set_writable(c.session, False)
    return "q", ""


def pull_waiter(s: Scene) -> tuple[str, str]:
    s.w.queue("q")
    c = s.client()
    assert c.pull("q", max=5, wait=1000, on_done=lambda got: None) is None
    s.client().sub("q")
    return "q", ""


def fanout_private_queues(s: Scene) -> tuple[str, str]:
    s.w.exchange("f", "fanout")
    s.w.queue("q")
    s.w.broker.bind("q", "f", "")
    for _ in range(3):
        s.client().sub("f")
    both = s.client()  # one connection with two subscriptions
    both.sub("f")
    both.sub("f", manual=True, prefetch=1)
    return "f", ""


def topic_some_match(s: Scene) -> tuple[str, str]:
    s.w.exchange("t")
    s.client().sub("t", pattern="a.*")
    s.client().sub("t", pattern="b.#")
    s.client().sub("t", pattern="#")
    return "t", "a.x"


def topic_unroutable(s: Scene) -> tuple[str, str]:
    s.w.exchange("t")
    s.client().sub("t", pattern="b.*")
    return "t", "a.x"


def unknown_name(s: Scene) -> tuple[str, str]:
    return "nothing", ""


CASES: dict[str, Setup] = {
    f.__name__: f
    for f in (
        queue_one_auto,
        queue_one_manual_prefetch,
        queue_competing,
        queue_no_consumer,
        drop_head_with_dead_letter,
        reject_overflow,
        queue_ttl,
        paused_consumer,
        pull_waiter,
        fanout_private_queues,
        topic_some_match,
        topic_unroutable,
        unknown_name,
    )
}

SMALL_PRIVATE = Config(private_max_length=5)


@pytest.mark.parametrize("ttl", [None, 30])
@pytest.mark.parametrize("case", CASES)
def test_a_run_is_the_same_as_one_at_a_time(case: str, ttl: int | None) -> None:
    scenes = [Scene(World(SMALL_PRIVATE)), Scene(World(SMALL_PRIVATE))]
    targets = [CASES[case](scene) for scene in scenes]
    assert targets[0] == targets[1]
    name, key = targets[0]
    replies = [
        one_at_a_time(scenes[0].w.broker, name, key, ttl),
        as_a_run(scenes[1].w.broker, name, key, ttl),
    ]
    assert [type(r) for r in replies[0]] == [type(r) for r in replies[1]]
    assert [r for r in replies[0] if not isinstance(r, Exception)] == [
        r for r in replies[1] if not isinstance(r, Exception)
    ]
    assert view(scenes[0]) == view(scenes[1])
    # and they go on alike: time passes (ttl, ack timeouts), a consumer acks
    for scene in scenes:
        scene.w.advance_ms(40)
        for c in scene.clients:
            try:
                c.ack((1, 100))
            except errors.NotFound:  # nothing outstanding on this connection
                pass
    assert view(scenes[0]) == view(scenes[1])


def test_the_fast_paths_are_taken_when_they_can_be() -> None:
    """A run into an empty queue with one ack=auto consumer goes straight through in
    one push_run; with messages already waiting, it is queued and goes out in one
    push_many, after them (what makes runs fast)."""
    scene = Scene(World())
    queue_one_auto(scene)
    target = scene.clients[0].target
    calls: list[tuple[str, int]] = []
    push_many, push_run = target.push_many, target.push_run

    def many(sid: int, tag: int, messages: list[QueuedMessage]) -> None:
        calls.append(("many", len(messages)))
        push_many(sid, tag, messages)

    def run(sid: int, tag: int, route: bytes, payloads: list[bytes]) -> None:
        calls.append(("run", len(payloads)))
        push_run(sid, tag, route, payloads)

    target.push_many = many  # type: ignore[method-assign]
    target.push_run = run  # type: ignore[method-assign]
    b = scene.w.broker
    assert b.publish_many("q", "", list(PAYLOADS)) == (1, {})
    assert calls == [("run", len(PAYLOADS))]
    b.set_writable(scene.clients[0].session, False)
    b.publish_many("q", "", [b"a", b"b"])
    b.set_writable(scene.clients[0].session, True)  # the two waiting go out
    b.set_writable(scene.clients[0].session, False)
    b.publish("q", "", b"c")
    b.set_writable(scene.clients[0].session, True)
    assert calls[1:] == [("many", 2), ("many", 1)]
    assert scene.clients[0].payloads == PAYLOADS + [b"a", b"b", b"c"]
    assert scene.clients[0].tags == list(range(1, len(PAYLOADS) + 4))


def test_durable_targets_are_stored_as_one_publish_each_would_be() -> None:
    """A run into a durable queue is one record for the broker to make, but the
    store writes the very bytes one publish at a time would, and a restart brings
    back the same messages."""
    disks: list[dict[str, bytes]] = []
    recovered: list[Recovered] = []
    for run in (False, True):
        clock, fs = task.Clock(), CrashFS()
        store = LogStore(clock, "/data", fs=fs, executor=SyncExecutor())
        store.open()
        b = Broker(clock, Config(), journal_for(store, clock))
        b.create(None, "d", "queue", QueueOptions(durable=True))
        b.create(None, "f", "fanout", QueueOptions())
        b.create(None, "t", "queue", QueueOptions())
        b.bind("d", "f", "")
        b.bind("t", "f", "")
        if run:
            assert b.publish_many("f", "", list(PAYLOADS)) == (2, {})
        else:
            assert [b.publish("f", "", p) for p in PAYLOADS] == [2] * len(PAYLOADS)
        assert [m.msg_id for m in b.queue("d").ready] == list(range(1, len(PAYLOADS) + 1))
        clock.advance(0)  # the journal's commit
        disks.append({name: fs.read("/data/" + name) for name in fs.listdir("/data")})
        again = LogStore(task.Clock(), "/data", fs=fs.kill9(), executor=SyncExecutor())
        again.open().addCallback(recovered.append)
    assert disks[0] == disks[1]
    assert recovered[0].messages == recovered[1].messages
    assert [m[3] for m in recovered[1].messages["d"]] == PAYLOADS
