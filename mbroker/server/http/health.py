"""``/healthz``: whether the broker accepts connections and its store takes writes.

For load balancers and systemd/Kubernetes probes: ``200 {"status": "ok"}`` while
both hold, ``503 {"status": "failed", "reason": ...}`` otherwise (as RabbitMQ's
health checks answer).  It asks only what the service already knows: no probe
connection, no test write.
"""

from __future__ import annotations

from mbroker.server.service import BrokerService


def problem(service: BrokerService) -> str | None:
    """Why the broker is not healthy now, or None when it is."""
    if not service.running:
        return "the broker is not running"
    broker, factory = service.broker, service.factory
    if broker is None or factory is None:
        return "the broker is starting: its store is being recovered"
    if not service.ports:
        return "the broker is not listening"
    limit = broker.config.max_connections
    if broker.connections >= limit:
        return f"the broker is at its connection limit ({limit})"
    journal = broker.journal
    if journal is not None and not journal.available:
        return "the store cannot take writes"
    return None


def health_json(service: BrokerService) -> tuple[int, dict[str, str]]:
    """The status and body of ``/healthz``."""
    reason = problem(service)
    if reason is None:
        return 200, {"status": "ok"}
    return 503, {"status": "failed", "reason": reason}
