"""The log store's binary format: segment headers, record frames, record bodies.

A segment file starts with a 16-byte header, ``MBRKSEG1`` and the segment
number (u64), then holds frames back to back.  A frame is::

    magic  2 bytes   b"\\xc3\\x5a"
    crc    u32       zlib.crc32 of everything after it (type, length, body)
    type   u8        which record
    length u32       body length
    body   length bytes

All integers are little-endian.  Strings are UTF-8 with a u16 length (header
values: u32).  The magic lets recovery resynchronise after corruption by
searching for it instead of trying every byte (see :func:`resync`).

Bodies, hand-rolled with :mod:`struct` (a million messages replay in seconds):

- MessageStored: ``<QdIHHHH`` (msg_id, expires_at or NaN for None, payload
  length, properties length, length of the queue names joined with NUL,
  source length, key length), then the queue names, source, key, properties and
  payload.  The properties (section 7: headers, id, priority, and a delayed message's
  due time) are their text form (:func:`mbroker.wire.props.stored_text`), empty for a
  message that has none.  One ``unpack_from`` yields every length, and the last three
  lengths plus the names form one byte string that recovery uses as a cache
  key (a million messages mostly share a few queue/source/key combinations).
- MessageBatch (type 12): a run of messages (16 or more) laid out alike (the same
  queues, source, key, properties and expiry) in one frame: a head like a message's fixed part and
  names, the u64 ids, the u32 payload lengths, a u32 CRC per message, the payloads,
  then the head again (for salvage).  Written by the log store since batch frames
  (older logs hold message frames only, which still read); the layout, the ledger
  sizes and the salvage of a damaged one are :mod:`mbroker.store.batch`'s.
- MessagesRemoved: queue (str), u32 count, then count u64 ids.
- Snapshot: next message id, then every exchange, queue (options and floor)
  and binding; written at the head of each new segment and at open.  Then (absent
  from a snapshot written before dedup windows, which reads as none) the exchanges'
  dedup windows (u32 count, then name and i64 ms each) and the live remembered ids
  (u32 count, then name, id, ``d`` expiry and u32 queues reached each).
- ExchangeDeclared: name, kind, then an i64 dedup window if it has one (an older
  record ends after the kind: none).
- IdRemembered: name, id (str), ``dd`` wall-clock publish time and expiry, u32
  queues reached, u32 bound (the most ids the broker keeps per object).
- Noop: empty; the write probe after a failed write.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from typing import Union

import attrs

from mbroker.core.records import (
    Bound,
    ExchangeDeclared,
    ExchangeDeleted,
    IdRemembered,
    MessagesRemoved,
    MessagesStored,
    MessageStored,
    QueueDeclared,
    QueueDeleted,
    Record,
    Unbound,
)
from mbroker.wire.frames import Props, QueueOptions
from mbroker.wire.props import from_stored, stored_text

FILE_MAGIC = b"MBRKSEG1"
FILE_HEADER = struct.Struct("<8sQ")
MAGIC = b"\xc3\x5a"
HEADER = struct.Struct("<2sIBI")  # magic, crc, type, body length
HEADER_SIZE = HEADER.size  # 11
CRC_START = 6  # the crc covers data[frame + CRC_START : frame end]

T_EXCHANGE_DECLARED = 1
T_EXCHANGE_DELETED = 2
T_QUEUE_DECLARED = 3
T_QUEUE_DELETED = 4
T_BOUND = 5
T_UNBOUND = 6
T_MESSAGE = 7
T_REMOVED = 8
T_SNAPSHOT = 9
T_NOOP = 10
T_ID = 11
T_BATCH = 12  # a batch of messages: mbroker.store.batch
MAX_TYPE = T_BATCH

MSG_FIXED = struct.Struct("<QdIHHHH")
#: where the names block (3 lengths, then queues, source, key) starts in a body
NAMES_AT = 22
_CRC = struct.Struct("<I")
_TL = struct.Struct("<BI")
_TL_MSG = struct.Struct("<BI" + MSG_FIXED.format[1:])  # a message's type, length, fixed part
_MSG_FIXED_SIZE = MSG_FIXED.size
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_REMOVED_FIXED = struct.Struct("<HI")
_SNAP_FIXED = struct.Struct("<QIII")
_ID_TAIL = struct.Struct("<dI")  # an id's expiry and the queues it reached
_ID_RECORD = struct.Struct("<ddII")  # IdRemembered: when, expiry, queues reached, bound
_NAN = float("nan")
_BIG_ENDIAN = sys.byteorder == "big"

Buffer = Union[bytes, memoryview]


class CodecError(ValueError):
    """A record that cannot be encoded (a name too long, a NUL in a queue name)."""


@attrs.frozen
class Snapshot:
    """Every declaration at one point of the log (internal record)."""

    next_msg_id: int
    exchanges: tuple[tuple[str, str], ...]
    queues: tuple[tuple[str, QueueOptions, int], ...]  # name, options, floor
    bindings: tuple[tuple[str, str, str], ...]
    #: exchanges' dedup windows (ms), for those that have one
    dedup_windows: tuple[tuple[str, int], ...] = ()
    #: live remembered ids: (name, id, expires_at, reached)
    ids: tuple[tuple[str, str, float, int], ...] = ()


def file_header(number: int) -> bytes:
    return FILE_HEADER.pack(FILE_MAGIC, number)


def frame(typ: int, body: bytes) -> bytes:
    tl = _TL.pack(typ, len(body))
    return b"".join((MAGIC, _CRC.pack(zlib.crc32(body, zlib.crc32(tl))), tl, body))


def _str16(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 0xFFFF:
        raise CodecError(f"string too long for the log: {len(raw)} bytes")
    return _U16.pack(len(raw)) + raw


#: what messages published together share: (queues+source+key+headers, their lengths)
_Parts = tuple[bytes, int, int, int, int]


def message_parts(rec: MessageStored) -> _Parts:
    """The names block (queues joined with NUL, source, key, properties) and its lengths."""
    for queue in rec.queues:
        if "\0" in queue:
            raise CodecError(f"NUL in queue name {queue!r}")
    qb = "\0".join(rec.queues).encode()
    sb = rec.source.encode()
    kb = rec.key.encode()
    hb = stored_text(rec.props) if rec.props is not None else b""
    return b"".join((qb, sb, kb, hb)), len(qb), len(sb), len(kb), len(hb)


def _encode_run(rec: MessagesStored) -> list[bytes]:
    """The frames of a run: what ``encode_message`` makes of each of its messages."""
    first = MessageStored(rec.first_id, rec.queues, rec.source, rec.key, b"", None, rec.props)
    names, ql, sl, kl, hl = message_parts(first)
    pack, crc32, crc_pack = _TL_MSG.pack, zlib.crc32, _CRC.pack
    fixed = _MSG_FIXED_SIZE + len(names)
    frames = []
    msg_id = rec.first_id
    try:
        for payload in rec.payloads:
            size = len(payload)
            prefix = pack(T_MESSAGE, fixed + size, msg_id, _NAN, size, hl, ql, sl, kl) + names
            frames.append(
                b"".join((MAGIC, crc_pack(crc32(payload, crc32(prefix))), prefix, payload))
            )
            msg_id += 1
    except struct.error as e:
        raise CodecError(f"message {msg_id} cannot be encoded: {e}") from None
    return frames


def encode_message(rec: MessageStored, parts: _Parts | None = None) -> bytes:
    """A message frame; ``parts`` are its ``message_parts`` when already known."""
    names, ql, sl, kl, hl = message_parts(rec) if parts is None else parts
    payload = rec.payload
    size = len(payload)
    expires = _NAN if rec.expires_at is None else rec.expires_at
    try:
        prefix = _TL_MSG.pack(
            T_MESSAGE,
            _MSG_FIXED_SIZE + len(names) + size,
            rec.msg_id,
            expires,
            size,
            hl,
            ql,
            sl,
            kl,
        )
    except struct.error as e:
        raise CodecError(f"message {rec.msg_id} cannot be encoded: {e}") from None
    prefix += names
    return b"".join((MAGIC, _CRC.pack(zlib.crc32(payload, zlib.crc32(prefix))), prefix, payload))


def decode_props(data: Buffer) -> Props | None:
    """A message's properties block read back; a bad one is a :class:`CodecError`."""
    try:
        return from_stored(bytes(data))
    except Exception as e:  # BadArgs, Limit, UnicodeDecodeError: a corrupt block
        raise CodecError(f"bad message properties: {e}") from None


