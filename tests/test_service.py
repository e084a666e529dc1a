"""``mbroker.service.BrokerService`` on a memory reactor."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, globalLogPublisher

from mbroker.config import Config
from mbroker.service import BrokerService, ListenError, describe_address


@pytest.fixture
def events() -> list[LogEvent]:
    captured: list[LogEvent] = []
    globalLogPublisher.addObserver(captured.append)
    yield captured
    globalLogPublisher.removeObserver(captured.append)


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


def test_a_bad_endpoint_fails_start_up() -> None:
    reactor = MemoryReactorClock()
    service = BrokerService(reactor, Config(), ["tcp:5555", "nonsense:1"], None)
    with pytest.raises(ListenError, match="nonsense:1"):
        service.startService()
    assert not service.running
    assert service.ports == []
