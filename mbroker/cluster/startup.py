"""Starting and stopping a cluster node: connect to Redis Cluster, build the
:class:`~mbroker.cluster.node.ClusterBroker` and its loops (namespace sync, feeder,
watch, pub/sub, delay mover), and on stop hand back what the node holds.

:mod:`mbroker.server.service` builds a :class:`ClusterNode` only with ``--cluster``
(importing this module imports ``redis``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import Logger

from mbroker.cluster import keys
from mbroker.cluster.delays import Mover
from mbroker.cluster.expiry import Sweeper, sweep_plan
from mbroker.cluster.feeder import Feeder
from mbroker.cluster.lifetime import Lifetime
from mbroker.cluster.limits import ClusterJournal, counts_bytes, limit_plan
from mbroker.cluster.link import RedisLink, parse_nodes
from mbroker.cluster.node import ClusterBroker, shared
from mbroker.cluster.nssync import NamespaceSync
from mbroker.cluster.pubsub import PubSubThread
from mbroker.cluster.watch import Watch
from mbroker.cluster.writer import ClusterWriter
from mbroker.config import ClusterConfig, Config

_log = Logger()


class ClusterNode:
    """Builds a :class:`ClusterBroker` on Redis Cluster and runs its loops."""

    def __init__(self, reactor: IReactorCore, config: Config, cluster: ClusterConfig) -> None:
        self.reactor = reactor
        self.clock: Any = IReactorTime(reactor)
        self.config = config
        self.settings = cluster
        self.link = RedisLink(reactor, parse_nodes(cluster.url))
        self.broker: ClusterBroker | None = None
        self._parts: list[Any] = []

    def start(self) -> Deferred[ClusterBroker]:
        """Connect, read the namespace, give back what a former life left; then the
        broker is ready to serve."""
        d: Deferred[Any] = self.link.start()
        d.addCallback(lambda _: self._build())
        return d

    def _build(self) -> Deferred[ClusterBroker]:
        clock, name = self.clock, self.settings.node_name
        writer = ClusterWriter(clock, self.link, self.settings.replicas_ack)
        journal = ClusterJournal(clock, writer.write, lambda: writer.available)
        broker = self.broker = ClusterBroker(clock, self.config, journal, writer, name)
        sync = NamespaceSync(clock, self.link, writer, journal, broker, broker.local, shared)
        broker.on_namespace = sync.changed
        broker.feeder = Feeder(clock, self.link, writer, broker, journal, name, shared)
        broker.feeder.counted = lambda q: counts_bytes(broker.find(q))
        broker.watch = Watch(self.link, name, broker.shared_queues)
        broker.pubsub = PubSubThread(self.link, broker.on_message)
        broker.pubsub.listen(keys.NS_CHANNEL)
        broker.pubsub.start()
        broker.mover = Mover(self.link, clock)
        broker.mover.limited = lambda: limit_plan(broker.queue_objects(), shared)
        broker.mover.lost = broker.removed.dropped
        broker.mover.start()
        plan = lambda: sweep_plan(broker.queue_objects(), shared)  # noqa: E731
        sweeper = Sweeper(self.link, clock, plan, broker.removed.expired)
        sweeper.start()
        mine = lambda: [q for q in broker.queue_objects() if shared(q)]  # noqa: E731
        life = broker.lifetime = Lifetime(self.link, clock, name, mine, broker.delete)
        broker.share_lifetimes(shared, life.changed)
        self._parts = [broker.feeder, broker.watch, sync, broker.pubsub, broker.mover, sweeper]
        self._parts.append(life)
        d: Deferred[Any] = sync.start()
        d.addCallback(lambda _: broker.watch.start(clock) if broker.watch else None)
        d.addCallback(lambda _: life.start())
        d.addCallback(lambda _: broker)
        return d

    def stop(self) -> Deferred[None]:
        """Stop the loops, hand the last writes to Redis, mark the node gone."""
        for part in self._parts:
            part.stop()
        broker = self.broker
        if broker is None:
            self.link.stop()
            return Deferred.fromCoroutine(_nothing())
        for q in broker.queue_objects():
            if shared(q) and q.ready:
                broker.writer.give_back(q.name, broker.withdraw(q))
        broker.cluster_journal.commit()
        client, node = self.link.client, self.settings.node_name
        d: Deferred[Any] = broker.writer.flushed()
        d.addCallback(lambda _: self.link.write(lambda: client.delete(keys.node_key(node))))
        d.addErrback(lambda f: _log.warn("stopping the node: {reason}", reason=f.getErrorMessage()))
        d.addBoth(lambda _: self.link.stop())
        return d


async def _nothing() -> None:
    return None
