"""The namespace mirror (mbroker.cluster.nssync) on a fake clock and a fake Redis: what
Redis holds is applied to the local core without being written back, and a read that
raced a change of this node's is not applied."""

from __future__ import annotations

from typing import Any, Callable, cast

from twisted.internet import task
from twisted.internet.defer import Deferred

from mbroker.cluster.limits import ClusterJournal
from mbroker.cluster.link import RedisLink
from mbroker.cluster.node import ClusterBroker, shared
from mbroker.cluster.nssync import NamespaceSync, State
from mbroker.cluster.writer import ClusterWriter
from mbroker.config import Config
from mbroker.core.model import Exchange, Queue
from mbroker.wire.frames import QueueOptions
from tests.helpers.fakeredis import FakeLink, FakeRedis


class HeldReads(FakeLink):
    """Reads wait until the test answers them; writes run at once."""

    def __init__(self, client: FakeRedis) -> None:
        super().__init__(client)
        self.reads: list[Deferred[Any]] = []
        #: with hold_writes, the writes on their way (fire them to answer)
        self.hold_writes = False
        self.writes: list[tuple[Callable[[], Any], Deferred[Any]]] = []

    def read(self, job: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.reads.append(d)
        return d

    def write(self, job: Callable[[], Any]) -> Deferred[Any]:
        if not self.hold_writes:
            return super().write(job)
        d: Deferred[Any] = Deferred()
        self.writes.append((job, d))
        return d

    def answer_write(self) -> None:
        job, d = self.writes.pop(0)
        d.callback(job())


def setup() -> tuple[ClusterBroker, NamespaceSync, HeldReads, task.Clock]:
    clock = task.Clock()
    link = HeldReads(FakeRedis())
    writer = ClusterWriter(clock, cast(RedisLink, link))
    journal = ClusterJournal(clock, writer.write, lambda: True)
    broker = ClusterBroker(clock, Config(), journal, writer, "n1")
    sync = NamespaceSync(
        clock, cast(RedisLink, link), writer, journal, broker, broker.local, shared
    )
    return broker, sync, link, clock


def state(
    queues: dict[str, QueueOptions],
    exchanges: dict[str, tuple[str, bool]],
    bindings: set[tuple[str, str, str]],
    windows: dict[str, int] | None = None,
) -> State:
    full = {name: (*v, (windows or {}).get(name)) for name, v in exchanges.items()}
    return State(queues, full, frozenset(bindings))


def test_what_redis_holds_is_applied_and_not_written_back() -> None:
    broker, sync, link, clock = setup()
    sync.sync()
    link.client.calls.clear()
    link.reads.pop().callback(
        state(
            {"q": QueueOptions(durable=True)},
            {"x": ("topic", True)},
            {("q", "x", "a.#")},
            {"x": 500},
        )
    )
    clock.advance(0)
    q, x = broker.find("q"), broker.find("x")
    assert isinstance(q, Queue) and q.options.durable
    assert isinstance(x, Exchange) and x.durable and [k for k, _ in x.matcher.bindings()] == ["a.#"]
    assert x.dedup_window == 500
    assert link.client.calls == []  # nothing went back to Redis
    # gone from Redis: gone here
    sync.sync()
    link.reads.pop().callback(state({}, {}, set()))
    assert broker.find("q") is None and broker.find("x") is None


def test_a_read_that_raced_a_change_of_this_node_is_not_applied() -> None:
    broker, sync, link, clock = setup()
    sync.sync()  # (a read on its way …)
    assert broker.create(None, "mine", "queue", QueueOptions())  # (… when a CREATE comes)
    link.reads.pop().callback(state({}, {}, set()))  # read before Redis had "mine"
    assert broker.find("mine") is not None
    clock.advance(0.1)  # it reads again, and that read is applied
    link.reads.pop().callback(state({"mine": QueueOptions()}, {}, set()))
    assert broker.find("mine") is not None


def test_a_read_made_while_a_change_waited_for_a_busy_writer_is_not_applied() -> None:
    broker, sync, link, clock = setup()
    link.hold_writes = True
    broker.create(None, "a", "queue", QueueOptions())
    clock.advance(0)  # its batch is on its way
    broker.create(None, "mine", "queue", QueueOptions())
    clock.advance(0)  # the journal commits; the writer is busy: "mine" waits
    link.answer_write()  # the first batch is answered
    sync.sync()  # a read, before "mine" was sent
    link.reads.pop().callback(state({"a": QueueOptions()}, {}, set()))
    assert broker.find("mine") is not None


def test_local_queues_are_left_alone() -> None:
    broker, sync, link, clock = setup()
    target_session = broker.open_session(cast(Any, None))
    broker.create(target_session, "excl", "queue", QueueOptions(exclusive=True))
    sync.sync()
    link.reads.pop().callback(state({}, {}, set()))
    assert broker.find("excl") is not None
