"""The broker on the log store when the disk fills up, and when it comes back.

A real :class:`LogStore` on the fault-injecting ``CrashFS`` file layer, run
synchronously, under the real protocol: the contract's ``-ERR UNAVAILABLE`` rule end
to end, without needing a small file system.
"""

from __future__ import annotations

import errno

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.core.records import Recovered
from mbroker.server.factory import BrokerFactory
from mbroker.server.protocol import BrokerProtocol
from mbroker.store.bridge import journal_for
from mbroker.store.executor import SyncExecutor
from mbroker.store.files import CrashFS
from mbroker.store.logstore import LogStore
from tests.helpers.conn import broker_protocol


def start(fs: CrashFS, clock: Clock) -> tuple[LogStore, Broker, BrokerFactory]:
    store = LogStore(clock, "/data", fs=fs, executor=SyncExecutor(), retry_interval=1.0)
    recovered: list[Recovered] = []
    store.open().addCallback(recovered.append)
    broker = Broker(clock, Config(), journal_for(store, clock))
    broker.restore(recovered[0])
    return store, broker, BrokerFactory(broker, Config(), clock)


def connect(factory: BrokerFactory) -> tuple[BrokerProtocol, StringTransport]:
    p = broker_protocol(factory, None)
    t = StringTransport()
    p.makeConnection(t)
    t.clear()
    return p, t


def say(p: BrokerProtocol, t: StringTransport, clock: Clock, data: bytes) -> list[bytes]:
    p.dataReceived(data)
    clock.advance(0)  # the journal commits at the end of the turn
    out: list[bytes] = t.value().split(b"\r\n")[:-1]
    t.clear()
    return out


def test_disk_full_refuses_durable_publishes_keeps_the_rest_and_recovers() -> None:
    fs, clock = CrashFS(), Clock()
    store, broker, factory = start(fs, clock)
    p, t = connect(factory)
    assert say(p, t, clock, b"CREATE jobs queue durable\r\nCREATE tmp queue\r\n") == [
        b"+OK created",
        b"+OK created",
    ]
    assert say(p, t, clock, b"PUBLISH jobs :kept\r\n") == [b"+OK 1"]

    fs.inject("write", errno.ENOSPC)  # the disk is full from now on
    out = say(p, t, clock, b"PUBLISH jobs :lost\r\nPUBLISH tmp :transient\r\nPING\r\n")
    assert out[0].startswith(b"-ERR UNAVAILABLE")
    assert out[1:] == [b"+OK 1", b"+PONG"]
    # while the store is down, durable publishes are refused before anything is queued
    out = say(p, t, clock, b"PUBLISH jobs :refused\r\nPULL tmp\r\n")
    assert out[0] == b"-ERR UNAVAILABLE the store cannot take writes; nothing was published"
    assert out[1:] == [b"MSG 0 1 tmp - 9", b"transient", b"+OK 1"]

    fs.clear()  # space comes back; the store's probe notices within its retry interval
    clock.advance(1.0)
    assert say(p, t, clock, b"PUBLISH jobs :later\r\n") == [b"+OK 1"]

    # after a crash, what was confirmed is there, and nothing else
    clock2 = Clock()
    _, _, factory2 = start(fs.kill9(), clock2)
    p2, t2 = connect(factory2)
    out = say(p2, t2, clock2, b"PULL jobs max=10\r\n")
    assert out[-1] == b"+OK 2"
    assert out[1:-1:2] == [b"kept", b"later"]


def test_a_failed_write_batch_answers_every_command_in_it_in_order() -> None:
    """Four pipelined durable PUBLISHes (decoded as one run) and a PING, the write of
    the batch fails (disk full): five status lines, one per command, in order."""
    fs, clock = CrashFS(), Clock()
    _, _, factory = start(fs, clock)
    p, t = connect(factory)
    assert say(p, t, clock, b"CREATE jobs queue durable\r\n") == [b"+OK created"]
    fs.inject("write", errno.ENOSPC)
    out = say(p, t, clock, b"".join(b"PUBLISH jobs 1\r\n%c\r\n" % c for c in b"abcd") + b"PING\r\n")
    assert len(out) == 5, out
    assert all(line.startswith(b"-ERR UNAVAILABLE ") for line in out[:4]), out
    assert out[4] == b"+PONG"
    # a later command is paired with its own reply
    assert say(p, t, clock, b"PING\r\n") == [b"+PONG"]
