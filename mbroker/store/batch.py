"""Batch message frames: a run of messages laid out alike, stored as one frame.

The writer (:func:`encode_records`) stores each run of at least :data:`BATCH_MIN`
message records of one write that share their layout (the same queues, source, key,
properties and expiry; any ids) as one frame of type ``T_BATCH``, at most
:data:`BATCH_MAX` messages and about :data:`BATCH_BYTES` of payload each, instead of
one message frame per message.  Recovery then checks a whole run with one CRC and
cuts it apart with a few C-level calls (:func:`read_batch`): no
Python bytecode runs per message.  The body of a batch frame::

    head       <IIdHHHH  count, payload bytes, expires_at (NaN: none), properties
                         length, length of the queue names joined with NUL, source
                         length, key length; then the queue names, source, key and
                         properties (as in a message frame)
    head crc   u32       zlib.crc32 of the head
    ids        count u64       the messages' ids (in the order written)
    lengths    count u32       their payload lengths
    crcs       count u32       zlib.crc32 of each message's id (u64), length (u32)
                               and payload
    payloads   back to back
    the head and its crc again, then u32: their size

The frame's own CRC covers all of it, as for every frame.  The rest is redundancy
for :func:`salvage`: when that CRC does not match, a valid head (the first copy, at
a fixed place; else the second, found from the frame's length) gives the frame's
extent and layout, and each message whose own CRC matches is kept, so one flipped
byte loses at most the one message it hit (a flipped length loses none: the
message's place is known from its neighbours).  A batch frame cut short (a torn
tail) is cut off whole, as any frame.

Ledger sizes: a message of a batch frame counts 16 bytes plus its payload; the
first one also counts the frame's fixed part, so that the sizes add up to the frame.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add

import attrs

from mbroker.core.records import MessagesStored, MessageStored, Record
from mbroker.store.codec import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    T_BATCH,
    CodecError,
    decode_props,
    encode_batch,
    message_parts,
)
from mbroker.wire.frames import Props

try:
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover (a platform without zlib-ng)
    from zlib import crc32

#: runs shorter than this are written as message frames: a batch frame costs about
#: 6 µs more to write and 3 µs more to replay than its messages, and pays that back
#: from about 16 messages (benchmarks/RESULTS.md, section 23)
BATCH_MIN = 16
#: the most messages in one batch frame, and the payload bytes after which a frame ends
BATCH_MAX = 4096
BATCH_BYTES = 1 << 20

HEAD = struct.Struct("<IIdHHHH")
HEAD_SIZE = HEAD.size  # 24
#: where the names block (3 lengths, then queues, source, key) starts in a head
NAMES_AT = 18
#: bytes per message outside its payload: id, length, crc
PER_MESSAGE = 16
_U32 = struct.Struct("<I")
_TL = struct.Struct("<BI")
_ID_LEN = struct.Struct("<QI")
_NAN = float("nan")
_BIG_ENDIAN = sys.byteorder == "big"

#: what a record of a run shares with the others: queues, source, key, props, expiry
_Layout = tuple[tuple[str, ...], str, str, "Props | None", "float | None"]


# ------------------------------------------------------------------- writing


def encode_records(records: Sequence[Record], least: int = BATCH_MIN) -> tuple[bytes, list[int]]:
    """What :func:`mbroker.store.codec.encode_batch` makes of ``records``, but each
    run of at least ``least`` messages laid out alike in batch frames.

    Returns the frames joined and one size per record (one per message of a
    ``MessagesStored`` and of a batch frame), for the ledger."""
    messages = 0
    for rec in records:  # (too few messages for a batch frame: the old way, at once)
        if type(rec) is MessagesStored:
            messages += len(rec.payloads)
        elif type(rec) is MessageStored:
            messages += 1
    if messages < least:
        return encode_batch(records)
    out: list[bytes] = []
    sizes: list[int] = []
    single: list[Record] = []  # records for message frames, in order
    run: list[MessageStored | MessagesStored] = []
    layout: _Layout | None = None
    count = 0

    def flush() -> None:
        nonlocal count
        if count >= least:
            if single:
                data, more = encode_batch(single)
                out.append(data)
                sizes.extend(more)
                single.clear()
            _encode_run(run, out, sizes)
        else:
            single.extend(run)
        run.clear()
        count = 0

    for rec in records:
        kind = type(rec)
        if kind is MessagesStored:
            assert isinstance(rec, MessagesStored)
            mine: _Layout = (rec.queues, rec.source, rec.key, rec.props, None)
            n = len(rec.payloads)
        elif kind is MessageStored:
            assert isinstance(rec, MessageStored)
            mine = (rec.queues, rec.source, rec.key, rec.props, rec.expires_at)
            n = 1
        else:
            if run:
                flush()
            single.append(rec)
            continue
        if run and mine != layout:
            flush()
        layout = mine
        run.append(rec)
        count += n
    if run:
        flush()
    if single:
        data, more = encode_batch(single)
        out.append(data)
        sizes.extend(more)
    return b"".join(out), sizes


def _encode_run(
    run: list[MessageStored | MessagesStored], out: list[bytes], sizes: list[int]
) -> None:
    """Append the batch frames of ``run`` (records laid out alike) and their sizes."""
    first = run[0]
    if isinstance(first, MessageStored):
        template, expires = first, first.expires_at
    else:
        template = MessageStored(0, first.queues, first.source, first.key, b"", None, first.props)
        expires = None
    parts = message_parts(template)
    ids: Sequence[int]
    payloads: Sequence[bytes]
    if len(run) == 1 and isinstance(first, MessagesStored):  # (the common case)
        ids = range(first.first_id, first.first_id + len(first.payloads))
        payloads = first.payloads
    else:
        ids, payloads = [], []
        for rec in run:
            if isinstance(rec, MessagesStored):
                ids.extend(range(rec.first_id, rec.first_id + len(rec.payloads)))
                payloads.extend(rec.payloads)
            else:
                ids.append(rec.msg_id)
                payloads.append(rec.payload)
    lens = list(map(len, payloads))
    if len(lens) <= BATCH_MAX and sum(lens) < BATCH_BYTES:
        cuts = [len(lens)]
    else:  # up to BATCH_MAX messages a frame, ending with the one that passes BATCH_BYTES
        ends, cuts, start = list(accumulate(lens)), [], 0
        while start < len(lens):
            base = ends[start - 1] if start else 0
            start = min(
                start + BATCH_MAX, bisect_left(ends, base + BATCH_BYTES, start) + 1, len(lens)
            )
            cuts.append(start)
    start = 0
    for stop in cuts:
        frame = encode_frame(ids[start:stop], payloads[start:stop], parts, expires)
        share = list(map(add, lens[start:stop], repeat(PER_MESSAGE)))
        share[0] += len(frame) - sum(share)
        out.append(frame)
        sizes.extend(share)
        start = stop


def encode_frame(
    ids: Sequence[int],
    payloads: Sequence[bytes],
    parts: tuple[bytes, int, int, int, int],
    expires: float | None,
) -> bytes:
    """One batch frame; ``parts`` are the layout's ``message_parts``."""
    names, ql, sl, kl, hl = parts
    try:
        lens = array("I", map(len, payloads))
        idarr = array("Q", ids)
        head = HEAD.pack(len(ids), sum(lens), _NAN if expires is None else expires, hl, ql, sl, kl)
    except (struct.error, OverflowError) as e:
        raise CodecError(f"messages cannot be encoded: {e}") from None
    head += names
    head += _U32.pack(zlib.crc32(head))
    crcs = array("I", map(crc32, payloads, map(crc32, map(_ID_LEN.pack, idarr, lens))))
    if _BIG_ENDIAN:  # pragma: no cover
        for arr in (idarr, lens, crcs):
            arr.byteswap()
    body = b"".join(
        (
            head,
            idarr.tobytes(),
            lens.tobytes(),
            crcs.tobytes(),
            *payloads,
            head,
            _U32.pack(len(head)),
        )
    )
    tl = _TL.pack(T_BATCH, len(body))
    return b"".join((MAGIC, _U32.pack(crc32(body, crc32(tl))), tl, body))