def encode_ids(ids: Sequence[int]) -> bytes:
    arr = array("Q", ids)
    if _BIG_ENDIAN:  # pragma: no cover
        arr.byteswap()
    return arr.tobytes()


def decode_ids(data: Buffer) -> array[int]:
    arr = array("Q")
    arr.frombytes(data)
    if _BIG_ENDIAN:  # pragma: no cover
        arr.byteswap()
    return arr


def encode_options(options: QueueOptions) -> bytes:
    flags = (
        (1 if options.durable else 0)
        | (2 if options.exclusive else 0)
        | (4 if options.overflow == "reject" else 0)
        | (8 if options.auto_delete else 0)
    )
    mask = 0
    parts: list[bytes] = []
    for bit, value in enumerate(
        (options.max_length, options.max_bytes, options.ttl, options.max_deliver)
    ):
        if value is not None:
            mask |= 1 << bit
            parts.append(_I64.pack(value))
    if options.dead_letter is not None:
        mask |= 16
        parts.append(_str16(options.dead_letter))
    if options.expires is not None:  # (after the older fields: old data still decodes)
        mask |= 32
        parts.append(_I64.pack(options.expires))
    if options.dedup_window is not None:  # (the same: after every older field)
        mask |= 64
        parts.append(_I64.pack(options.dedup_window))
    return bytes((flags, mask)) + b"".join(parts)


