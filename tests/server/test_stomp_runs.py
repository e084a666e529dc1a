"""SENDs with one head in one read are published as a run (``publish_many``), and do
exactly what they do one by one: the same frames to every client, the same ERROR at
the same place, the same messages in the same queues, the same counters.

Each scenario is played twice on fresh brokers: every frame in a read of its own (no
runs), then all its frames in one read (runs wherever heads repeat), and everything a
client or the broker's counters can see is compared.
"""

from __future__ import annotations

from typing import Any

import pytest

from mbroker import errors
from mbroker.server.stomp_commands import StompCommands
from tests.helpers.stomp import Setup


def send(dest: str, body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\n" for h in extra)
    return b"SEND\ndestination:%s\n%s\n%s\x00" % (dest.encode(), head.encode(), body)


def many(dest: str, n: int, *extra: str, first: int = 0) -> list[bytes]:
    return [send(dest, b"m%d" % (first + i), *extra) for i in range(n)]


SCENARIOS: dict[str, list[bytes]] = {
    "queue": many("/queue/q", 6),
    "topic": many("/topic/k", 5) + many("/topic/other", 3),
    "interleaved heads": [
        x for pair in zip(many("/queue/q", 4), many("/queue/r", 4, first=10)) for x in pair
    ],
    "receipts break runs": many("/queue/q", 3)
    + [send("/queue/q", b"r", "receipt:r1")]
    + many("/queue/q", 3, first=5),
    "transaction": [b"BEGIN\ntransaction:t\n\n\x00"]
    + many("/queue/q", 3, "transaction:t")
    + many("/queue/q", 2, first=9)
    + [b"COMMIT\ntransaction:t\nreceipt:c\n\n\x00"],
    "expiration": many("/queue/q", 4, "expiration:60000"),
    "no such exchange": many("/queue/q", 2) + many("/exchange/nope/k", 3) + many("/queue/q", 2),
    "full queue that rejects": many("/queue/full", 6) + many("/queue/q", 2),
    "fanout, one target full": many("/exchange/fan", 6),
    "heart-beats between": [x for m in many("/queue/q", 4) for x in (m, b"\n")],
    "no destination": [b"SEND\n\nx\x00", b"SEND\n\ny\x00"],
}


def play(frames: list[bytes], one_read: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    setup = Setup()
    native = setup.native()
    native.send(
        b"CREATE full queue max-length=2 overflow=reject\n"
        b"CREATE fan fanout\nCREATE a queue\nCREATE b queue max-length=3 overflow=reject\n"
        b"BIND a fan\nBIND b fan\n"
    )
    sub = setup.peer()
    sub.send("SUBSCRIBE", id="t", destination="/topic/k")
    sub.send("SUBSCRIBE", id="q", destination="/queue/q")
    pub = setup.peer()
    runs: list[int] = []
    real = StompCommands.send_run

    def counting(self: StompCommands, items: Any, start: int) -> int:
        n = real(self, items, start)
        runs.append(n)
        return n

    monkeypatch.setattr(StompCommands, "send_run", counting)
    if one_read:
        pub.raw(b"".join(frames))
    else:
        for f in frames:
            pub.raw(f)
    setup.clock.advance(0)
    b = setup.broker
    counts = {
        name: (b.queue(name).messages, b.queue(name).published)
        for name in ("q", "r", "full", "a", "b")
        if _exists(b, name)
    }
    seen = (
        [(f.command, f.header_map(), f.body) for f in pub.frames()],
        [(f.header("destination"), f.body) for f in sub.frames()],
        pub.closed,
        counts,
        b.published,
    )
    return seen, [r for r in runs if r > 1]


def _exists(broker: Any, name: str) -> bool:
    try:
        broker.queue(name)
    except errors.NotFound:
        return False
    return True


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_run_does_what_its_sends_do_one_by_one(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = SCENARIOS[name]
    apart, no_runs = play(frames, False, monkeypatch)
    together, runs = play(frames, True, monkeypatch)
    assert no_runs == []
    assert together == apart
    if name in ("queue", "topic"):
        assert runs  # (these do make runs)


def test_a_refusal_in_a_run_stops_it_there() -> None:
    setup = Setup()
    native = setup.native()
    native.send(b"CREATE full queue max-length=2 overflow=reject\n")
    pub = setup.peer()
    pub.raw(b"".join(many("/queue/full", 5)))
    (err,) = pub.frames()
    assert err.command == "ERROR" and "full" in (err.header("message") or "")
    assert pub.closed
    q = setup.broker.queue("full")
    assert (q.messages, q.published) == (2, 2)
    assert setup.broker.published == 3  # (2 taken, 1 refused: the rest never published)


def test_runs_are_one_publish_many_each() -> None:
    setup = Setup()
    calls: list[int] = []
    broker = setup.broker
    real = broker.publish_many

    def counting(name: str, key: str, payloads: list[bytes], *a: Any, **kw: Any) -> Any:
        calls.append(len(payloads))
        return real(name, key, payloads, *a, **kw)

    broker.publish_many = counting
    pub = setup.peer()
    pub.raw(send("/queue/q", b"first") + send("/queue/r", b"first"))  # (makes the queues)
    pub.raw(b"".join(many("/queue/q", 400)) + b"".join(many("/queue/r", 3)))
    assert calls == [400, 3]
    assert broker.queue("q").messages == 401 and broker.queue("r").messages == 4
    assert pub.frames() == [] and not pub.closed
