"""STOMP end to end: the real ``stomp.py`` client (PyPI) against ``twistd -n mbroker --stomp``.

Every wait has a deadline; nothing sleeps.  Cross-protocol tests talk to the same broker
over the native protocol with :class:`~tests.helpers.lineclient.LineClient`.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stomp  # type: ignore[import-untyped]
from stomp.exception import ConnectFailedException  # type: ignore[import-untyped]

from tests.helpers.auth import cheap_hash, write_users
from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.lineclient import LineClient

STOMP = ("--stomp", "tcp:0:interface=127.0.0.1")
WAIT = 10.0
_names = iter(range(10**9))


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}-{time.monotonic_ns()}"


class Frames(stomp.ConnectionListener):
    """Collects what the broker sends: MESSAGE, RECEIPT and ERROR frames, heart-beats."""

    def __init__(self) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.receipts: queue.Queue[str] = queue.Queue()
        self.errors: queue.Queue[Any] = queue.Queue()
        self.heartbeats = 0
        self.two_heartbeats = threading.Event()
        self.disconnected = False

    def on_message(self, frame: Any) -> None:
        self.messages.put(frame)

    def on_receipt(self, frame: Any) -> None:
        self.receipts.put(frame.headers["receipt-id"])

    def on_error(self, frame: Any) -> None:
        self.errors.put(frame)

    def on_heartbeat(self) -> None:
        self.heartbeats += 1
        if self.heartbeats >= 2:
            self.two_heartbeats.set()

    def on_disconnected(self) -> None:
        self.disconnected = True

    def message(self, timeout: float = WAIT) -> Any:
        return self.messages.get(timeout=timeout)

    def no_message(self, timeout: float = 0.3) -> bool:
        try:
            self.messages.get(timeout=timeout)
        except queue.Empty:
            return True
        return False

    def receipt(self, timeout: float = WAIT) -> str:
        return self.receipts.get(timeout=timeout)

    def error(self, timeout: float = WAIT) -> Any:
        return self.errors.get(timeout=timeout)


def connect(
    broker: BrokerProcess,
    version: str = "1.2",
    login: str | None = None,
    passcode: str | None = None,
    heartbeats: tuple[int, int] = (0, 0),
) -> tuple[Any, Frames]:
    cls = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}
    kw: dict[str, Any] = {"auto_decode": False, "reconnect_attempts_max": 1}
    if version != "1.0":
        kw["heartbeats"] = heartbeats
    conn = cls[version]([(broker.host, broker.stomp_port)], **kw)
    frames = Frames()
    conn.set_listener("t", frames)
    conn.connect(login, passcode, wait=True)
    return conn, frames


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = start_broker(tmp_path_factory.mktemp("stomp"), *STOMP, memory_only=True)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def native(broker: BrokerProcess) -> Iterator[LineClient]:
    with broker.connect() as c:
        yield c


def ok(c: LineClient, line: str) -> bytes:
    data, status = c.request(line)
    assert status.startswith(b"+"), status
    return status


# ------------------------------------------------------------------ basics


def test_the_listener_is_announced_and_amq_exchanges_exist(
    broker: BrokerProcess, native: LineClient
) -> None:
    assert broker.stomp_port and broker.stomp_port != broker.port
    data, status = native.request("LIST")
    names = {line.split()[1] for line in data if isinstance(line, bytes)}
    assert {b"amq.direct", b"amq.fanout", b"amq.topic"} <= names


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_send_and_subscribe_in_every_version(broker: BrokerProcess, version: str) -> None:
    conn, frames = connect(broker, version)
    q = unique("q")
    if version == "1.0":
        conn.subscribe(f"/queue/{q}", ack="auto")
    else:
        conn.subscribe(f"/queue/{q}", id="s1", ack="auto")
    body = b"hello \x00 binary \xff"
    conn.send(f"/queue/{q}", body, headers={"receipt": "r1"})
    assert frames.receipt() == "r1"
    msg = frames.message()
    assert msg.body == body
    assert msg.headers["destination"] == f"/queue/{q}"
    assert msg.headers["message-id"]
    conn.disconnect()


def test_disconnect_receipt_and_close(broker: BrokerProcess) -> None:
    conn, frames = connect(broker)
    conn.disconnect(receipt="bye")  # stomp.py waits for the RECEIPT
    assert frames.receipt() == "bye"
    assert not conn.is_connected()


# ------------------------------------------------------------------ acks


def test_client_individual_ack_and_nack_requeue(broker: BrokerProcess) -> None:
    conn, frames = connect(broker)
    q = unique("q")
    conn.subscribe(f"/queue/{q}", id="s", ack="client-individual")
    for b in (b"a", b"b"):
        conn.send(f"/queue/{q}", b)
    a, b = frames.message(), frames.message()
    conn.ack(b.headers["ack"])
    conn.nack(a.headers["ack"])
    again = frames.message()
    assert again.body == b"a"
    assert again.headers.get("redelivered") == "true"
    conn.ack(again.headers["ack"], receipt="done")
    assert frames.receipt() == "done"
    assert frames.no_message()
    conn.disconnect()


def test_client_ack_is_cumulative_and_unacked_go_back(
    broker: BrokerProcess, native: LineClient
) -> None:
    conn, frames = connect(broker)
    q = unique("q")
    conn.subscribe(f"/queue/{q}", id="s", ack="client", headers={"prefetch-count": "10"})
    for i in range(3):
        conn.send(f"/queue/{q}", b"%d" % i)
    msgs = [frames.message() for _ in range(3)]
    conn.ack(msgs[1].headers["ack"], receipt="two")
    assert frames.receipt() == "two"
    conn.disconnect()
    # the third was not acknowledged: it goes back to the queue (once the broker has
    # seen the connection close), and to the next subscriber
    ok(native, f"SUBSCRIBE {q}")
    assert native.read_msg(WAIT).payload == b"2"
    data, status = native.request(f"PULL {q} max=10")
    assert data == [] and status == b"+OK 0"


def test_prefetch_count(broker: BrokerProcess) -> None:
    conn, frames = connect(broker)
    q = unique("q")
    conn.subscribe(f"/queue/{q}", id="s", ack="client-individual", headers={"prefetch-count": "1"})
    for i in range(3):
        conn.send(f"/queue/{q}", b"%d" % i)
    first = frames.message()
    assert frames.no_message()
    conn.ack(first.headers["ack"])
    assert frames.message().body == b"1"
    conn.disconnect()


# ------------------------------------------------------------------ transactions


def test_transactions_hold_sends_until_commit(broker: BrokerProcess) -> None:
    conn, frames = connect(broker)
    q = unique("q")
    conn.subscribe(f"/queue/{q}", id="s")
    tx = conn.begin()
    conn.send(f"/queue/{q}", b"1", transaction=tx)
    conn.send(f"/queue/{q}", b"2", transaction=tx)
    assert frames.no_message()
    conn.commit(tx)
    assert [frames.message().body, frames.message().body] == [b"1", b"2"]
    tx2 = conn.begin()
    conn.send(f"/queue/{q}", b"never", transaction=tx2)
    conn.abort(tx2)
    assert frames.no_message()
    conn.disconnect()


# ------------------------------------------------------------ destinations, cross-protocol


def test_stomp_send_reaches_a_native_subscriber(broker: BrokerProcess, native: LineClient) -> None:
    q = unique("q")
    ok(native, f"CREATE {q} queue")
    status = ok(native, f"SUBSCRIBE {q}")
    sid = int(status.split()[1])
    ok(native, "SUBSCRIBE amq.topic orders.*")
    conn, _ = connect(broker)
    conn.send(f"/queue/{q}", b"from stomp")
    conn.send("/topic/orders.new", b"order 1")
    got = {
        (m.sid == sid, m.source, m.key, m.payload)
        for m in (native.read_msg(WAIT), native.read_msg(WAIT))
    }
    assert got == {(True, q, "", b"from stomp"), (False, "amq.topic", "orders.new", b"order 1")}
    conn.disconnect()


def test_native_publish_reaches_a_stomp_subscriber(
    broker: BrokerProcess, native: LineClient
) -> None:
    conn, frames = connect(broker)
    ex = unique("x")
    ok(native, f"CREATE {ex} direct")
    conn.subscribe("/topic/prices.#", id="t")
    conn.subscribe(f"/exchange/{ex}/red", id="e", headers={"receipt": "sub"})
    assert frames.receipt() == "sub"
    ok(native, "PUBLISH amq.topic prices.eur :1.08")
    ok(native, f"PUBLISH {ex} red :rouge")
    one, two = frames.message(), frames.message()
    assert (one.headers["subscription"], one.headers["destination"], one.body) == (
        "t",
        "/topic/prices.eur",
        b"1.08",
    )
    assert (two.headers["subscription"], two.headers["destination"], two.body) == (
        "e",
        f"/exchange/{ex}/red",
        b"rouge",
    )
    conn.disconnect()


def test_amq_queue_must_exist(broker: BrokerProcess) -> None:
    conn, frames = connect(broker)
    conn.send("/amq/queue/" + unique("none"), b"x")
    err = frames.error()
    assert err.headers["message"].startswith("NOT_FOUND")


def test_temp_queue_reply_to(broker: BrokerProcess, native: LineClient) -> None:
    conn, frames = connect(broker)
    requests = unique("requests")
    conn.send(f"/queue/{requests}", b"what time is it?", headers={"reply-to": "/temp-queue/t"})
    conn.send(f"/queue/{requests}", b"flush", headers={"receipt": "sent"})
    assert frames.receipt() == "sent"
    data, _ = native.request("LIST")
    temp = [line.split()[1].decode() for line in data if isinstance(line, bytes)]
    temp = [n for n in temp if n.startswith("amq.gen-")]
    assert len(temp) >= 1
    # (a responder would learn the queue from reply-to, which needs message properties:
    # here the test answers to every temp queue it sees)
    for name in temp:
        native.request(f"PUBLISH {name} :noon")
    reply = frames.message()
    assert reply.body == b"noon"
    assert reply.headers["subscription"] == "/temp-queue/t"
    assert reply.headers["destination"].startswith("/reply-queue/amq.gen-")
    conn.disconnect()


def test_durable_topic_subscription(broker: BrokerProcess) -> None:
    sub_id = unique("audit")
    conn, frames = connect(broker)
    conn.subscribe("/topic/audit.#", id=sub_id, headers={"durable": "true", "receipt": "s"})
    assert frames.receipt() == "s"
    conn.disconnect()
    other, _ = connect(broker)
    other.send("/topic/audit.login", b"kept while away")
    other.disconnect()
    conn, frames = connect(broker)
    conn.subscribe("/topic/audit.#", id=sub_id, headers={"durable": "true"})
    assert frames.message().body == b"kept while away"
    conn.unsubscribe(sub_id, headers={"durable": "true", "receipt": "u"})
    assert frames.receipt() == "u"
    conn.disconnect()


# ------------------------------------------------------------------ heart-beats, bad input


def test_server_heart_beats_reach_stomp_py(broker: BrokerProcess) -> None:
    conn, frames = connect(broker, heartbeats=(0, 1000))
    assert frames.two_heartbeats.wait(WAIT)
    conn.disconnect()


def raw(broker: BrokerProcess) -> socket.socket:
    sock = socket.create_connection((broker.host, broker.stomp_port), timeout=WAIT)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"not closed: {out!r}")


def test_a_silent_client_is_dropped_after_its_heart_beat(broker: BrokerProcess) -> None:
    with raw(broker) as sock:
        sock.sendall(b"CONNECT\naccept-version:1.2\nheart-beat:300,0\n\n\0")
        out = read_until_closed(sock)
    assert out.startswith(b"CONNECTED\n")
    assert b"message:no heart-beat" in out


@pytest.mark.parametrize(
    "data",
    [
        b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/queue/x\n" + b"h" * 70000,
        b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination:/queue/x\ncontent-length:9999999\n\n",
        b"CONNECT\naccept-version:1.2\n\n\0BOGUS\n\n\0",
        b"CONNECT\naccept-version:9.9\n\n\0",
        b"SEND\ndestination:/queue/x\n\nearly\0",
    ],
)
def test_bad_input_gets_an_error_frame_and_a_close(broker: BrokerProcess, data: bytes) -> None:
    with raw(broker) as sock:
        sock.sendall(data)
        out = read_until_closed(sock)
    assert b"ERROR\n" in out and b"message:" in out
    # the broker is still fine
    conn, _ = connect(broker)
    conn.disconnect()


# ------------------------------------------------------------------ login, durability


def test_login_and_permissions(tmp_path: Path) -> None:
    users = write_users(
        tmp_path / "users",
        f"alice:{cheap_hash('s3cret')}:alice.*:alice.*:alice.*",
    )
    broker = start_broker(tmp_path, *STOMP, "--users", str(users), memory_only=True)
    try:
        with pytest.raises(ConnectFailedException):
            connect(broker, login="alice", passcode="wrong")
        conn, frames = connect(broker, login="alice", passcode="s3cret")
        conn.subscribe("/queue/alice.in", id="s")
        conn.send("/queue/alice.in", b"mine")
        assert frames.message().body == b"mine"
        conn.send("/queue/bob.in", b"not mine")
        assert frames.error().headers["message"] == "FORBIDDEN alice may not write to bob.in"
    finally:
        broker.stop()


def test_queue_destinations_are_durable(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, *STOMP)
    try:
        conn, frames = connect(broker)
        conn.send("/queue/kept", b"survives", headers={"receipt": "stored"})
        assert frames.receipt() == "stored"
        conn.disconnect()
    finally:
        broker.stop()
    broker = start_broker(tmp_path, *STOMP)
    try:
        conn, frames = connect(broker)
        conn.subscribe("/queue/kept", id="s")
        assert frames.message().body == b"survives"
        conn.disconnect()
    finally:
        broker.stop()


def test_stomp_over_tls(tmp_path: Path) -> None:
    import ssl

    from tests.helpers.tls import make_pki

    pki = make_pki(tmp_path)
    endpoint = f"ssl:0:privateKey={pki.server_key}:certKey={pki.server_cert}:interface=127.0.0.1"
    broker = start_broker(tmp_path, "--stomp", endpoint, memory_only=True)
    try:
        conn = stomp.Connection12(
            [(broker.host, broker.stomp_port)], auto_decode=False, reconnect_attempts_max=1
        )
        conn.set_ssl(
            for_hosts=[(broker.host, broker.stomp_port)],
            ca_certs=str(pki.ca_cert),
            ssl_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        frames = Frames()
        conn.set_listener("t", frames)
        conn.connect(wait=True)
        conn.subscribe("/queue/secret", id="s")
        conn.send("/queue/secret", b"over tls " * 10000)
        assert frames.message().body == b"over tls " * 10000
        conn.disconnect()
    finally:
        broker.stop()