def _decode_str16(data: Buffer, pos: int) -> tuple[str, int]:
    (length,) = _U16.unpack_from(data, pos)
    pos += 2
    return bytes(data[pos : pos + length]).decode(), pos + length


def decode_options(data: Buffer, pos: int) -> tuple[QueueOptions, int]:
    flags, mask = data[pos], data[pos + 1]
    pos += 2
    ints: list[int | None] = []
    for bit in range(4):
        if mask & (1 << bit):
            ints.append(_I64.unpack_from(data, pos)[0])
            pos += 8
        else:
            ints.append(None)
    dead_letter = None
    if mask & 16:
        dead_letter, pos = _decode_str16(data, pos)
    expires = None
    if mask & 32:
        (expires,) = _I64.unpack_from(data, pos)
        pos += 8
    dedup_window = None
    if mask & 64:
        (dedup_window,) = _I64.unpack_from(data, pos)
        pos += 8
    options = QueueOptions(
        durable=bool(flags & 1),
        max_length=ints[0],
        max_bytes=ints[1],
        overflow="reject" if flags & 4 else "drop-head",
        ttl=ints[2],
        dead_letter=dead_letter,
        max_deliver=ints[3],
        exclusive=bool(flags & 2),
        auto_delete=bool(flags & 8),
        expires=expires,
        dedup_window=dedup_window,
    )
    return options, pos


def encode_snapshot(snap: Snapshot) -> bytes:
    parts = [
        _SNAP_FIXED.pack(
            snap.next_msg_id, len(snap.exchanges), len(snap.queues), len(snap.bindings)
        )
    ]
    for name, kind in snap.exchanges:
        parts += (_str16(name), _str16(kind))
    for name, options, floor in snap.queues:
        parts += (_str16(name), encode_options(options), _U64.pack(floor))
    for queue, exchange, key in snap.bindings:
        parts += (_str16(queue), _str16(exchange), _str16(key))
    if snap.dedup_windows or snap.ids:
        parts.append(_U32.pack(len(snap.dedup_windows)))
        for name, ms in snap.dedup_windows:
            parts += (_str16(name), _I64.pack(ms))
        parts.append(_U32.pack(len(snap.ids)))
        for name, msg_id, expires, reached in snap.ids:
            parts += (_str16(name), _str16(msg_id), _ID_TAIL.pack(expires, reached))
    return frame(T_SNAPSHOT, b"".join(parts))


