"""Rewriting mostly-dead segments: which one, and the copies of its live messages.

The log store deletes a segment as soon as nothing in it matters
(:meth:`mbroker.store.ledger.Ledger.deletable`).  A segment that still holds
a few live messages among many dead ones would pin its whole size on disk, so
the :class:`Compactor` rewrites it:

1. it picks the oldest sealed segment whose live bytes are under the ratio,
   among those whose removal records point into no existing segment (so that
   it can be deleted as soon as its live messages are copied) and that are not
   the newest sealed one (whose few live messages are mostly deliveries in
   flight that are acked moments later: reading 64 MiB to copy them would cost
   far more than waiting);
2. the segment is read and scanned in a reader thread, off the write path
   (a sealed segment never changes), into ``(msg_id, frame body)`` pairs (a batch
   frame's messages each as a message frame's body; a damaged batch frame salvaged as
   recovery salvages it);
3. each group written to the tail takes, at its head, copies of the next
   messages that are still live there (up to ``chunk`` bytes), each listing
   only the queues the message is still in.  The copies are taken from the
   ledger's state when the group is built, which is the state at the end of
   the log, so a removal waiting in the same group lands after its copy;
4. once every copy is written the segment has no live message and the
   ordinary deletion takes it; the deletion job fsyncs the tail first, so the
   copies are on disk before the original goes.

Decoding is lazy: only the frames of live messages are decoded, a chunk at a
time, on the reactor thread.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import attrs

from mbroker.core.records import MessageStored
from mbroker.store.batch import decode_batch, salvage, salvaged_messages
from mbroker.store.codec import (
    FILE_HEADER,
    HEADER_SIZE,
    MSG_FIXED,
    T_BATCH,
    T_MESSAGE,
    decode_message,
    encode_message,
    resync,
    valid_frame_end,
)
from mbroker.store.ledger import Ledger

_MSG_ID_SIZE = 8


def message_frames(data: bytes) -> list[tuple[int, bytes]]:
    """``(msg_id, body)`` of every valid message frame of a segment (reader thread);
    the messages of a batch frame (and those recovery salvaged from a damaged one)
    each as the body of a message frame."""
    out = []
    mv = memoryview(data)
    pos = FILE_HEADER.size
    while 0 <= pos < len(data):
        end = valid_frame_end(data, mv, pos)
        if end < 0:
            salvaged = salvage(data, pos)
            if salvaged is None:
                pos = resync(data, mv, pos)
                continue
            messages = _decoded(salvaged_messages, data, salvaged)
            pos = salvaged.end
        else:
            typ, body = data[pos + 6], mv[pos + HEADER_SIZE : end]
            pos = end
            if typ == T_MESSAGE and len(body) >= MSG_FIXED.size:
                out.append((int.from_bytes(body[:_MSG_ID_SIZE], "little"), bytes(body)))
                continue
            if typ != T_BATCH:
                continue
            messages = _decoded(decode_batch, body)
        out += [(m.msg_id, encode_message(m)[HEADER_SIZE:]) for m in messages]
    return out


def _decoded(decode: Callable[..., list[MessageStored]], *args: Any) -> list[MessageStored]:
    try:
        return decode(*args)
    except (ValueError, IndexError, struct.error):  # (a good CRC around garbage)
        return []


@attrs.define
class Copies:
    """Copies for one group: the records, their frames, each frame's size."""

    records: list[MessageStored] = attrs.Factory(list)
    frames: list[bytes] = attrs.Factory(list)
    sizes: list[int] = attrs.Factory(list)


@attrs.define
class Compactor:
    ratio: float
    chunk: int
    #: the segment being rewritten, None when idle
    segment: int | None = None
    reading: bool = False
    frames: list[tuple[int, bytes]] = attrs.Factory(list)
    cursor: int = 0
    copied: set[int] = attrs.Factory(set)
    #: segments not to try again (unreadable, or copies did not empty them)
    skip: set[int] = attrs.Factory(set)
    done: int = 0
    messages_copied: int = 0

    def start(self, ledger: Ledger) -> int | None:
        """Pick a segment to rewrite and start reading it; None if none is due."""
        if self.segment is not None:
            return None
        number = ledger.rewrite_candidate(self.ratio, self.skip)
        if number is not None:
            self.segment, self.reading = number, True
            self.frames, self.cursor, self.copied = [], 0, set()
        return number

    def loaded(self, number: int, frames: list[tuple[int, bytes]]) -> None:
        if self.segment == number and self.reading:
            self.frames, self.reading = frames, False

    def failed_to_read(self, number: int) -> None:
        if self.segment == number:
            self.skip.add(number)
            self.abandon()

    def abandon(self) -> None:
        """Stop (a write failed and took copies with it, or the store closes)."""
        self.segment, self.reading, self.frames = None, False, []

    def has_copies(self) -> bool:
        return self.segment is not None and not self.reading and self.cursor < len(self.frames)

    def take(self, ledger: Ledger) -> Copies:
        """The next copies to write, as of the ledger's state now."""
        copies = Copies()
        if not self.has_copies():
            return copies
        budget, number = self.chunk, self.segment
        home, frames = ledger.home, self.frames
        while self.cursor < len(frames) and budget > 0:
            msg_id, body = frames[self.cursor]
            self.cursor += 1
            packed = home.get(msg_id)
            if packed is None or packed >> 32 != number or msg_id in self.copied:
                continue
            try:
                msg = decode_message(body)
            except (ValueError, IndexError, struct.error):
                continue
            queues = ledger.live_queues(msg_id, msg.queues)
            if not queues:
                continue
            if queues != msg.queues:
                msg = attrs.evolve(msg, queues=queues)
            frame = encode_message(msg)
            self.copied.add(msg_id)
            copies.records.append(msg)
            copies.frames.append(frame)
            copies.sizes.append(len(frame))
            budget -= len(frame)
        self.messages_copied += len(copies.records)
        return copies

    def check_done(self, ledger: Ledger) -> int | None:
        """After a group was written: if the rewrite is over, the live count it left."""
        if self.segment is None or self.reading or self.cursor < len(self.frames):
            return None
        seg = ledger.segments.get(self.segment)
        left = seg.live if seg is not None else 0
        if left:
            self.skip.add(self.segment)
        else:
            self.done += 1
        self.abandon()
        return left
