"""The client's message properties (contract section 7): publish with headers, id, delay
and priority; the received message's ``headers``, ``id`` and ``priority``; the
``duplicate`` flag of a publish; ``create(dedup_window=)``; against the broker core in
memory (``mbroker.testing``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred

from mbroker import errors
from mbroker.client import Message, Published
from mbroker.testing import ClientPair, connected_pair
from mbroker.wire.frames import Create, Msg, QueueOptions
from mbroker.wire.replies import ReplyDecoder
from mbroker.wire.replydata import ok_published


@pytest.fixture
def pair() -> ClientPair:
    return connected_pair()


def failure_of(pair: ClientPair, d: Deferred[Any]) -> BaseException:
    pair.flush()
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures, "no failure"
    error: BaseException = failures[0].value
    return error


def test_a_retried_id_fires_with_duplicate(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("jobs", "queue", dedup_window=60_000))
    first = pair.successResultOf(c.publish("jobs", b"x", id="retry-1"))
    again = pair.successResultOf(c.publish("jobs", b"x", id="retry-1"))
    assert isinstance(first, Published) and isinstance(again, Published)
    assert (first, first.duplicate) == (1, False)
    assert (again, again.duplicate) == (1, True)
    assert len(pair.successResultOf(c.pull("jobs", max=10))) == 1


def test_headers_id_and_priority_reach_pull_and_subscribe(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    sent = pair.successResultOf(
        c.publish(
            "q",
            b"x",
            headers={"content-type": "text/plain", "raw": b"\x00 %\xff", "empty": ""},
            id="order-1",
            priority=7,
        )
    )
    assert sent == 1 and isinstance(sent, Published) and sent.duplicate is False
    [m] = pair.successResultOf(c.pull("q", ack="manual"))
    assert m.headers == {"content-type": b"text/plain", "raw": b"\x00 %\xff", "empty": b""}
    assert list(m.headers) == ["content-type", "raw", "empty"]  # published order
    assert (m.id, m.priority) == ("order-1", 7)
    pair.successResultOf(m.nack())
    got: list[Message] = []
    pair.successResultOf(c.subscribe("q", got.append, ack="auto"))
    pair.flush()
    [again] = got
    assert (again.headers, again.id, again.priority) == (m.headers, "order-1", 7)
    assert again.redelivered == 1


def test_a_message_without_properties_has_empty_ones(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    n = pair.successResultOf(c.publish("q", b"plain"))
    assert n == 1 and type(n) is int  # the hot path is unchanged
    [m] = pair.successResultOf(c.pull("q"))
    assert (m.headers, m.id, m.priority, m.attrs) == ({}, None, 0, ())


def test_bad_properties_are_refused_before_sending(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    bad: list[tuple[dict[str, Any], type[errors.BrokerError], str]] = [
        ({"headers": {"a b": "x"}}, errors.BadArgs, "bad header name"),
        ({"headers": {"a=b": "x"}}, errors.BadArgs, "bad header name"),
        ({"headers": {"é": "x"}}, errors.BadArgs, "bad header name"),
        ({"headers": {"x" * 129: "x"}}, errors.BadArgs, "bad header name"),
        ({"headers": {"n": 3}}, errors.BadArgs, "bytes or str"),
        ({"headers": {f"h{i}": "" for i in range(65)}}, errors.Limit, "more than 64"),
        ({"headers": {"big": b"\x00" * 3000}}, errors.Limit, "header text over 8192"),
        ({"id": "two words"}, errors.BadArgs, "id must be"),
        ({"id": ""}, errors.BadArgs, "id must be"),
        ({"priority": 10}, errors.BadArgs, "priority must be"),
        ({"priority": -1}, errors.BadArgs, "priority must be"),
        ({"delay": 31_536_000_001}, errors.BadArgs, "delay must be"),
    ]
    for kw, kind, text in bad:
        err = failure_of(pair, c.publish("q", b"x", **kw))
        assert isinstance(err, kind) and text in str(err), (kw, err)
    assert pair.successResultOf(c.stats("q"))["messages"] == 0
    # the limits themselves pass: 64 headers, and 8192 bytes of header text
    assert pair.successResultOf(c.publish("q", b"x", headers={f"h{i}": "" for i in range(64)}))
    at_limit = {"v": "a" * (8192 - len("h.v="))}
    assert pair.successResultOf(c.publish("q", b"x", headers=at_limit)) == 1


def test_delay_and_priority_are_sent_as_options(pair: ClientPair) -> None:
    written: list[bytes] = []
    real = pair.server.dataReceived

    def record(data: bytes) -> None:  # what the broker receives
        written.append(data)
        real(data)

    pair.server.dataReceived = record  # type: ignore[method-assign]
    pair.successResultOf(pair.client.create("q", "queue"))
    d = pair.client.publish("q", b"x", "k", ttl=5, delay=250, priority=2, headers={"a": "1"})
    pair.flush()
    assert b"PUBLISH q k ttl=5 delay=250 priority=2 h.a=1 1\r\nx\r\n" in b"".join(written)
    assert pair.successResultOf(d) == 1


def test_the_head_cache_does_not_mix_properties(pair: ClientPair) -> None:
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    for value in ("1", "2"):
        pair.successResultOf(c.publish("q", b"x", headers={"n": value}))
    pair.successResultOf(c.publish("q", b"x"))
    got = pair.successResultOf(c.pull("q", 3))
    assert [m.headers for m in got] == [{"n": b"1"}, {"n": b"2"}, {}]


def test_duplicate_replies_are_read() -> None:
    assert ok_published("OK 3 duplicate", None) == 3
    assert ok_published("OK 3 duplicate", None).duplicate is True
    assert ok_published("OK 0", None).duplicate is False
    assert repr(Published(2, True)) == "Published(2, duplicate=True)"
    assert f"{Published(2, True)} {Published(3)}" == "2 3"
    with pytest.raises(ValueError):
        ok_published("OK 3 twice", None)


def test_create_passes_dedup_window_through(pair: ClientPair) -> None:
    from mbroker.wire.encode import encode_command

    line = encode_command(Create("q", "queue", QueueOptions(dedup_window=60000)))
    assert line == b"CREATE q queue dedup-window=60000\r\n"
    ex = encode_command(Create("x", "direct", QueueOptions(durable=True, dedup_window=0)))
    assert ex == b"CREATE x direct durable dedup-window=0\r\n"
    c = pair.client
    assert pair.successResultOf(c.create("x", "direct", dedup_window=0)) is True
    assert pair.successResultOf(c.create("q", "queue", dedup_window=1000, expires=5000)) is True
    err = failure_of(pair, c.create("y", "fanout", dedup_window=1, max_length=3))
    assert isinstance(err, errors.BadArgs)


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(
        st.text("abcXYZ019_-.", min_size=1, max_size=20),
        st.binary(max_size=40),
        max_size=6,
    )
)
def test_any_header_values_round_trip(headers: dict[str, bytes]) -> None:
    pair = connected_pair()
    c = pair.client
    pair.successResultOf(c.create("q", "queue"))
    pair.successResultOf(c.publish("q", b"x", headers=headers))
    [m] = pair.successResultOf(c.pull("q"))
    assert m.headers == headers


def test_a_msg_line_with_properties_decodes() -> None:
    [frame] = ReplyDecoder().feed(
        b"MSG 1 2 q - redelivered=1 id=a%20b priority=3 h.x=%41%42 zz=1 1\r\nx\r\n"
    )
    assert isinstance(frame, Msg)
    m = Message(frame, None, False)
    assert (m.headers, m.id, m.priority, m.redelivered) == ({"x": b"AB"}, "a%20b", 3, 1)
