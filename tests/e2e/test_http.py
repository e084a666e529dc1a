"""``twistd -n mbroker --http``: the HTTP API, /metrics and /healthz of a real broker.

The broker is started as users start it; requests go over TCP with ``urllib``, and
what they do is checked over the native protocol and across a restart.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.broker import BrokerProcess, start_broker, twistd_command

HTTP = ("--http", "tcp:0:interface=127.0.0.1")


def call(
    broker: BrokerProcess, method: str, path: str, body: Any = None, reason: str = ""
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if reason:
        headers["X-Reason"] = reason
    request = urllib.request.Request(
        f"http://127.0.0.1:{broker.http_port}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    if path == "/metrics":
        return status, raw.decode()
    return status, json.loads(raw) if raw else None


def test_http_api_of_a_real_broker(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, *HTTP)
    try:
        assert broker.http_port and broker.http_port != broker.port
        assert call(broker, "GET", "/healthz") == (200, {"status": "ok"})
        assert call(broker, "PUT", "/api/queues/jobs", {"durable": True})[0] == 201
        with broker.connect() as c:
            assert c.request(b"PUBLISH jobs 5\r\nhello") == ([], b"+OK 1")
            status, q = call(broker, "GET", "/api/queues/jobs")
            assert status == 200 and q["messages_ready"] == 1 and q["durable"] is True
            [conn] = call(broker, "GET", "/api/connections")[1]
            assert conn["peer"].startswith("127.0.0.1:")
            assert call(broker, "GET", f"/api/connections/{conn['id']}") == (200, conn)
            closed = call(broker, "DELETE", f"/api/connections/{conn['id']}", None, "maintenance")
            assert closed == (200, {"closed": conn["id"]})
            assert c.readline() == b"-ERR LIMIT maintenance"
            assert c.expect_closed()
        assert call(broker, "GET", "/api/connections") == (200, [])
        status, text = call(broker, "GET", "/metrics")
        assert status == 200 and 'mbroker_queue_messages_ready{queue="jobs"} 1.0' in text
        status, err = call(broker, "DELETE", "/api/queues/nope")
        assert (status, err["error"]) == (404, "NOT_FOUND")
    finally:
        assert broker.stop() == -15, broker.output()
    # the durable queue made over HTTP, and its message, survive a restart
    broker = start_broker(tmp_path, *HTTP)
    try:
        assert call(broker, "GET", "/api/queues/jobs")[1]["messages_ready"] == 1
        with broker.connect() as c:
            assert c.request(b"PULL jobs")[1] == b"+OK 1"
    finally:
        broker.stop()


def test_a_busy_http_port_stops_twistd(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [
            *twistd_command(),
            "--nodaemon",
            "--logfile=-",
            "--pidfile=",
            "mbroker",
            "--memory",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--http",
            f"tcp:{port}:interface=127.0.0.1",
        ]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"mbroker cannot listen for HTTP on tcp:{port}:interface=127.0.0.1" in done.stdout
