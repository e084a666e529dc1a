"""Recovery: read every segment in order and rebuild the state.

Runs in the store's I/O thread when the store opens.  It replays all the
segments oldest first into a :class:`~mbroker.store.ledger.Ledger` (which keeps
each recovered message until the :class:`Recovered` is built) and repairs what
a crash left behind:

- **torn tail**: the last segment ends in bytes that are not a whole valid
  frame (a write cut by the crash).  They are cut off (the file is truncated
  and fsync'd) and reported.  With ``fsync="always"`` nothing there was
  confirmed, since a confirm waits for the fsync.
- **corrupt record**: a frame whose CRC does not match, in the middle of a
  segment.  It is reported with its file and offset and skipped, and replay
  goes on from the next valid frame, found as :func:`mbroker.store.codec.resync`
  explains: the record's own length if it leads to a valid frame, else a
  search for the frame magic where a valid frame begins that is followed by
  another valid frame or by the end.  If no valid frame follows, the rest of
  that segment is skipped (in the last segment: cut off, as a torn tail).
- **damaged batch frame**: a batch of messages (:mod:`mbroker.store.batch`) whose
  CRC does not match is salvaged: its intact messages are kept (``salvaged``, with
  their number) and each lost one is reported (``corrupt``, with its place).
- **torn header**: a last segment shorter than its header (a crash while it
  was created) is taken for an empty segment and rewritten.
- **lost exchange declaration**: bindings that name an exchange whose declaration
  was lost are kept, and the exchange is declared again, durable, of the kind its
  binding keys show (``redeclared-exchange``; see ``Ledger.declare_lost_exchanges``).
- **lost declaration**: after damage, messages (or bindings) naming a queue
  that is not declared are kept (:class:`~mbroker.store.ledger.Ledger` explains
  when), and at the end of replay that queue is declared again under its own
  name, durable with default options, and reported (``redeclared``) with the
  damage that preceded it and the number of messages kept.  Its own name, not a
  recovery queue: the surviving bindings and the message records name it, its
  consumers find the messages where they left them, and default options drop
  nothing (no limit, no ttl), so an operator can inspect and re-CREATE it.

Duplicates are harmless: a message id seen again (the copy compaction made of
a live message before deleting the old segment) moves the message, it does not
add it twice.

Speed.  A batch frame (what the store writes for a run of messages laid out alike)
is checked with one CRC and cut apart by a few C-level calls; for new ids of one
declared queue the ledger takes it with two dict updates, without Python bytecode per
message.  Older logs hold one frame per message: the hot loop decodes those inline,
without building record objects, and hands runs of message frames laid out alike
(one queue, source and key, no properties, no expiry, the next ids) to
:mod:`mbroker.store.runs`, which checks each frame exactly as the general loop does.
``replay(..., bulk=False)`` replays every message one at a time: the tests'
reference.  The CRC is zlib-ng's when it is installed (the same CRC-32, several
times faster on small frames).  Each segment is read whole in one sequential
read, the next one in another thread while this one replays.
"""

from __future__ import annotations

import gc
import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from operator import lt

import attrs

from mbroker.core.records import (
    ExchangeDeclared,
    QueueDeclared,
    Record,
    Recovered,
    RecoveryWarning,
)
from mbroker.store.batch import NAMES_AT as BATCH_NAMES_AT
from mbroker.store.batch import PER_MESSAGE, Salvaged, read_batch, salvage, shares
from mbroker.store.codec import (
    CRC_START,
    FILE_HEADER,
    FILE_MAGIC,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MSG_FIXED,
    NAMES_AT,
    T_BATCH,
    T_MESSAGE,
    T_REMOVED,
    Snapshot,
    decode_ids,
    decode_props,
    decode_record,
    resync,
)
from mbroker.store.files import FileSystem
from mbroker.store.ledger import Ledger, Segment
from mbroker.store.runs import LAYOUT_AT, bulk_run, mixed_run
from mbroker.store.segment import SEGMENT_RE, segment_name

try:
    # The same CRC-32 as zlib's, several times faster on small frames (where
    # zlib's own setup costs more than the bytes): replay checks one per frame.
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover (a platform without zlib-ng)
    from zlib import crc32

_CACHE_LIMIT = 4096
_DECODE_ERRORS = (struct.error, UnicodeDecodeError, ValueError, IndexError)


@attrs.define
class ReplayResult:
    recovered: Recovered
    ledger: Ledger
    tail: int  # number of the last segment (0: there is none yet)
    tail_good: int  # where its valid frames end
    tail_size: int  # its size on disk
    bulk_frames: int = 0  # message frames replayed in runs (the rest: one at a time)
    batch_frames: int = 0  # batch frames replayed in bulk


