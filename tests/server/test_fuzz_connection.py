"""Hypothesis fuzzing of whole connections: random command streams, valid and broken,
fed to a real ``BrokerProtocol`` in random pieces, with and without authentication.

Properties: the broker never fails (no ``-ERR INTERNAL``, no exception), what it
writes is well-formed protocol, every command gets exactly one status line until the
connection ends (QUIT or a fatal framing error), and the bytes written do not depend
on how the input was split.

The suite runs a few hundred examples; ``benchmarks/fuzz_codec.py --hypothesis``
runs the same checks for longer (``MBROKER_FUZZ_EXAMPLES`` sets the count here).
"""

from __future__ import annotations

import atexit
import os
import re
import tempfile
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mbroker import errors
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.errors import BrokerError
from mbroker.server.factory import BrokerFactory
from mbroker.wire import CommandDecoder, ReplyDecoder, frames
from tests.helpers.auth import cheap_hash

EXAMPLES = int(os.environ.get("MBROKER_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_LINE, MAX_PAYLOAD = 200, 64

# ------------------------------------------------------------------ strategies

NAMES = ["q", "x", "t", "d", "alice.q", "nosuch", "mbroker.sub.1.1", "n" * 255, "n" * 256]
name = st.sampled_from(NAMES)
key = st.sampled_from(["", "a", "a.b", "a.*", "#", "#.#.#", "-", "a..b", "k" * 256])
number = st.sampled_from(["0", "1", "2", "10", "-1", "x", "1e3", "0x10", "9" * 19, ""])
option = st.sampled_from(
    [
        "durable",
        "exclusive",
        "max-length",
        "max-bytes",
        "overflow",
        "ttl",
        "dead-letter",
        "max-deliver",
        "prefetch",
        "ack",
        "ack-timeout",
        "wait",
        "max",
        "requeue",
        "delay",
        "if-empty",
        "if-unused",
        "colour",
    ]
)
value = number | st.sampled_from(["auto", "manual", "reject", "drop-head", "q", "d"])
opt = st.one_of(option, st.tuples(option, value).map(lambda t: f"{t[0]}={t[1]}"))
verb = st.sampled_from(
    "CREATE DELETE BIND UNBIND SUBSCRIBE UNSUBSCRIBE PULL ACK NACK TOUCH PURGE PING LIST "
    "STATS AUTH MSG CANCEL HELLO FLY create ping".split()
)
kind = st.sampled_from(["", "queue", "direct", "fanout", "topic", "QUEUE", "pipe"])


@st.composite
def command_line(draw: st.DrawFn) -> bytes:
    words = [draw(verb)]
    words += draw(st.lists(name | key | number | kind, max_size=3))
    words += draw(st.lists(opt, max_size=3))
    return " ".join(w for w in words if w).encode() + draw(st.sampled_from([b"\r\n", b"\n"]))


@st.composite
def publish(draw: st.DrawFn) -> bytes:
    payload = draw(st.binary(max_size=80))
    size = len(payload) + draw(st.sampled_from([0, 0, 0, 0, -1, 1, 5]))
    head = b"PUBLISH " + draw(name).encode()
    if draw(st.booleans()):
        head += b" " + draw(key).encode()
    if draw(st.booleans()):
        return head + b" :" + payload.replace(b"\n", b"").replace(b"\r", b"") + b"\r\n"
    return head + b" %d\r\n" % max(size, 0) + payload + draw(st.sampled_from([b"\r\n", b"\n", b""]))


good = st.sampled_from(
    [
        b"CREATE q queue\r\n",
        b"CREATE q queue max-length=2 overflow=reject\r\n",
        b"CREATE d queue\r\n",
        b"CREATE x fanout\r\n",
        b"CREATE t topic\r\n",
        b"CREATE alice.q queue\r\n",
        b"BIND q x\r\n",
        b"BIND q t a.*\r\n",
        b"PUBLISH q :hello\r\n",
        b"PUBLISH x 3\r\nabc\r\n",
        b"PUBLISH t a.b :m\r\n",
        b"SUBSCRIBE q\r\n",
        b"SUBSCRIBE x\r\n",
        b"SUBSCRIBE q ack=manual prefetch=1\r\n",
        b"PULL q max=3\r\n",
        b"PULL q wait=50\r\n",
        b"ACK 1-100\r\n",
        b"NACK 1 requeue=0\r\n",
        b"UNSUBSCRIBE 1\r\n",
        b"PURGE q\r\n",
        b"DELETE q\r\n",
        b"DELETE x\r\n",
        b"LIST\r\n",
        b"STATS\r\n",
        b"STATS q\r\n",
        b"PING\r\n",
        b"AUTH alice s3cret\r\n",
        b"AUTH alice wrong\r\n",
        b"AUTH bob b0b\r\n",
    ]
)
garbage = st.binary(max_size=40) | st.sampled_from(
    [b"\r\n", b"\n", b"\r", b" \t", b"\x00", b"\xff\xfe", b":", b"9" * 30, b"x" * 250]
)
piece = st.one_of(good, good, good, command_line(), publish(), garbage, st.just(b"QUIT\r\n"))
scripts = st.lists(piece, max_size=25).map(b"".join)
cuts = st.lists(st.integers(0, 4000), max_size=6)

# ------------------------------------------------------------------ running


@cache
def users_file() -> str:
    fd, path = tempfile.mkstemp(prefix="mbroker-fuzz-users-")
    atexit.register(os.unlink, path)
    with os.fdopen(fd, "w") as f:
        f.write(f"alice:{cheap_hash('s3cret')}:alice.*|q|x|t|d:*:alice.*|q|t\n")
        f.write(f"bob:{cheap_hash('b0b')}:*:*:*\n")
    return path


def run(script: bytes, pieces: list[int], auth: bool) -> tuple[bytes, bool, Broker]:
    clock = Clock()
    config = Config(
        max_line=MAX_LINE,
        max_payload=MAX_PAYLOAD,
        users_file=users_file() if auth else None,
        max_subscriptions=3,
    )
    broker = Broker(clock, config)
    factory = BrokerFactory(broker, config, clock)
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    assert proto is not None
    transport = StringTransport()
    proto.makeConnection(transport)
    start = 0
    for cut in sorted({c for c in pieces if 0 < c < len(script)}):
        proto.dataReceived(script[start:cut])
        start = cut
    proto.dataReceived(script[start:])
    for _ in range(30):  # waiting PULLs, delayed AUTH answers, held backlogs
        clock.advance(0.1)
    out = transport.value()
    closed = transport.disconnecting
    proto.connectionLost(connectionDone)
    return out, closed, broker


_RSS = re.compile(rb"STAT memory_(peak_rss|rss) \d+")


def expected_statuses(script: bytes) -> int | None:
    """How many status lines the script must get, or None when that depends on more
    than the bytes (a QUIT or a fatal error ends the connection there)."""
    items = CommandDecoder(MAX_LINE, MAX_PAYLOAD).feed(script)
    n = 0
    for item in items:
        n += len(item.payloads) if isinstance(item, frames.PublishRun) else 1
        if isinstance(item, frames.Quit) or (isinstance(item, BrokerError) and item.fatal):
            return n
    return n


def check_connection(script: bytes, pieces: list[int], auth: bool) -> None:
    whole, closed, broker = run(script, [], auth)
    split, split_closed, _ = run(script, pieces, auth)
    assert _RSS.sub(b"", split) == _RSS.sub(b"", whole)
    assert split_closed == closed
    assert broker.connections == 0
    replies = ReplyDecoder(max_line=1 << 20, max_payload=1 << 20).feed(whole)
    assert isinstance(replies[0], frames.Hello) and replies[0].auth_required == auth
    statuses = [r for r in replies if isinstance(r, (frames.Ok, frames.Error))]
    assert not [s for s in statuses if isinstance(s, frames.Error) and s.code == "INTERNAL"]
    codes = {s.code for s in statuses if isinstance(s, frames.Error)}
    assert codes <= set(errors.ERRORS_BY_CODE)
    if auth and b"AUTH" not in script:
        assert codes <= {
            "NO_AUTH",
            "BAD_COMMAND",
            "BAD_ARGS",
            "BAD_FRAME",
            "TOO_BIG",
            "LINE_TOO_LONG",
        }
    assert len(statuses) == expected_statuses(script)


@FUZZ
@given(scripts, cuts)
def test_fuzz_an_open_connection(script: bytes, pieces: list[int]) -> None:
    check_connection(script, pieces, auth=False)


@FUZZ
@given(scripts, cuts)
def test_fuzz_a_connection_that_must_log_in(script: bytes, pieces: list[int]) -> None:
    check_connection(script, pieces, auth=True)


def test_fuzz_finds_what_it_should() -> None:
    """The checks are not vacuous: a script with every kind of piece passes them."""
    script = (
        b"AUTH alice s3cret\r\nCREATE q queue\r\nPUBLISH q 3\r\nabc\r\nPULL q wait=50\r\n"
        b"\xff\xfe\r\nMSG 1 1 q - 3\r\nSUBSCRIBE q\r\nPUBLISH q 2\r\nabc\r\n"
    )
    check_connection(script, [5, 17, 40], auth=True)
    whole, closed, _ = run(script, [], True)
    assert closed and whole.endswith(b"-ERR BAD_FRAME payload not followed by a line end\r\n")
