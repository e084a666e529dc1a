"""One contract, every store: what the broker may rely on from IStore.

Each test runs against the memory store, the log store on CrashFS (run
synchronously), and the log store on the real disk with its I/O thread.
A "restart" closes the store and opens a new one on the same storage (the
memory store: the same object); the log store is also restarted as after
``kill -9``, without close.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from mbroker import errors
from mbroker.core.records import (
    Bound,
    ExchangeDeclared,
    ExchangeDeleted,
    MessagesRemoved,
    MessagesStored,
    QueueDeclared,
    QueueDeleted,
    Record,
    Recovered,
    Unbound,
)
from mbroker.store.files import CrashFS
from mbroker.store.interfaces import IStore
from mbroker.store.logstore import LogStore
from mbroker.store.memory import MemoryStore
from mbroker.wire.frames import Props, QueueOptions
from tests.helpers.store import DURABLE, declare, ids, log_store, msg


class Harness:
    """A store under test and how to restart it.

    ``kill``: a restart abandons the store (as ``kill -9`` would) and opens a
    new one on ``crashed()``, the storage as the dead process left it;
    otherwise the store is closed first.
    """

    def __init__(
        self,
        make: Callable[[], IStore],
        kill: Callable[[], None] | None = None,
    ) -> None:
        self._make = make
        self._kill = kill
        self.store = make()

    async def open(self) -> Recovered:
        return await self.store.open()

    async def write(self, records: list[Record]) -> None:
        await self.store.write(records)

    async def restart(self) -> Recovered:
        if self._kill is not None:
            self._kill()
        else:
            await self.store.close()
        self.store = self._make()
        return await self.store.open()


def memory_harness(_tmp: Path) -> Harness:
    store = MemoryStore()
    return Harness(lambda: store)


def crashfs_harness(kill: bool) -> Callable[[Path], Harness]:
    def make_harness(_tmp: Path) -> Harness:
        fs = CrashFS()

        def make() -> IStore:
            return log_store(fs, segment_size=512)[0]

        def crash() -> None:
            nonlocal fs
            fs = fs.kill9()

        return Harness(make, crash if kill else None)

    return make_harness


def disk_harness(tmp: Path) -> Harness:
    from twisted.internet import reactor

    return Harness(lambda: LogStore(reactor, str(tmp / "data"), segment_size=4096))


HARNESSES = {
    "memory": memory_harness,
    "log-crashfs": crashfs_harness(kill=False),
    "log-crashfs-kill9": crashfs_harness(kill=True),
    "log-disk": disk_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = HARNESSES[request.param](tmp_path)
    yield harness
    pytest_twisted.blockon(harness.store.close())  # and stop the store's threads


@pytest_twisted.ensureDeferred
async def test_provides_istore(harness: Harness) -> None:
    assert verifyObject(IStore, harness.store)
    await harness.open()
    assert verifyObject(IStore, harness.store)


@pytest_twisted.ensureDeferred
async def test_empty_store(harness: Harness) -> None:
    rec = await harness.open()
    assert (rec.exchanges, rec.queues, rec.bindings, rec.messages) == ({}, {}, [], {})
    assert rec.next_msg_id == 1
    assert rec.warnings == []
    rec = await harness.restart()
    assert rec.queues == {} and rec.next_msg_id == 1


PROPS = Props((("a", b"1"), ("b", "é".encode())), "m-3", 9)
LIFETIME = QueueOptions(durable=True, auto_delete=True, expires=60000)


@pytest_twisted.ensureDeferred
async def test_declarations_round_trip(harness: Harness) -> None:
    await harness.open()
    options = QueueOptions(
        durable=True,
        max_length=10,
        max_bytes=1 << 40,
        overflow="reject",
        ttl=5000,
        dead_letter="dlq",
        max_deliver=3,
        exclusive=False,
    )
    await harness.write(
        [
            ExchangeDeclared("news", "topic"),
            ExchangeDeclared("logs", "fanout"),
            QueueDeclared("b-queue", options),
            QueueDeclared("a-queue", DURABLE),
            QueueDeclared("c-queue", LIFETIME),
            Bound("b-queue", "news", "sport.#"),
            Bound("a-queue", "news", "*.uk"),
            Bound("a-queue", "logs", ""),
        ]
    )
    for rec in (await harness.restart(), await harness.restart()):
        assert rec.exchanges == {"news": "topic", "logs": "fanout"}
        assert list(rec.queues) == ["b-queue", "a-queue", "c-queue"]
        assert rec.queues["b-queue"] == options
        assert rec.queues["c-queue"] == LIFETIME
        assert rec.bindings == [
            ("b-queue", "news", "sport.#"),
            ("a-queue", "news", "*.uk"),
            ("a-queue", "logs", ""),
        ]
        assert rec.messages == {"b-queue": [], "a-queue": [], "c-queue": []}


@pytest_twisted.ensureDeferred
async def test_unbind_and_delete(harness: Harness) -> None:
    await harness.open()
    await harness.write(
        [
            ExchangeDeclared("x", "direct"),
            ExchangeDeclared("y", "direct"),
            *declare("q1", "q2"),
            Bound("q1", "x", "k"),
            Bound("q1", "y", "k"),
            Bound("q2", "x", "k"),
            Bound("q2", "y", "k"),
        ]
    )
    await harness.write(
        [Unbound("q1", "x", "k"), ExchangeDeleted("y"), QueueDeleted("q2"), Unbound("q9", "x", "")]
    )
    rec = await harness.restart()
    assert rec.exchanges == {"x": "direct"}
    assert list(rec.queues) == ["q1"]
    assert rec.bindings == []


@pytest_twisted.ensureDeferred
async def test_redeclare_replaces_options_and_keeps_messages(harness: Harness) -> None:
    await harness.open()
    await harness.write([*declare("q"), msg(1)])
    await harness.write([QueueDeclared("q", QueueOptions(durable=True, ttl=5))])
    rec = await harness.restart()
    assert rec.queues["q"].ttl == 5
    assert ids(rec) == [1]


@pytest_twisted.ensureDeferred
async def test_messages_round_trip(harness: Harness) -> None:
    await harness.open()
    await harness.write(declare("q", "r"))
    await harness.write(
        [
            msg(1, ("q", "r"), b"\x00\r\n binary", expires_at=1.7e9 + 0.25),
            msg(2, ("q",), b"", source="", key=""),
            msg(3, ("r",), b"x" * 70000, props=PROPS, key="k.ü"),
        ]
    )
    rec = await harness.restart()
    assert rec.messages["q"] == [
        (1, "ex", "a.b", b"\x00\r\n binary", 1.7e9 + 0.25, None),
        (2, "", "", b"", None, None),
    ]
    assert rec.messages["r"] == [
        (1, "ex", "a.b", b"\x00\r\n binary", 1.7e9 + 0.25, None),
        (3, "ex", "k.ü", b"x" * 70000, None, PROPS),
    ]
    assert rec.next_msg_id == 4


@pytest_twisted.ensureDeferred
async def test_a_run_of_messages_is_its_messages(harness: Harness) -> None:
    await harness.open()
    await harness.write(declare("q", "r"))
    run = MessagesStored(5, ("q", "r", "nope"), "ex", "k", [b"a", b"", b"c" * 70000])
    await harness.write([msg(4, ("q",)), run, MessagesRemoved("r", (6,))])
    await harness.write([MessagesRemoved("q", (5,)), msg(8, ("r",), b"after")])
    assert harness.store.stats()["messages"] == 5
    rec = await harness.restart()
    assert rec.messages["q"] == [
        (4, "ex", "a.b", b"payload-4", None, None),
        (6, "ex", "k", b"", None, None),
        (7, "ex", "k", b"c" * 70000, None, None),
    ]
    assert rec.messages["r"] == [
        (5, "ex", "k", b"a", None, None),
        (7, "ex", "k", b"c" * 70000, None, None),
        (8, "ex", "a.b", b"after", None, None),
    ]
    assert rec.next_msg_id == 9


@pytest_twisted.ensureDeferred
async def test_removal_per_queue(harness: Harness) -> None:
    await harness.open()
    await harness.write(declare("q", "r"))
    await harness.write([msg(i, ("q", "r")) for i in range(1, 11)])
    await harness.write([MessagesRemoved("q", (1, 2, 3)), MessagesRemoved("r", (2, 9, 99))])
    await harness.write([MessagesRemoved("q", (10,)), MessagesRemoved("nope", (4,))])
    rec = await harness.restart()
    assert ids(rec, "q") == [4, 5, 6, 7, 8, 9]
    assert ids(rec, "r") == [1, 3, 4, 5, 6, 7, 8, 10]
    assert rec.next_msg_id == 11
    assert harness.store.stats()["messages"] == 9  # 2 is in neither queue


@pytest_twisted.ensureDeferred
async def test_next_msg_id_survives_removal_of_everything(harness: Harness) -> None:
    await harness.open()
    await harness.write([*declare("q"), *[msg(i) for i in range(1, 51)]])
    await harness.write([MessagesRemoved("q", tuple(range(1, 51)))])
    rec = await harness.restart()
    assert rec.messages == {"q": []}
    assert rec.next_msg_id == 51
    rec = await harness.restart()
    assert rec.next_msg_id == 51


@pytest_twisted.ensureDeferred
async def test_delete_queue_removes_its_messages(harness: Harness) -> None:
    await harness.open()
    await harness.write([*declare("q", "r"), msg(1, ("q", "r")), msg(2, ("q",))])
    await harness.write([QueueDeleted("q")])
    rec = await harness.restart()
    assert list(rec.queues) == ["r"]
    assert ids(rec, "r") == [1]
    await harness.write([*declare("q"), msg(3, ("q",))])
    rec = await harness.restart()
    assert ids(rec, "q") == [3]  # the old incarnation's messages do not come back


@pytest_twisted.ensureDeferred
async def test_message_for_undeclared_queue_is_ignored(harness: Harness) -> None:
    await harness.open()
    await harness.write([*declare("q"), msg(1, ("q", "ghost")), msg(2, ("ghost",))])
    rec = await harness.restart()
    assert list(rec.messages) == ["q"]
    assert ids(rec) == [1]
    assert rec.next_msg_id == 3


@pytest_twisted.ensureDeferred
async def test_many_batches_in_flight(harness: Harness) -> None:
    await harness.open()
    await harness.write(declare("q"))
    ds = [harness.store.write([msg(i)]) for i in range(1, 201)]
    ds.append(harness.store.write([MessagesRemoved("q", tuple(range(1, 101)))]))
    ds.append(harness.store.write([]))
    for d in ds:
        await d
    rec = await harness.restart()
    assert ids(rec) == list(range(101, 201))


@pytest_twisted.ensureDeferred
async def test_write_when_not_open(harness: Harness) -> None:
    assert not harness.store.available
    with pytest.raises(errors.Unavailable):
        await harness.store.write(declare("q"))
    await harness.open()
    assert harness.store.available
    await harness.write(declare("q"))
    await harness.store.close()
    assert not harness.store.available
    with pytest.raises(errors.Unavailable):
        await harness.store.write(declare("r"))


@pytest_twisted.ensureDeferred
async def test_stats(harness: Harness) -> None:
    await harness.open()
    await harness.write([*declare("q", "r"), msg(1, ("q", "r")), msg(2)])
    stats = harness.store.stats()
    assert stats["messages"] == 2
    assert stats["available"] == 1
    assert stats["writes"] == 1
    assert stats["records"] == 4
    assert all(isinstance(v, int) for v in stats.values())


def test_memory_store_can_play_a_full_disk() -> None:
    store = MemoryStore()
    store.open()
    store.available = False
    failures: list[Failure] = []
    store.write(declare("q")).addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(errors.Unavailable)
    assert store.stats()["available"] == 0
    store.available = True
    store.write(declare("q"))
    assert store.written == [tuple(declare("q"))]


def test_records_do_not_import_twisted() -> None:
    """The domain layer builds records: they must not pull Twisted in."""
    import subprocess
    import sys

    probe = (
        "import sys, mbroker.core.records, mbroker.store.state, mbroker.store.codec;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