def decode_snapshot(data: Buffer) -> Snapshot:
    next_id, n_ex, n_q, n_b = _SNAP_FIXED.unpack_from(data, 0)
    pos = _SNAP_FIXED.size
    exchanges = []
    for _ in range(n_ex):
        name, pos = _decode_str16(data, pos)
        kind, pos = _decode_str16(data, pos)
        exchanges.append((name, kind))
    queues = []
    for _ in range(n_q):
        name, pos = _decode_str16(data, pos)
        options, pos = decode_options(data, pos)
        (floor,) = _U64.unpack_from(data, pos)
        pos += 8
        queues.append((name, options, floor))
    bindings = []
    for _ in range(n_b):
        queue, pos = _decode_str16(data, pos)
        exchange, pos = _decode_str16(data, pos)
        key, pos = _decode_str16(data, pos)
        bindings.append((queue, exchange, key))
    windows: list[tuple[str, int]] = []
    ids: list[tuple[str, str, float, int]] = []
    if pos < len(data):  # (a snapshot written before dedup windows ends here)
        (count,) = _U32.unpack_from(data, pos)
        pos += 4
        for _ in range(count):
            name, pos = _decode_str16(data, pos)
            (ms,) = _I64.unpack_from(data, pos)
            pos += 8
            windows.append((name, ms))
        (count,) = _U32.unpack_from(data, pos)
        pos += 4
        for _ in range(count):
            name, pos = _decode_str16(data, pos)
            msg_id, pos = _decode_str16(data, pos)
            expires, reached = _ID_TAIL.unpack_from(data, pos)
            pos += _ID_TAIL.size
            ids.append((name, msg_id, expires, reached))
    return Snapshot(
        next_id, tuple(exchanges), tuple(queues), tuple(bindings), tuple(windows), tuple(ids)
    )


def encode_record(rec: Record) -> bytes:
    """One record as a frame (a run of messages: its frames, joined)."""
    if isinstance(rec, MessageStored):
        return encode_message(rec)
    if isinstance(rec, MessagesStored):
        return b"".join(_encode_run(rec))
    if isinstance(rec, MessagesRemoved):
        qb = rec.queue.encode()
        try:
            fixed = _REMOVED_FIXED.pack(len(qb), len(rec.msg_ids))
        except struct.error as e:
            raise CodecError(f"cannot encode removal: {e}") from None
        return frame(T_REMOVED, b"".join((fixed, qb, encode_ids(rec.msg_ids))))
    if isinstance(rec, QueueDeclared):
        return frame(T_QUEUE_DECLARED, _str16(rec.name) + encode_options(rec.options))
    if isinstance(rec, QueueDeleted):
        return frame(T_QUEUE_DELETED, _str16(rec.name))
    if isinstance(rec, ExchangeDeclared):
        body = _str16(rec.name) + _str16(rec.kind)
        if rec.dedup_window is not None:  # (after the older fields: old data still decodes)
            body += _I64.pack(rec.dedup_window)
        return frame(T_EXCHANGE_DECLARED, body)
    if isinstance(rec, IdRemembered):
        tail = _ID_RECORD.pack(rec.at, rec.expires_at, rec.reached, rec.bound)
        body = _str16(rec.name) + _str16(rec.id) + tail
        return frame(T_ID, body)
    if isinstance(rec, ExchangeDeleted):
        return frame(T_EXCHANGE_DELETED, _str16(rec.name))
    if isinstance(rec, Bound):
        return frame(T_BOUND, _str16(rec.queue) + _str16(rec.exchange) + _str16(rec.key))
    if isinstance(rec, Unbound):
        return frame(T_UNBOUND, _str16(rec.queue) + _str16(rec.exchange) + _str16(rec.key))
    raise CodecError(f"not a record: {rec!r}")


def encode_batch(records: Sequence[Record]) -> tuple[bytes, list[int]]:
    """The frames of ``records`` joined, and each frame's size (one per record, but
    one per message of a ``MessagesStored``).

    Consecutive messages with the same queues, source, key and headers (the same
    objects: a run of publishes) share the encoding of those."""
    frames = []
    last: MessageStored | None = None
    parts: _Parts | None = None
    for rec in records:
        if type(rec) is MessagesStored:
            frames += _encode_run(rec)
        elif type(rec) is MessageStored:
            if not (
                last is not None
                and rec.queues is last.queues
                and rec.source is last.source
                and rec.key is last.key
                and rec.props is last.props
            ):
                parts = message_parts(rec)
                last = rec
            frames.append(encode_message(rec, parts))
        else:
            frames.append(encode_record(rec))
    return b"".join(frames), [len(f) for f in frames]


NOOP = frame(T_NOOP, b"")


