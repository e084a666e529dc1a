"""The STOMP listener (mbroker.server.stomp) over StringTransport with a task.Clock.

Each test drives a StompProtocol with the bytes a client would send and reads back the
frames it wrote, decoded by a client-side StompDecoder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from mbroker.server.stomp import StompProtocol
from mbroker.server.stomp_destinations import Destination, message_destination, parse_destination
from mbroker.wire.frames import QueueOptions
from mbroker.wire.stomp import (
    HEARTBEAT,
    SERVER_COMMANDS,
    Frame,
    StompDecoder,
    StompError,
    encode,
)
from tests.helpers.auth import cheap_hash, write_users
from tests.helpers.stomp import Setup


@pytest.fixture
def setup() -> Setup:
    return Setup()


def bodies(frames: list[Frame]) -> list[bytes]:
    assert all(f.command == "MESSAGE" for f in frames), frames
    return [f.body for f in frames]


# ------------------------------------------------------------------ CONNECT


@pytest.mark.parametrize(
    ("accept", "agreed"),
    [("1.0,1.1,1.2", "1.2"), ("1.1,1.0", "1.1"), ("1.0", "1.0"), ("1.2,2.0", "1.2")],
)
def test_connect_negotiates_the_highest_common_version(
    setup: Setup, accept: str, agreed: str
) -> None:
    p = setup.peer(connect=False)
    p.send("CONNECT", accept_version=accept, host="/")
    frame = p.one("CONNECTED")
    assert frame.header("version") == agreed
    assert frame.header("heart-beat") == "1000,1000"
    assert (frame.header("server") or "").startswith("mbroker/")
    assert p.proto.decoder.version == agreed


def test_connect_without_accept_version_is_stomp_1_0_and_stomp_frame_works(setup: Setup) -> None:
    p = setup.peer(connect=False)
    p.send("CONNECT")
    assert p.one("CONNECTED").header("version") == "1.0"
    q = setup.peer(connect=False)
    q.send("STOMP", accept_version="1.1", host="/")
    assert q.one("CONNECTED").header("version") == "1.1"


def test_no_common_version_is_an_error_with_the_supported_ones(setup: Setup) -> None:
    p = setup.peer(connect=False)
    p.send("CONNECT", accept_version="2.0,3.1", host="/")
    err = p.one("ERROR")
    assert err.header("version") == "1.0,1.1,1.2"
    assert "supported versions" in (err.header("message") or "")
    assert p.closed


def test_a_frame_before_connect_is_an_error_and_closes(setup: Setup) -> None:
    p = setup.peer(connect=False)
    p.send("SEND", b"x", destination="/queue/a", receipt="r1")
    err = p.one("ERROR")
    assert err.header("message") == "SEND before CONNECT"
    assert err.header("receipt-id") == "r1"
    assert p.closed
    with pytest.raises(Exception):  # noqa: B017 (nothing was made)
        setup.broker.get("a")


def test_a_second_connect_is_an_error(setup: Setup) -> None:
    p = setup.peer()
    p.send("CONNECT", accept_version="1.2")
    assert p.one("ERROR").header("message") == "already connected"
    assert p.closed


def test_no_connect_in_time_closes(setup: Setup) -> None:
    p = setup.peer(connect=False)
    setup.clock.advance(setup.config.auth_timeout + 0.1)
    assert "no CONNECT within" in (p.one("ERROR").header("message") or "")
    assert p.closed


def test_bytes_before_connect_are_bounded() -> None:
    s = Setup(pre_auth_max_bytes=100)
    p = s.peer(connect=False)
    p.raw(b"SEND\ndestination:/queue/a\n\n" + b"x" * 200)
    assert "bytes before CONNECT" in (p.one("ERROR").header("message") or "")
    assert p.closed


def test_a_bad_heart_beat_header_is_an_error(setup: Setup) -> None:
    p = setup.peer(connect=False)
    p.send("CONNECT", accept_version="1.2", heart_beat="soon")
    assert "heart-beat" in (p.one("ERROR").header("message") or "")
    assert p.closed


# --------------------------------------------------------------- login


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stomp-auth") / "users"
    return write_users(
        path,
        f"alice:{cheap_hash('s3cret')}:alice.*:alice.*|amq.topic:alice.*|amq.topic",
        f"admin:{cheap_hash('root')}:*:*:*",
    )


def test_login_right_and_wrong(users_file: Path) -> None:
    s = Setup(users_file=str(users_file))
    p = s.peer(connect=False)
    p.send("CONNECT", accept_version="1.2", login="alice", passcode="wrong")
    assert p.frames() == []  # answered only after the fail delay
    s.clock.advance(s.config.auth_fail_delay)
    assert p.one("ERROR").header("message") == "login failed: wrong login or passcode"
    assert p.closed
    q = s.peer(connect=False)
    q.send("CONNECT", accept_version="1.2", login="alice", passcode="s3cret")
    assert q.one("CONNECTED").header("version") == "1.2"
    assert q.proto.user is not None and q.proto.user.name == "alice"


def test_login_is_required_with_a_users_file(users_file: Path) -> None:
    s = Setup(users_file=str(users_file))
    p = s.peer(connect=False)
    p.send("CONNECT", accept_version="1.2")
    assert p.one("ERROR").header("message") == "login and passcode are required"


def test_frames_pipelined_behind_connect_wait_for_the_login(users_file: Path) -> None:
    s = Setup(users_file=str(users_file))
    p = s.peer(connect=False)
    connect = Frame(
        "CONNECT", (("accept-version", "1.2"), ("login", "admin"), ("passcode", "root"))
    )
    send = Frame("SEND", (("destination", "/queue/jobs"), ("receipt", "r")), b"hi")
    p.raw(encode(connect) + encode(send))
    assert [f.command for f in p.frames()] == ["CONNECTED", "RECEIPT"]
    assert s.messages("jobs") == 1


def test_permissions_apply(users_file: Path) -> None:
    s = Setup(users_file=str(users_file))
    p = s.peer(connect=False)
    p.send("CONNECT", accept_version="1.2", login="alice", passcode="s3cret")
    p.one("CONNECTED")
    p.send("SEND", b"1", destination="/queue/alice.q", receipt="ok")
    assert p.one("RECEIPT").header("receipt-id") == "ok"
    p.send("SUBSCRIBE", id="t", destination="/topic/news.#", receipt="sub")
    assert p.one("RECEIPT").header("receipt-id") == "sub"
    p.send("SEND", b"2", destination="/queue/bob.q", receipt="no")
    err = p.one("ERROR")
    assert err.header("message") == "FORBIDDEN alice may not write to bob.q"
    assert err.header("receipt-id") == "no"
    assert p.closed


def test_read_permission_is_checked_on_subscribe(users_file: Path) -> None:
    s = Setup(users_file=str(users_file))
    s.broker.create(None, "jobs", "queue", QueueOptions())
    p = s.peer(connect=False)
    p.send("CONNECT", accept_version="1.2", login="alice", passcode="s3cret")
    p.one("CONNECTED")
    p.send("SUBSCRIBE", id="0", destination="/amq/queue/jobs")
    assert p.one("ERROR").header("message") == "FORBIDDEN alice may not read from jobs"


# ------------------------------------------------------------ SEND, SUBSCRIBE


def test_send_makes_a_durable_queue_and_subscribe_gets_it(setup: Setup) -> None:
    p = setup.peer()
    p.send("SEND", b"hello", destination="/queue/work", receipt="r1")
    assert p.one("RECEIPT").header("receipt-id") == "r1"
    assert setup.broker.queue("work").durable
    assert setup.messages("work") == 1
    p.send("SUBSCRIBE", id="s", destination="/queue/work", receipt="r2")
    first, msg = p.frames()
    assert first.command == "RECEIPT"  # the receipt comes before any MESSAGE
    assert msg.command == "MESSAGE"
    assert msg.body == b"hello"
    assert msg.header("subscription") == "s"
    assert msg.header("destination") == "/queue/work"
    assert msg.header("message-id")
    assert msg.header("redelivered") is None
    assert setup.messages("work") == 0 and setup.unacked("work") == 0  # ack:auto


def test_binary_bodies_with_nul_bytes(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/bin")
    body = bytes(range(256)) * 3
    p.send("SEND", body, destination="/queue/bin")
    assert bodies(p.frames()) == [body]


def test_messages_go_one_per_send_in_order(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q")
    for i in range(5):
        p.send("SEND", b"%d" % i, destination="/queue/q")
    assert bodies(p.frames()) == [b"0", b"1", b"2", b"3", b"4"]


def test_topic_exchange_and_amq_queue_destinations(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="t", destination="/topic/stocks.*")
    p.send("SUBSCRIBE", id="f", destination="/exchange/amq.fanout")
    p.send("SUBSCRIBE", id="d", destination="/exchange/amq.direct/red")
    p.send("SEND", b"a", destination="/topic/stocks.ibm")
    p.send("SEND", b"b", destination="/topic/bonds.x")
    p.send("SEND", b"c", destination="/exchange/amq.fanout/any")
    p.send("SEND", b"d", destination="/exchange/amq.direct/red")
    p.send("SEND", b"e", destination="/exchange/amq.direct/blue")
    got = [(f.header("subscription"), f.header("destination"), f.body) for f in p.frames()]
    assert got == [
        ("t", "/topic/stocks.ibm", b"a"),
        ("f", "/exchange/amq.fanout/any", b"c"),
        ("d", "/exchange/amq.direct/red", b"d"),
    ]
    # /amq/queue/NAME never makes the queue
    p.send("SEND", b"x", destination="/amq/queue/nope")
    assert p.one("ERROR").header("message") == "NOT_FOUND nope"


def test_unknown_destinations_are_refused(setup: Setup) -> None:
    for text in ("queue/x", "/queue/", "/queue/a b", "/topic/a..b", "/exchange/x/a#"):
        p = setup.peer()
        p.send("SEND", b"", destination=text)
        err = p.one("ERROR")
        assert (err.header("message") or "").startswith("bad destination"), text
        assert p.closed


def test_an_exchange_that_does_not_exist(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="0", destination="/exchange/nope/k")
    assert p.one("ERROR").header("message") == "NOT_FOUND nope"


def test_subscribe_checks(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", destination="/queue/a")
    assert p.one("ERROR").header("message") == "SUBSCRIBE needs an id header"
    p = setup.peer()
    p.send("SUBSCRIBE", id="0", destination="/queue/a", ack="sometimes")
    assert "bad ack" in (p.one("ERROR").header("message") or "")
    p = setup.peer()
    p.send("SUBSCRIBE", id="0", destination="/queue/a")
    p.send("SUBSCRIBE", id="0", destination="/queue/b")
    assert "already in use" in (p.one("ERROR").header("message") or "")


def test_stomp_1_0_subscription_without_id_uses_the_destination(setup: Setup) -> None:
    p = setup.peer(version="1.0")
    p.send("SUBSCRIBE", destination="/queue/old")
    p.send("SEND", b"x", destination="/queue/old")
    msg = p.one("MESSAGE")
    assert msg.header("subscription") == "/queue/old"
    assert msg.header("ack") is None
    p.send("UNSUBSCRIBE", destination="/queue/old", receipt="u")
    assert p.one("RECEIPT").header("receipt-id") == "u"


def test_unsubscribe_stops_deliveries(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q")
    p.send("UNSUBSCRIBE", id="s", receipt="u")
    assert p.one("RECEIPT").header("receipt-id") == "u"
    p.send("SEND", b"x", destination="/queue/q")
    assert p.frames() == []
    assert setup.messages("q") == 1
    p.send("UNSUBSCRIBE", id="s")
    assert p.one("ERROR").header("message") == "no subscription 's'"


# ------------------------------------------------------------------ acks


def test_ack_client_is_cumulative(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q", ack="client")
    for i in range(4):
        p.send("SEND", b"%d" % i, destination="/queue/q")
    msgs = p.frames()
    assert bodies(msgs) == [b"0", b"1", b"2", b"3"]
    assert all(m.header("ack") == m.header("message-id") for m in msgs)
    assert setup.unacked("q") == 4
    p.send("ACK", id=msgs[2].header("ack") or "", receipt="a")
    assert p.one("RECEIPT").header("receipt-id") == "a"
    assert setup.unacked("q") == 1
    # acking an earlier one again is harmless: it was covered
    p.send("ACK", id=msgs[1].header("ack") or "")
    assert p.frames() == [] and not p.closed
    p.lose()
    assert setup.messages("q") == 1  # the unacked one went back


def test_ack_client_individual_and_nack(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q", ack="client-individual")
    for i in range(3):
        p.send("SEND", b"%d" % i, destination="/queue/q")
    m0, m1, m2 = p.frames()
    p.send("ACK", id=m1.header("ack") or "")
    assert setup.unacked("q") == 2
    p.send("NACK", id=m0.header("ack") or "")  # requeued: comes again, redelivered
    again = p.one("MESSAGE")
    assert again.body == b"0" and again.header("redelivered") == "true"
    p.send("NACK", id=m2.header("ack") or "", requeue="false")  # dropped
    assert setup.unacked("q") == 1 and setup.messages("q") == 0
    p.send("ACK", id=m1.header("ack") or "", receipt="twice")
    err = p.one("ERROR")
    assert "is not outstanding" in (err.header("message") or "")
    assert err.header("receipt-id") == "twice"


def test_ack_in_stomp_1_1_uses_message_id(setup: Setup) -> None:
    p = setup.peer(version="1.1")
    p.send("SUBSCRIBE", id="s", destination="/queue/q", ack="client-individual")
    p.send("SEND", b"x", destination="/queue/q")
    m = p.one("MESSAGE")
    assert m.header("ack") is None
    p.send("ACK", subscription="s", message_id=m.header("message-id") or "")
    assert setup.unacked("q") == 0 and not p.closed


def test_ack_errors(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q")
    p.send("SEND", b"x", destination="/queue/q")
    m = p.one("MESSAGE")
    p.send("ACK", id=m.header("message-id") or "")
    assert p.one("ERROR").header("message") == "ACK: subscription 's' is ack:auto"
    for bad in ("nonsense", "99-1"):
        p = setup.peer()
        p.send("ACK", id=bad)
        assert (p.one("ERROR").header("message") or "").startswith("ACK: ")


def test_prefetch_count_limits_unacked_deliveries(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q", ack="client", prefetch_count="2")
    for i in range(5):
        p.send("SEND", b"%d" % i, destination="/queue/q")
    msgs = p.frames()
    assert bodies(msgs) == [b"0", b"1"]
    p.send("ACK", id=msgs[1].header("ack") or "")
    more = p.frames()
    assert bodies(more) == [b"2", b"3"]


# ---------------------------------------------------------------- receipts, DISCONNECT


def test_disconnect_with_receipt(setup: Setup) -> None:
    p = setup.peer()
    p.send("DISCONNECT", receipt="bye")
    assert p.one("RECEIPT").header("receipt-id") == "bye"
    assert p.closed
    p.lose()
    assert setup.broker.connections == 0


def test_oversized_frame_is_an_error_and_closes() -> None:
    s = Setup(max_payload=100)
    p = s.peer()
    p.send("SEND", b"x" * 101, destination="/queue/q")
    assert p.one("ERROR").header("message")
    assert p.closed
    with pytest.raises(Exception):  # noqa: B017
        s.broker.get("q")


def test_garbage_is_an_error_and_closes(setup: Setup) -> None:
    p = setup.peer()
    p.raw(b"FROB\n\n\0")
    assert p.one("ERROR").header("message")
    assert p.closed


def test_a_server_command_from_the_client_is_refused(setup: Setup) -> None:
    p = setup.peer()
    p.raw(b"MESSAGE\n\n\0")
    assert p.one("ERROR").header("message")
    assert p.closed


# ------------------------------------------------------------------ heart-beats


def test_server_sends_heart_beats_when_idle() -> None:
    s = Setup(heartbeat=(1000, 0))
    p = s.peer(connect=False)
    p.send("CONNECT", accept_version="1.2", heart_beat="0,500")
    assert p.one("CONNECTED").header("heart-beat") == "1000,0"
    s.clock.advance(0.9)
    assert p.items() == []
    s.clock.advance(0.2)
    assert p.items() == [HEARTBEAT]
    # output counts as a heart-beat: none is written while frames go out
    for _ in range(5):
        s.clock.advance(0.5)
        p.send("SEND", b"x", destination="/queue/q", receipt="r")
        assert [getattr(i, "command", i) for i in p.items()] == ["RECEIPT"]
    s.clock.advance(1.0)
    assert p.items() == [HEARTBEAT]


def test_a_silent_client_is_closed_after_its_heart_beat_grace() -> None:
    s = Setup(heartbeat=(0, 1000))
    p = s.peer(connect=False)
    p.send("CONNECT", accept_version="1.2", heart_beat="500,0")
    p.one("CONNECTED")
    for _ in range(6):  # heart-beats keep it open
        s.clock.advance(1.5)
        p.raw(b"\n")
    assert not p.closed
    s.clock.advance(2.1)
    assert "no heart-beat" in (p.one("ERROR").header("message") or "")
    assert p.closed


def test_no_heart_beats_when_either_side_says_0() -> None:
    s = Setup(heartbeat=(1000, 1000))
    p = s.peer(connect=False)
    p.send("CONNECT", accept_version="1.2", heart_beat="0,0")
    p.one("CONNECTED")
    s.clock.advance(60)
    assert p.items() == [] and not p.closed
    assert s.clock.getDelayedCalls() == []  # no heart-beat timer at all


# ------------------------------------------------------------------ transactions


def test_transaction_holds_sends_until_commit(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q")
    p.send("BEGIN", transaction="t1", receipt="b")
    assert p.one("RECEIPT").header("receipt-id") == "b"
    p.send("SEND", b"1", destination="/queue/q", transaction="t1")
    p.send("SEND", b"2", destination="/queue/q", transaction="t1")
    assert p.frames() == []
    p.send("COMMIT", transaction="t1", receipt="c")
    got = p.frames()
    assert bodies(got[:2]) == [b"1", b"2"]
    assert got[2].command == "RECEIPT"


def test_abort_drops_and_acks_wait_for_commit(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q", ack="client-individual")
    p.send("BEGIN", transaction="t")
    p.send("SEND", b"never", destination="/queue/q", transaction="t")
    p.send("ABORT", transaction="t")
    assert p.frames() == [] and setup.messages("q") == 0
    p.send("SEND", b"x", destination="/queue/q")
    m = p.one("MESSAGE")
    p.send("BEGIN", transaction="t")
    p.send("ACK", id=m.header("ack") or "", transaction="t")
    assert setup.unacked("q") == 1
    p.send("COMMIT", transaction="t")
    assert setup.unacked("q") == 0
    p.send("COMMIT", transaction="t")
    assert p.one("ERROR").header("message") == "no transaction 't'"


def test_transactions_are_bounded() -> None:
    s = Setup(max_payload=10)
    p = s.peer()
    p.send("BEGIN", transaction="t")
    for _ in range(16):
        p.send("SEND", b"x" * 10, destination="/queue/q", transaction="t")
    assert not p.closed
    p.send("SEND", b"x", destination="/queue/q", transaction="t")
    assert "held in transactions" in (p.one("ERROR").header("message") or "")


# ------------------------------------------------------ temp queues, durable topics


def test_reply_to_temp_queue_makes_a_private_subscribed_queue(setup: Setup) -> None:
    p = setup.peer()
    p.send("SEND", b"ask", destination="/queue/requests", reply_to="/temp-queue/answers")
    temp = [o.name for o in setup.broker.list_objects() if o.name.startswith("amq.gen-")]
    assert len(temp) == 1
    setup.broker.publish(temp[0], "", b"answer")  # as a responder would
    setup.clock.advance(0)
    m = p.one("MESSAGE")
    assert m.body == b"answer"
    assert m.header("subscription") == "/temp-queue/answers"
    assert m.header("destination") == f"/reply-queue/{temp[0]}"
    p.send("SEND", b"self", destination="/temp-queue/answers")  # the same queue
    assert p.one("MESSAGE").body == b"self"
    p.lose()
    with pytest.raises(Exception):  # noqa: B017 (it went with the connection)
        setup.broker.get(temp[0])


def test_durable_topic_subscription_outlives_the_connection(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="audit", destination="/topic/log.#", durable="true")
    p.lose()
    q = setup.peer()
    q.send("SEND", b"kept", destination="/topic/log.x")
    assert setup.messages("stomp-subscription-audit") == 1
    q.send("SUBSCRIBE", id="audit", destination="/topic/log.#", persistent="true")
    assert q.one("MESSAGE").body == b"kept"
    q.send("UNSUBSCRIBE", id="audit", durable="true", receipt="gone")
    assert q.one("RECEIPT").header("receipt-id") == "gone"
    with pytest.raises(Exception):  # noqa: B017
        setup.broker.get("stomp-subscription-audit")


# ------------------------------------------------------------------ flow control


def test_a_congested_connection_gets_no_messages_until_it_drains(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q")
    assert p.transport.producer is p.proto  # registered as the transport's producer
    p.proto.pauseProducing()
    p.send("SEND", b"x", destination="/queue/q")
    assert p.frames() == [] and setup.messages("q") == 1
    p.proto.resumeProducing()
    assert bodies(p.frames()) == [b"x"]


def test_output_to_a_subscriber_is_written_by_the_end_of_the_turn(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q")
    setup.broker.publish("q", "", b"from elsewhere")  # (a native publish does this)
    assert p.transport.value() == b""
    setup.clock.advance(0)
    assert bodies(p.frames()) == [b"from elsewhere"]


# ------------------------------------------------------------------ destinations


def test_parse_destination() -> None:
    assert parse_destination("/queue/a.b") == Destination("queue", "a.b")
    assert parse_destination("/amq/queue/a") == Destination("amq-queue", "a")
    assert parse_destination("/topic/a.b") == Destination("topic", "amq.topic", "a.b")
    assert parse_destination("/topic/a.*", pattern=True) == Destination("topic", "amq.topic", "a.*")
    assert parse_destination("/exchange/x") == Destination("exchange", "x", None)
    assert parse_destination("/exchange/x/k") == Destination("exchange", "x", "k")
    assert parse_destination("/temp-queue/r") == Destination("temp-queue", "r")
    with pytest.raises(StompError):
        parse_destination("/topic/a.*")  # a pattern is only for SUBSCRIBE


def test_message_destination() -> None:
    assert message_destination("q", "", True) == "/queue/q"
    assert message_destination("amq.topic", "a.b", False) == "/topic/a.b"
    assert message_destination("x", "k", False) == "/exchange/x/k"
    assert message_destination("x", "", False) == "/exchange/x"


def test_stomp_option_is_repeatable() -> None:
    from mbroker.server.service import BrokerService
    from mbroker.server.tap import Options, makeService

    options = Options()
    options.parseOptions(["--memory", "--stomp", "tcp:0", "--stomp", "unix:/tmp/s.sock"])
    assert options["stomp"] == ["tcp:0", "unix:/tmp/s.sock"]
    service = makeService(options)
    assert isinstance(service, BrokerService)
    assert service.stomp_endpoints == ["tcp:0", "unix:/tmp/s.sock"]


def test_over_the_memory_mark_sends_wait_and_reading_stops() -> None:
    from mbroker.server.memwatch import MemoryWatch

    s = Setup()
    used = [10]
    s.factory.watch = MemoryWatch(s.clock, 100, measure=lambda: used[0])
    p = s.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/q")
    used[0] = 200
    s.factory.watch.check()
    p.raw(
        encode(Frame("SEND", (("destination", "/queue/q"), ("receipt", "1")), b"a"))
        + encode(Frame("SEND", (("destination", "/queue/q"), ("receipt", "2")), b"b"))
    )
    assert p.frames() == [] and s.messages("q") == 0
    assert p.transport.producerState == "paused"
    assert s.factory.watch.blocked_total == 1
    used[0] = 10
    s.factory.watch.check()
    assert (s.factory.watch.blocked_total, s.factory.watch.blocked_publishes) == (1, 2)
    s.clock.advance(0)
    got = [(f.command, f.body or f.header("receipt-id")) for f in p.frames()]
    assert sorted(got) == [("MESSAGE", b"a"), ("MESSAGE", b"b"), ("RECEIPT", "1"), ("RECEIPT", "2")]
    assert p.transport.producerState == "producing"


def test_a_deleted_queue_ends_its_subscriptions_with_an_error(setup: Setup) -> None:
    p = setup.peer()
    p.send("SUBSCRIBE", id="s", destination="/queue/gone")
    setup.broker.delete("gone")  # (as a native DELETE does)
    assert p.one("ERROR").header("message") == "subscription s ended: its queue was deleted"
    assert p.closed


def test_a_slow_topic_subscriber_is_disconnected_when_configured() -> None:
    s = Setup(slow_consumer_disconnect=True, private_max_length=3)
    p = s.peer()
    p.send("SUBSCRIBE", id="t", destination="/topic/#")
    p.proto.pauseProducing()
    for i in range(5):
        s.broker.publish("amq.topic", "k", b"%d" % i)
    s.clock.advance(0)
    assert "slow consumer" in (p.one("ERROR").header("message") or "")
    assert p.closed


def test_stomp_connections_count_toward_max_connections() -> None:
    s = Setup(max_connections=1)
    s.peer()
    refused = s.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 2))
    assert refused is not None and not isinstance(refused, StompProtocol)
    transport = StringTransport()
    refused.makeConnection(transport)
    frames = StompDecoder(commands=SERVER_COMMANDS).feed(transport.value())
    assert [f.header("message") for f in frames if isinstance(f, Frame)] == [
        "at most 1 connections"
    ]
    assert transport.disconnecting


def test_a_connect_with_a_large_pipelined_send_in_one_read_is_fine() -> None:
    s = Setup(pre_auth_max_bytes=100)
    p = s.peer(connect=False)
    connect = Frame("CONNECT", (("accept-version", "1.2"),))
    send = Frame("SEND", (("destination", "/queue/big"), ("receipt", "r")), b"x" * 5000)
    p.raw(encode(connect) + encode(send))
    assert [f.command for f in p.frames()] == ["CONNECTED", "RECEIPT"]
    assert s.messages("big") == 1


_PIECES = [
    b"CONNECT\naccept-version:1.2\n\n\0",
    b"SEND\ndestination:/queue/f\n\nx\0",
    b"SEND\ndestination:/topic/a.b\nreceipt:r\n\n\0",
    b"SUBSCRIBE\nid:1\ndestination:/queue/f\nack:client\n\n\0",
    b"ACK\nid:1-1\n\n\0",
    b"NACK\nid:9-9\n\n\0",
    b"BEGIN\ntransaction:t\n\n\0",
    b"COMMIT\ntransaction:t\n\n\0",
    b"UNSUBSCRIBE\nid:1\n\n\0",
    b"DISCONNECT\nreceipt:z\n\n\0",
    b"content-length:3\n",
    b"\n",
    b"\0",
    b":",
    b"\\",
    b"\xff",
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30), st.integers(1, 64))
def test_any_stream_is_answered_with_frames_and_never_crashes(
    pieces: list[bytes], cut: int
) -> None:
    s = Setup()
    p = s.peer(connect=False)
    data = b"".join(pieces)
    for i in range(0, len(data), cut):
        if p.closed:
            break
        p.raw(data[i : i + cut])
    s.clock.advance(0)
    items = p.items()
    assert not any(isinstance(i, StompError) for i in items)  # well-formed output
    errors = [i for i in items if isinstance(i, Frame) and i.command == "ERROR"]
    assert len(errors) <= 1
    if errors:
        assert p.closed
        assert "internal error" not in (errors[0].header("message") or "internal error")
    p.lose()
    assert s.broker.connections == 0


# ------------------------------------------------------------------ book-keeping


def test_cumulative_ack_ranges_cover_only_the_subscriptions_tags() -> None:
    from mbroker.server.stomp_state import Subscription

    sub = Subscription("s", 7, "client", "1.2", "q")
    assert sub.prefix == b"MESSAGE\nsubscription:s\n" and sub.mid == b"7-"
    assert sub.pending is not None
    sub.pending.extend([1, 2, 3, 5, 6, 9])  # (4, 7, 8 went to other subscriptions)
    assert sub.acked(6) == (((1, 3), (5, 6)), True)
    assert sub.acked(6) == ((), True)
    assert sub.acked(100) == (((9, 9),), True)
    single = Subscription("t", 8, "client-individual", "1.2", "q")
    assert single.acked(4) == (((4, 4),), False)


def test_subscription_id_is_escaped_per_version() -> None:
    from mbroker.server.stomp_state import Subscription

    assert Subscription("a:b", 1, "auto", "1.2", "q").prefix == b"MESSAGE\nsubscription:a\\cb\n"
    assert Subscription("a:b", 1, "auto", "1.0", "q").prefix == b"MESSAGE\nsubscription:a:b\n"


def test_transactions_book_keeping() -> None:
    from mbroker.errors import Limit
    from mbroker.server import stomp_state
    from mbroker.server.stomp_state import Transactions

    txs = Transactions(max_bytes=10)
    txs.begin("a")
    with pytest.raises(StompError):
        txs.begin("a")
    one = Frame("SEND", (), b"12345")
    txs.hold("a", one)
    txs.hold("a", one)
    with pytest.raises(Limit):
        txs.hold("a", Frame("SEND", (), b"x"))
    assert txs.end("a") == [one, one]
    txs.begin("b")
    txs.hold("b", one)  # the bytes of "a" were given back
    with pytest.raises(StompError):
        txs.end("a")
    for i in range(stomp_state.MAX_TRANSACTIONS - 1):
        txs.begin(f"t{i}")
    with pytest.raises(Limit):
        txs.begin("one-too-many")


def test_auth_required_without_a_users_file_lets_nobody_in() -> None:
    s = Setup(auth_required=True)
    p = s.peer(connect=False)
    p.send("CONNECT", accept_version="1.2", login="x", passcode="y")
    s.clock.advance(s.config.auth_fail_delay)
    assert p.one("ERROR").header("message") == "login failed: wrong login or passcode"
