"""Capturing what the broker logs while a block of a test runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import provider


@contextmanager
def logged() -> Iterator[list[LogEvent]]:
    """The events logged inside the ``with`` block, in order (the list stays usable after)."""
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observe)
