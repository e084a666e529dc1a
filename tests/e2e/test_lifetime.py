"""Queue lifetime (contract section 7) against a real ``twistd -n mbroker``:
``auto-delete`` and ``expires=MS`` over TCP, and a durable expiring queue across a restart."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers.broker import start_broker
from tests.helpers.lineclient import LineClient, ok


def listing(client: LineClient) -> set[bytes]:
    data, status = client.request("LIST")
    assert status.startswith(b"+OK")
    return {line.split()[1] for line in data if isinstance(line, bytes)}


def wait_gone(client: LineClient, name: bytes, deadline: float = 20.0) -> float:
    """Poll LIST until ``name`` is gone; the monotonic time it was seen gone."""
    end = time.monotonic() + deadline
    while name in listing(client):
        assert time.monotonic() < end, f"{name!r} still there"
        time.sleep(0.02)
    return time.monotonic()


def test_auto_delete_goes_with_its_last_subscriber_not_with_pull(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, memory_only=True)
    try:
        with broker.connect() as admin:
            ok(admin, "CREATE jobs queue auto-delete")
            assert ok(admin, "CREATE jobs queue auto-delete") == b"+OK exists"
            assert admin.request("CREATE jobs queue")[1].startswith(b"-ERR EXISTS")
            ok(admin, "PUBLISH jobs :one")
            data, _ = admin.request("PULL jobs")
            assert len(data) == 1
            assert b"jobs" in listing(admin)  # PULL does not count
            with broker.connect() as a, broker.connect() as b:
                ok(a, "SUBSCRIBE jobs")
                ok(b, "SUBSCRIBE jobs")
                assert ok(a, "UNSUBSCRIBE 1") == b"+OK"
                assert b"jobs" in listing(admin)  # b still consumes
            # b's connection closed: its last subscriber went
            wait_gone(admin, b"jobs")
            ok(admin, "CREATE jobs queue")  # the name is free again
    finally:
        broker.stop()


def test_expires_after_idle_and_publish_resets_it_exchange_messages_do_not(
    tmp_path: Path,
) -> None:
    broker = start_broker(tmp_path, memory_only=True)
    try:
        with broker.connect() as c:
            ok(c, "CREATE feed fanout")
            ok(c, "CREATE keep queue expires=3000")
            ok(c, "CREATE idle queue expires=1000")
            ok(c, "BIND idle feed")
            start = time.monotonic()
            # PUBLISH naming "keep" every 300 ms keeps it; "idle" only gets exchange copies
            while time.monotonic() - start < 2.5:
                assert ok(c, "PUBLISH keep :x") == b"+OK 1"
                ok(c, "PUBLISH feed :routed")
                time.sleep(0.3)
            names = listing(c)
            assert b"keep" in names and b"idle" not in names
            wait_gone(c, b"keep")
    finally:
        broker.stop()


def test_a_durable_expiring_queue_idles_again_from_a_restart_and_stays_deleted(
    tmp_path: Path,
) -> None:
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            ok(c, "CREATE d queue durable expires=3000")
            ok(c, "CREATE a queue durable auto-delete")
            ok(c, "PUBLISH d :kept")
    finally:
        broker.stop()
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            started = time.monotonic()
            assert ok(c, "CREATE d queue durable expires=3000") == b"+OK exists"
            assert ok(c, "CREATE a queue durable auto-delete") == b"+OK exists"
            data, _ = c.request("STATS d")
            assert b"STAT messages 1" in data
            gone = wait_gone(c, b"d")
            assert gone - started >= 2.9  # idle from the CREATE just after the start
            with broker.connect() as sub:
                ok(sub, "SUBSCRIBE a")
            wait_gone(c, b"a")
    finally:
        broker.stop()
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            assert listing(c) == set()
    finally:
        broker.stop()
