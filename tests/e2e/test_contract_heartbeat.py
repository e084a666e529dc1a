"""Contract section 7, heartbeats, against ``twistd -n mbroker`` over TCP: a half-open
peer (a client that stops reading and writing without closing) is closed after 3 x MS
and its unacknowledged message goes to another consumer; a peer that answers the
pushed PINGs stays."""

from __future__ import annotations

import time

from tests.helpers.broker import BrokerProcess
from tests.helpers.contract import Client, connect, queue


def test_a_silent_peer_is_closed_and_its_unacked_message_redelivered(
    broker: BrokerProcess, client: Client
) -> None:
    q = queue(client)
    silent = connect(broker)
    try:
        assert silent.ok("HEARTBEAT 1000") == "+OK 1000"
        assert silent.ok(f"SUBSCRIBE {q} ack=manual") == "+OK 1"
        last_sent = time.monotonic()  # the silent peer's last bytes
        client.publish(q, b"job")
        first = silent.read_msg()
        assert first.payload == b"job" and "redelivered" not in first.attrs
        # From now on the peer neither reads nor writes, and does not close: to the
        # broker it is a peer that vanished without a FIN.
        with connect(broker) as other:
            assert other.ok(f"SUBSCRIBE {q} ack=manual") == "+OK 1"
            again = other.read_msg(timeout=15.0)
            closed_after = time.monotonic() - last_sent
            assert again.payload == b"job" and again.attrs.get("redelivered") == "1"
        # 3 x 1000 ms unheard (a loaded machine may be late, never early)
        assert 2.9 <= closed_after < 10.0, closed_after
        # what the broker sent meanwhile: pushed PINGs, the goodbye, then the close
        assert silent.expect_closed(timeout=5.0)
        rest = bytes(silent._buf).split(b"\r\n")
        assert rest[-2:] == [b"-ERR LIMIT heartbeat", b""], rest
        assert set(rest[:-2]) == {b"PING"}, rest
    finally:
        silent.close()


def test_a_peer_that_answers_ping_with_pong_stays(broker: BrokerProcess) -> None:
    with connect(broker) as c:
        assert c.ok("HEARTBEAT 1000") == "+OK 1000"
        pings = 0
        deadline = time.monotonic() + 4.5  # longer than 3 x 1000 ms
        while time.monotonic() < deadline:
            assert c.readline(timeout=5.0) == b"PING"
            pings += 1
            c.send_line("PONG")  # no reply
        assert pings >= 3
        assert c.ok("PING") == "+PONG"
        assert c.ok("HEARTBEAT 0") == "+OK 0"
        assert c.quiet(1.5)
