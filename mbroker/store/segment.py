"""The log store's I/O side: the segment files, appended to from one thread.

A :class:`SegmentWriter` is touched only by jobs running in the store's I/O
executor, one at a time.  It never decides anything: the store (on the reactor
thread) tells it what to append, when to rotate, what to delete.  Its errors
come in two kinds:

- :class:`WriteFailed` -- a write or a file creation failed (``ENOSPC``...).
  The writer has cut the file back to where the failed write began, so the log
  is valid; the store may retry later.
- :class:`StoreBroken` -- an fsync failed (or cutting back failed).  The data
  the fsync covered may be lost from the page cache although a later fsync
  would report success, so the store must never confirm it: it stops taking
  writes until it is restarted and recovery reads what really is on disk.
"""

from __future__ import annotations

import bisect
import errno
import os
import re
import time

import attrs

from mbroker.store.codec import FILE_HEADER, file_header
from mbroker.store.files import File, FileSystem

SEGMENT_RE = re.compile(r"^(\d{8,})\.seg$")
#: upper bounds (seconds) of the buckets of the fsync latency histogram
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def segment_name(number: int) -> str:
    return f"{number:08d}.seg"


class WriteFailed(Exception):
    """A write failed and was rolled back; ``segment``/``offset``: the tail now."""

    def __init__(self, error: OSError, segment: int, offset: int, rotated: bool) -> None:
        super().__init__(error)
        self.error = error
        self.segment = segment
        self.offset = offset
        self.rotated = rotated


class StoreBroken(Exception):
    """An fsync (or a rollback) failed: the store must stop taking writes."""

    def __init__(self, error: OSError, what: str) -> None:
        super().__init__(f"{what}: {error}")
        self.error = error
        self.what = what


@attrs.frozen
class Appended:
    segment: int
    start: int
    end: int
    rotated: bool


class SegmentWriter:
    def __init__(self, fs: FileSystem, directory: str) -> None:
        self.fs = fs
        self.directory = directory
        self.number = 0
        self.offset = 0
        self.fsyncs = 0
        #: fsyncs per latency bucket (FSYNC_BUCKETS, then one for the slower), and
        #: the seconds they took in all
        self.fsync_counts = [0] * (len(FSYNC_BUCKETS) + 1)
        self.fsync_seconds = 0.0
        self._file: File | None = None

    def path(self, number: int) -> str:
        return os.path.join(self.directory, segment_name(number))

    def _sync(self, f: File, what: str) -> None:
        started = time.monotonic()
        try:
            f.sync()
        except OSError as e:
            raise StoreBroken(e, f"fsync of {what} failed") from e
        self._synced(started)

    def _sync_dir(self) -> None:
        started = time.monotonic()
        try:
            self.fs.fsync_dir(self.directory)
        except OSError as e:
            raise StoreBroken(e, "fsync of the data directory failed") from e
        self._synced(started)

    def _synced(self, started: float) -> None:
        took = time.monotonic() - started
        self.fsyncs += 1
        self.fsync_seconds += took
        self.fsync_counts[bisect.bisect_left(FSYNC_BUCKETS, took)] += 1

    def open_tail(self, number: int, good_size: int, size: int) -> None:
        """Open the last segment for appending (recovery calls this).

        ``good_size`` is where its valid records end (0: there is no usable
        header, write one); ``size`` its current size: a torn tail beyond
        ``good_size`` is cut off.
        """
        path = self.path(number)
        fresh = good_size < FILE_HEADER.size
        f = self.fs.open_append(path, truncate=fresh)
        if fresh:
            f.write(file_header(number))
            self._sync(f, path)
            self._sync_dir()
            good_size = FILE_HEADER.size
        elif good_size < size:
            f.truncate(good_size)
            self._sync(f, path)
        self._file, self.number, self.offset = f, number, good_size

    @property
    def file(self) -> File:
        assert self._file is not None, "the store is not open"
        return self._file

    def append(self, rotate: tuple[int, bytes] | None, data: bytes, sync: bool) -> Appended:
        """Rotate to a new segment if asked, append ``data``, fsync if asked."""
        rotated = False
        if rotate is not None:
            self._rotate(*rotate)
            rotated = True
        start = self.offset
        if data:
            try:
                self.file.write(data)
            except OSError as e:
                try:
                    self.file.truncate(start)
                except OSError as e2:
                    raise StoreBroken(e2, "cutting back a failed write failed") from e2
                raise WriteFailed(e, self.number, start, rotated) from e
            self.offset += len(data)
        if sync:
            self._sync(self.file, self.path(self.number))
        return Appended(self.number, start, self.offset, rotated)

    def _rotate(self, number: int, head: bytes) -> None:
        old = self.file
        self._sync(old, self.path(self.number))  # older segments are complete on disk
        path = self.path(number)
        try:
            f = self.fs.open_append(path, truncate=True)
        except OSError as e:
            raise WriteFailed(e, self.number, self.offset, False) from e
        try:
            f.write(head)
        except OSError as e:
            f.close()
            try:
                self.fs.delete(path)
            except OSError:
                pass  # recovery takes a torn last segment for an empty one
            raise WriteFailed(e, self.number, self.offset, False) from e
        self._sync(f, path)
        self._sync_dir()
        old.close()
        self._file, self.number, self.offset = f, number, len(head)

    def sync(self) -> None:
        self._sync(self.file, self.path(self.number))

    def delete(self, numbers: list[int]) -> tuple[list[int], list[tuple[int, str]]]:
        """Delete segments; returns (deleted, [(number, error)])."""
        # Whatever was copied out of them must be on disk before they go.
        self.sync()
        deleted, failed = [], []
        for number in numbers:
            try:
                self.fs.delete(self.path(number))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    failed.append((number, str(e)))
                    continue
            deleted.append(number)
        if deleted:
            self._sync_dir()
        return deleted, failed

    def read(self, number: int) -> bytes:
        return self.fs.read(self.path(number))

    def close(self, sync: bool) -> None:
        if self._file is None:
            return
        try:
            if sync:
                self.sync()
        finally:
            self._file.close()
            self._file = None
