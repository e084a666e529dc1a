"""Prometheus metrics: a ``prometheus_client`` collector over a snapshot of the broker.

Nothing is counted for the metrics: a scrape takes a :class:`Snapshot` of the
counters the broker keeps anyway (its STATS, the queues' and exchanges' reports,
the memory watch, the store's counters) on the reactor thread, and
:func:`exposition` formats it, which for thousands of queues is the costly part and
may run in a thread (a snapshot is frozen values).

Names follow Prometheus conventions and what a Grafana user would guess:
``mbroker_queue_messages_ready{queue="jobs"}``, counters end in ``_total``, sizes in
``_bytes``.  The private queues of exchange subscriptions (``mbroker.sub.*``) come
and go with connections and are left out of the per-queue series (their messages are
in the broker's totals).
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from mbroker import __version__
from mbroker.core.snapshots import ExchangeReport, QueueReport


@attrs.frozen
class Snapshot:
    """What one scrape shows, taken at once."""

    #: the broker's STATS, as integers
    stats: dict[str, int]
    queues: list[QueueReport]
    exchanges: list[ExchangeReport]
    memory_high_water: int = 0
    memory_alarm: bool = False
    connections_blocked: int = 0
    #: times a connection was held by the memory alarm, and publishes that waited
    memory_blocked: int = 0
    memory_blocked_publishes: int = 0
    #: bytes read from and written to the native protocol's connections since start
    bytes_in: int = 0
    bytes_out: int = 0
    #: the store's counters (``LogStore.stats``); None when the broker runs in memory
    store: dict[str, int] | None = None
    #: the store's fsync latency histogram (``LogStore.fsync_latency``)
    fsync: tuple[tuple[float, ...], list[int], float] | None = None


#: per-queue gauges: metric name suffix, help, QueueReport attribute
_QUEUE_GAUGES = [
    ("messages_ready", "Messages ready for delivery.", "ready"),
    (
        "messages_delayed",
        "Messages waiting for a time: NACKed with a delay, or published with one.",
        "delayed",
    ),
    ("messages_unacked", "Messages delivered and not yet acknowledged.", "unacked"),
    ("messages_ready_bytes", "Payload bytes of the ready messages.", "ready_bytes"),
]
#: per-queue counters: metric name (without _total), help, QueueReport attribute
_QUEUE_COUNTERS = [
    ("messages_published", "Messages that entered the queue.", "published"),
    ("messages_delivered", "Deliveries to consumers (redeliveries included).", "delivered"),
    ("messages_acked", "Messages acknowledged.", "acked"),
    (
        "messages_redelivered",
        "Messages delivered again after a NACK or a lost consumer.",
        "redelivered",
    ),
    ("messages_expired", "Messages whose ttl ran out.", "expired"),
    ("messages_dropped", "Messages dropped by max-length or max-bytes.", "dropped"),
    (
        "messages_rejected",
        "Publishes refused because the queue was full (overflow=reject).",
        "rejected",
    ),
    ("messages_dead_lettered", "Messages sent to the queue's dead-letter target.", "dead_lettered"),
]
_EXCHANGE_COUNTERS = [
    ("messages_published", "Messages published to the exchange.", "published"),
    ("messages_routed", "Messages that reached at least one queue.", "routed"),
    ("messages_unroutable", "Messages that matched no binding.", "unroutable"),
]
#: broker-wide: metric name, help, STATS field, counter?
_BROKER = [
    ("uptime_seconds", "Seconds since the broker started.", "uptime_s", False),
    ("connections", "Client connections open now.", "connections", False),
    ("connections_opened", "Client connections made since start.", "connections_total", True),
    ("queues", "Queues, private subscription queues included.", "queues", False),
    ("exchanges", "Exchanges.", "exchanges", False),
    ("messages_published", "Messages published.", "published", True),
    ("messages_delivered", "Messages delivered to consumers.", "delivered", True),
    ("messages_acked", "Messages acknowledged.", "acked", True),
    ("memory_rss_bytes", "Resident memory of the broker process.", "memory_rss", False),
    (
        "memory_peak_rss_bytes",
        "Peak resident memory of the broker process.",
        "memory_peak_rss",
        False,
    ),
]
#: the store's counters: metric name, help, LogStore.stats field, counter?
_STORE = [
    ("store_available", "1 while the store takes writes.", "available", False),
    ("store_disk_bytes", "Bytes of the store's segment files on disk.", "disk_bytes", False),
    ("store_live_bytes", "Bytes of those that still hold live records.", "live_bytes", False),
    ("store_segments", "Segment files.", "segments", False),
    ("store_messages", "Messages held by the store.", "messages", False),
    ("store_writes", "Writes handed to the store.", "writes", True),
    ("store_written_bytes", "Bytes appended to the log.", "bytes_written", True),
    ("store_fsyncs", "fsync calls.", "fsyncs", True),
    ("store_failed_writes", "Writes that failed.", "failed_writes", True),
    ("store_compactions", "Segment compactions done.", "compactions", True),
]


class BrokerCollector(Collector):
    """The metric families of one :class:`Snapshot`."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # (no describe-time collection: registries built per scrape)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        info = GaugeMetricFamily("mbroker_build_info", "The broker's version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        for name, doc, field, counter in _BROKER:
            yield _one(name, doc, snap.stats.get(field, 0), counter)
        yield _one(
            "memory_high_water_bytes",
            "Memory over which publishers are held (0: no mark).",
            snap.memory_high_water,
            False,
        )
        yield _one(
            "memory_alarm", "1 while memory is over the high-water mark.", snap.memory_alarm, False
        )
        yield _one(
            "connections_blocked",
            "Publishing connections held by the memory alarm.",
            snap.connections_blocked,
            False,
        )
        yield _one(
            "memory_blocked",
            "Times a publishing connection was held by the memory alarm.",
            snap.memory_blocked,
            True,
        )
        yield _one(
            "memory_blocked_publishes",
            "Publishes held back by the memory alarm until memory fell.",
            snap.memory_blocked_publishes,
            True,
        )
        yield _one(
            "connection_incoming_bytes",
            "Bytes read from clients (native protocol), closed connections included.",
            snap.bytes_in,
            True,
        )
        yield _one(
            "connection_outgoing_bytes",
            "Bytes written to clients (native protocol), closed connections included.",
            snap.bytes_out,
            True,
        )
        if snap.store is not None:
            for name, doc, field, counter in _STORE:
                yield _one(name, doc, snap.store.get(field, 0), counter)
        if snap.fsync is not None:
            bounds, counts, seconds = snap.fsync
            cumulative, buckets = 0, []
            for bound, n in zip((*map(repr, bounds), "+Inf"), counts):
                cumulative += n
                buckets.append((bound, float(cumulative)))
            yield HistogramMetricFamily(
                "mbroker_store_fsync_seconds",
                "How long the store's fsyncs took.",
                buckets=buckets,
                sum_value=seconds,
            )
        queues = [q for q in snap.queues if not q.private]
        consumers = GaugeMetricFamily(
            "mbroker_queue_consumers", "Subscriptions to the queue.", labels=["queue"]
        )
        for q in queues:
            consumers.add_metric([q.name], len(q.consumers))
        yield consumers
        for suffix, doc, attr in _QUEUE_GAUGES:
            gauge = GaugeMetricFamily("mbroker_queue_" + suffix, doc, labels=["queue"])
            for q in queues:
                gauge.add_metric([q.name], getattr(q, attr))
            yield gauge
        for suffix, doc, attr in _QUEUE_COUNTERS:
            family = CounterMetricFamily("mbroker_queue_" + suffix, doc, labels=["queue"])
            for q in queues:
                family.add_metric([q.name], getattr(q, attr))
            yield family
        bindings = GaugeMetricFamily(
            "mbroker_exchange_bindings", "Bindings of the exchange.", labels=["exchange", "type"]
        )
        for e in snap.exchanges:
            bindings.add_metric([e.name, e.kind], e.bindings)
        yield bindings
        for suffix, doc, attr in _EXCHANGE_COUNTERS:
            family = CounterMetricFamily(
                "mbroker_exchange_" + suffix, doc, labels=["exchange", "type"]
            )
            for e in snap.exchanges:
                family.add_metric([e.name, e.kind], getattr(e, attr))
            yield family


def _one(name: str, doc: str, value: float, counter: bool) -> Metric:
    if counter:
        return CounterMetricFamily("mbroker_" + name, doc, value=value)
    return GaugeMetricFamily("mbroker_" + name, doc, value=value)


_PROCESS = ProcessCollector(registry=None)


def exposition(snapshot: Snapshot, accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and content type: Prometheus text, or OpenMetrics when the
    ``Accept`` header asks for it.  The process's own metrics (``process_*``: CPU,
    memory, open files) come with the broker's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(snapshot))
    registry.register(_PROCESS)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
