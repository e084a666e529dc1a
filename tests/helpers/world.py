"""The domain under test: a fake delivery target, a session wrapper and a broker on a fake clock."""

from __future__ import annotations

from typing import Union

from twisted.internet import task

from mbroker.config import Config
from mbroker.core.broker import Broker, Pulled
from mbroker.core.model import Consumer, QueuedMessage, Session
from mbroker.wire.frames import ExchangeInfo, QueueInfo, QueueOptions


class Target:
    """A fake connection: records every push, cancel and slow call."""

    def __init__(self) -> None:
        self.pushed: list[tuple[int, int, QueuedMessage]] = []
        self.cancels: list[tuple[int, str]] = []
        self.slows: list[int] = []

    def push(self, sid: int, tag: int, message: QueuedMessage) -> None:
        self.pushed.append((sid, tag, message))

    def push_many(self, sid: int, tag: int, messages: list[QueuedMessage]) -> None:
        for i, m in enumerate(messages):
            self.push(sid, tag + i, m)

    def push_run(self, sid: int, tag: int, route: bytes, payloads: list[bytes]) -> None:
        source, _, key = route.decode().partition(" ")
        for i, p in enumerate(payloads):
            m = QueuedMessage(source, "" if key == "-" else key, route, p)
            m.deliveries = 1
            self.push(sid, tag + i, m)

    def cancelled(self, sid: int, reason: str) -> None:
        self.cancels.append((sid, reason))

    def slow(self, sid: int) -> None:
        self.slows.append(sid)

    def payloads(self, sid: int | None = None) -> list[bytes]:
        return [m.payload for s, _, m in self.pushed if sid is None or s == sid]

    def tags(self, sid: int | None = None) -> list[int]:
        return [t for s, t, _ in self.pushed if sid is None or s == sid]

    def take(self) -> list[tuple[int, int, QueuedMessage]]:
        """The pushes so far, forgetting them."""
        out, self.pushed = self.pushed, []
        return out


Tag = Union[int, tuple[int, int]]


def tags(*items: Tag) -> tuple[tuple[int, int], ...]:
    """``tags(1, (3, 5))`` is the tag list ``1,3-5``."""
    return tuple((i, i) if isinstance(i, int) else i for i in items)


class Client:
    """One session and its target, with shorthand for the common calls."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.target = Target()
        self.session: Session = broker.open_session(self.target)

    def sub(self, name: str, *, activate: bool = True, **kw: object) -> Consumer:
        c = self.broker.subscribe(self.session, name, **kw)  # type: ignore[arg-type]
        if activate:
            self.broker.activate(c)
        return c

    def pull(self, name: str, **kw: object) -> Pulled | None:
        return self.broker.pull(self.session, name, **kw)  # type: ignore[arg-type]

    def ack(self, *items: Tag) -> int:
        return self.broker.ack(self.session, tags(*items))

    def nack(self, *items: Tag, requeue: bool = True, delay: int | None = None) -> int:
        return self.broker.nack(self.session, tags(*items), requeue, delay)

    def touch(self, *items: Tag) -> int:
        return self.broker.touch(self.session, tags(*items))

    def close(self) -> None:
        self.broker.close_session(self.session)

    @property
    def payloads(self) -> list[bytes]:
        return self.target.payloads()

    @property
    def tags(self) -> list[int]:
        return self.target.tags()


class World:
    """A broker on a fake clock."""

    def __init__(self, config: Config | None = None) -> None:
        self.clock = task.Clock()
        self.broker = Broker(clock=self.clock, config=config if config is not None else Config())

    def client(self) -> Client:
        return Client(self.broker)

    def queue(self, name: str = "q", **options: object) -> str:
        assert self.broker.create(None, name, "queue", QueueOptions(**options))  # type: ignore[arg-type]
        return name

    def exchange(self, name: str, kind: str = "topic", durable: bool = False) -> str:
        assert self.broker.create(None, name, kind, QueueOptions(durable=durable))
        return name

    def publish(self, name: str, *payloads: bytes, key: str = "", ttl: int | None = None) -> int:
        n = 0
        for p in payloads:
            n = self.broker.publish(name, key, p, ttl)
        return n

    def ready(self, name: str = "q") -> list[bytes]:
        """The payloads ready in a queue, head first (taken with a throwaway PULL
        would change tags, so this reads the queue itself)."""
        return [m.payload for m in self.broker.queue(name).ready]

    def info(self, name: str) -> ExchangeInfo | QueueInfo:
        (row,) = [r for r in self.broker.list_objects() if r.name == name]
        return row

    def queue_info(self, name: str) -> QueueInfo:
        """:meth:`info` of a queue (asserts it is one)."""
        row = self.info(name)
        assert isinstance(row, QueueInfo)
        return row

    def stat(self, name: str | None = None) -> dict[str, str]:
        return dict(self.broker.stats(name))

    def advance_ms(self, ms: float) -> None:
        self.clock.advance(ms / 1000.0)


def msgs(*ps: str) -> list[bytes]:
    return [p.encode() for p in ps]
