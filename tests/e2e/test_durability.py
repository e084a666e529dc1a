"""Durable state against a real ``twistd -n mbroker``: restarts, kill -9, damaged logs."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.helpers.broker import BrokerProcess, start_broker
from tests.helpers.lineclient import LineClient, Msg, ok, pull_all


def listing(client: LineClient) -> set[bytes]:
    data, status = client.request("LIST")
    assert status.startswith(b"+OK")
    return {line.split()[1] for line in data if isinstance(line, bytes)}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_durable_objects_and_messages_come_back_acked_and_transient_ones_do_not(
    tmp_path: Path, sig: int
) -> None:
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            for line in [
                "CREATE orders topic durable",
                "CREATE audit queue durable max-length=100",
                "BIND audit orders order.#",
                "CREATE scratch fanout",
                "CREATE tmpq queue",
                "BIND tmpq orders #",
                "PUBLISH orders order.new :first",
                "PUBLISH orders order.paid :second",
                "PUBLISH audit :third",
                "PUBLISH tmpq :transient",
            ]:
                ok(c, line)
            data, _ = c.request("PULL audit ack=manual")
            first = data[0]
            assert isinstance(first, Msg) and first.payload == b"first"
            assert ok(c, f"ACK {first.tag}") == b"+OK 1"
    finally:
        broker.kill(sig)
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            assert listing(c) == {b"orders", b"audit"}
            msgs = pull_all(c, "audit")
            assert [(m.source, m.key, m.payload) for m in msgs] == [
                ("orders", "order.paid", b"second"),
                ("audit", "", b"third"),
            ]
            # the binding came back too
            assert ok(c, "PUBLISH orders order.x :after") == b"+OK 1"
            assert ok(c, "CREATE audit queue durable max-length=100") == b"+OK exists"
    finally:
        broker.stop()
    assert any(b"recovered 2 messages in 1 durable queues" in line for line in broker.lines)


@pytest.mark.slow
def test_confirmed_messages_survive_repeated_kill_9_while_publishing(tmp_path: Path) -> None:
    """Kill the broker again and again with publishes in flight; then every message
    that was confirmed (+OK) is still there, and nothing unconfirmed is invented."""
    confirmed: set[bytes] = set()
    sent: set[bytes] = set()
    seq = 0
    for round_no in range(5):
        broker = start_broker(tmp_path)
        try:
            with broker.connect() as c:
                ok(c, "CREATE work queue durable")
                for _ in range(3):  # confirmed batches
                    batch = []
                    for _ in range(200):
                        seq += 1
                        payload = b"m%06d" % seq
                        batch.append(payload)
                        c.send(b"PUBLISH work %d\r\n%s\r\n" % (len(payload), payload))
                    sent.update(batch)
                    for payload in batch:
                        _, status = c.read_reply()
                        assert status == b"+OK 1"
                        confirmed.add(payload)
                # and a batch in flight when the broker dies
                for _ in range(500):
                    seq += 1
                    payload = b"m%06d" % seq
                    sent.add(payload)
                    c.send(b"PUBLISH work %d\r\n%s\r\n" % (len(payload), payload))
                broker.kill(signal.SIGKILL)
        finally:
            broker.kill(signal.SIGKILL)
        assert round_no >= 0
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            got = [m.payload for m in pull_all(c, "work")]
    finally:
        broker.stop()
    assert confirmed <= set(got), f"lost {len(confirmed - set(got))} confirmed messages"
    assert set(got) <= sent
    assert len(got) == len(set(got)), "a message came back twice"
    assert got == sorted(got), "the queue's order changed"


def segments(broker: BrokerProcess) -> list[Path]:
    assert broker.data_dir is not None
    return sorted(broker.data_dir.glob("*.seg"))


def test_a_torn_tail_is_truncated_and_said(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            ok(c, "CREATE q queue durable")
            for i in range(10):
                ok(c, f"PUBLISH q :message-{i}")
    finally:
        broker.kill(signal.SIGKILL)
    last = segments(broker)[-1]
    size = last.stat().st_size
    with last.open("ab") as f:  # half of a record: a write cut by a crash
        f.write(b"\x00\x00\x01\x00" + b"partial")
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            assert [m.payload for m in pull_all(c, "q")] == [b"message-%d" % i for i in range(10)]
    finally:
        broker.stop()
    assert any(b"torn" in line for line in broker.lines), broker.output()
    assert last.stat().st_size >= size


def test_a_corrupt_record_is_reported_and_the_rest_recovered(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            ok(c, "CREATE q queue durable")
            for i in range(10):
                ok(c, f"PUBLISH q :message-{i:03d}-" + "x" * 40)
    finally:
        broker.stop()
    seg = segments(broker)[-1]
    data = bytearray(seg.read_bytes())
    where = data.find(b"message-004-")
    assert where > 0
    data[where + 3] ^= 0xFF  # a flipped byte inside one record's payload
    seg.write_bytes(bytes(data))
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            got = [m.payload[:11] for m in pull_all(c, "q")]
    finally:
        broker.stop()
    expected = [b"message-%03d" % i for i in range(10) if i != 4]
    assert got == expected
    report = [line for line in broker.lines if b"corrupt" in line]
    assert report, broker.output()
    assert seg.name.encode() in report[0]


def test_a_second_broker_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    first = start_broker(tmp_path)
    try:
        with first.connect() as c:
            ok(c, "CREATE jobs queue durable")
            ok(c, "PUBLISH jobs :kept")
        # the second exits at start-up (status 1), saying who holds the directory
        with pytest.raises(RuntimeError, match=r"exited \(1\)") as refused:
            start_broker(tmp_path)
        assert f"in use by another broker (process {first.process.pid})" in str(refused.value)
        with first.connect() as c:  # the first goes on, its log untouched
            ok(c, "PUBLISH jobs :also kept")
            assert [m.payload for m in pull_all(c, "jobs")] == [b"kept", b"also kept"]
    finally:
        first.kill(signal.SIGKILL)
    again = start_broker(tmp_path)  # a killed broker holds nothing: the kernel's lock
    try:
        with again.connect() as c:
            assert listing(c) == {b"jobs"}
    finally:
        again.stop()
