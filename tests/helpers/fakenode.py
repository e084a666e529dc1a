"""A cluster node's broker on a fake Redis and a fake clock, for unit tests.

:class:`FakeNode` wires what ``twistd -n mbroker --cluster …`` wires
(:mod:`mbroker.cluster.startup`): a :class:`~mbroker.cluster.writer.ClusterWriter`
and its :class:`~mbroker.cluster.limits.ClusterJournal`, the
:class:`~mbroker.cluster.node.ClusterBroker` and its
:class:`~mbroker.cluster.feeder.Feeder`, over a
:class:`~tests.helpers.fakeredis.FakeLink` whose jobs run at once, with one session
whose deliveries go to a :class:`~tests.helpers.world.Target`.  Each reactor turn is
``clock.advance(0)``: the journal commits, the writer sends its batch, the feeder
reads.
"""

from __future__ import annotations

from typing import TypeVar, cast

from twisted.internet import task

from mbroker.cluster.feeder import Feeder
from mbroker.cluster.limits import ClusterJournal
from mbroker.cluster.link import RedisLink
from mbroker.cluster.node import ClusterBroker, shared
from mbroker.cluster.writer import ClusterWriter
from mbroker.config import Config
from tests.helpers.fakeredis import FakeLink, FakeRedis
from tests.helpers.world import Target

R = TypeVar("R", bound=FakeRedis)


class FakeNode:
    """Node ``n1`` on ``redis`` (a fresh :class:`FakeRedis` by default)."""

    def __init__(self, redis: FakeRedis | None = None) -> None:
        self.clock = task.Clock()
        self.redis = redis if redis is not None else FakeRedis()
        self.link = cast(RedisLink, FakeLink(self.redis))
        self.writer = ClusterWriter(self.clock, self.link)
        self.journal = ClusterJournal(self.clock, self.writer.write, lambda: self.writer.available)
        self.broker = ClusterBroker(self.clock, Config(), self.journal, self.writer, "n1")
        self.broker.feeder = Feeder(
            self.clock, self.link, self.writer, self.broker, self.journal, "n1", shared
        )
        self.target = Target()
        self.session = self.broker.open_session(self.target)

    def use(self, redis: R) -> R:
        """Talk to ``redis`` from now on (a fake that answers some scripts)."""
        self.redis = redis
        self.link.client = redis
        return redis

    def turns(self, n: int = 4) -> None:
        """``n`` reactor turns."""
        for _ in range(n):
            self.clock.advance(0)
