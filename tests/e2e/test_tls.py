"""TLS: ``twistd mbroker --listen ssl:…`` with a certificate this test makes, and clients
that verify the server (Python's ``ssl`` module, and mbroker's own client)."""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor

from mbroker.client.connection import connect as client_connect
from tests.helpers.auth import cheap_hash
from tests.helpers.broker import _LISTENING, BrokerProcess, start_broker
from tests.helpers.lineclient import LineClient
from tests.helpers.tls import Pki, make_pki


@attrs.define
class TlsBroker:
    process: BrokerProcess
    pki: Pki
    port: int


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    tmp = tmp_path_factory.mktemp("tls")
    pki = make_pki(tmp)
    users = tmp / "users"
    users.write_text(f"alice:{cheap_hash('s3cret')}:*:*:*\n")
    listen = f"ssl:0:privateKey={pki.server_key}:certKey={pki.server_cert}:interface=127.0.0.1"
    process = start_broker(tmp, "--listen", listen, "--users", str(users), memory_only=True)
    try:
        # start_broker read the plain TCP port's line; the TLS port's comes next.
        match = process.wait_for_line(_LISTENING, 30)
        yield TlsBroker(process, pki, int(match.group(2)))
    finally:
        process.stop()


class TlsLineClient(LineClient):
    """A :class:`LineClient` over TLS that verifies the server against ``cafile``."""

    def __init__(self, host: str, port: int, cafile: Path, server_hostname: str) -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        self.timeout = 10.0
        self._buf = bytearray()
        self.pushed = deque()
        raw = socket.create_connection((host, port), timeout=self.timeout)
        self.sock = self.tls = context.wrap_socket(raw, server_hostname=server_hostname)
        self.hello = self.readline()


def test_a_verifying_client_talks_over_tls(tls_broker: TlsBroker) -> None:
    for hostname in ("localhost", "127.0.0.1"):
        c = TlsLineClient("127.0.0.1", tls_broker.port, tls_broker.pki.ca_cert, hostname)
        with c:
            assert c.hello.startswith(b"HELLO mbroker ") and b" auth=required " in c.hello
            assert c.tls.version() in ("TLSv1.2", "TLSv1.3")
            c.send_line("AUTH alice s3cret")
            assert c.read_reply() == ([], b"+OK")
            c.send_line("CREATE tls-q queue")
            c.send(b"PUBLISH tls-q 5\r\nhello\r\nPULL tls-q\r\nDELETE tls-q\r\nQUIT\r\n")
            assert c.read_reply() == ([], b"+OK created")
            assert c.read_reply() == ([], b"+OK 1")
            data, status = c.read_reply()
            assert status == b"+OK 1" and [m.payload for m in data] == [b"hello"]  # type: ignore[union-attr]
            assert c.read_reply() == ([], b"+OK 0")
            assert c.read_reply() == ([], b"+OK bye")
            assert c.expect_closed()


def test_a_big_payload_over_tls(tls_broker: TlsBroker) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    c = TlsLineClient("127.0.0.1", tls_broker.port, tls_broker.pki.ca_cert, "localhost")
    with c:
        c.send_line("AUTH alice s3cret")
        c.send_line("CREATE tls-big queue")
        c.send(
            b"PUBLISH tls-big %d\r\n%s\r\nPULL tls-big\r\nDELETE tls-big\r\n"
            % (len(payload), payload)
        )
        assert [c.read_reply()[1] for _ in range(3)] == [b"+OK", b"+OK created", b"+OK 1"]
        data, status = c.read_reply(30)
        assert status == b"+OK 1" and data[0].payload == payload  # type: ignore[union-attr]


def test_the_client_refuses_a_server_it_cannot_verify(tls_broker: TlsBroker) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsLineClient("127.0.0.1", tls_broker.port, tls_broker.pki.other_ca_cert, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):  # the right CA, the wrong name
        TlsLineClient("127.0.0.1", tls_broker.port, tls_broker.pki.ca_cert, "example.com")
    with socket.create_connection(("127.0.0.1", tls_broker.port), timeout=10) as raw:
        raw.sendall(b"PING\r\n")  # plain text to the TLS port: no answer in clear
        raw.settimeout(10)
        try:
            data = raw.recv(1024)
        except ConnectionError:
            data = b""
        assert b"PONG" not in data and b"HELLO" not in data
    # The broker serves on.
    c = TlsLineClient("127.0.0.1", tls_broker.port, tls_broker.pki.ca_cert, "localhost")
    with c:
        c.send_line("PING")
        assert c.read_reply() == ([], b"+PONG")


@pytest_twisted.ensureDeferred
async def test_mbroker_client_over_tls(tls_broker: TlsBroker) -> None:
    endpoint = f"tls:localhost:{tls_broker.port}:trustRoots={tls_broker.pki.ca_dir}"
    client = await client_connect(reactor, endpoint, user="alice", password="s3cret", timeout=20)
    try:
        assert client.hello is not None and client.hello.auth_required
        await client.create("tls-client-q", "queue")
        await client.publish("tls-client-q", b"over tls")
        [message] = await client.pull("tls-client-q")
        assert message.payload == b"over tls"
        await client.delete("tls-client-q")
    finally:
        await client.close()
