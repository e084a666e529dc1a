"""User tags over HTTP on a real ``twistd -n mbroker --users FILE --http ...``.

A users file with an untagged user, a ``monitoring`` one and an ``administrator``;
requests go over TCP with HTTP Basic auth, the native protocol's connection is a real
client, and a tag is taken away with the real ``mbroker user set --tags`` while the
broker runs.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.auth import cheap_hash
from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.contract import connect

ROOT = Path(__file__).resolve().parents[2]
HTTP = ("--http", "tcp:0:interface=127.0.0.1")
PASSWORDS = {"alice": "s3cret", "mon": "look", "ops": "act", "nobody": "none"}


def call(
    broker: BrokerProcess, user: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": "Basic " + token}
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


def test_monitoring_reads_administrator_acts(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(
        f"alice:{cheap_hash('s3cret')}:alice.*:alice.*:alice.*\n"  # a line from before tags
        f"mon:{cheap_hash('look')}:-:-:-:monitoring\n"
        f"ops:{cheap_hash('act')}:-:-:-:administrator\n"
    )
    broker = start_broker(tmp_path, *HTTP, "--users", str(users), memory_only=True)
    try:
        assert call(broker, "ops", "PUT", "/api/queues/jobs", {})[0] == 201
        assert call(broker, "mon", "PUT", "/api/queues/other", {})[0] == 403
        with connect(broker) as c:
            # the native protocol knows nothing of tags: mon may do nothing there
            assert c.ok("AUTH mon look") == "+OK"
            assert c.err("CREATE mon.q queue").startswith("-ERR FORBIDDEN ")
            assert c.err("PUBLISH jobs 1\r\nx").startswith("-ERR FORBIDDEN ")
        with connect(broker) as c:
            assert c.ok("AUTH alice s3cret") == "+OK"
            # alice (no tag) sees her own connection and her names, nothing else
            status, [mine] = call(broker, "alice", "GET", "/api/connections")
            assert status == 200 and mine["user"] == "alice"
            assert call(broker, "alice", "GET", "/api/queues") == (200, [])
            assert call(broker, "alice", "GET", "/api/queues/jobs")[0] == 403
            # mon sees every figure, closes nothing
            status, seen = call(broker, "mon", "GET", "/api/connections")
            assert status == 200 and [s["user"] for s in seen] == ["alice"]
            assert [q["name"] for q in call(broker, "mon", "GET", "/api/queues")[1]] == ["jobs"]
            assert call(broker, "mon", "GET", "/api/queues/jobs")[1]["name"] == "jobs"
            status, text = call(broker, "mon", "GET", "/metrics")
            assert status == 200 and 'mbroker_queue_messages_ready{queue="jobs"} 0.0' in text
            status, err = call(broker, "mon", "DELETE", f"/api/connections/{mine['id']}")
            assert (status, err["error"]) == (403, "FORBIDDEN")
            assert call(broker, "mon", "POST", "/api/exchanges/jobs/publish", {})[0] == 403
            # ops closes alice's connection
            closed = call(broker, "ops", "DELETE", f"/api/connections/{mine['id']}")
            assert closed == (200, {"closed": mine["id"]})
            assert c.readline() == b"-ERR LIMIT closed by an operator"
            assert c.expect_closed()
        # the tag taken away with the real command: the running broker re-reads the file
        done = subprocess.run(
            [sys.executable, "-m", "mbroker.cli.users", "set", "mon"]
            + ["--users", str(users), "--tags=-"],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=60,
        )
        assert (done.returncode, done.stdout) == (0, "mon configure=- write=- read=-\n")
        assert call(broker, "mon", "GET", "/api/queues") == (200, [])
        assert call(broker, "mon", "GET", "/api/queues/jobs")[0] == 403
        assert call(broker, "ops", "DELETE", "/api/queues/jobs")[0] == 200
    finally:
        broker.stop()


def test_no_right_and_no_tag_sees_no_broker_figures(tmp_path: Path) -> None:
    """As STATS without a name: the broker-wide figures of ``/api/overview`` and
    ``/metrics`` need a right on some name, or a tag."""
    users = tmp_path / "users"
    users.write_text(
        f"alice:{cheap_hash('s3cret')}:alice.*:alice.*:alice.*\n"
        f"mon:{cheap_hash('look')}:-:-:-:monitoring\n"
        f"nobody:{cheap_hash('none')}:-:-:-\n"
    )
    broker = start_broker(tmp_path, *HTTP, "--users", str(users), memory_only=True)
    try:
        refused = "nobody may not see the broker's figures (no right on any name)"
        assert call(broker, "nobody", "GET", "/api/overview") == (
            403,
            {"error": "FORBIDDEN", "reason": refused},
        )
        status, text = call(broker, "nobody", "GET", "/metrics")
        assert status == 403 and "mbroker_connections" not in text
        with connect(broker) as c:
            assert c.ok("AUTH nobody none") == "+OK"
            assert c.err("STATS") == f"-ERR FORBIDDEN {refused}"  # the same rule
        for user in ("alice", "mon"):
            status, body = call(broker, user, "GET", "/api/overview")
            assert status == 200 and "queue_totals" in body, user
            assert call(broker, user, "GET", "/metrics")[0] == 200
    finally:
        broker.stop()
