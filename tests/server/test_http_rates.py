"""Message rates for /api/overview, sampled from the broker's counters on a Clock."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from mbroker.config import Config
from mbroker.core.broker import Broker
from mbroker.server.http.api import Api, ApiRequest
from mbroker.server.http.rates import Rates
from mbroker.wire.frames import QueueOptions


def test_rates_over_the_windows() -> None:
    clock = Clock()
    counts = {"published": 0, "delivered": 0, "acked": 0}
    rates = Rates(clock, lambda: dict(counts), interval=5.0)
    rates.start()
    assert rates.details()["publish"] == {"rate": 0.0, "rate_1m": 0.0, "rate_5m": 0.0}
    for _ in range(60):  # 5 minutes: 100 published a second, 10 delivered
        counts["published"] += 500
        counts["delivered"] += 50
        clock.advance(5)
    for _ in range(2):  # then 10 s of 1,000 a second
        counts["published"] += 5000
        clock.advance(5)
    publish = rates.details()["publish"]
    assert publish["rate"] == 1000.0
    assert publish["rate_1m"] == pytest.approx((10 * 500 + 2 * 5000) / 60, abs=0.01)
    assert publish["rate_5m"] == pytest.approx((58 * 500 + 2 * 5000) / 300, abs=0.01)
    assert rates.details()["deliver"]["rate"] == 0.0
    assert rates.details()["deliver"]["rate_5m"] == pytest.approx(58 * 50 / 300, abs=0.01)
    rates.stop()
    assert not clock.getDelayedCalls()


def test_no_broker_yet_and_a_new_broker() -> None:
    clock = Clock()
    current: list[dict[str, int] | None] = [None]
    rates = Rates(clock, lambda: current[0], interval=5.0)
    rates.start()
    clock.advance(5)
    assert not rates.samples
    current[0] = {"published": 100, "delivered": 0, "acked": 0}
    clock.advance(5)
    current[0] = {"published": 10, "delivered": 0, "acked": 0}  # restarted: counts anew
    clock.advance(5)
    assert len(rates.samples) == 1
    rates.stop()


def test_overview_shows_rabbitmq_style_details() -> None:
    clock = Clock()
    broker = Broker(clock, Config())
    rates = Rates(clock, lambda: {k: int(v) for k, v in broker.stats()})
    rates.start()
    broker.create(None, "q", "queue", QueueOptions())
    for _ in range(50):
        broker.publish("q", "", b"x")
    clock.advance(5)
    api = Api(broker, rates=rates.details)
    stats = api.handle(ApiRequest("GET", ("overview",))).body["message_stats"]
    assert stats["publish"] == 50
    assert stats["publish_details"]["rate"] == 10.0
    assert stats["ack_details"] == {"rate": 0.0, "rate_1m": 0.0, "rate_5m": 0.0}
    rates.stop()
