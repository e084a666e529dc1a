"""The file layer under the log store, and ``CrashFS``, a file system that crashes.

The log store does every file operation through a :class:`FileSystem`:
:class:`RealFileSystem` for the disk, :class:`CrashFS` for tests.  All of
them are called from the store's I/O thread only.

``CrashFS`` keeps, per file, its *written* content (what a reader sees) and its
*durable* content (what the last fsync made safe), and per directory which
names are durable (made so by fsync of the directory).  It can:

- inject errors (``ENOSPC``, ``EIO``...) at chosen operations
  (:meth:`CrashFS.inject`); a failing write first writes part of its data,
  as a real one does when the disk fills up; a failing fsync drops the pages
  it could not write (a later fsync "succeeds" without them, as on Linux);
- simulate a power cut (:meth:`CrashFS.power_cut`): each file keeps its durable
  content plus an arbitrary prefix of the rest, possibly with garbage or zeros
  in the part that was not synced; a name created or deleted without a
  directory fsync may or may not have survived;
- simulate ``kill -9`` (:meth:`CrashFS.kill9`): everything written survives.
"""

from __future__ import annotations

import collections
import errno as errno_mod
import os
import random
from typing import Protocol

import attrs


class File(Protocol):
    """A file open for appending."""

    def write(self, data: bytes) -> None:
        """Append all of ``data`` or raise OSError (part of it may be written)."""

    def sync(self) -> None:
        """Make what was written durable (fdatasync)."""

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes; later writes append from there."""

    def close(self) -> None:
        """Close the file."""


class Locked(OSError):
    """Another process (another broker) holds the lock on a data directory."""


class Lock(Protocol):
    def release(self) -> None:
        """Give the lock up (also done by the process ending, however it ends)."""


class FileSystem(Protocol):
    def lock(self, path: str) -> Lock:
        """Take the lock file ``path`` for this process, or raise :class:`Locked`."""

    def makedirs(self, path: str) -> None:
        """Create the directory (and parents) if missing."""

    def listdir(self, path: str) -> list[str]:
        """The names in a directory."""

    def open_append(self, path: str, *, truncate: bool = False) -> File:
        """Open (creating it if needed, emptying it if ``truncate``) for appending."""

    def read(self, path: str) -> bytes:
        """The whole content of a file."""

    def delete(self, path: str) -> None:
        """Remove a file."""

    def fsync_dir(self, path: str) -> None:
        """Make the directory's entries (creations, deletions) durable."""


# ------------------------------------------------------------------ the real one


class _RealFile:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def sync(self) -> None:
        _fdatasync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def close(self) -> None:
        os.close(self._fd)


_fdatasync = getattr(os, "fdatasync", os.fsync)


