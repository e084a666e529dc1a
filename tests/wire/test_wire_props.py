"""Hypothesis properties of mbroker.wire: round trips both ways, and fuzzing."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mbroker.errors import BadFrame, BrokerError
from mbroker.wire import CommandDecoder, ReplyDecoder, encode_command, encode_frame, frames, grammar
from mbroker.wire.frames import (
    Ack,
    Auth,
    Bind,
    Cancel,
    Create,
    Delete,
    Error,
    ExchangeInfo,
    Hello,
    Help,
    HelpLine,
    Msg,
    Nack,
    Ok,
    Ping,
    Pong,
    Publish,
    Pull,
    Purge,
    QueueInfo,
    QueueOptions,
    Quit,
    Stat,
    Stats,
    Subscribe,
    Touch,
    Unbind,
    Unsubscribe,
)

PROPS = settings(max_examples=200, deadline=None)
WS = " \t\n\r"  # what a token can never hold (VT, FF, NUL … are token bytes)
ODD = [b"\x0b", b"\x0c", b"\r", b"\x00", b"\x1c", b"\x85", b"\xa0", b"\xff"]
VERBS = [verb.decode() for verb in grammar.SPECS]

word = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)
names = st.text(string.ascii_letters + string.digits + "_-.", min_size=1, max_size=40).filter(
    lambda s: not s.startswith("mbroker.")
)
keys = st.lists(word, max_size=5).map(".".join).filter(lambda k: k != "-")
patterns = (
    st.lists(word | st.sampled_from(["*", "#"]), min_size=1, max_size=5)
    .map(".".join)
    .filter(lambda k: k != "-")
)
counts = st.integers(0, 10**18 - 1)
positive = st.integers(1, 10**18 - 1)
maybe = st.none().__or__
tags = st.lists(
    st.tuples(positive, positive).map(lambda t: (min(t), max(t))), min_size=1, max_size=20
).map(tuple)
# one token of any text but white space (what AUTH, MSG sources, HELLO versions carry)
token = st.text(st.characters(codec="utf-8", exclude_characters=WS), min_size=1)
# human text: anything on one line that does not start with white space
line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n")).filter(
    lambda s: not s[:1] or s[:1] not in WS
)


@st.composite
def ack_modes(draw: Any) -> tuple[bool, int | None]:
    manual = draw(st.booleans())
    return manual, draw(maybe(positive)) if manual else None


queue_options = st.builds(
    QueueOptions,
    durable=st.booleans(),
    max_length=maybe(counts),
    max_bytes=maybe(counts),
    overflow=st.sampled_from(["drop-head", "reject"]),
    ttl=maybe(counts),
    dead_letter=maybe(names),
    max_deliver=maybe(positive),
    exclusive=st.booleans(),
)
commands: st.SearchStrategy[Any] = st.one_of(
    st.builds(Create, names, st.just("queue"), queue_options),
    st.builds(
        Create,
        names,
        st.sampled_from(["direct", "fanout", "topic"]),
        st.builds(QueueOptions, durable=st.booleans()),
    ),
    st.builds(Delete, names, st.booleans(), st.booleans()),
    st.builds(Bind, names, names, st.just("") | patterns),
    st.builds(Unbind, names, names, st.just("") | patterns),
    st.builds(Publish, names, keys, st.binary(max_size=300), maybe(counts)),
    st.builds(
        lambda n, p, f, a: Subscribe(n, p, f, *a),
        names,
        maybe(patterns),
        maybe(counts),
        ack_modes(),
    ),
    st.builds(Unsubscribe, positive),
    st.builds(lambda q, m, w, a: Pull(q, m, w, *a), names, positive, maybe(counts), ack_modes()),
    st.builds(Ack, tags),
    st.builds(Nack, tags, st.booleans(), maybe(counts)),
    st.builds(Touch, tags),
    st.builds(Purge, names),
    st.builds(Ping),
    st.builds(Pong),
    st.builds(Quit),
    st.builds(Help, maybe(st.sampled_from(VERBS))),
    st.builds(frames.List),
    st.builds(Auth, token, token),
    st.builds(Stats, maybe(names)),
)

attr_key = st.text(string.ascii_lowercase + "-", min_size=1, max_size=10)
server_frames: st.SearchStrategy[Any] = st.one_of(
    st.builds(
        Hello,
        token,
        counts,
        st.booleans(),
        counts,
        st.lists(
            st.tuples(attr_key.filter(lambda k: k not in ("proto", "auth", "max-payload")), token),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(Ok, line_text),
    st.builds(Error, token.filter(lambda s: "\r" not in s), line_text),
    st.builds(
        Msg,
        counts,
        counts,
        token,
        keys | token.filter(lambda s: s != "-"),
        st.binary(max_size=300),
        counts,
        maybe(token),
        st.lists(
            st.tuples(attr_key.filter(lambda k: k not in ("redelivered", "reason")), token),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(Cancel, counts, token),
    st.builds(ExchangeInfo, token, token, st.booleans(), counts),
    st.builds(QueueInfo, token, counts, counts, counts, st.booleans()),
    st.builds(Stat, token, line_text),
    st.builds(HelpLine, st.sampled_from(VERBS), line_text.filter(bool)),
)


def feed_in_pieces(decoder: Any, data: bytes, cuts: list[int]) -> list[Any]:
    out: list[Any] = []
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += decoder.feed(data[start:cut])
        start = cut
    out += decoder.feed(data[start:])
    return out


@PROPS
@given(commands)
def test_command_round_trip(cmd: Any) -> None:
    assert CommandDecoder().feed(encode_command(cmd)) == [cmd]


@PROPS
@given(st.lists(commands, max_size=10), st.lists(st.integers(0, 10**6), max_size=6))
def test_pipelined_commands_round_trip_in_any_pieces(cmds: list[Any], cuts: list[int]) -> None:
    data = b"".join(encode_command(c) for c in cmds)
    assert one_by_one(feed_in_pieces(CommandDecoder(), data, cuts)) == cmds


def one_by_one(items: list[Any]) -> list[Any]:
    """``items`` with each PublishRun (consecutive PUBLISH lines with one head, which the
    decoder may give as one item) written out as the PUBLISH commands it stands for."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, frames.PublishRun):
            out += [frames.Publish(item.name, item.key, p, item.ttl) for p in item.payloads]
        else:
            out.append(item)
    return out


