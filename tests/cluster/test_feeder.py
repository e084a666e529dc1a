"""The feeder against the real Redis (the session's cluster): a queue's stream that a
Redis failover took away, made again by the next ``XADD``, is read from its first
entry (docs/cluster.rst, "A Redis master failing over")."""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet import task

from mbroker.cluster import keys
from mbroker.cluster.feeder import Feeder
from mbroker.cluster.limits import ClusterJournal
from mbroker.cluster.link import RedisLink
from mbroker.cluster.node import ClusterBroker, shared
from mbroker.cluster.writer import ClusterWriter
from mbroker.config import Config
from mbroker.wire.frames import QueueOptions
from tests.helpers.fakeredis import FakeLink
from tests.helpers.world import Target

pytestmark = [pytest.mark.cluster]


def test_a_stream_made_again_without_its_group_is_read_from_its_first_entry(
    r: Any,
) -> None:
    """A master dies before its replica had the queue's stream: the promoted replica
    has neither the stream nor its group, the publishes that follow make the stream
    again (``XADD``), and the node's read (``NOGROUP``) makes the group at ``0``, so
    they are all delivered (a group made at ``$`` would skip them)."""
    clock = task.Clock()
    link = cast(RedisLink, FakeLink(r))  # (the real r; jobs run at once)
    writer = ClusterWriter(clock, link)
    journal = ClusterJournal(clock, writer.write, lambda: writer.available)
    broker = ClusterBroker(clock, Config(), journal, writer, "n1")
    broker.feeder = Feeder(clock, link, writer, broker, journal, "n1", shared)
    broker.create(None, "fq", "queue", QueueOptions(durable=True))
    clock.advance(0)
    assert r.xinfo_groups(keys.stream("fq"))[0]["name"] == b"mb"
    r.delete(keys.stream("fq"))  # (the failover)
    for i in range(3):
        assert broker.publish("fq", "", b"after-%d" % i) == 1
    clock.advance(0)
    assert r.xlen(keys.stream("fq")) == 3 and not r.xinfo_groups(keys.stream("fq"))
    target = Target()
    consumer = broker.subscribe(broker.open_session(target), "fq", manual=True)
    broker.activate(consumer)  # (a read: NOGROUP, the group made; then the next read)
    for _ in range(3):
        clock.advance(0.01)
    assert target.payloads() == [b"after-0", b"after-1", b"after-2"]
    assert r.xinfo_groups(keys.stream("fq"))[0]["entries-read"] == 3