def decode_message(body: Buffer) -> MessageStored:
    msg_id, expires, pl, hl, ql, sl, kl = MSG_FIXED.unpack_from(body, 0)
    pos = MSG_FIXED.size
    queues = tuple(bytes(body[pos : pos + ql]).decode().split("\0"))
    pos += ql
    source = bytes(body[pos : pos + sl]).decode()
    pos += sl
    key = bytes(body[pos : pos + kl]).decode()
    pos += kl
    props = decode_props(body[pos : pos + hl]) if hl else None
    pos += hl
    payload = bytes(body[pos : pos + pl])
    return MessageStored(
        msg_id, queues, source, key, payload, None if expires != expires else expires, props
    )


def decode_removed(body: Buffer) -> MessagesRemoved:
    qlen, count = _REMOVED_FIXED.unpack_from(body, 0)
    pos = _REMOVED_FIXED.size
    queue = bytes(body[pos : pos + qlen]).decode()
    pos += qlen
    return MessagesRemoved(queue, tuple(decode_ids(body[pos : pos + 8 * count])))


def decode_record(typ: int, body: Buffer) -> Record | Snapshot | None:
    """The record in a frame body (None for a no-op).  Raises on garbage."""
    if typ == T_MESSAGE:
        return decode_message(body)
    if typ == T_REMOVED:
        return decode_removed(body)
    if typ == T_SNAPSHOT:
        return decode_snapshot(body)
    if typ == T_NOOP:
        return None
    first, pos = _decode_str16(body, 0)
    if typ == T_QUEUE_DECLARED:
        return QueueDeclared(first, decode_options(body, pos)[0])
    if typ == T_QUEUE_DELETED:
        return QueueDeleted(first)
    if typ == T_EXCHANGE_DECLARED:
        kind, pos = _decode_str16(body, pos)
        window = _I64.unpack_from(body, pos)[0] if pos < len(body) else None
        return ExchangeDeclared(first, kind, window)
    if typ == T_ID:
        msg_id, pos = _decode_str16(body, pos)
        at, expires, reached, bound = _ID_RECORD.unpack_from(body, pos)
        return IdRemembered(first, msg_id, at, expires, reached, bound)
    if typ == T_EXCHANGE_DELETED:
        return ExchangeDeleted(first)
    if typ in (T_BOUND, T_UNBOUND):
        exchange, pos = _decode_str16(body, pos)
        key, pos = _decode_str16(body, pos)
        return (Bound if typ == T_BOUND else Unbound)(first, exchange, key)
    raise ValueError(f"unknown record type {typ}")


def valid_frame_end(data: bytes, mv: memoryview, pos: int) -> int:
    """The end offset of a valid frame at ``pos``, or -1."""
    n = len(data)
    if pos + HEADER_SIZE > n:
        return -1
    magic, crc, typ, length = HEADER.unpack_from(data, pos)
    end: int = pos + HEADER_SIZE + length
    if magic != MAGIC or end > n or not 0 < typ <= MAX_TYPE:
        return -1
    if zlib.crc32(mv[pos + CRC_START : end]) != crc:
        return -1
    return end


def resync(data: bytes, mv: memoryview, bad: int) -> int:
    """Where valid frames start again after an invalid one at ``bad``; -1 if never.

    1. If the frame at ``bad`` has an intact magic and a length that lands
       on a valid frame (or exactly on the end of the data), only its body is
       damaged: skip exactly that frame.
    2. Otherwise search forward for the magic and take the first position
       where a valid frame starts that is followed by another valid frame or
       by the end of the data (two checks make a false match in payload bytes
       unlikely; a payload crafted to look like two frames can still fool it,
       which costs at most that the bytes in between are read as records).
    """
    n = len(data)
    if bad + HEADER_SIZE <= n:
        magic, _crc, _typ, length = HEADER.unpack_from(data, bad)
        end: int = bad + HEADER_SIZE + length
        if magic == MAGIC and end <= n and (end == n or valid_frame_end(data, mv, end) > 0):
            return end
    pos = bad + 1
    while True:
        pos = data.find(MAGIC, pos)
        if pos < 0:
            return -1
        end = valid_frame_end(data, mv, pos)
        if end > 0 and (end == n or valid_frame_end(data, mv, end) > 0):
            return pos
        pos += 1