def test_a_run_of_identical_publishes_round_trips() -> None:
    """The case hypothesis found: three empty PUBLISH to one queue decode as a PUBLISH
    and a run of two, which stand for the same three commands."""
    cmds = [frames.Publish("q", "", b"", None)] * 3
    data = b"".join(encode_command(c) for c in cmds)
    items = CommandDecoder().feed(data)
    assert any(isinstance(i, frames.PublishRun) for i in items)
    assert one_by_one(items) == cmds


@PROPS
@given(server_frames)
def test_frame_round_trip(frame: Any) -> None:
    assert ReplyDecoder().feed(encode_frame(frame)) == [frame]


@PROPS
@given(st.lists(server_frames, max_size=10), st.lists(st.integers(0, 10**6), max_size=6))
def test_frames_round_trip_in_any_pieces(items: list[Any], cuts: list[int]) -> None:
    data = b"".join(encode_frame(f) for f in items)
    assert feed_in_pieces(ReplyDecoder(), data, cuts) == items


FRAGMENTS = [
    b"PUBLISH q 3\r\n",
    b"PUBLISH q :x y",
    b"PUBLISH bad! 2\n",
    b"publish q k ttl=1 0\r\n",
    b"abc",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b":",
    b"PING",
    b"CREATE q queue durable",
    b"SUBSCRIBE x #",
    b"ACK 1-3,5",
    b"9" * 20,
    b"x" * 40,
]
noise = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=12), max_size=30).map(b"".join)


@PROPS
@given(noise, st.lists(st.integers(0, 10**6), max_size=8))
def test_fuzz_command_decoder(data: bytes, cuts: list[int]) -> None:
    whole = CommandDecoder(max_line=32, max_payload=16)
    expected = whole.feed(data)
    d = CommandDecoder(max_line=32, max_payload=16)
    items = feed_in_pieces(d, data, cuts)
    assert items == expected
    assert d.closed == whole.closed
    fatal = [i for i, item in enumerate(items) if isinstance(item, BrokerError) and item.fatal]
    assert fatal == ([len(items) - 1] if d.closed else [])
    assert all(
        isinstance(item, BrokerError) or type(item).__module__ == "mbroker.wire.frames"
        for item in items
    )
    # Still in step: line ends finish any payload or partial line, then PING is a PING.
    tail = d.feed(b"\n" * 20 + b"PING\r\n")
    assert d.closed or tail[-1] == Ping()


@PROPS
@given(noise | st.binary(), st.lists(st.integers(0, 10**6), max_size=8))
def test_fuzz_reply_decoder(data: bytes, cuts: list[int]) -> None:
    d = ReplyDecoder(max_line=32, max_payload=16)
    try:
        items = feed_in_pieces(d, data, cuts)
    except BadFrame:
        assert d.closed
        assert d.feed(b"+OK\r\n") == []
    else:
        assert all(type(item).__module__ == "mbroker.wire.frames" for item in items)


line_commands = commands.filter(lambda c: not isinstance(c, (Publish, Auth)))
blanks = st.lists(st.sampled_from([" ", "\t"]), min_size=1, max_size=4).map("".join)


@PROPS
@given(line_commands, st.lists(blanks, min_size=1, max_size=40), blanks, blanks)
def test_any_runs_of_spaces_and_tabs_separate_tokens(
    cmd: Any, runs: list[str], before: str, after: str
) -> None:
    tokens = encode_command(cmd)[:-2].split(b" ")
    seps = [runs[i % len(runs)].encode() for i in range(len(tokens) - 1)]
    line = before.encode() + b"".join(t + s for t, s in zip(tokens, seps)) + tokens[-1]
    assert CommandDecoder().feed(line + after.encode() + b"\r\n") == [cmd]


@PROPS
@given(commands, st.integers(0, 10**6), st.sampled_from(ODD))
def test_no_other_byte_separates_tokens(cmd: Any, which: int, odd: bytes) -> None:
    """Any other byte in the place of a separator makes the command a refusal: never
    the command, nor another one (a payload is then read as lines: not a command either,
    unless it is one)."""
    data = encode_command(cmd)
    line, _, rest = data.partition(b"\r\n")
    spaces = [i for i, c in enumerate(line) if c == 32]
    if not spaces:
        return
    at = spaces[which % len(spaces)]
    items = CommandDecoder().feed(line[:at] + odd + line[at + 1 :] + b"\r\n" + rest)
    assert items and isinstance(items[0], BrokerError) and not items[0].fatal, items
    if not isinstance(cmd, Publish):
        assert len(items) == 1
