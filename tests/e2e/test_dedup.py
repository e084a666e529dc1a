"""Message ids and dedup windows (contract section 7) against a real ``twistd -n mbroker``:
a publisher that retries after a restart or a ``kill -9`` does not duplicate, and a
durable window ends at its wall-clock time whatever happened in between."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers.broker import start_broker
from tests.helpers.lineclient import LineClient, ok, pull_all


def stat(client: LineClient, name: str) -> dict[str, str]:
    data, status = client.request(f"STATS {name}")
    assert status == b"+OK", status
    pairs = [line.split()[1:] for line in data if isinstance(line, bytes)]
    return {k.decode(): v.decode() for k, v in pairs}


def test_ids_over_tcp_and_the_server_options(tmp_path: Path) -> None:
    broker = start_broker(tmp_path, "--dedup-window", "0", "--dedup-max-ids", "2", memory_only=True)
    try:
        with broker.connect() as c:
            ok(c, "CREATE off queue")
            ok(c, "CREATE on queue dedup-window=60000")
            ok(c, "CREATE ex fanout dedup-window=60000")
            ok(c, "BIND on ex")
            assert ok(c, "PUBLISH off id=a :1") == ok(c, "PUBLISH off id=a :1") == b"+OK 1"
            assert ok(c, "PUBLISH ex id=a :2") == b"+OK 1"
            assert ok(c, "PUBLISH on id=a :3") == b"+OK 1"  # its own ids, not ex's
            assert ok(c, "PUBLISH ex id=a :2") == b"+OK 1 duplicate"
            for i in "bcd":
                assert ok(c, f"PUBLISH on id={i} :x") == b"+OK 1"
            st = stat(c, "on")
            assert (st["dedup_ids"], st["dedup_forgotten"], st["messages"]) == ("2", "2", "5")
            _, status = c.request("CREATE x topic ttl=5")
            assert status.startswith(b"-ERR BAD_ARGS")
    finally:
        broker.stop()


def test_durable_ids_survive_a_graceful_restart(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            ok(c, "CREATE dq queue durable")
            ok(c, "CREATE dx fanout durable dedup-window=60000")
            ok(c, "CREATE tq queue")
            ok(c, "BIND dq dx")
            assert ok(c, "PUBLISH dq id=a :one") == b"+OK 1"
            assert ok(c, "PUBLISH dx id=b :two") == b"+OK 1"
            assert ok(c, "PUBLISH tq id=a :three") == b"+OK 1"
    finally:
        broker.stop()
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            assert ok(c, "CREATE dx fanout durable dedup-window=60000") == b"+OK exists"
            assert ok(c, "PUBLISH dq id=a :one") == b"+OK 1 duplicate"
            assert ok(c, "PUBLISH dx id=b :two") == b"+OK 1 duplicate"
            assert ok(c, "PUBLISH dq id=b :b") == b"+OK 1"  # ids are per name
            assert [m.payload for m in pull_all(c, "dq")] == [b"one", b"two", b"b"]
    finally:
        broker.stop()


def test_a_publisher_retrying_after_kill_9_does_not_duplicate(tmp_path: Path) -> None:
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            ok(c, "CREATE orders queue durable")
            ok(c, "CREATE events topic durable")
            ok(c, "BIND orders events order.#")
            # a pipelined batch, each with its id; the +OKs say it is stored
            batch = b"".join(b"PUBLISH orders id=o-%d :order %d\r\n" % (i, i) for i in range(50))
            c.send(batch + b"PUBLISH events order.new id=e-1 :event\r\n")
            replies = [c.read_reply()[1] for _ in range(51)]
            assert replies == [b"+OK 1"] * 51
        broker.kill()  # SIGKILL: no clean shutdown
    finally:
        broker.stop()
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            # the publisher did not know what got through: it sends everything again
            c.send(batch + b"PUBLISH events order.new id=e-1 :event\r\n")
            replies = [c.read_reply()[1] for _ in range(51)]
            assert replies == [b"+OK 1 duplicate"] * 51
            got = [m.payload for m in pull_all(c, "orders")]
            assert got == [b"order %d" % i for i in range(50)] + [b"event"]
            assert stat(c, "orders")["duplicates"] == "50"
    finally:
        broker.stop()


def test_a_durable_window_ends_at_its_wall_clock_time_across_a_restart(tmp_path: Path) -> None:
    window = 12.0
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            ok(c, f"CREATE q queue durable dedup-window={int(window * 1000)}")
            first = time.time()
            assert ok(c, "PUBLISH q id=a :x") == b"+OK 1"
    finally:
        broker.stop()
    # down for a while: a window counted again from the restart would end 4 s later
    while time.time() < first + 4.0:
        time.sleep(0.05)
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            assert ok(c, "PUBLISH q id=a :x") == b"+OK 1 duplicate"
            assert stat(c, "q")["dedup_ids"] == "1"
            deadline = first + window + 10.0
            while stat(c, "q")["dedup_ids"] != "0":  # (STATS looks; it remembers nothing)
                assert time.time() < deadline, "the id is still remembered"
                time.sleep(0.05)
            gone = time.time()
            assert first + window - 0.1 <= gone < first + window + 2.5
            assert ok(c, "PUBLISH q id=a :x") == b"+OK 1"
    finally:
        broker.stop()
