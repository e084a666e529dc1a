"""Connection limits in ``BrokerProtocol`` (idle time, memory high-water mark) and
their ``twistd mbroker`` options; over StringTransport with a Clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, formatEvent
from twisted.python import usage

from mbroker import config
from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.factory import BrokerFactory
from mbroker.server.memwatch import MemoryWatch
from mbroker.server.service import BrokerService, is_local
from mbroker.server.tap import Options, makeService
from tests.helpers.auth import cheap_hash
from tests.helpers.conn import Conn
from tests.helpers.logs import logged
from tests.helpers.state import now


def make(**options: object) -> tuple[Clock, Broker, BrokerFactory]:
    clock = Clock()
    cfg = Config(**options)  # type: ignore[arg-type]
    broker = Broker(clock, cfg)
    return clock, broker, BrokerFactory(broker, cfg, clock)


# ------------------------------------------------------------------ idle time


def test_an_idle_connection_is_closed() -> None:
    clock, _, f = make(idle_timeout=10.0)
    c = Conn(f)
    clock.advance(6)
    c.send(b"PING\r\n")  # activity moves the deadline
    assert c.lines() == [b"+PONG"]
    clock.advance(6)
    assert not c.transport.disconnecting
    clock.advance(4)
    assert c.lines() == [b"-ERR LIMIT idle for 10 s"]
    assert now(lambda: c.transport.disconnecting)
    c.close()
    assert not clock.getDelayedCalls()


def test_one_timer_per_connection_however_much_it_sends() -> None:
    clock, _, f = make(idle_timeout=10.0)
    c = Conn(f)
    for _ in range(100):
        c.send(b"PING\r\n")
        clock.advance(1)
    assert len(clock.getDelayedCalls()) == 1
    assert not c.transport.disconnecting


def test_a_subscriber_is_not_idle() -> None:
    clock, _, f = make(idle_timeout=10.0)
    c = Conn(f)
    c.send(b"CREATE q queue\r\nSUBSCRIBE q\r\n")
    clock.advance(100)
    assert not c.transport.disconnecting
    c.send(b"UNSUBSCRIBE 1\r\n")
    clock.advance(21)
    assert c.transport.disconnecting


def test_a_waiting_pull_is_not_idle() -> None:
    clock, _, f = make(idle_timeout=10.0)
    c = Conn(f)
    c.send(b"CREATE q queue\r\nPULL q wait=30000\r\n")
    clock.advance(25)
    assert not c.transport.disconnecting
    clock.advance(5)
    clock.advance(0)
    assert c.lines() == [b"+OK created", b"+OK 0"]
    clock.advance(11)
    assert c.lines() == [b"-ERR LIMIT idle for 10 s"]


def test_no_idle_timer_by_default() -> None:
    clock, _, f = make()
    Conn(f)
    assert not clock.getDelayedCalls()


# ------------------------------------------------------------ memory high-water


class Memory:
    def __init__(self) -> None:
        self.used = 0

    def __call__(self) -> int:
        return self.used


def watched(mark: int = 1000) -> tuple[Clock, Broker, BrokerFactory, Memory]:
    clock, broker, f = make(memory_high_water=mark)
    memory = Memory()
    f.watch.measure = memory
    f.doStart()
    return clock, broker, f, memory


def test_over_the_mark_publishers_are_held_in_order() -> None:
    clock, broker, f, memory = watched()
    pub, other = Conn(f), Conn(f)
    pub.send(b"CREATE q queue\r\nPUBLISH q :1\r\n")
    assert pub.lines() == [b"+OK created", b"+OK 1"]
    memory.used = 1000
    clock.advance(0.1)
    assert f.watch.alarm
    pub.send(b"PING\r\nPUBLISH q :2\r\nPING\r\nPUBLISH q :3\r\n")
    assert pub.lines() == [b"+PONG"]  # held at the PUBLISH, in order
    assert pub.transport.producerState == "paused"
    assert list(f.watch.blocked) == [pub.server]
    # Others are served: consuming brings the memory down.
    other.send(b"PULL q\r\nSTATS\r\n")
    lines = other.lines()
    assert lines[:3] == [b"MSG 0 1 q - 1", b"1", b"+OK 1"]
    assert b"STAT memory_alarm 1" in lines and b"STAT connections_blocked 1" in lines
    assert b"STAT memory_high_water 1000" in lines
    assert (f.watch.blocked_total, f.watch.blocked_publishes) == (1, 0)
    memory.used = 999
    clock.advance(0.1)
    assert not now(lambda: f.watch.alarm) and not f.watch.blocked
    # counted for monitoring: one connection held, two publishes that waited
    assert (f.watch.blocked_total, f.watch.blocked_publishes) == (1, 2)
    assert pub.lines() == [b"+OK 1", b"+PONG", b"+OK 1"]
    assert pub.transport.producerState == "producing"
    assert broker.stats("q")[2] == ("messages", "2")
    f.doStop()
    assert not clock.getDelayedCalls()


def test_a_held_payload_split_across_reads() -> None:
    clock, _, f, memory = watched()
    pub = Conn(f)
    pub.send(b"CREATE q queue\r\n")
    pub.take()
    memory.used = 2000
    clock.advance(0.1)
    pub.send(b"PUBLISH q 6\r\nabc")
    pub.send(b"def\r\nPING\r\n")  # bytes read before the pause took effect
    assert pub.take() == b""
    memory.used = 0
    clock.advance(0.1)
    assert pub.lines() == [b"+OK 1", b"+PONG"]


def test_a_held_connection_that_goes_away() -> None:
    clock, _, f, memory = watched()
    pub = Conn(f)
    memory.used = 2000
    clock.advance(0.1)
    pub.send(b"CREATE q queue\r\nPUBLISH q :x\r\n")
    assert pub.server in f.watch.blocked
    pub.close()
    assert pub.server not in f.watch.blocked
    assert (f.watch.blocked_total, f.watch.blocked_publishes) == (1, 1)
    memory.used = 0
    clock.advance(0.1)


def test_the_memory_is_looked_at_after_so_many_bytes_read() -> None:
    """However fast publishers are, the broker looks before they read much more."""
    clock, _, f, memory = watched()
    f.watch.check_after = 10_000
    pub = Conn(f)
    pub.send(b"CREATE q queue\r\n")
    memory.used = 5000  # over the mark, and no tick of the clock
    pub.send(b"PUBLISH q :x\r\n" * 500)  # 7000 bytes: under check_after
    assert not f.watch.alarm
    assert pub.lines() == [b"+OK created"] + [b"+OK 1"] * 500
    pub.send(b"PUBLISH q :y\r\n" * 500)  # 14,000 bytes read since the last look
    assert now(lambda: f.watch.alarm)
    assert pub.take() == b""
    assert f.watch.received == 0


def test_no_mark_no_watch() -> None:
    clock, _, f = make(memory_high_water=0)
    f.doStart()
    assert not clock.getDelayedCalls()
    f.doStop()


def test_the_watch_measures_real_memory() -> None:
    clock = Clock()
    watch = MemoryWatch(clock, 1 << 50)
    watch.check()
    assert 0 < watch.last < 1 << 40 and not watch.alarm
    low = MemoryWatch(clock, 1)
    low.check()  # over the mark: trims the heap, says so
    assert low.alarm


# ------------------------------------------------------------------ options


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_option_defaults() -> None:
    options = parse()
    assert options["users"] is None
    assert options["auth-timeout"] == config.DEFAULT_AUTH_TIMEOUT
    assert options["idle-timeout"] == 0
    assert options["memory-high-water"] == config.DEFAULT_MEMORY_HIGH_WATER


@pytest.mark.parametrize(
    "value, expected",
    [("0", 0), ("1000", 1000), ("64K", 64 * 1024), ("512m", 512 << 20), ("2GiB", 2 << 30)],
)
def test_memory_high_water_sizes(value: str, expected: int) -> None:
    assert parse(f"--memory-high-water={value}")["memory-high-water"] == expected


@pytest.mark.parametrize("value", ["", "-1", "1.5G", "lots", "1X"])
def test_bad_memory_high_water(value: str) -> None:
    with pytest.raises(usage.UsageError, match="--memory-high-water must be a size"):
        parse(f"--memory-high-water={value}")


@pytest.mark.parametrize("option", ["auth-timeout", "idle-timeout"])
@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf", ""])
def test_bad_timeouts(option: str, value: str) -> None:
    with pytest.raises(usage.UsageError, match=f"--{option} must be a number of seconds"):
        parse(f"--{option}={value}")


def test_the_options_reach_the_config(tmp_path: object) -> None:
    service = makeService(
        parse("--memory", "--auth-timeout=2.5", "--idle-timeout=60", "--memory-high-water=1M")
    )
    assert isinstance(service, BrokerService)
    cfg = service.config
    assert (cfg.auth_timeout, cfg.idle_timeout, cfg.memory_high_water) == (2.5, 60.0, 1 << 20)
    assert cfg.users_file is None and not cfg.auth_required


# ------------------------------------------------------------ open brokers


def test_is_local() -> None:
    assert is_local(IPv4Address("TCP", "127.0.0.1", 1))
    assert is_local(IPv4Address("TCP", "127.1.2.3", 1))
    assert is_local(IPv6Address("TCP", "::1", 1))
    assert is_local(UNIXAddress(b"/run/mbroker.sock"))
    assert not is_local(IPv4Address("TCP", "0.0.0.0", 1))
    assert not is_local(IPv4Address("TCP", "10.0.0.7", 1))
    assert not is_local(IPv6Address("TCP", "::", 1))
    assert not is_local(IPv6Address("TCP", "fe80::1%eth0", 1))


def _messages(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events]


def test_an_open_service_says_so_and_warns_per_network_endpoint(tmp_path: Path) -> None:
    with logged() as events:
        reactor = MemoryReactorClock()
        service = BrokerService(
            reactor, Config(), ["unix:/tmp/mbroker-test.sock", "tcp:5556"], None
        )
        service.startService()
        service.stopService()
        users = tmp_path / "users"
        users.write_text(f"alice:{cheap_hash('pw')}:*:*:*\n")
        secured = BrokerService(
            MemoryReactorClock(), Config(users_file=str(users)), ["tcp:5557"], None
        )
        secured.startService()
        secured.stopService()
    messages = _messages(events)
    assert sum("mbroker is open: no --users file" in m for m in messages) == 1
    network = [m for m in messages if "open to the network" in m]
    assert len(network) == 1 and "0.0.0.0:" in network[0]  # tcp:5556, not the UNIX socket
    assert any("mbroker requires AUTH: 1 users in" in m for m in messages)


def test_over_the_mark_a_run_of_publishes_is_held_whole() -> None:
    clock, broker, f, memory = watched()
    pub = Conn(f)
    frame = b"PUBLISH q 1\r\nx\r\n"
    pub.send(b"CREATE q queue\r\n" + frame)
    assert pub.lines() == [b"+OK created", b"+OK 1"]
    memory.used = 1000
    clock.advance(0.1)
    pub.send(b"PING\r\n" + frame * 3 + b"PING\r\n")
    assert pub.lines() == [b"+PONG"]
    assert broker.stats("q")[2] == ("messages", "1")
    memory.used = 0
    clock.advance(0.1)
    assert pub.lines() == [b"+OK 1"] * 3 + [b"+PONG"]
    assert broker.stats("q")[2] == ("messages", "4")
    f.doStop()
