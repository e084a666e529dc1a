"""Reports: what LIST, STATS and the monitoring snapshots show of the broker and its objects.

:class:`Reports` reads the namespace and the server's counters (through the small
:class:`ServerCounters` interface, which the broker provides) and never changes them.
"""

from __future__ import annotations

import itertools
import resource
from typing import Protocol

from mbroker.core import snapshots
from mbroker.core.dedup import Dedup
from mbroker.core.model import Clock, Exchange, Queue
from mbroker.core.namespace import Namespace
from mbroker.wire.frames import ExchangeInfo, QueueInfo


class ServerCounters(Protocol):
    """The server-wide figures STATS reports."""

    @property
    def clock(self) -> Clock: ...

    @property
    def started(self) -> float: ...

    @property
    def connections(self) -> int: ...

    @property
    def connections_total(self) -> int: ...

    @property
    def published(self) -> int: ...

    @property
    def delivered(self) -> int: ...

    @property
    def acked(self) -> int: ...


class Reports:
    """LIST and STATS, and the snapshots monitoring reads (:mod:`mbroker.core.snapshots`)."""

    def __init__(
        self, server: ServerCounters, namespace: Namespace, dedup: Dedup | None = None
    ) -> None:
        self._server = server
        self._namespace = namespace
        self._dedup = dedup

    def list_objects(self) -> list[ExchangeInfo | QueueInfo]:
        out: list[ExchangeInfo | QueueInfo] = []
        for obj in self._namespace.objects():
            if isinstance(obj, Queue):
                out.append(
                    QueueInfo(obj.name, obj.messages, obj.unacked, len(obj.consumers), obj.durable)
                )
            else:
                out.append(ExchangeInfo(obj.name, obj.kind, obj.durable, len(obj.matcher)))
        return out

    def stats(self, name: str | None = None) -> list[tuple[str, str]]:
        """STATS: the server's counters, or one object's, as ``(key, value)`` pairs.

        Units are in the names where there is one beyond a count (``uptime_s``;
        ``memory_*`` and ``bytes`` are bytes).  A queue's ``bytes`` counts the same
        messages as its ``messages``: ready ones and those a NACK delayed.  ``delayed``
        counts the messages waiting for a time: those a NACK delayed, and copies
        published with ``delay=MS`` not yet due (which ``messages`` leaves out)."""
        if name is None:
            server = self._server
            rss = current_rss()
            # (the kernel's high-water mark counts pages a little differently from
            # statm: the peak is never reported below the memory now)
            peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss)
            pairs: list[tuple[str, object]] = [
                ("uptime_s", int(server.clock.seconds() - server.started)),
                ("connections", server.connections),
                ("connections_total", server.connections_total),
                ("exchanges", self._namespace.exchanges),
                ("queues", self._namespace.queues),
                ("published", server.published),
                ("delivered", server.delivered),
                ("acked", server.acked),
                ("memory_rss", rss),
                ("memory_peak_rss", peak),
            ]
            if self._dedup is not None:
                ids, forgotten, duplicates = self._dedup.totals()
                pairs += [
                    ("dedup_ids", ids),
                    ("dedup_forgotten", forgotten),
                    ("duplicates", duplicates),
                ]
        else:
            obj = self._namespace.get(name)
            if isinstance(obj, Queue):
                pairs = [
                    ("type", "queue"),
                    ("durable", int(obj.durable)),
                    ("messages", obj.messages),
                    (
                        "bytes",
                        obj.ready_bytes + sum([len(m.payload) for m in obj.delayed]),
                    ),
                    ("delayed", obj.held),
                    ("unacked", obj.unacked),
                    ("consumers", len(obj.consumers)),
                    ("published", obj.published),
                    ("delivered", obj.delivered),
                    ("acked", obj.acked),
                    ("redelivered", obj.redelivered),
                    ("expired", obj.expired),
                    ("dropped", obj.dropped),
                    ("rejected", obj.rejected),
                    ("dead_lettered", obj.dead_lettered),
                ]
            else:
                pairs = [
                    ("type", obj.kind),
                    ("durable", int(obj.durable)),
                    ("bindings", len(obj.matcher)),
                    ("published", obj.published),
                    ("routed", obj.routed),
                    ("unroutable", obj.unroutable),
                ]
            figures = self._dedup.figures(obj) if self._dedup is not None else None
            if figures is not None:  # (an object that was sent ids)
                ids, forgotten, duplicates = figures
                pairs += [
                    ("dedup_ids", ids),
                    ("dedup_forgotten", forgotten),
                    ("duplicates", duplicates),
                ]
        return [(k, str(v)) for k, v in pairs]

    def queue_reports(self, name: str | None = None) -> list[snapshots.QueueReport]:
        """Every queue's options, depth, consumers and counters, or only the queue
        ``name`` (NOT_FOUND, WRONG_KIND): for monitoring (the HTTP API, /metrics)."""
        objs = self._namespace.objects() if name is None else [self._namespace.queue(name)]
        return [snapshots.queue_report(o) for o in objs if isinstance(o, Queue)]

    def queue_totals(self) -> snapshots.QueueTotals:
        """The messages in every queue (ready, delayed, unacknowledged) and their
        consumers, summed: one walk of the queues, which builds nothing per queue (for
        the HTTP API's overview, which caches it: nothing is counted per message)."""
        ready = delayed = unacked = consumers = 0
        for o in self._namespace.objects():
            if type(o) is Queue:
                ready += len(o.ready)
                delayed += o.held
                unacked += o.unacked
                consumers += len(o.consumers)
        return snapshots.QueueTotals(ready, delayed, unacked, consumers)

    def exchange_reports(self, name: str | None = None) -> list[snapshots.ExchangeReport]:
        """Every exchange and its counters, or only the exchange ``name``."""
        objs = self._namespace.objects() if name is None else [self._namespace.exchange(name)]
        return [snapshots.exchange_report(o) for o in objs if isinstance(o, Exchange)]

    def peek(self, name: str, count: int) -> list[snapshots.MessageReport]:
        """The first ``count`` ready messages of the queue ``name``, left where they are
        (nothing is delivered, no counter moves): for inspection (the HTTP API)."""
        q = self._namespace.queue(name)
        return [snapshots.message_report(m) for m in itertools.islice(q.ready, count)]

    def binding_reports(self) -> list[snapshots.BindingReport]:
        """Every binding, exchange by exchange."""
        exchanges = (o for o in self._namespace.objects() if isinstance(o, Exchange))
        return snapshots.binding_reports(exchanges)


def current_rss() -> int:
    """Resident memory now, in bytes (Linux ``/proc``; 0 where it is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0