# ------------------------------------------------------------------- reading


@attrs.frozen
class Head:
    """A batch frame's head, read at ``at`` (a body's start)."""

    at: int
    count: int
    total: int  # payload bytes
    expires: float | None
    hl: int
    ql: int
    sl: int
    kl: int

    @property
    def size(self) -> int:
        """The head's size, crc included."""
        return HEAD_SIZE + self.ql + self.sl + self.kl + self.hl + 4

    @property
    def body_size(self) -> int:
        return 2 * self.size + PER_MESSAGE * self.count + self.total + 4

    @property
    def names_end(self) -> int:
        return self.at + HEAD_SIZE + self.ql + self.sl + self.kl


def read_batch(data: bytes, at: int, end: int) -> _Columns:
    """The batch frame whose body is ``data[at:end]`` (its CRC checked already):
    ``(payload bytes, expiry, properties length, queue names length, source length,
    where the names end, ids, payload lengths, payloads)``; a ValueError (or
    struct.error) if its lengths do not add up.  A few C calls, whatever the count."""
    count, total, expires, hl, ql, sl, kl = _unpack_head(data, at)
    names_end = at + HEAD_SIZE + ql + sl + kl
    ids_at = names_end + hl + 4
    payloads_at = ids_at + PER_MESSAGE * count
    if not count or end != payloads_at + total + ids_at - at + 4:
        raise ValueError("batch frame lengths do not add up")
    cut = _COLUMNS.get(count)
    if cut is None:
        if len(_COLUMNS) > 256:
            _COLUMNS.clear()
        cut = _COLUMNS[count] = struct.Struct(f"<{count}Q{count}I")
    both = cut.unpack_from(data, ids_at)
    ids, lens = both[:count], both[count:]
    if sum(lens) != total:
        raise ValueError("batch frame lengths do not add up")
    size = lens[0]
    if lens.count(size) == count:  # (payloads of one size: a struct made once)
        cut = _EQUAL.get((size, count))
        if cut is None:
            if len(_EQUAL) > 64:
                _EQUAL.clear()
            cut = _EQUAL[(size, count)] = struct.Struct("<" + f"{size}s" * count)
    elif max(lens) < len(_PIECES):
        cut = struct.Struct("<" + "".join(map(_PIECES.__getitem__, lens)))
    else:
        cut = struct.Struct("<" + ("%ds" * count) % lens)
    payloads = list(cut.unpack_from(data, payloads_at))
    return (
        total,
        None if expires != expires else expires,
        hl,
        ql,
        sl,
        names_end,
        ids,
        lens,
        payloads,
    )