def list_segments(fs: FileSystem, directory: str) -> list[int]:
    numbers = []
    for name in fs.listdir(directory):
        match = SEGMENT_RE.match(name)
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def replay(fs: FileSystem, directory: str, *, bulk: bool = True) -> ReplayResult:
    """Replay every segment in ``directory`` (see the module docstring).

    ``bulk=False`` replays every frame with the general loop (the reference the
    tests compare the runs replayed in bulk with)."""
    # Recovery allocates millions of objects and frees none: the cyclic
    # collector would rescan them again and again for nothing.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _replay(fs, directory, bulk)
    finally:
        if was_enabled:
            gc.enable()


def _replay(fs: FileSystem, directory: str, bulk: bool) -> ReplayResult:
    fs.makedirs(directory)
    numbers = list_segments(fs, directory)
    ledger = Ledger()
    warnings: list[RecoveryWarning] = []
    tail_good = tail_size = bulk_frames = batch_frames = 0
    for number, data in read_ahead(fs, directory, numbers):
        last = number == numbers[-1]
        replayer = _Replayer(ledger, number, data, last, warnings, bulk)
        good = replayer.run()
        bulk_frames += replayer.bulk_frames
        batch_frames += replayer.batch_frames
        if last:
            tail_good, tail_size = good, len(data)
        del data
    for queue in ledger.undeclared_queues():
        file, offset, length = ledger.orphans.get(queue) or ledger.damage or ("", 0, 0)
        _options, count = ledger.declare_again(queue)
        warnings.append(RecoveryWarning("redeclared", file, offset, length, queue, count))
    for exchange, kind, count in ledger.declare_lost_exchanges():
        file, offset, length = ledger.damage or ("", 0, 0)
        warnings.append(
            RecoveryWarning(
                "redeclared-exchange",
                file,
                offset,
                length,
                exchange=exchange,
                exchange_kind=kind,
                bindings=count,
            )
        )
    ledger.damage = None
    ledger.orphans.clear()
    ledger.gone.clear()
    recovered = Recovered(
        exchanges=dict(ledger.decls.exchanges),
        queues=dict(ledger.decls.queues),
        bindings=list(ledger.decls.bindings),
        messages={queue: ledger.recovered_messages(queue) for queue in ledger.decls.queues},
        next_msg_id=ledger.next_msg_id,
        warnings=warnings,
        dedup_windows=dict(ledger.decls.dedup_windows),
        ids=ledger.decls.recovered_ids(),
    )
    ledger.forget_payloads()
    tail = numbers[-1] if numbers else 0
    return ReplayResult(recovered, ledger, tail, tail_good, tail_size, bulk_frames, batch_frames)


def redeclarations(recovered: Recovered) -> list[Record]:
    """The declarations recovery made again (its ``redeclared`` warnings), as records
    to write so that the next start finds them without guessing."""
    again: list[Record] = []
    for w in recovered.warnings:
        if w.kind == "redeclared" and w.queue in recovered.queues:
            again.append(QueueDeclared(w.queue, recovered.queues[w.queue]))
        elif w.kind == "redeclared-exchange" and w.exchange in recovered.exchanges:
            again.append(ExchangeDeclared(w.exchange, recovered.exchanges[w.exchange]))
    return again


def read_ahead(fs: FileSystem, directory: str, numbers: list[int]) -> Iterator[tuple[int, bytes]]:
    """Each segment's number and content, in order, each read whole (one large
    sequential read); the next one is read in another thread while the caller
    replays this one, so that reading the disk and decoding overlap."""
    paths = [os.path.join(directory, segment_name(number)) for number in numbers]
    if len(paths) < 2:
        for number, path in zip(numbers, paths):
            yield number, fs.read(path)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="mbroker-replay") as pool:
        pending = pool.submit(fs.read, paths[0])
        for i, number in enumerate(numbers):
            data = pending.result()
            if i + 1 < len(paths):
                pending = pool.submit(fs.read, paths[i + 1])
            yield number, data
            del data


