"""``mbroker.server.service.BrokerService`` on a memory reactor."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, LogLevel

from mbroker.config import Config
from mbroker.server.service import (
    DEFAULT_BACKLOG,
    GC_THRESHOLD,
    BrokerService,
    describe_address,
    with_backlog,
)
from tests.helpers.logs import logged


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    with logged() as captured:
        yield captured


def test_describe_address() -> None:
    assert describe_address(IPv4Address("TCP", "127.0.0.1", 5555)) == "127.0.0.1:5555"
    assert describe_address(IPv6Address("TCP", "::1", 5555)) == "[::1]:5555"
    assert describe_address(UNIXAddress(b"/run/mbroker.sock")) == "/run/mbroker.sock"


def test_listens_on_every_endpoint_and_logs_it(events: list[LogEvent]) -> None:
    reactor = MemoryReactorClock()
    service = BrokerService(
        reactor, Config(), ["tcp:5555:interface=127.0.0.1", "unix:/tmp/mb.sock"], None
    )
    service.startService()
    assert service.running
    assert service.broker is not None and service.factory is not None
    assert [port[:2] for port in reactor.tcpServers] == [(5555, service.factory)]
    assert [port[:2] for port in reactor.unixServers] == [("/tmp/mb.sock", service.factory)]
    assert len(service.ports) == 2
    reactor.run()  # the memory reactor runs its callWhenRunning hooks, then stops
    listening = [e for e in events if e.get("log_format") == "mbroker listening on {address}"]
    assert [e["endpoint"] for e in listening] == [
        "tcp:5555:interface=127.0.0.1",
        "unix:/tmp/mb.sock",
    ]

    d = service.stopService()
    assert d.called
    assert not service.running
    assert service.ports == []


def test_a_bad_endpoint_fails_start_up_in_one_line(events: list[LogEvent]) -> None:
    reactor = MemoryReactorClock()
    service = BrokerService(reactor, Config(), ["tcp:5555", "nonsense:1"], None)
    service.startService()  # no exception: twistd would print it as a traceback
    assert service.ports == []  # tcp:5555 was closed again
    assert reactor.tcpServers[0][0] == 5555
    critical = [e for e in events if e.get("log_level") == LogLevel.critical]
    assert [e["log_format"] for e in critical] == ["mbroker cannot start: {reason}"]
    assert critical[0]["reason"] == (
        "cannot listen on nonsense:1: bad endpoint description: Unknown endpoint type: 'nonsense'"
    )
    assert "log_failure" not in critical[0]  # no traceback
    # twistd stops once it runs, then exits with status 1; nobody hears "listening"
    assert [hook[0] for hook in reactor.whenRunningHooks] == [reactor.stop]
    assert len(reactor.triggers["after"]["shutdown"]) == 1


def test_the_factory_is_not_noisy() -> None:
    service = BrokerService(MemoryReactorClock(), Config(), ["tcp:5555"], None)
    service.startService()
    assert service.factory is not None and not service.factory.noisy


def test_endpoints_get_a_large_listen_backlog() -> None:
    reactor = MemoryReactorClock()
    endpoints = [
        "tcp:5555:interface=127.0.0.1",
        "tcp:5556:backlog=7",
        "unix:/tmp/mb.sock",
        "unix:/tmp/mb2.sock:mode=600:backlog=9",
    ]
    service = BrokerService(reactor, Config(), endpoints, None)
    service.startService()
    assert DEFAULT_BACKLOG >= 511
    assert [(port[0], port[2]) for port in reactor.tcpServers] == [
        (5555, DEFAULT_BACKLOG),
        (5556, 7),
    ]
    assert [(port[0], port[2]) for port in reactor.unixServers] == [
        ("/tmp/mb.sock", DEFAULT_BACKLOG),
        ("/tmp/mb2.sock", 9),
    ]
    other_reactor = MemoryReactorClock()
    other = BrokerService(other_reactor, Config(), ["tcp:5557"], None, backlog=300)
    other.startService()
    assert other_reactor.tcpServers[0][2] == 300


def test_with_backlog() -> None:
    assert with_backlog("tcp:5555", 1024) == "tcp:5555:backlog=1024"
    assert with_backlog("TCP6:5555:interface=\\:\\:1", 8) == "TCP6:5555:interface=\\:\\:1:backlog=8"
    assert with_backlog("ssl:5556:privateKey=k.pem", 8) == "ssl:5556:privateKey=k.pem:backlog=8"
    assert with_backlog("unix:/run/mb.sock:backlog=3", 8) == "unix:/run/mb.sock:backlog=3"
    assert with_backlog("5555", 8) == "5555:backlog=8"
    # an endpoint type that takes no backlog= is left as it is
    assert with_backlog("systemd:domain=INET:index=0", 8) == "systemd:domain=INET:index=0"


CPYTHON_GC = hasattr(gc, "freeze")


@pytest.fixture
def gc_state() -> Iterator[None]:
    """Put the process's garbage collector back as it was."""
    enabled = gc.isenabled()
    threshold = gc.get_threshold() if CPYTHON_GC else None
    yield
    if threshold is not None:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest_twisted.ensureDeferred
async def test_the_collector_is_off_while_state_is_rebuilt_then_tuned(
    gc_state: None, tmp_path: Path
) -> None:
    from twisted.internet import reactor

    if CPYTHON_GC:
        gc.set_threshold(700, 10, 10)
    service = BrokerService(
        reactor, Config(), ["tcp:0:interface=127.0.0.1"], str(tmp_path / "data")
    )
    service.startService()  # the store opens in its thread: the state is not back yet
    assert not gc.isenabled()
    for _ in range(500):
        if service.ports:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert service.ports, "the broker did not start listening"
    assert gc.isenabled()
    if CPYTHON_GC:  # (PyPy's collector has no generations to tune)
        assert gc.get_threshold()[0] == GC_THRESHOLD
        assert gc.get_freeze_count() > 0  # what was alive at start is left alone
    await service.stopService()

    gc.disable()
    early = BrokerService(reactor, Config(), ["tcp:0:interface=127.0.0.1"], str(tmp_path / "d2"))
    early.startService()
    await early.stopService()  # stopped before its store had opened
    assert gc.isenabled()


def test_every_front_door_shares_one_bound_on_password_checks() -> None:
    """argon2 checks are bounded per broker, not per listener: the STOMP listener
    checks passwords through the native factory's PasswordChecks."""
    service = BrokerService(
        MemoryReactorClock(), Config(), ["tcp:5557"], None, stomp_endpoints=["tcp:5558"]
    )
    service.startService()
    assert service.factory is not None and service.stomp_factory is not None
    assert service.stomp_factory.password_checks is service.factory.password_checks


def test_the_stomp_listener_shares_the_native_flush_scheduler() -> None:
    """A read on either front door writes what it delivered to the other's connections."""
    service = BrokerService(
        MemoryReactorClock(), Config(), ["tcp:5557"], None, stomp_endpoints=["tcp:5558"]
    )
    service.startService()
    assert service.factory is not None and service.stomp_factory is not None
    assert service.stomp_factory.scheduler is service.factory
