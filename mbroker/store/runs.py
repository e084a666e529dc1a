"""Replay of runs of message frames laid out alike (the log's format before batch frames).

Recovery (:mod:`mbroker.store.replay`) hands a run of message frames laid out alike
(one queue, source and key, no properties, no expiry, the next ids) to :func:`bulk_run`
(frames of one size, cut apart by ``struct.iter_unpack``) or :func:`mixed_run` (any
sizes, one ``unpack_from`` per frame); both check each frame exactly as the general
loop does, CRC included, and stop at the first frame that differs, which the general
loop then takes.  Logs written since batch frames (:mod:`mbroker.store.batch`) hold
few such runs; these keep older logs replaying fast.
"""

from __future__ import annotations

import struct
from itertools import repeat
from operator import add

from mbroker.core.records import StoredMessage
from mbroker.store.codec import CRC_START, HEADER_SIZE, MAGIC, T_MESSAGE

try:
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover (a platform without zlib-ng)
    from zlib import crc32

#: frame layouts of runs -> (the struct of a whole frame, of a frame after its crc)
_RUN_STRUCTS: dict[tuple[int, int], tuple[struct.Struct, struct.Struct]] = {}


def bulk_run(
    data: bytes,
    first: int,
    size: int,
    pl: int,
    names: tuple[tuple[str, ...], str, str],
    msgs: dict[int, StoredMessage | None],
    home: dict[int, int],
    seg_bits: int,
    next_id: int,
) -> tuple[int, int]:
    """Replay the run of message frames after the one at ``first``, as long as they
    are laid out exactly like it (a run of publishes: the same size, queue,
    source and key, no properties, no expiry) and carry the next ids; return how many,
    and the next message id.

    The frames are cut apart by ``struct.iter_unpack`` (one C call per frame
    yields its magic, CRC and checked bytes, another its layout, id and payload)
    and the ledger is updated with dict updates.  The first frame that differs in
    any way (its CRC too) ends the run and the general loop takes it, so damage is
    found and reported exactly as there.  (Checking whole columns with ``map``
    and ``zip`` instead was slower: the columns do not stay in the cache.)
    """
    start = first + size
    avail = (len(data) - start) // size
    if avail <= 0:
        return 0, next_id
    structs = _RUN_STRUCTS.get((size, pl))
    if structs is None:
        if len(_RUN_STRUCTS) > 256:
            _RUN_STRUCTS.clear()
        # frame: magic, crc | type+length (5), msg_id (8), fixed rest + names, payload
        structs = _RUN_STRUCTS[(size, pl)] = (
            struct.Struct(f"<2sI{size - CRC_START}s"),
            struct.Struct(f"<5sQ{size - HEADER_SIZE - 8 - pl}s{pl}s"),
        )
    whole, inner = structs
    template = data[first + CRC_START : first + size - pl]
    tl0, mid0 = template[:5], template[13:]
    _queues, source, key = names
    unpack = inner.unpack
    first_id = next_id
    payloads: list[bytes] = []
    add_payload = payloads.append
    for magic, crc, rest in whole.iter_unpack(memoryview(data)[start : start + avail * size]):
        if magic != MAGIC or crc32(rest) != crc:
            break
        tl, msg_id, mid, payload = unpack(rest)
        if msg_id != next_id or tl != tl0 or mid != mid0:
            break
        next_id += 1
        add_payload(payload)
    if payloads:
        ids = list(range(first_id, next_id))  # (one int object per id, shared)
        msgs.update(
            zip(ids, zip(ids, repeat(source), repeat(key), payloads, repeat(None), repeat(None)))
        )
        home.update(dict.fromkeys(ids, seg_bits | size))
    return len(payloads), next_id


#: the head of a message frame (up to its payload) -> its struct
_RUN_HEADS: dict[int, struct.Struct] = {}
#: where, in a message frame, the expiry and the properties length (then the names) start
_EXPIRES_AT = HEADER_SIZE + 8
LAYOUT_AT = HEADER_SIZE + 20


def mixed_run(
    data: bytes,
    mv: memoryview,
    first: int,
    end: int,
    head: int,
    names: tuple[tuple[str, ...], str, str],
    msgs: dict[int, StoredMessage | None],
    home: dict[int, int],
    seg_bits: int,
    next_id: int,
) -> tuple[int, int, int]:
    """Replay the run of message frames after the one at ``first`` (which ends at
    ``end``; its head, the frame up to its payload, is ``head`` bytes): frames laid
    out like it (the same queue, source and key, no properties, no expiry), of any
    payload size, with the next ids (a gap ends the run: the general loop takes that
    frame and a new run starts after it).  Return how many, their bytes, and the next
    message id.

    One ``unpack_from`` per frame yields its magic, CRC, type, length, id, expiry,
    payload length and layout bytes; the frame is taken only if each is what the
    general loop would accept and the CRC of its bytes matches, exactly as there.
    The first frame that differs in any way ends the run and the general loop takes
    it, so damage is found and reported at the same offsets.  The ledger gets the
    run with two dict updates; the entries are built by ``zip``, in C.
    """
    unpack = _RUN_HEADS.get(head)
    if unpack is None:
        if len(_RUN_HEADS) > 256:
            _RUN_HEADS.clear()
        # magic, crc, type, length | msg_id, expires (as bytes), payload length | layout
        unpack = _RUN_HEADS[head] = struct.Struct(f"<2sIBIQ8sI{head - LAYOUT_AT}s")
    unpack_from = unpack.unpack_from
    expires0 = data[first + _EXPIRES_AT : first + LAYOUT_AT - 4]
    layout0 = data[first + LAYOUT_AT : first + head]
    fixed = head - HEADER_SIZE  # the body before the payload
    n = len(data)
    start = pos = end
    first_id = next_id
    payloads: list[bytes] = []
    add_payload = payloads.append
    # (locals: the loop below runs once per frame)
    check, magic0, message, header_size, crc_start = crc32, MAGIC, T_MESSAGE, HEADER_SIZE, CRC_START
    try:
        while pos < n:
            magic, crc, typ, length, msg_id, expires, pl, layout = unpack_from(data, pos)
            end = pos + header_size + length
            if (
                msg_id != next_id
                or magic != magic0
                or typ != message
                or layout != layout0
                or expires != expires0
                or length != fixed + pl
                or end > n
                or check(mv[pos + crc_start : end]) != crc
            ):
                break
            next_id += 1
            add_payload(data[end - pl : end])
            pos = end
    except struct.error:
        pass  # a frame head cut short by the end: the general loop takes it
    if payloads:
        ids = list(range(first_id, next_id))  # (one int object per id, shared)
        _queues, source, key = names
        msgs.update(
            zip(ids, zip(ids, repeat(source), repeat(key), payloads, repeat(None), repeat(None)))
        )
        home.update(zip(ids, map(add, map(len, payloads), repeat(seg_bits | head))))
    return len(payloads), pos - start, next_id