class _Replayer:
    """Replays one segment into the ledger."""

    def __init__(
        self,
        ledger: Ledger,
        number: int,
        data: bytes,
        last: bool,
        warnings: list[RecoveryWarning],
        bulk: bool = True,
    ) -> None:
        self.ledger = ledger
        self.number = number
        self.name = segment_name(number)
        self.data = data
        self.last = last
        self.warnings = warnings
        self.bulk = bulk
        self.bulk_frames = 0
        self.batch_frames = 0
        self.seg: Segment = ledger.add_segment(number, len(data))

    def warn(self, kind: str, offset: int, length: int) -> None:
        self.warnings.append(RecoveryWarning(kind, self.name, offset, length))
        if kind != "torn-tail":
            self.ledger.damage = (self.name, offset, length)

    def run(self) -> int:
        """Replay; return where the valid frames end."""
        data, n = self.data, len(self.data)
        if n < FILE_HEADER.size and self.last:
            if n:
                self.warn("torn-tail", 0, n)
            return 0
        if n < FILE_HEADER.size or data[:8] != FILE_MAGIC:
            self.warn("bad-header", 0, min(n, FILE_HEADER.size))
        pos = min(n, FILE_HEADER.size)
        mv = memoryview(data)
        ledger, seg = self.ledger, self.seg
        unpack_header, unpack_msg = HEADER.unpack_from, MSG_FIXED.unpack_from
        bulk = self.bulk
        names_at, names_fixed = NAMES_AT, MSG_FIXED.size - NAMES_AT
        store, home, queue_msgs = ledger.store, ledger.home, ledger.queue_msgs
        seg_bits = seg.number << 32
        #: the names block (lengths, queues, source, key) -> decoded
        cache: dict[bytes, tuple[tuple[str, ...], str, str]] = {}
        #: a payload length in a batch frame -> its ledger value (shared by messages)
        packed: dict[int, int] = {}
        # The fast path below counts in locals; _sync() hands them to the
        # ledger before any other ledger call and at the end.
        live_n = live_b = 0
        next_id = ledger.next_msg_id
        while pos < n:
            end = -1
            if pos + HEADER_SIZE <= n:
                magic, crc, typ, length = unpack_header(data, pos)
                end = pos + HEADER_SIZE + length
                if magic != MAGIC or end > n or crc32(mv[pos + CRC_START : end]) != crc:
                    end = -1
            if end < 0:
                salvaged = salvage(data, pos)
                if salvaged is not None:
                    self._sync(live_n, live_b, next_id)
                    live_n = live_b = 0
                    self._salvaged(pos, salvaged)
                    next_id = ledger.next_msg_id
                    pos = salvaged.end
                    continue
                resume = resync(data, mv, pos)
                if resume < 0 or (resume == n and self.last):
                    self._sync(live_n, live_b, next_id)
                    if self.last:
                        self.warn("torn-tail", pos, n - pos)
                        return pos
                    self.warn("corrupt", pos, n - pos)
                    return n
                self.warn("corrupt", pos, resume - pos)
                pos = resume
                continue
            body = pos + HEADER_SIZE
            try:
                if typ == T_MESSAGE:
                    msg_id, expires, pl, hl, ql, sl, kl = unpack_msg(data, body)
                    p = body + names_at
                    q = p + names_fixed + ql + sl + kl
                    raw = data[p:q]
                    names = cache.get(raw)
                    if names is None:
                        if len(cache) > _CACHE_LIMIT:
                            cache.clear()
                        names = cache[raw] = _decode_names(raw, ql, sl)
                    props = decode_props(mv[q : q + hl]) if hl else None
                    q += hl
                    if q + pl != end:
                        raise ValueError("message lengths do not add up")
                    queues = names[0]
                    entry = (
                        msg_id,
                        names[1],
                        names[2],
                        data[q:end],
                        None if expires != expires else expires,
                        props,
                    )
                    # The common case inline: a new message for one queue.
                    msgs = queue_msgs.get(queues[0]) if len(queues) == 1 else None
                    if msgs is not None and msg_id not in home:
                        if msg_id >= next_id:
                            next_id = msg_id + 1
                        msgs[msg_id] = entry
                        size = end - pos
                        home[msg_id] = seg_bits | size
                        live_n += 1
                        live_b += size
                        if (
                            bulk
                            and not hl
                            and expires != expires
                            and data[end + LAYOUT_AT : end + q - pos] == data[pos + LAYOUT_AT : q]
                        ):
                            # The next frame is laid out like this one: most likely a run.
                            if data[end + 6 : end + 11] == data[pos + 6 : pos + 11]:
                                # of frames of one size: cut apart by struct.iter_unpack
                                count, next_id = bulk_run(
                                    data, pos, size, pl, names, msgs, home, seg_bits, next_id
                                )
                                run_bytes = count * size
                            else:
                                count, run_bytes, next_id = mixed_run(
                                    data,
                                    mv,
                                    pos,
                                    end,
                                    q - pos,
                                    names,
                                    msgs,
                                    home,
                                    seg_bits,
                                    next_id,
                                )
                            live_n += count
                            live_b += run_bytes
                            end += run_bytes
                            self.bulk_frames += count
                        pos = end
                        continue
                    next_id = self._sync(live_n, live_b, next_id)
                    live_n = live_b = 0
                    store(msg_id, queues, seg, end - pos, entry)
                    next_id = ledger.next_msg_id
                    pos = end
                    continue
                if typ == T_BATCH:
                    total, expires, hl, ql, sl, stop, ids, lens, payloads = read_batch(
                        data, body, end
                    )
                    raw = data[body + BATCH_NAMES_AT : stop]
                    names = cache.get(raw)
                    if names is None:
                        if len(cache) > _CACHE_LIMIT:
                            cache.clear()
                        names = cache[raw] = _decode_names(raw, ql, sl)
                    props = decode_props(mv[stop : stop + hl]) if hl else None
                    queues, source, key = names
                    entries = zip(
                        ids, repeat(source), repeat(key), payloads, repeat(expires), repeat(props)
                    )
                    msgs = queue_msgs.get(queues[0]) if bulk and len(queues) == 1 else None
                    if msgs is not None and ids[0] >= next_id and all(map(lt, ids, ids[1:])):
                        # new ids for one queue (the common case): all at C speed
                        msgs.update(zip(ids, entries))
                        for size in set(lens).difference(packed):  # (one int per size)
                            packed[size] = seg_bits + PER_MESSAGE + size
                        home.update(zip(ids, map(packed.__getitem__, lens)))
                        home[ids[0]] += end - pos - PER_MESSAGE * len(ids) - total
                        next_id = ids[-1] + 1
                        live_n += len(ids)
                        live_b += end - pos
                        self.batch_frames += 1
                    else:
                        self._sync(live_n, live_b, next_id)
                        live_n = live_b = 0
                        for msg_id, size, entry in zip(ids, shares(lens, end - pos), entries):
                            store(msg_id, queues, seg, size, entry)
                        next_id = ledger.next_msg_id
                    pos = end
                    continue
                next_id = self._sync(live_n, live_b, next_id)
                live_n = live_b = 0
                if typ == T_REMOVED:
                    qlen, count = _REMOVED_FIXED.unpack_from(data, body)
                    p = body + _REMOVED_FIXED.size
                    if p + qlen + 8 * count != end:
                        raise ValueError("removal lengths do not add up")
                    queue = data[p : p + qlen].decode()
                    ledger.remove(queue, decode_ids(mv[p + qlen : end]), seg)
                else:
                    record = decode_record(typ, mv[body:end])
                    if isinstance(record, Snapshot):
                        ledger.apply_snapshot(record, seg)
                    elif record is not None:
                        ledger.declare(record)
                next_id = ledger.next_msg_id
            except _DECODE_ERRORS:
                # A frame with a good CRC that does not decode: written by a
                # bug or a newer version.  Skip it, say so.
                self.warn("corrupt", pos, end - pos)
            pos = end
        self._sync(live_n, live_b, next_id)
        return n

    def _salvaged(self, pos: int, salvaged: Salvaged) -> None:
        """Keep the intact messages of a damaged batch frame, report the others."""
        head, data = salvaged.head, self.data
        kept = salvaged.kept
        try:
            raw = data[head.at + BATCH_NAMES_AT : head.names_end]
            queues, source, key = _decode_names(raw, head.ql, head.sl)
            stop = head.names_end + head.hl
            props = decode_props(data[head.names_end : stop]) if head.hl else None
        except _DECODE_ERRORS:  # (a head whose CRC matches but does not decode)
            self.warn("corrupt", pos, salvaged.end - pos)
            return
        length = salvaged.end - pos
        self.warnings.append(
            RecoveryWarning("salvaged", self.name, pos, length, messages=len(kept))
        )
        self.ledger.damage = (self.name, pos, length)
        for offset, size in salvaged.lost:
            self.warn("corrupt", offset, size)
        store, seg, expires = self.ledger.store, self.seg, head.expires
        for msg_id, payload, size in kept:
            store(msg_id, queues, seg, size, (msg_id, source, key, payload, expires, props))

    def _sync(self, live_n: int, live_b: int, next_id: int) -> int:
        """Hand the fast path's counts to the ledger; the next message id."""
        self.seg.live += live_n
        self.seg.live_bytes += live_b
        if next_id > self.ledger.next_msg_id:
            self.ledger.next_msg_id = next_id
        return self.ledger.next_msg_id


_REMOVED_FIXED = struct.Struct("<HI")


def _decode_names(raw: bytes, ql: int, sl: int) -> tuple[tuple[str, ...], str, str]:
    text = raw[6:]
    queues = tuple(text[:ql].decode().split("\0"))
    return queues, text[ql : ql + sl].decode(), text[ql + sl :].decode()