_unpack_head = HEAD.unpack_from
_Columns = tuple[
    int, "float | None", int, int, int, int, tuple[int, ...], tuple[int, ...], list[bytes]
]
#: count -> the struct of a batch frame's ids and payload lengths
_COLUMNS: dict[int, struct.Struct] = {}
#: (payload size, count) -> the struct that cuts a batch frame's payloads apart
_EQUAL: dict[tuple[int, int], struct.Struct] = {}
#: a payload length -> its struct code (the format of a frame of small payloads of
#: mixed sizes is joined from these: twice as fast as formatting it)
_PIECES = [f"{size}s" for size in range(1024)]


def shares(lens: Sequence[int], frame_size: int) -> list[int]:
    """Each message's size in the ledger (see the module docstring)."""
    out = list(map(add, lens, repeat(PER_MESSAGE)))
    out[0] += frame_size - sum(out)
    return out


def decode_batch(body: bytes | memoryview) -> list[MessageStored]:
    """The messages of a valid batch frame's body (compaction, tests)."""
    data = bytes(body)
    _total, expires, hl, ql, sl, names_end, ids, _lens, payloads = read_batch(data, 0, len(data))
    raw = data[HEAD_SIZE:names_end]
    queues = tuple(raw[:ql].decode().split("\0"))
    source, key = raw[ql : ql + sl].decode(), raw[ql + sl :].decode()
    props = decode_props(data[names_end : names_end + hl]) if hl else None
    return [
        MessageStored(msg_id, queues, source, key, payload, expires, props)
        for msg_id, payload in zip(ids, payloads)
    ]


