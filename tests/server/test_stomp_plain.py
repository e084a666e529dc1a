"""A plain SEND (a destination and a ``content-length``, nothing to answer) whose head
repeats the connection's last plain head is published without its headers being looked
at again (the decoder gives a repeated head the same header tuple), and does what it did
the first time: the same queue, made again if it was deleted, the same permission check,
the same memory alarm.  A head that asks for more is never remembered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mbroker.server.memwatch import MemoryWatch
from mbroker.server.stomp_commands import StompCommands
from tests.helpers.auth import cheap_hash, write_users
from tests.helpers.stomp import Peer, Setup


def send(dest: str, body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\n" for h in extra)
    return b"SEND\ndestination:%s\ncontent-length:%d\n%s\n%s\x00" % (
        dest.encode(),
        len(body),
        head.encode(),
        body,
    )


@pytest.fixture
def looked_at(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies of the SENDs whose headers were read (``_do_send``)."""
    seen: list[bytes] = []
    real = StompCommands._do_send

    def counting(self: StompCommands, f: Any, headers: Any = None, **kw: Any) -> None:
        seen.append(f.body)
        real(self, f, headers, **kw)

    monkeypatch.setattr(StompCommands, "_do_send", counting)
    return seen


def subscriber(setup: Setup, dest: str) -> Peer:
    sub = setup.peer()
    sub.send("SUBSCRIBE", id="s", destination=dest, receipt="r")
    sub.one("RECEIPT")
    return sub


def test_a_repeated_plain_head_is_published_without_looking_at_it(
    looked_at: list[bytes],
) -> None:
    setup = Setup()
    sub = subscriber(setup, "/queue/q")
    pub = setup.peer()
    for body in (b"a", b"b", b"c"):  # (one read each: no run)
        pub.raw(send("/queue/q", body))
    assert looked_at == [b"a"]
    got = sub.frames()
    assert [(f.command, f.header("destination"), f.body) for f in got] == [
        ("MESSAGE", "/queue/q", b) for b in (b"a", b"b", b"c")
    ]
    assert pub.frames() == [] and not pub.closed
    assert setup.broker.published == 3


def test_another_head_replaces_the_remembered_one(looked_at: list[bytes]) -> None:
    setup = Setup()
    pub = setup.peer()
    for dest, body in (
        ("/queue/q", b"1"),
        ("/queue/r", b"2"),
        ("/queue/r", b"3"),
        ("/queue/q", b"4"),
    ):
        pub.raw(send(dest, body))
    assert looked_at == [b"1", b"2", b"4"]
    assert (setup.messages("q"), setup.messages("r")) == (2, 2)


@pytest.mark.parametrize(
    "extra",
    [("receipt:x",), ("expiration:60000",), ("correlation-id:c",), ("reply-to:/queue/back",)],
)
def test_heads_that_ask_for_more_are_looked_at_every_time(
    extra: tuple[str, ...], looked_at: list[bytes]
) -> None:
    setup = Setup()
    sub = subscriber(setup, "/queue/q")
    pub = setup.peer()
    for body in (b"a", b"b"):
        pub.raw(send("/queue/q", body, *extra))
    assert looked_at == [b"a", b"b"]
    name, _, value = extra[0].partition(":")
    got = sub.frames()
    assert [f.body for f in got] == [b"a", b"b"]
    if name == "receipt":
        assert [f.header("receipt-id") for f in pub.frames()] == ["x", "x"]
    elif name != "expiration":  # (a header of the message's own: on every copy)
        assert [f.header(name) for f in got] == [value, value]


def test_sends_in_a_transaction_are_held_every_time() -> None:
    setup = Setup()
    pub = setup.peer()
    pub.raw(send("/queue/q", b"first"))  # (a plain head, remembered)
    pub.raw(b"BEGIN\ntransaction:t\n\n\x00")
    for body in (b"a", b"b"):
        pub.raw(send("/queue/q", body, "transaction:t"))
    assert setup.messages("q") == 1
    pub.raw(b"COMMIT\ntransaction:t\nreceipt:c\n\n\x00")
    assert pub.one("RECEIPT").header("receipt-id") == "c"
    assert setup.messages("q") == 3


def test_a_remembered_head_makes_its_queue_again_after_a_delete() -> None:
    setup = Setup()
    pub = setup.peer()
    pub.raw(send("/queue/q", b"a"))
    setup.broker.delete("q")
    pub.raw(send("/queue/q", b"b"))
    assert setup.messages("q") == 1
    assert pub.frames() == [] and not pub.closed


def test_a_remembered_head_on_a_missing_exchange_is_an_error() -> None:
    setup = Setup()
    native = setup.native()
    native.send(b"CREATE ex fanout\n")
    pub = setup.peer()
    pub.raw(send("/exchange/ex/k", b"a"))
    setup.broker.delete("ex")
    pub.raw(send("/exchange/ex/k", b"b"))
    err = pub.one("ERROR")
    assert "ex" in (err.header("message") or "")
    assert pub.closed


def test_a_remembered_head_waits_for_the_memory_alarm() -> None:
    setup = Setup()
    used = [10]
    setup.factory.watch = MemoryWatch(setup.clock, 100, measure=lambda: used[0])
    pub = setup.peer()
    pub.raw(send("/queue/q", b"a"))
    used[0] = 200
    setup.factory.watch.check()
    pub.raw(send("/queue/q", b"b"))
    assert setup.messages("q") == 1
    assert pub.transport.producerState == "paused"
    used[0] = 10
    setup.factory.watch.check()
    assert setup.messages("q") == 2


def test_a_forbidden_destination_is_never_remembered(tmp_path: Path) -> None:
    users = write_users(tmp_path / "users", f"alice:{cheap_hash('s3cret')}:alice.*:alice.*:")
    setup = Setup(users_file=str(users))
    pub = setup.peer(connect=False)
    pub.send("CONNECT", accept_version="1.2", login="alice", passcode="s3cret")
    pub.one("CONNECTED")
    pub.raw(send("/queue/alice.q", b"ok"))
    pub.raw(send("/queue/bob.q", b"no"))
    assert pub.one("ERROR").header("message") == "FORBIDDEN alice may not write to bob.q"
    assert setup.messages("alice.q") == 1


def test_a_send_with_properties_that_no_receipt_waits_for_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker hears ``unawaited`` after a SEND with headers of its own and no
    receipt (a cluster node then forgets Redis's verdicts on its copies, so that they
    reach no other reply); not when a receipt waits, nor for a SEND a COMMIT replays
    (the COMMIT's receipt waits for all of them), nor for a plain SEND."""
    setup = Setup()
    calls: list[int] = []
    monkeypatch.setattr(setup.broker, "unawaited", lambda: calls.append(1))
    pub = setup.peer()
    pub.raw(send("/queue/q", b"a", "x-h:1"))
    assert len(calls) == 1
    pub.raw(send("/queue/q", b"b", "x-h:1", "receipt:r"))
    assert pub.one("RECEIPT").header("receipt-id") == "r"
    pub.raw(b"BEGIN\ntransaction:t\n\n\x00")
    pub.raw(send("/queue/q", b"c", "x-h:1", "transaction:t"))
    pub.raw(b"COMMIT\ntransaction:t\nreceipt:c\n\n\x00")
    assert pub.one("RECEIPT").header("receipt-id") == "c"
    pub.raw(send("/queue/q", b"d"))
    assert len(calls) == 1
    assert setup.messages("q") == 4
