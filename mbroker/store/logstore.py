"""The embedded default store: an append-only log of segment files.

Layout.  The data directory holds a ``LOCK`` file, which the broker using it holds with
``flock`` (a second store on the directory refuses to open), and segment files
``00000001.seg``, ``00000002.seg``... Each starts with a header and holds CRC-framed records
(:mod:`mbroker.store.codec`).  The last one is the *tail*, the only one written to.  When
the tail has passed ``segment_size`` the next group of records goes to a new segment,
which begins with a snapshot of every declaration (exchanges, queues, bindings), so that
older segments matter only for the messages they hold.

Writes and group commit.  The broker calls :meth:`LogStore.write` once per
batch.  The records are encoded at once, on the reactor thread (cheap byte joins;
a run of messages laid out alike makes one batch frame, :mod:`mbroker.store.batch`),
and join the *pending group*.  One job at a time runs in the I/O thread
(:mod:`mbroker.store.executor`): it appends a whole group with one ``write`` and,
with ``fsync="always"``, one fsync.  While it runs, further ``write`` calls pile
into the next group, so sixteen publishers waiting at once share one fsync.  Every
Deferred of a group fires when its job is done; they fire in the order of the
``write`` calls.  No file I/O runs on the reactor thread.

fsync policies (the trade-offs):

- ``always`` (default): a write's Deferred fires after the fsync that covers
  it.  A confirmed record survives a power cut.  Costs one fsync per group.
- ``interval``: the Deferred fires once the data is written to the operating
  system (it survives ``kill -9`` of the broker, not a power cut); the I/O
  thread fsyncs every ``interval_ms`` if anything was written.  A power cut
  loses at most about the last interval of confirmed records.
- ``never``: the Deferred fires after the OS write; the store fsyncs only when
  it rotates a segment, deletes segments and closes.  A power cut can lose any
  confirmed record not yet flushed by the OS.

Payload residency.  The store keeps no payload in memory: the broker keeps its
messages, and the store serves no reads after :meth:`open`.  It keeps a ledger
(:mod:`mbroker.store.ledger`) of which message ids are live in which queue
and segment, about 130 bytes per live message.

Compaction.  Disk use tracks the live messages, not the history:

- a sealed segment with no live message is deleted once a later segment holds
  a snapshot and no existing segment holds messages that its removal records
  removed (else those messages would come back on recovery);
- a sealed segment whose live messages take less than ``compact_ratio`` (25%) of its
  bytes, once a later segment is sealed too, is rewritten (:mod:`mbroker.store.compaction`):
  a reader thread reads it off the write path, the live messages are copied (a chunk at
  the head of each group, with the queues they are still live in) to the tail, and once
  those copies are on disk (the deletion job fsyncs the tail first) the old segment is
  deleted.  A crash in between leaves two copies of a message, which recovery merges by
  message id.

Faults.  A failed write (``ENOSPC``...) is cut back so the log stays valid; the
Deferreds of that group, and of the writes waiting behind it, errback with
:class:`mbroker.errors.Unavailable`; further writes errback at once.  Every
``retry_interval`` seconds the store probes with a small write plus fsync;
when one succeeds it takes writes again.  A failed fsync is different: the
kernel may have dropped the data it could not write while a later fsync would
report success, so the Deferreds waiting on it errback and the store takes no
write again until it is restarted (recovery then reads what is really there).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mbroker import errors
from mbroker.core.records import Record, Recovered
from mbroker.store.batch import BATCH_MIN, encode_records
from mbroker.store.codec import NOOP, encode_batch, encode_snapshot, file_header
from mbroker.store.compaction import Compactor, message_frames
from mbroker.store.executor import Executor, ThreadExecutor
from mbroker.store.files import FileSystem, Lock, RealFileSystem
from mbroker.store.interfaces import IStore
from mbroker.store.ledger import Ledger
from mbroker.store.replay import ReplayResult, redeclarations, replay
from mbroker.store.segment import (
    FSYNC_BUCKETS,
    Appended,
    SegmentWriter,
    StoreBroken,
    WriteFailed,
)

_log = Logger()

FsyncPolicy = Literal["always", "interval", "never"]
#: the file in a data directory that one broker at a time holds locked
LOCK_FILE = "LOCK"
MiB = 1024 * 1024

_NEW, _OPENING, _AVAILABLE, _UNAVAILABLE, _BROKEN, _CLOSED = (
    "new",
    "opening",
    "available",
    "unavailable",
    "broken",
    "closed",
)


@attrs.define
class _Group:
    """Records waiting for (or in) one write job."""

    records: list[Record] = attrs.Factory(list)
    sizes: list[int] = attrs.Factory(list)
    chunks: list[bytes] = attrs.Factory(list)
    waiters: list[Deferred[None]] = attrs.Factory(list)


@attrs.define
class _Job:
    kind: str  # write, noop, delete, sync, close
    run: Callable[[], Any]
    group: _Group | None = None
    head_size: int = 0
    probe: bool = False
    synced: bool = False


@implementer(IStore)
class LogStore:
    """The embedded log store (see the module docstring).

    :param reactor: provides IReactorTime (timers) and, for the default
        executors, IReactorFromThreads.
    :param directory: the data directory (created if missing).
    :param fsync: ``"always"``, ``"interval"`` or ``"never"``.
    :param segment_size: rotate to a new segment past this many bytes.
    :param interval_ms: how often ``fsync="interval"`` fsyncs.
    :param fs: the file layer (default: the real file system).
    :param executor: where writes run (default: one dedicated thread).  When
        given, compaction reads run there too; by default they get a thread
        of their own.
    :param retry_interval: seconds between write probes after a failed write.
    :param compact_ratio: rewrite segments whose live bytes are under this share.
    :param copy_chunk: bytes of live messages copied per group when compacting.
    :param batch_frames: the fewest messages of a run made a batch frame (0: none).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        directory: str,
        fsync: FsyncPolicy = "always",
        segment_size: int = 64 * MiB,
        interval_ms: int = 200,
        *,
        fs: FileSystem | None = None,
        executor: Executor | None = None,
        retry_interval: float = 1.0,
        compact_ratio: float = 0.25,
        copy_chunk: int = 1 * MiB,
        batch_frames: int = BATCH_MIN,
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, not {fsync!r}")
        self._clock = reactor
        self.directory = directory
        self.fsync = fsync
        self.segment_size = segment_size
        self.interval = interval_ms / 1000.0
        self.retry_interval = retry_interval
        self._executor = executor
        self._reader = executor
        self._encode = (lambda r: encode_records(r, batch_frames)) if batch_frames else encode_batch
        self._writer = SegmentWriter(fs if fs is not None else RealFileSystem(), directory)
        self._ledger = Ledger()
        self._compactor = Compactor(compact_ratio, copy_chunk)
        self._state = _NEW
        self._reason = "the store is not open"
        self._closing = False
        self._close_waiters: list[Deferred[None]] = []
        self._pending = _Group()
        self._busy = False
        self._kicking = False
        self._maintenance_turn = False
        self._dirty = False
        self._sync_wanted = False
        self._probe_wanted = False
        self._probe_call: IDelayedCall | None = None
        self._interval_call: IDelayedCall | None = None
        self._no_delete: set[int] = set()
        self._lock: Lock | None = None
        self._counters = dict.fromkeys(
            ("writes", "records", "groups", "bytes_written", "failed_writes", "segments_deleted"),
            0,
        )

    # ------------------------------------------------------------------ IStore

    @property
    def available(self) -> bool:
        return self._state == _AVAILABLE and not self._closing

    def open(self) -> Deferred[Recovered]:
        if self._state != _NEW:
            return fail(errors.Unavailable("the store was already opened"))
        self._state = _OPENING
        if self._executor is None:
            threads = IReactorFromThreads(self._clock)
            self._executor = ThreadExecutor(threads, "mbroker-store")
            self._reader = ThreadExecutor(threads, "mbroker-store-compaction")
        d = self._executor.submit(self._open_job)
        return d.addCallbacks(self._opened, self._open_failed)

    def write(self, records: Sequence[Record]) -> Deferred[None]:
        if self._state != _AVAILABLE or self._closing:
            reason = "the store is closing" if self._closing else self._reason
            return fail(errors.Unavailable(reason))
        self._counters["writes"] += 1
        if not records and not self._busy and not self._pending.waiters:
            return succeed(None)
        try:
            data, sizes = self._encode(records)
        except ValueError:
            return fail()
        group = self._pending
        group.records.extend(records)
        group.sizes.extend(sizes)
        if data:
            group.chunks.append(data)
        d: Deferred[None] = Deferred()
        group.waiters.append(d)
        self._kick()
        return d

    def close(self) -> Deferred[None]:
        if self._state in (_NEW, _CLOSED):
            self._state = _CLOSED
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._close_waiters.append(d)
        if not self._closing:
            self._closing = True
            self._compactor.abandon()
            for call in (self._probe_call, self._interval_call):
                if call is not None and call.active():
                    call.cancel()
            self._probe_call = self._interval_call = None
            self._kick()
        return d

    def stats(self) -> dict[str, int]:
        """Counters (see IStore.stats); all cheap to compute."""
        ledger, compactor = self._ledger, self._compactor
        stats = dict(self._counters)
        stats.update(
            available=int(self.available),
            messages=len(ledger.home),
            segments=len(ledger.segments),
            disk_bytes=ledger.disk_bytes(),
            live_bytes=ledger.live_bytes(),
            fsyncs=self._writer.fsyncs,
            pending_records=len(self._pending.records),
            compactions=compactor.done,
            messages_copied=compactor.messages_copied,
        )
        return stats

    def fsync_latency(self) -> tuple[tuple[float, ...], list[int], float]:
        """The fsync latency histogram: the buckets' upper bounds (seconds), the
        fsyncs in each (one more, last, for the slower ones), the seconds in all."""
        w = self._writer
        return FSYNC_BUCKETS, list(w.fsync_counts), w.fsync_seconds

    # -------------------------------------------------------------------- open

    def _open_job(self) -> ReplayResult:
        fs = self._writer.fs
        fs.makedirs(self.directory)
        # One broker per data directory: a second one would interleave its writes
        # with ours.  The lock is the kernel's, so a crashed broker holds it no more.
        self._lock = fs.lock(os.path.join(self.directory, LOCK_FILE))
        try:
            result = replay(fs, self.directory)
            tail = result.tail or 1
            if not result.tail:
                result.ledger.add_segment(1)
            self._writer.open_tail(tail, result.tail_good, result.tail_size)
            result.ledger.segments[tail].size = self._writer.offset
        except BaseException:
            self._release_lock()
            raise
        return result

    def _close_job(self, sync: bool) -> None:
        try:
            self._writer.close(sync=sync)
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _opened(self, result: ReplayResult) -> Recovered:
        self._ledger = result.ledger
        recovered = result.recovered
        for warning in recovered.warnings:
            _log.warn("store recovery: {warning}", warning=str(warning), directory=self.directory)
        _log.info(
            "store opened: {messages} messages in {queues} queues, {segments} segments",
            messages=recovered.message_count(),
            queues=len(recovered.queues),
            segments=len(self._ledger.segments),
            directory=self.directory,
        )
        self._state, self._reason = _AVAILABLE, ""
        if self.fsync == "interval" and not self._closing:
            self._interval_call = self._clock.callLater(self.interval, self._tick)
        # Objects declared again after their declaration was lost: write the
        # declarations, so that the next start finds them without guessing.
        again = redeclarations(recovered)
        if again:
            self.write(again).addErrback(
                lambda f: _log.warn(
                    "store could not write the declarations recovered: {error}",
                    error=f.getErrorMessage(),
                )
            )
        self._kick()
        return recovered

    def _open_failed(self, failure: Failure) -> Recovered:
        self._state = _CLOSED
        self._reason = f"the store could not be opened: {failure.value}"
        if not failure.check(OSError):  # (a held lock, a full disk: the opener says so)
            _log.failure("store could not open {directory}", failure, directory=self.directory)
        self._release_executors()
        waiters, self._close_waiters = self._close_waiters, []
        _fire(waiters)
        raise errors.Unavailable(self._reason)

    # -------------------------------------------------------------- scheduling

    def _kick(self) -> None:
        """Start the next job unless one is running (one job at a time, in order)."""
        if self._kicking:
            return
        self._kicking = True
        try:
            while not self._busy:
                job = self._next_job()
                if job is None:
                    break
                self._busy = True
                assert self._executor is not None
                d = self._executor.submit(job.run)
                d.addBoth(self._job_done, job)
                d.addErrback(self._bug)
            self._start_compaction()
        finally:
            self._kicking = False

    def _next_job(self) -> _Job | None:
        """The next job; writes and deletions take turns when both wait."""
        if self._state in (_NEW, _OPENING, _CLOSED):
            return None
        if self._maintenance_turn:
            self._maintenance_turn = False
            job = self._delete_job()
            if job is not None:
                return job
        job = self._write_job()
        if job is not None:
            self._maintenance_turn = True
            return job
        job = self._delete_job()
        if job is not None:
            return job
        if self._sync_wanted and self._state == _AVAILABLE:
            self._sync_wanted = False
            if self._dirty:
                return _Job("sync", self._writer.sync)
        if self._closing:
            broken = self._state == _BROKEN
            return _Job("close", lambda: self._close_job(sync=not broken))
        return None

    def _write_job(self) -> _Job | None:
        group, probe = self._pending, False
        if self._state == _UNAVAILABLE and self._probe_wanted:
            self._probe_wanted, probe = False, True
        elif self._state != _AVAILABLE:
            return None
        elif not group.waiters and (self._closing or not self._compactor.has_copies()):
            return None
        self._pending = _Group()
        ledger = self._ledger
        if not probe and not self._closing:
            copies = self._compactor.take(ledger)
            if copies.records:
                group = _Group(
                    [*copies.records, *group.records],
                    copies.sizes + group.sizes,
                    copies.frames + group.chunks,
                    group.waiters,
                )
        data = NOOP if probe else b"".join(group.chunks)
        rotate, head_size = None, 0
        if ledger.segments[ledger.tail].size >= self.segment_size and data:
            number = ledger.tail + 1
            head = file_header(number) + encode_snapshot(ledger.snapshot(self._clock.seconds()))
            rotate, head_size = (number, head), len(head)
        if not data:
            return _Job("noop", _nothing, group)  # a barrier, or copies all dead
        sync = self.fsync == "always" or probe
        self._counters["groups"] += 1
        self._counters["bytes_written"] += len(data)
        writer = self._writer
        return _Job(
            "write",
            lambda: writer.append(rotate, data, sync),
            group,
            head_size=head_size,
            probe=probe,
            synced=sync,
        )

    def _delete_job(self) -> _Job | None:
        if self._state == _BROKEN or self._closing:
            return None
        doomed = [n for n in self._ledger.deletable() if n not in self._no_delete]
        if not doomed:
            return None
        writer = self._writer
        return _Job("delete", lambda: writer.delete(doomed))

    def _start_compaction(self) -> None:
        """Start reading a segment to rewrite, if one is due (in the reader)."""
        if self._state != _AVAILABLE or self._closing:
            return
        number = self._compactor.start(self._ledger)
        if number is None:
            return
        writer = self._writer
        assert self._reader is not None
        d = self._reader.submit(lambda: message_frames(writer.read(number)))
        d.addCallbacks(
            self._compaction_read,
            self._compaction_read_failed,
            callbackArgs=(number,),
            errbackArgs=(number,),
        )
        d.addErrback(self._bug)

    def _compaction_read(self, frames: list[tuple[int, bytes]], number: int) -> None:
        self._compactor.loaded(number, frames)
        self._check_compaction()
        self._kick()

    def _compaction_read_failed(self, failure: Failure, number: int) -> None:
        _log.failure(
            "store could not read segment {segment} to compact it", failure, segment=number
        )
        self._compactor.failed_to_read(number)

    def _check_compaction(self) -> None:
        number = self._compactor.segment
        left = self._compactor.check_done(self._ledger)
        if left:
            _log.warn(
                "store compaction left {live} messages in segment {segment}",
                live=left,
                segment=number,
            )

    def _tick(self) -> None:
        self._interval_call = self._clock.callLater(self.interval, self._tick)
        if self._dirty:
            self._sync_wanted = True
            self._kick()

    def _probe(self) -> None:
        self._probe_call = None
        if self._state == _UNAVAILABLE and not self._closing:
            self._probe_wanted = True
            self._kick()

    # ----------------------------------------------------------------- results

    def _job_done(self, result: Any, job: _Job) -> None:
        self._busy = False
        if isinstance(result, Failure):
            self._failed(result, job)
        else:
            handlers: dict[str, Callable[[Any, _Job], None]] = {
                "write": self._done_write,
                "noop": self._done_noop,
                "delete": self._done_delete,
                "sync": self._done_sync,
                "close": self._done_close,
            }
            handlers[job.kind](result, job)
        self._kick()

    def _done_noop(self, _result: None, job: _Job) -> None:
        assert job.group is not None
        self._check_compaction()
        _fire(job.group.waiters)

    def _done_write(self, appended: Appended, job: _Job) -> None:
        group, ledger = job.group, self._ledger
        assert group is not None
        if appended.rotated:
            ledger.add_segment(appended.segment, job.head_size, snapshot=True)
        seg = ledger.segments[appended.segment]
        ledger.apply(group.records, group.sizes, seg)
        seg.size = appended.end
        self._dirty = not job.synced
        self._counters["records"] += len(group.records)
        if job.probe:
            self._state, self._reason = _AVAILABLE, ""
            _log.info("store takes writes again", directory=self.directory)
        self._check_compaction()
        _fire(group.waiters)

    def _done_delete(self, result: tuple[list[int], list[tuple[int, str]]], job: _Job) -> None:
        deleted, failed = result
        self._ledger.deleted(deleted)
        self._counters["segments_deleted"] += len(deleted)
        for number, error in failed:
            _log.warn(
                "store could not delete segment {segment}: {error}", segment=number, error=error
            )
            self._no_delete.add(number)

    def _done_sync(self, _result: None, job: _Job) -> None:
        self._dirty = False

    def _done_close(self, _result: None, job: _Job) -> None:
        self._state = _CLOSED
        self._reason = "the store is closed"
        self._release_executors()
        waiters, self._close_waiters = self._close_waiters, []
        _fire(waiters)

    def _failed(self, failure: Failure, job: _Job) -> None:
        err = failure.value
        if job.kind == "close":
            _log.failure("store close failed", failure)
            self._done_close(None, job)
            return
        if isinstance(err, WriteFailed):
            if err.rotated:
                self._ledger.add_segment(err.segment, err.offset, snapshot=True)
            self._compactor.abandon()  # its copies were lost: start again later
            self._counters["failed_writes"] += 1
            if self._state == _AVAILABLE:
                _log.error(
                    "store write failed, not taking writes: {error}",
                    error=str(err.error),
                    directory=self.directory,
                )
            if self._state in (_AVAILABLE, _UNAVAILABLE):
                self._state = _UNAVAILABLE
                self._reason = f"store write failed: {err.error.strerror or err.error}"
            if not self._closing and self._probe_call is None:
                self._probe_call = self._clock.callLater(self.retry_interval, self._probe)
        else:
            if isinstance(err, StoreBroken):
                reason = f"store stopped: {err}; restart the broker"
            else:
                reason = f"store stopped after an unexpected error: {err!r}"
            _log.failure("store stopped taking writes for good", failure, directory=self.directory)
            self._state, self._reason = _BROKEN, reason
            self._compactor.abandon()
        waiters = job.group.waiters if job.group is not None else []
        waiters += self._pending.waiters
        self._pending = _Group()
        for d in waiters:
            d.errback(errors.Unavailable(self._reason))

    def _bug(self, failure: Failure) -> None:
        _log.failure("bug in the log store", failure)

    def _release_executors(self) -> None:
        for executor in {
            id(e): e for e in (self._executor, self._reader) if e is not None
        }.values():
            executor.stop()


def _nothing() -> None:
    return None


def _fire(waiters: list[Deferred[None]]) -> None:
    for d in waiters:
        d.callback(None)
