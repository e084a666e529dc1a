"""Damage on disk against a real ``twistd -n mbroker`` (PROTOCOL section 6): a
corrupt queue declaration loses none of the queue's messages."""

from __future__ import annotations

from pathlib import Path

from mbroker.core.records import QueueDeclared
from mbroker.store import codec
from mbroker.wire.frames import QueueOptions
from tests.helpers.broker import start_broker
from tests.helpers.lineclient import ok, pull_all


def test_a_corrupt_queue_declaration_keeps_its_queue_binding_and_messages(
    tmp_path: Path,
) -> None:
    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            ok(c, "CREATE orders topic durable")
            ok(c, "CREATE audit queue durable max-length=1000")
            ok(c, "BIND audit orders order.#")
            for i in range(200):
                assert ok(c, f"PUBLISH orders order.new :m{i}") == b"+OK 1"
    finally:
        broker.stop()
    [segment] = sorted((tmp_path / "data").glob("*.seg"))
    data = bytearray(segment.read_bytes())
    frame = codec.encode_record(QueueDeclared("audit", QueueOptions(durable=True, max_length=1000)))
    at = data.find(frame)
    assert at > 0
    data[at + codec.HEADER_SIZE + 3] ^= 0xFF  # a byte of the queue's name
    segment.write_bytes(bytes(data))

    broker = start_broker(tmp_path)
    try:
        with broker.connect() as c:
            msgs = pull_all(c, "audit")
            assert [m.payload for m in msgs] == [b"m%d" % i for i in range(200)]
            assert ok(c, "PUBLISH orders order.x :after") == b"+OK 1"  # the binding is back
            assert [m.payload for m in pull_all(c, "audit")] == [b"after"]
    finally:
        broker.stop()
    text = broker.output()
    assert f"corrupt record skipped at {segment.name}:{at}" in text, text
    assert (
        f"queue 'audit' lost its declaration (damage at {segment.name}:{at}" in text
        and "its 200 messages are kept in durable queue 'audit'" in text
    ), text
