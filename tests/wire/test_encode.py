"""The hot-path encoders of mbroker.wire.encode agree with the general ones, byte for byte.

The MSG frames a delivery, a run or a PULL writes, and the PUBLISH a client writes, are
each built by a fast encoder; every one must be what ``encode_frame`` or
``encode_command`` make of the same frame, and decode back to it.
"""

from __future__ import annotations

import pytest

from mbroker.errors import BadArgs
from mbroker.wire import CommandDecoder, ReplyDecoder, encode_command, encode_frame, route_bytes
from mbroker.wire.encode import (
    JOIN_MAX,
    PUBLISH_JOIN_BELOW,
    append_deliveries,
    append_publish,
    append_run,
    encode_pulled,
    publish_head,
)
from mbroker.wire.frames import Msg, Ok, Props, Publish, PublishRun

SMALL, LARGE = b"x" * 10, b"y" * (JOIN_MAX + 1)


class Queued:
    """What the broker hands the encoders: a queued message's parts."""

    def __init__(
        self, payload: bytes, deliveries: int = 1, reason: str | None = None, key: str = "k"
    ) -> None:
        self.payload = payload
        self.route = route_bytes("ex", key)
        self.deliveries = deliveries
        self.reason = reason
        self.props: Props | None = None


def as_frame(sid: int, tag: int, m: Queued, key: str = "k") -> Msg:
    return Msg(sid, tag, "ex", key, m.payload, m.deliveries - 1, m.reason)


MESSAGES = [
    Queued(SMALL),
    Queued(LARGE),
    Queued(b""),
    Queued(SMALL, deliveries=3),
    Queued(LARGE, deliveries=2, reason="expired"),
    Queued(SMALL, reason="rejected"),
]


def test_deliveries_are_the_frames_encode_frame_makes() -> None:
    out: list[bytes] = []
    size = append_deliveries(out, 7, 40, MESSAGES)
    assert size == sum(len(m.payload) for m in MESSAGES)
    expected = [as_frame(7, 40 + i, m) for i, m in enumerate(MESSAGES)]
    assert b"".join(out) == b"".join(encode_frame(f) for f in expected)
    assert ReplyDecoder().feed(b"".join(out)) == expected


def test_a_large_payload_is_its_own_piece() -> None:
    out: list[bytes] = []
    append_deliveries(out, 1, 1, [Queued(LARGE)])
    assert LARGE in out
    out = []
    append_deliveries(out, 1, 1, [Queued(SMALL)])
    assert out == [encode_frame(as_frame(1, 1, Queued(SMALL)))]


def test_a_run_is_the_frames_encode_frame_makes() -> None:
    payloads = [SMALL, LARGE, b""]
    out: list[bytes] = []
    assert append_run(out, 3, 9, route_bytes("ex", ""), payloads) == len(SMALL) + len(LARGE)
    expected = [Msg(3, 9 + i, "ex", "", p) for i, p in enumerate(payloads)]
    assert b"".join(out) == b"".join(encode_frame(f) for f in expected)
    assert LARGE in out


def test_a_pull_reply_is_msg_0_frames_then_the_count() -> None:
    pulled = [(5, MESSAGES[0]), (9, MESSAGES[4])]
    data = encode_pulled(pulled)
    frames = [as_frame(0, tag, m) for tag, m in pulled]
    assert data == b"".join(encode_frame(f) for f in frames) + b"+OK 2\r\n"
    assert encode_pulled([]) == b"+OK 0\r\n"
    assert ReplyDecoder().feed(data) == [*frames, Ok("OK 2")]


@pytest.mark.parametrize(
    "name, key, ttl", [("q", "", None), ("news", "sport.goal", None), ("q", "a", 0), ("q", "", 5)]
)
def test_publish_is_what_encode_command_makes(name: str, key: str, ttl: int | None) -> None:
    head = publish_head(name, key, ttl)
    for payload in (SMALL, b"y" * PUBLISH_JOIN_BELOW, b""):
        out: list[bytes] = []
        append_publish(out, head, payload)
        frame = Publish(name, key, payload, ttl)
        assert b"".join(out) == encode_command(frame)
        assert CommandDecoder().feed(b"".join(out)) == [frame]
    assert (
        encode_command(PublishRun(name, key, [SMALL, SMALL], ttl))
        == encode_command(Publish(name, key, SMALL, ttl)) * 2
    )


@pytest.mark.parametrize("name, key", [("", ""), ("a b", ""), ("q", "a..b"), ("q", "x\r\n")])
def test_publish_head_refuses_what_the_broker_would(name: str, key: str) -> None:
    with pytest.raises(BadArgs):
        publish_head(name, key)


def test_a_pushed_ping_round_trips_and_is_no_help_line() -> None:
    from mbroker.wire import frames
    from mbroker.wire.encode import PING_LINE, encode_frame
    from mbroker.wire.replies import ReplyDecoder

    assert encode_frame(frames.PingPush()) == PING_LINE == b"PING\r\n"
    decoder = ReplyDecoder()
    got = decoder.feed(b"PING\r\nHEARTBEAT asks the server\r\n+OK\r\n")
    assert got == [
        frames.PingPush(),
        frames.HelpLine("HEARTBEAT", "asks the server"),
        frames.Ok("OK"),
    ]


def test_heartbeat_command_encodes_and_decodes() -> None:
    from mbroker.wire import frames
    from mbroker.wire.commands import CommandDecoder
    from mbroker.wire.encode import encode_command

    assert encode_command(frames.Heartbeat(30000)) == b"HEARTBEAT 30000\r\n"
    assert CommandDecoder().feed(b"heartbeat 0\r\nHEARTBEAT 3600000\r\n") == [
        frames.Heartbeat(0),
        frames.Heartbeat(3600000),
    ]
