"""STOMP deliveries over real TCP: every byte in order, whether it went straight to the
socket or waited in the transport's buffer for a subscriber that stopped reading.

Raw sockets against ``twistd -n mbroker --stomp``; every wait has a deadline.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.broker import BrokerProcess, start_broker

WAIT = 20.0
BODY = 4000
COUNT = 3000  # 12 MB: more than the loopback socket buffers hold


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = start_broker(
        tmp_path_factory.mktemp("stompflow"),
        "--stomp",
        "tcp:0:interface=127.0.0.1",
        memory_only=True,
    )
    try:
        yield process
    finally:
        process.stop()


def read_until(s: socket.socket, done: bytes, buf: bytes = b"") -> bytes:
    """Read ``s`` until ``done`` is in what was read (``buf`` first); all of it."""
    deadline = time.monotonic() + WAIT
    chunks = [buf]
    tail = buf
    while done not in tail:
        assert time.monotonic() < deadline, f"waited for {done!r}, got {tail[-200:]!r}"
        chunk = s.recv(1 << 20)
        assert chunk, f"closed while waiting for {done!r}: {tail[-200:]!r}"
        chunks.append(chunk)
        tail = tail[-len(done) :] + chunk
    return b"".join(chunks)


def stomp(broker: BrokerProcess) -> socket.socket:
    s = socket.create_connection((broker.host, broker.stomp_port), timeout=WAIT)
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\n\n\x00")
    assert read_until(s, b"\x00").startswith(b"CONNECTED")
    return s


def test_a_subscriber_that_stops_reading_gets_every_message_in_order(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    sub, pub = stomp(broker), stomp(broker)
    try:
        sub.sendall(b"SUBSCRIBE\nid:s\ndestination:/queue/flow\nack:auto\nreceipt:r\n\n\x00")
        rest = read_until(sub, b"RECEIPT")
        frames = [
            b"SEND\ndestination:/queue/flow\ncontent-length:%d\n\n%s\x00"
            % (BODY, (b"%08d" % i) * (BODY // 8))
            for i in range(COUNT)
        ]
        # one at a time first (straight to the socket), then in bursts the subscriber
        # does not read (the rest waits in the broker's buffers)
        for i in range(20):
            pub.sendall(frames[i])
            rest = read_until(sub, b"%08d\x00" % i, rest)
        for i in range(20, COUNT, 100):
            pub.sendall(b"".join(frames[i : i + 100]))
        pub.sendall(b"SEND\ndestination:/queue/flow\nreceipt:end\n\nend\x00")
        read_until(pub, b"receipt-id:end")
        data = read_until(sub, b"\n\nend\x00", rest)
        bodies = re.findall(rb"content-length:%d\n\n(\d{8})" % BODY, data)
        assert [int(b) for b in bodies] == list(range(COUNT))
        assert data.count(b"MESSAGE\n") == COUNT + 1
    finally:
        sub.close()
        pub.close()
