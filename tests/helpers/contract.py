"""Helpers for the contract tests (``test_contract_*.py``): no tests of its own.

The contract tests check ``docs/protocol.rst`` (the contract, sections 1-6) end to end: a
real broker process, real TCP, and an independent line reader
(:mod:`tests.helpers.lineclient`).
Each module shares one broker (a module-scoped fixture built on :func:`running_broker`)
and makes its objects under unique names, so that tests never see each other's queues.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.lineclient import LineClient, Msg

ROOT = Path(__file__).resolve().parent.parent.parent
_LISTENING = re.compile(rb"mbroker listening on ([0-9.]+):(\d+)\s*$")
_names = itertools.count(1)


def unique(prefix: str = "t") -> str:
    """A name no other test of this run uses."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


class Client(LineClient):
    """A :class:`LineClient` with one-line assertions for replies."""

    def __enter__(self) -> Client:
        return self

    def ok(self, line: str | bytes, timeout: float | None = None) -> str:
        """Send a command; its reply must be a success with no data lines. Returns it."""
        data, status = self.request(line, timeout)
        assert status.startswith(b"+"), f"{line!r} -> {status!r}"
        assert data == [], f"{line!r} -> unexpected data lines {data!r}"
        return status.decode()

    def err(self, line: str | bytes, timeout: float | None = None) -> str:
        """Send a command; its reply must be ``-ERR <CODE> …``. Returns the whole line."""
        data, status = self.request(line, timeout)
        assert status.startswith(b"-ERR "), f"{line!r} -> {status!r}"
        assert data == [], f"{line!r} -> unexpected data lines {data!r}"
        return status.decode()

    def code(self, line: str | bytes, timeout: float | None = None) -> str:
        """Send a command that must fail; returns its error code."""
        return self.err(line, timeout).split()[1]

    def pull(self, line: str, timeout: float | None = None) -> list[Msg]:
        """Send a PULL; returns its messages, checking the ``+OK <count>``."""
        data, status = self.request(line, timeout)
        msgs = [m for m in data if isinstance(m, Msg)]
        assert len(msgs) == len(data), f"{line!r}: non-MSG data lines {data!r}"
        assert status == b"+OK %d" % len(msgs), f"{line!r} -> {status!r} after {len(msgs)} MSG"
        return msgs

    def payloads(self, line: str, timeout: float | None = None) -> list[bytes]:
        return [m.payload for m in self.pull(line, timeout)]

    def data(self, line: str) -> list[bytes]:
        """Send a LIST or STATS; returns its data lines, checking its status."""
        data, status = self.request(line)
        assert status.startswith(b"+OK"), f"{line!r} -> {status!r}"
        return [d for d in data if isinstance(d, bytes)]

    def stats(self, name: str | None = None) -> dict[str, str]:
        lines = self.data("STATS" if name is None else f"STATS {name}")
        pairs = (line.decode().split(None, 2) for line in lines)
        return {p[1]: p[2] if len(p) > 2 else "" for p in pairs}

    def listing(self) -> dict[str, dict[str, str]]:
        """LIST as ``{name: {"kind": …, key: value …}}``."""
        out = {}
        for line in self.data("LIST"):
            words = line.decode().split()
            fields = dict(w.split("=", 1) for w in words[2:] if "=" in w)
            fields["kind"] = words[2] if words[0] == "EXCHANGE" else "queue"
            out[words[1]] = fields
        return out

    def publish(self, name: str, payload: bytes, key: str = "", *options: str) -> str:
        """PUBLISH in the size form; returns the status line."""
        head = " ".join(filter(None, ["PUBLISH", name, key, *options, str(len(payload))]))
        self.send(head.encode() + b"\r\n" + payload + b"\r\n")
        data, status = self.read_reply()
        assert data == [], data
        return status.decode()

    def msgs(self, n: int, timeout: float | None = None) -> list[Msg]:
        return [self.read_msg(timeout) for _ in range(n)]

    def quiet(self, timeout: float = 0.2) -> bool:
        """True when nothing (no push) arrives for ``timeout`` seconds.

        Used only to check that something does *not* happen; it never waits for
        anything that should happen.
        """
        if self.pushed:
            return False
        try:
            self.readline(timeout)
        except TimeoutError:
            return True
        return False


def connect(broker: BrokerProcess, timeout: float = 10.0) -> Client:
    return Client(broker.host, broker.port, timeout=timeout)


def poll(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Call ``check`` until it returns something true, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still {result!r} after {timeout}s: {check}")
        time.sleep(interval)


def rss_bytes(broker: BrokerProcess) -> int:
    """The broker process's resident memory now (``VmRSS``)."""
    status = Path(f"/proc/{broker.process.pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


def running_broker(tmp: pytest.TempPathFactory, *args: str) -> Iterator[BrokerProcess]:
    """The body of a module-scoped fixture: ``twistd -n mbroker *args``, in memory.

    (With the options of :func:`tests.helpers.targets.node_args` in ``args``, a
    cluster node: docs/cluster.rst, the acceptance tests against a node.)"""
    process = start_broker(tmp.mktemp("broker"), *args, memory_only=True)
    try:
        yield process
    finally:
        process.stop()


def queue(c: Client, *options: str) -> str:
    """Create a queue with a fresh name (and ``options``); its name."""
    name = unique("q")
    assert c.ok(" ".join(["CREATE", name, "queue", *options])) == "+OK created"
    return name


def fill(c: Client, q: str, *payloads: str) -> None:
    """Publish each of ``payloads`` to queue ``q``."""
    for p in payloads:
        assert c.ok(f"PUBLISH {q} :{p}") == "+OK 1"


def client_of(broker: BrokerProcess) -> Iterator[Client]:
    """The body of a function-scoped fixture: a client, closed afterwards."""
    with connect(broker) as c:
        yield c


#: Starts the real service with a Config that twistd's options cannot give yet
#: (the connection and subscription limits, slow-consumer disconnection).
_CONFIGURED = """
import sys
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from mbroker.config import Config
from mbroker.server.service import BrokerService
globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
config = Config(**eval(sys.argv[1]))
service = BrokerService(reactor, config, ["tcp:0:interface=127.0.0.1"], None)
reactor.callWhenRunning(service.startService)
reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
reactor.run()
"""


def start_configured_broker(tmp_path: Path, **config: object) -> BrokerProcess:
    """The broker's own service in a process of its own, with ``Config(**config)``."""
    process = subprocess.Popen(
        [sys.executable, "-c", _CONFIGURED, repr(config)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    broker = BrokerProcess(process, None)
    try:
        match = broker.wait_for_line(_LISTENING, 30.0)
    except BaseException:
        broker.stop()
        raise
    broker.host = match.group(1).decode()
    broker.port = int(match.group(2))
    return broker