class _FileLock:
    """An ``flock`` on an open file: the kernel drops it when the process dies."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RealFileSystem:
    """The operating system's file system."""

    def lock(self, path: str) -> Lock:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise Locked(
                errno_mod.EWOULDBLOCK, f"in use by another broker (process {holder})", path
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        return _FileLock(fd)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def open_append(self, path: str, *, truncate: bool = False) -> File:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        if truncate:
            flags |= os.O_TRUNC
        return _RealFile(os.open(path, flags, 0o644))

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def delete(self, path: str) -> None:
        os.unlink(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------- CrashFS


@attrs.define(eq=False)
class _Node:
    written: bytearray = attrs.Factory(bytearray)
    durable: bytearray = attrs.Factory(bytearray)
    #: written ranges whose pages a failed fsync dropped: never made durable
    dropped: list[tuple[int, int]] = attrs.Factory(list)

    def sync(self) -> None:
        durable = bytearray(self.written)
        for start, end in self.dropped:
            end = min(end, len(durable))
            if start < end:
                durable[start:end] = bytes(end - start)
        self.dropped.clear()
        self.durable = durable


@attrs.define
class Fault:
    """An error to raise at an operation (see :meth:`CrashFS.inject`)."""

    op: str
    errno: int
    times: int | None  # None: until cleared
    path: str | None  # substring of the path, None: any
    after: int  # let this many matching calls through first

    def hit(self, op: str, path: str) -> bool:
        if op != self.op or (self.path is not None and self.path not in path):
            return False
        if self.after > 0:
            self.after -= 1
            return False
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True


class _CrashFile:
    def __init__(self, fs: CrashFS, path: str, node: _Node) -> None:
        self._fs, self._path, self._node = fs, path, node
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("write to a closed file")
        fault = self._fs._fault("write", self._path)
        if fault is not None:
            self._node.written += data[: len(data) // 2]
            raise OSError(fault.errno, os.strerror(fault.errno), self._path)
        self._node.written += data

    def sync(self) -> None:
        fault = self._fs._fault("fsync", self._path)
        if fault is not None:
            self._node.dropped.append((len(self._node.durable), len(self._node.written)))
            raise OSError(fault.errno, os.strerror(fault.errno), self._path)
        self._node.sync()

    def truncate(self, size: int) -> None:
        self._fs._check("truncate", self._path)
        del self._node.written[size:]

    def close(self) -> None:
        self._closed = True


class _CrashLock:
    def __init__(self, held: set[str], path: str) -> None:
        self._held, self._path = held, path

    def release(self) -> None:
        self._held.discard(self._path)


class CrashFS:
    """An in-memory :class:`FileSystem` that can fail and crash (module docstring)."""

    def __init__(self) -> None:
        #: lock files held (a crash, kill9 or power_cut, releases them all)
        self.locks: set[str] = set()
        self._names: dict[str, _Node] = {}
        self._durable_names: dict[str, _Node] = {}
        self._dirs: set[str] = set()
        self.faults: list[Fault] = []
        #: operation name -> how many times it was called
        self.ops: collections.Counter[str] = collections.Counter()

    # ----------------------------------------------------------- fault injection

    def inject(
        self,
        op: str,
        err: int = errno_mod.ENOSPC,
        *,
        times: int | None = None,
        path: str | None = None,
        after: int = 0,
    ) -> Fault:
        """Make ``op`` (write, fsync, truncate, open, read, delete, fsync_dir,
        listdir) raise ``OSError(err)``, ``times`` times (None: until
        :meth:`clear`), on paths containing ``path``, after ``after`` calls."""
        fault = Fault(op, err, times, path, after)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def _fault(self, op: str, path: str) -> Fault | None:
        self.ops[op] += 1
        for fault in self.faults:
            if fault.hit(op, path):
                return fault
        return None

    def _check(self, op: str, path: str) -> None:
        fault = self._fault(op, path)
        if fault is not None:
            raise OSError(fault.errno, os.strerror(fault.errno), path)

    # ------------------------------------------------------------ FileSystem

    def lock(self, path: str) -> Lock:
        path = os.path.normpath(path)
        if path in self.locks:
            raise Locked(errno_mod.EWOULDBLOCK, "in use by another broker", path)
        self.locks.add(path)
        return _CrashLock(self.locks, path)

    def makedirs(self, path: str) -> None:
        self._dirs.add(os.path.normpath(path))

    def listdir(self, path: str) -> list[str]:
        self._check("listdir", path)
        path = os.path.normpath(path)
        if path not in self._dirs:
            raise FileNotFoundError(errno_mod.ENOENT, "no such directory", path)
        return sorted(
            os.path.basename(name) for name in self._names if os.path.dirname(name) == path
        )

    def open_append(self, path: str, *, truncate: bool = False) -> File:
        self._check("open", path)
        path = os.path.normpath(path)
        if os.path.dirname(path) not in self._dirs:
            raise FileNotFoundError(errno_mod.ENOENT, "no such directory", path)
        node = self._names.get(path)
        if node is None:
            node = self._names[path] = _Node()
        elif truncate:
            del node.written[:]
        return _CrashFile(self, path, node)

    def read(self, path: str) -> bytes:
        self._check("read", path)
        node = self._names.get(os.path.normpath(path))
        if node is None:
            raise FileNotFoundError(errno_mod.ENOENT, "no such file", path)
        return bytes(node.written)

    def delete(self, path: str) -> None:
        self._check("delete", path)
        path = os.path.normpath(path)
        if path not in self._names:
            raise FileNotFoundError(errno_mod.ENOENT, "no such file", path)
        del self._names[path]

    def fsync_dir(self, path: str) -> None:
        self._check("fsync_dir", path)
        path = os.path.normpath(path)
        for name in [n for n in self._durable_names if os.path.dirname(n) == path]:
            del self._durable_names[name]
        for name, node in self._names.items():
            if os.path.dirname(name) == path:
                self._durable_names[name] = node

    # --------------------------------------------------------------- inspection

    def content(self, path: str) -> bytes:
        """What a reader sees (no fault, not counted)."""
        return bytes(self._names[os.path.normpath(path)].written)

    def set_content(self, path: str, data: bytes) -> None:
        """Replace a file's content, durably (to damage it in tests)."""
        node = self._names[os.path.normpath(path)]
        node.written = bytearray(data)
        node.durable = bytearray(data)

    def files(self, directory: str) -> dict[str, int]:
        """Name -> size of the files in ``directory``."""
        directory = os.path.normpath(directory)
        return {
            os.path.basename(name): len(node.written)
            for name, node in sorted(self._names.items())
            if os.path.dirname(name) == directory
        }

    # ------------------------------------------------------------------ crashes

    def kill9(self) -> CrashFS:
        """The file system as a new process finds it after ``kill -9``."""
        fs = CrashFS()
        fs._dirs = set(self._dirs)
        for name, node in self._names.items():
            fs._names[name] = fs._durable_names[name] = _Node(
                bytearray(node.written), bytearray(node.written)
            )
        return fs

    def power_cut(self, rng: random.Random) -> CrashFS:
        """The file system after a power cut, with ``rng`` choosing what survived."""
        fs = CrashFS()
        fs._dirs = set(self._dirs)
        for name in sorted(set(self._names) | set(self._durable_names)):
            current, durable = self._names.get(name), self._durable_names.get(name)
            if current is durable:
                node: _Node | None = current
            elif current is None or durable is None:
                node = (current or durable) if rng.random() < 0.5 else None
            else:
                node = rng.choice((current, durable))
            if node is not None:
                data = _survivor(node, rng)
                fs._names[name] = fs._durable_names[name] = _Node(data, bytearray(data))
        return fs


def _survivor(node: _Node, rng: random.Random) -> bytearray:
    durable, written = node.durable, node.written
    if not written.startswith(durable):  # truncated (or rewritten) since the last fsync
        if rng.random() < 0.5:
            return bytearray(durable)
        common = 0
        limit = min(len(durable), len(written))
        while common < limit and durable[common] == written[common]:
            common += 1
        return bytearray(written[: rng.randint(common, len(written))])
    base = len(durable)
    keep = rng.randint(base, len(written))
    data = bytearray(written[:keep])
    for start, end in node.dropped:
        end = min(end, len(data))
        if start < end:
            data[start:end] = bytes(end - start)
    if keep > base and rng.random() < 0.3:  # a block of the unsynced part never made it
        start = rng.randint(base, keep - 1)
        end = rng.randint(start + 1, keep)
        if rng.random() < 0.5:
            data[start:end] = rng.randbytes(end - start)
        else:
            data[start:end] = bytes(end - start)
    return data
