"""Helpers shared by the store tests (``tests/test_store_*.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from mbroker.core.records import MessageStored, QueueDeclared, Record, Recovered
from mbroker.store.executor import Executor, SyncExecutor
from mbroker.store.files import CrashFS
from mbroker.store.logstore import LogStore
from mbroker.wire.frames import QueueOptions

T = TypeVar("T")
DATA = "/data"
DURABLE = QueueOptions(durable=True)


def result(d: Deferred[T]) -> T:
    """The result of a Deferred that has fired with success."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    value: T = out[0]
    return value


def failure(d: Deferred[Any]) -> Failure:
    """The Failure of a Deferred that has fired with one."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    assert isinstance(out[0], Failure), f"expected a failure, got {out[0]!r}"
    return out[0]


def tracked(d: Deferred[Any]) -> list[Any]:
    """A list that gets the Deferred's result (or Failure) when it fires."""
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def msg(
    msg_id: int,
    queues: Sequence[str] = ("q",),
    payload: bytes | None = None,
    **kw: Any,
) -> MessageStored:
    return MessageStored(
        msg_id,
        tuple(queues),
        kw.pop("source", "ex"),
        kw.pop("key", "a.b"),
        payload if payload is not None else b"payload-%d" % msg_id,
        **kw,
    )


def declare(*names: str) -> list[Record]:
    return [QueueDeclared(name, DURABLE) for name in names]


def log_store(
    fs: CrashFS | None = None,
    *,
    clock: Clock | None = None,
    executor: Executor | None = None,
    **kw: Any,
) -> tuple[LogStore, CrashFS, Clock]:
    """A LogStore on a CrashFS, run synchronously (unless given an executor)."""
    fs = fs if fs is not None else CrashFS()
    clock = clock if clock is not None else Clock()
    store = LogStore(
        clock, DATA, fs=fs, executor=executor if executor is not None else SyncExecutor(), **kw
    )
    return store, fs, clock


def open_log(fs: CrashFS | None = None, **kw: Any) -> tuple[LogStore, CrashFS, Recovered]:
    store, fs, _clock = log_store(fs, **kw)
    return store, fs, result(store.open())


def ids(recovered: Recovered, queue: str = "q") -> list[int]:
    return [m[0] for m in recovered.messages.get(queue, [])]
