"""docs/protocol.rst (framing, limits and flow control) against ``twistd``: clients that
go away while a PULL waits, clients that half-close, and clients that do not read what
they asked for.

* A PULL that waits takes nothing when its client goes away, by FIN or by RST, with
  either ack mode and with commands pipelined behind it; an alive client still gets
  those commands answered in order, and the broker does not read without bound
  behind the PULL.
* A client that shuts down its sending side (``nc -N``) gets the reply to every
  command it sent, a durable PUBLISH included (confirmed, so it survives ``kill -9``),
  then the broker closes.
* A client that asks for far more reply bytes than it reads (LIST × many) stops being
  read: the broker's memory stays bounded, and every reply still comes, in order.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.contract import (
    Client,
    connect,
    poll,
    queue,
    running_broker,
    unique,
)
from tests.helpers.targets import node_args

MiB = 1 << 20


@pytest.fixture(scope="module")
def broker(
    request: pytest.FixtureRequest, target: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    yield from running_broker(tmp_path_factory, *node_args(request))


def _connections(observer: Client) -> int:
    return int(observer.stats()["connections"])


def _gone(c: Client, how: str) -> None:
    if how == "rst":  # SO_LINGER 0: close() sends an RST
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


# ------------------------------------------------ a waiting PULL, its client gone


@pytest.mark.parametrize("ack", ["auto", "manual"])
@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("behind", [b"", b"PING\r\nSTATS\r\nPULL {q} wait=20000\r\n"])
def test_a_waiting_pull_whose_client_goes_away_takes_nothing(
    broker: BrokerProcess, ack: str, how: str, behind: bytes
) -> None:
    with connect(broker) as observer:
        q = queue(observer)
        poll(lambda: _connections(observer) == 1)  # earlier tests' connections are gone
        base = 1
        puller = connect(broker)
        puller.send(
            f"PULL {q} wait=30000 ack={ack}\r\n".encode() + behind.replace(b"{q}", q.encode())
        )
        poll(lambda: _connections(observer) == base + 1)
        _gone(puller, how)
        # the broker notices the client has gone (it still reads while the PULL waits)
        poll(lambda: _connections(observer) == base)
        assert observer.ok(f"PUBLISH {q} :kept") == "+OK 1"
        [m] = observer.pull(f"PULL {q}")
        assert m.payload == b"kept"
        assert "redelivered" not in m.attrs  # nobody saw it before
        assert observer.stats(q)["messages"] == "0"


def test_commands_behind_a_waiting_pull_are_answered_in_order_after_it(
    broker: BrokerProcess,
) -> None:
    with connect(broker) as publisher, connect(broker) as c:
        q = queue(publisher)
        c.send(f"PULL {q} wait=30000\r\nPING\r\nSTATS {q}\r\nPULL {q}\r\n".encode())
        assert c.quiet(0.2)  # nothing before the PULL is answered
        assert publisher.ok(f"PUBLISH {q} :one") == "+OK 1"
        data, status = c.read_reply()
        assert status == b"+OK 1" and [m.payload for m in data] == [b"one"]  # type: ignore[union-attr]
        assert c.read_reply() == ([], b"+PONG")
        data, status = c.read_reply()
        assert status == b"+OK" and b"STAT messages 0" in data
        assert c.read_reply() == ([], b"+OK 0")


@pytest.mark.slow
def test_the_broker_does_not_read_without_bound_behind_a_waiting_pull(
    broker: BrokerProcess,
) -> None:
    with connect(broker) as publisher, connect(broker) as c:
        q = queue(publisher)
        c.send(f"PULL {q} wait=30000\r\n".encode())
        # 64 MiB of PINGs, sent without blocking until the socket refuses more
        c.sock.setblocking(False)
        chunk = b"PING\r\n" * (64 * 1024 // 6)
        sent = 0
        try:
            while sent < 64 * MiB:
                sent += c.sock.send(chunk)
        except BlockingIOError:
            pass
        c.sock.setblocking(True)
        c.sock.settimeout(c.timeout)
        # what the kernel's buffers hold, no more: the broker stopped reading
        assert sent < 32 * MiB, sent
        # and the PULL is still answered, then every PING behind it
        assert publisher.ok(f"PUBLISH {q} :late") == "+OK 1"
        data, status = c.read_reply()
        assert status == b"+OK 1"
        pings = sent // 6
        want = b"+PONG\r\n" * pings
        got = c.read_exact(len(want), 30.0)
        assert got == want


# ------------------------------------------------------------------ half-close


def test_a_half_closed_client_gets_its_pong_then_the_broker_closes(
    broker: BrokerProcess,
) -> None:
    """``printf 'PING\\r\\n' | nc -N localhost 5555``."""
    with connect(broker) as c:
        c.send(b"PING\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.readline() == b"+PONG"
        assert c.expect_closed()


def test_a_half_closed_client_gets_every_pipelined_reply_in_order(
    broker: BrokerProcess, on_node: bool
) -> None:
    with connect(broker) as c:
        q = unique("hc")
        wait = f"PULL {q} wait=10000\r\n"
        c.send(f"CREATE {q} queue\r\nPUBLISH {q} :a\r\n{wait}{wait}PING\r\n".encode())
        c.sock.shutdown(socket.SHUT_WR)
        assert c.read_reply() == ([], b"+OK created")
        assert c.read_reply() == ([], b"+OK 1")
        data, status = c.read_reply()
        if on_node:
            # (the waiting PULL ended by the half-close takes what the node holds, and
            # the next one, a PULL without wait, waits up to 250 ms for Redis: the
            # message comes in one of them, or stays in Redis; docs/cluster.rst)
            more, then = c.read_reply(3.0)
            replies = [(len(data), status), (len(more), then)]
            assert all(status == b"+OK %d" % n for n, status in replies), replies
            assert len(data) + len(more) <= 1
        else:
            assert status == b"+OK 1"
            assert c.read_reply(3.0) == ([], b"+OK 0")  # the client sends no more: no wait
        assert c.read_reply() == ([], b"+PONG")
        assert c.expect_closed()


def test_a_half_closed_durable_publish_is_confirmed_and_kept(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        with connect(broker) as c:
            assert c.ok("CREATE jobs queue durable") == "+OK created"
        with connect(broker) as c:
            c.send(b"PUBLISH jobs 4\r\nkept\r\nPUBLISH jobs :also\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            assert c.readline() == b"+OK 1"  # only once it is stored (fsync)
            assert c.readline() == b"+OK 1"
            assert c.expect_closed()
        broker.kill()  # kill -9: what was confirmed must be there
        broker = start_broker(tmp_path)
        with connect(broker) as c:
            assert [m.payload for m in c.pull("PULL jobs max=10")] == [b"kept", b"also"]
    finally:
        broker.stop()


# --------------------------------------------------------- reply amplification


def _peak_rss(broker: BrokerProcess) -> int:
    status = Path(f"/proc/{broker.process.pid}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(status)


@pytest.mark.slow
def test_a_client_that_asks_for_more_than_it_reads_stops_being_read(tmp_path: Path) -> None:
    """1,000 queues and 1,000 LIST (5 KB asking for about 57 MB): the broker's peak
    memory grows by little, and every reply still comes, in order."""
    broker = start_broker(tmp_path, memory_only=True)
    try:
        with connect(broker) as admin:
            admin.send(b"".join(b"CREATE amp%04d queue\r\n" % i for i in range(1000)))
            for _ in range(1000):
                assert admin.readline() == b"+OK created"
            one_list = len(b"".join(admin.data("LIST"))) + 1000 * 2
            assert admin.stats()["queues"] == "1000"
            before = _peak_rss(broker)
            with connect(broker) as c:
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                c.send(b"LIST\r\n" * 1000 + b"PING\r\n")
                # the broker has handled what it read (it answers others meanwhile)
                for _ in range(3):
                    assert admin.ok("PING") == "+PONG"
                grown = _peak_rss(broker) - before
                assert grown < 25 * MiB, (
                    f"{grown / MiB:.0f} MiB for {1000 * one_list / MiB:.0f} MiB of replies"
                )
                # the client reads now: every reply, in order, the PING last
                c.sock.settimeout(30.0)
                tail = b""
                lists = 0
                while True:
                    chunk = c.sock.recv(1 << 20)
                    assert chunk, "closed"
                    data = tail + chunk
                    lists += data.count(b"+OK 1000\r\n")
                    cut = data.rfind(b"\r\n")
                    tail = data[cut + 2 :] if cut >= 0 else data
                    if data.endswith(b"+PONG\r\n"):
                        break
                assert lists == 1000
            assert _peak_rss(broker) - before < 25 * MiB
    finally:
        broker.stop()