# ------------------------------------------------------------------ salvage


@attrs.frozen
class Salvaged:
    """What :func:`salvage` kept of a damaged batch frame."""

    head: Head  # the valid copy of its head (``head.at``: where that copy is)
    end: int
    #: (msg_id, payload, ledger size) of each intact message, in order
    kept: list[tuple[int, bytes, int]]
    #: (offset, length) of each lost message's bytes
    lost: list[tuple[int, int]]


def salvaged_messages(data: bytes, salvaged: Salvaged) -> list[MessageStored]:
    """The messages :func:`salvage` kept, as records (compaction copies them)."""
    head = salvaged.head
    raw = data[head.at + HEAD_SIZE : head.names_end]
    queues = tuple(raw[: head.ql].decode().split("\0"))
    source = raw[head.ql : head.ql + head.sl].decode()
    key = raw[head.ql + head.sl :].decode()
    props = decode_props(data[head.names_end : head.names_end + head.hl]) if head.hl else None
    return [
        MessageStored(msg_id, queues, source, key, payload, head.expires, props)
        for msg_id, payload, _size in salvaged.kept
    ]


def _valid_head(data: bytes, at: int, limit: int) -> Head | None:
    if at < 0 or at + HEAD_SIZE > limit:
        return None
    count, total, expires, hl, ql, sl, kl = HEAD.unpack_from(data, at)
    head = Head(at, count, total, None if expires != expires else expires, hl, ql, sl, kl)
    stop = at + head.size - 4
    if not count or stop + 4 > limit:
        return None
    if zlib.crc32(data[at:stop]) != _U32.unpack_from(data, stop)[0]:
        return None
    return head


def salvage(data: bytes, pos: int) -> Salvaged | None:
    """The intact messages of a damaged batch frame at ``pos`` (whose frame CRC does
    not match), or None if no batch frame can be found there whole (see the module
    docstring)."""
    n = len(data)
    at = pos + HEADER_SIZE
    head = _valid_head(data, at, n)
    if head is None:
        # the head is damaged: its copy, found from the frame's length
        if at > n:
            return None
        magic, _crc, typ, length = HEADER.unpack_from(data, pos)
        end = at + length
        if magic != MAGIC or typ != T_BATCH or end > n or length < HEAD_SIZE + 8:
            return None
        (size,) = _U32.unpack_from(data, end - 4)
        copy = _valid_head(data, end - 4 - size, end - 4)
        if copy is None or copy.size != size or copy.body_size != length:
            return None
        head = copy
    end = at + head.body_size
    if end > n:
        return None  # cut short: a torn tail, not a damaged frame
    count = head.count
    ids_at = at + head.size
    ids = struct.unpack_from(f"<{count}Q", data, ids_at)
    lens = struct.unpack_from(f"<{count}I", data, ids_at + 8 * count)
    crcs = struct.unpack_from(f"<{count}I", data, ids_at + 12 * count)
    first = ids_at + PER_MESSAGE * count
    last = first + head.total
    after = list(accumulate(reversed(lens), initial=0))[::-1]  # bytes after each one's end
    kept: list[tuple[int, bytes, int]] = []
    lost: list[tuple[int, int]] = []
    overhead = end - pos - PER_MESSAGE * count - head.total
    start = first
    for i, (msg_id, size, crc) in enumerate(zip(ids, lens, crcs)):
        back = last - after[i + 1]  # where it ends, counted from the end
        for s, e in ((start, start + size), (back - size, back), (start, back)):
            if first <= s <= e <= last:
                payload = data[s:e]
                if crc32(payload, crc32(_ID_LEN.pack(msg_id, e - s))) == crc:
                    share = PER_MESSAGE + e - s + (overhead if i == 0 else 0)
                    kept.append((msg_id, payload, share))
                    break
        else:
            lost.append((max(first, min(start, last)), size))
        start += size
    return Salvaged(head, end, kept, lost)
