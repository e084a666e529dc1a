"""What is live where: the log store's bookkeeping, without payloads.

The :class:`Ledger` mirrors the log as it is on disk.  Recovery builds it while
it replays the segments; afterwards the store applies each group of records to
it once the group has been written.  It answers the compaction questions:
which segments hold no live message and can go, which are mostly dead and
should be rewritten.

Per live message it keeps one dict entry, ``msg_id -> segment << 32 | frame
size`` (no payload: the broker keeps payloads in memory), and its id in the
set (a dict) of each queue it is in.  Per segment: size, live messages and live
bytes, and ``refs``, the older segments that its removal records point into.

Why ``refs``: a removal record in segment K makes a message stored in an older
segment H dead.  If K were deleted while H exists, recovery would bring the
message back.  So K may go only once every segment in ``K.refs`` is gone.
Queue deletions need no refs: every segment but the last one is followed by a
snapshot of the declarations (written at the head of each new segment), which
says which queues exist and, through each queue's *floor* (the next message id
when it was declared), which of their older messages belong to a deleted
incarnation.  A segment may go only when a later segment has such a snapshot.

Lost declarations (recovery only).  Once replay has met damage (``damage``), a
message naming a queue that is not declared is not ignored: the queue's
declaration may have been in the damaged bytes.  Its messages are kept as an
*orphan* queue (``orphans``) unless the log says the queue was deleted after
them (a ``QueueDeleted`` record or a snapshot without it, remembered in
``gone``).  A later declaration or snapshot adopts them; what is left at the end
of replay is declared again (see :mod:`mbroker.store.replay`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import attrs

from mbroker.core.records import (
    MessagesRemoved,
    MessagesStored,
    MessageStored,
    QueueDeclared,
    QueueDeleted,
    Record,
    StoredMessage,
)
from mbroker.store.codec import Snapshot
from mbroker.store.state import Declarations, pack_id, sorted_messages, unpack_id
from mbroker.wire.frames import QueueOptions

_SIZE_MASK = (1 << 32) - 1
_ABSENT = object()


@attrs.define(eq=False)
class Segment:
    number: int
    size: int = 0
    live: int = 0
    live_bytes: int = 0
    #: older segments holding messages that this segment's removals removed
    refs: set[int] = attrs.Factory(set)


@attrs.define(eq=False)
class Ledger:
    decls: Declarations = attrs.Factory(Declarations)
    #: msg_id -> segment << 32 | frame size, for every live message
    home: dict[int, int] = attrs.Factory(dict)
    #: queue -> ids of its live messages (values: the message during recovery, then None)
    queue_msgs: dict[str, dict[int, StoredMessage | None]] = attrs.Factory(dict)
    #: msg_id -> number of queues it is live in, when more than one
    multi: dict[int, int] = attrs.Factory(dict)
    #: msg_id -> older segments that still hold a copy (compaction in progress)
    copies: dict[int, list[int]] = attrs.Factory(dict)
    #: existing segments, oldest first
    segments: dict[int, Segment] = attrs.Factory(dict)
    next_msg_id: int = 1
    tail: int = 0
    #: the newest segment holding a snapshot of the declarations
    last_snapshot: int = 0
    #: segments that lost live messages since the last look (None: look at all),
    #: so that the compaction questions cost little after each group
    _delete_watch: set[int] | None = None
    _rewrite_watch: set[int] | None = None
    #: recovery only: the latest damage met, ``(file, offset, length)``, or None
    damage: tuple[str, int, int] | None = None
    #: recovery only: undeclared queues whose messages are kept -> the damage before
    orphans: dict[str, tuple[str, int, int]] = attrs.Factory(dict)
    #: recovery only: queue -> the next message id when it was last deleted
    gone: dict[str, int] = attrs.Factory(dict)

    # ------------------------------------------------------------- segments

    def add_segment(self, number: int, size: int = 0, snapshot: bool = False) -> Segment:
        seg = self.segments[number] = Segment(number, size)
        self.tail = max(self.tail, number)
        if snapshot:
            self.last_snapshot = max(self.last_snapshot, number)
        self._delete_watch = self._rewrite_watch = None
        return seg

    def deleted(self, numbers: Iterable[int]) -> None:
        for number in numbers:
            self.segments.pop(number, None)
        self._delete_watch = self._rewrite_watch = None

    def _lost_live(self, number: int) -> None:
        if self._delete_watch is not None:
            self._delete_watch.add(number)
        if self._rewrite_watch is not None:
            self._rewrite_watch.add(number)

    def _watched(self, watch: set[int] | None) -> list[tuple[int, Segment]]:
        existing = self.segments
        if watch is None:
            return list(existing.items())
        return [(n, existing[n]) for n in sorted(watch) if n in existing]

    def deletable(self) -> list[int]:
        """Segments that hold nothing recovery needs (among those changed since)."""
        watched, self._delete_watch = self._watched(self._delete_watch), set()
        existing = self.segments
        return [
            n
            for n, seg in watched
            if n != self.tail
            and n < self.last_snapshot
            and seg.live == 0
            and not any(r in existing for r in seg.refs)
        ]

    def rewrite_candidate(self, ratio: float, exclude: set[int]) -> int | None:
        """The oldest sealed segment whose live bytes are under ``ratio`` of its size.

        Only one whose removals point into no existing segment, so that it can
        be deleted as soon as its live messages are copied; and only once a later
        segment was sealed too: the newest sealed segment still holds the messages
        that were in flight when it was sealed, which consumers that keep up
        acknowledge moments later (it is then deleted whole, unread).
        """
        watched, self._rewrite_watch = self._watched(self._rewrite_watch), set()
        existing = self.segments
        for i, (n, seg) in enumerate(watched):
            if (
                n + 1 < self.tail  # (segments are numbered in order)
                and n < self.last_snapshot
                and seg.live > 0
                and seg.live_bytes < ratio * seg.size
                and n not in exclude
                and not any(r in existing for r in seg.refs)
            ):
                self._rewrite_watch.update(m for m, _seg in watched[i + 1 :])
                return n
        return None

    def disk_bytes(self) -> int:
        return sum(seg.size for seg in self.segments.values())

    def live_bytes(self) -> int:
        return sum(seg.live_bytes for seg in self.segments.values())

    # ------------------------------------------------------------- messages

    def store(
        self,
        msg_id: int,
        queues: Sequence[str],
        seg: Segment,
        size: int,
        entry: StoredMessage | None,
    ) -> None:
        if msg_id >= self.next_msg_id:
            self.next_msg_id = msg_id + 1
        old = self.home.get(msg_id)
        if old is not None:
            # A copy written by compaction: the message now lives here.
            old_number = old >> 32
            if old_number != seg.number:
                old_seg = self.segments.get(old_number)
                if old_seg is not None:
                    old_seg.live -= 1
                    old_seg.live_bytes -= old & _SIZE_MASK
                    self._lost_live(old_number)
                    self.copies.setdefault(msg_id, []).append(old_number)
                self.home[msg_id] = (seg.number << 32) | size
                seg.live += 1
                seg.live_bytes += size
            return
        live = 0
        queue_msgs = self.queue_msgs
        for queue in queues:
            msgs = queue_msgs.get(queue)
            if msgs is None and self.damage is not None:
                msgs = self._orphan(queue, msg_id)
            if msgs is not None:
                msgs[msg_id] = entry
                live += 1
        if live:
            self.home[msg_id] = (seg.number << 32) | size
            seg.live += 1
            seg.live_bytes += size
            if live > 1:
                self.multi[msg_id] = live

    def store_run(
        self, first_id: int, queues: Sequence[str], seg: Segment, sizes: Sequence[int]
    ) -> None:
        """``store`` for messages ``first_id``, ``first_id + 1``, … of new ids (a run
        the broker just published), with the work shared."""
        home = self.home
        if not sizes or first_id in home:  # (never: ids are new; but be exact)
            for i, size in enumerate(sizes):
                self.store(first_id + i, queues, seg, size, None)
            return
        last = first_id + len(sizes) - 1
        if last >= self.next_msg_id:
            self.next_msg_id = last + 1
        targets = [m for m in map(self.queue_msgs.get, queues) if m is not None]
        if not targets:
            return
        ids = range(first_id, last + 1)
        for msgs in targets:
            msgs.update(dict.fromkeys(ids))
        base = seg.number << 32
        home.update(zip(ids, [base | size for size in sizes]))
        seg.live += len(sizes)
        seg.live_bytes += sum(sizes)
        if len(targets) > 1:
            self.multi.update(dict.fromkeys(ids, len(targets)))

    def _orphan(self, queue: str, msg_id: int) -> dict[int, StoredMessage | None] | None:
        """Keep the messages of an undeclared queue met after damage (recovery)."""
        if not queue or queue in self.decls.queues or msg_id < self.gone.get(queue, 0):
            return None  # ("": a message stored for no queue lists that one)
        assert self.damage is not None
        self.orphans[queue] = self.damage
        msgs: dict[int, StoredMessage | None] = {}
        self.queue_msgs[queue] = msgs
        return msgs

    def undeclared_queues(self) -> list[str]:
        """Queues with kept messages or surviving bindings but no declaration (after
        damage): their declarations were lost."""
        names = dict.fromkeys(self.orphans)
        if self.damage is not None:
            names.update(dict.fromkeys(q for q, _ex, _key in self.decls.bindings))
        return [name for name in names if name and name not in self.decls.queues]

    def declare_again(self, queue: str) -> tuple[QueueOptions, int]:
        """Declare a queue whose declaration was lost: durable, default options (which
        drop nothing: no limit, no ttl); returns its options and message count."""
        msgs = self.queue_msgs.setdefault(queue, {})
        options = QueueOptions(durable=True)
        self.decls.declare_queue(queue, options, min(msgs, default=self.next_msg_id))
        self.orphans.pop(queue, None)
        return options, len(msgs)

    def declare_lost_exchanges(self) -> list[tuple[str, str, int]]:
        """Declare again, durable, each exchange that kept bindings but lost its
        declaration (to damage: a deleted exchange takes its bindings with it);
        returns ``(name, kind, bindings)`` for each.

        The kind is read off the binding keys: ``topic`` if one is a pattern, ``fanout``
        if all are empty, else ``direct``.  Every kept binding then routes as it did
        (a topic key without a wildcard matches exactly that key), except on a direct
        exchange that bound only the empty key, which comes back as fanout."""
        keys: dict[str, list[str]] = {}
        decls = self.decls
        for _queue, exchange, key in decls.bindings:
            if exchange not in decls.exchanges:
                keys.setdefault(exchange, []).append(key)
        lost = []
        for exchange, names in keys.items():
            if any("*" in k or "#" in k for k in names):
                kind = "topic"
            elif not any(names):
                kind = "fanout"
            else:
                kind = "direct"
            decls.declare_exchange(exchange, kind)
            lost.append((exchange, kind, len(names)))
        return lost

    def remove(self, queue: str, msg_ids: Iterable[int], seg: Segment) -> None:
        msgs = self.queue_msgs.get(queue)
        if msgs is None:
            return
        # (what _left_queue does, inlined: this runs for every acknowledged message)
        home, multi, copies, segments = self.home, self.multi, self.copies, self.segments
        wheres: set[int] = set()
        lost: set[int] = set()
        for msg_id in msg_ids:
            if msgs.pop(msg_id, _ABSENT) is _ABSENT:
                continue
            packed = home[msg_id]
            where = packed >> 32
            wheres.add(where)
            if copies:
                older = copies.get(msg_id)
                if older is not None:
                    seg.refs.update(older)
            if multi:
                count = multi.get(msg_id)
                if count is not None:
                    if count > 2:
                        multi[msg_id] = count - 1
                    else:
                        del multi[msg_id]
                    continue
            del home[msg_id]
            held = segments.get(where)
            if held is not None:
                held.live -= 1
                held.live_bytes -= packed & _SIZE_MASK
                lost.add(where)
            if copies:
                copies.pop(msg_id, None)
        wheres.discard(seg.number)
        seg.refs.update(wheres)
        for number in lost:
            self._lost_live(number)

    def _left_queue(self, msg_id: int) -> None:
        count = self.multi.get(msg_id)
        if count is not None:
            if count > 2:
                self.multi[msg_id] = count - 1
            else:
                del self.multi[msg_id]
            return
        packed = self.home.pop(msg_id)
        seg = self.segments.get(packed >> 32)
        if seg is not None:
            seg.live -= 1
            seg.live_bytes -= packed & _SIZE_MASK
            self._lost_live(seg.number)
        self.copies.pop(msg_id, None)

    def drop_queue(self, queue: str, below: int | None = None) -> None:
        """The queue's messages are gone (all of them, or those with ids < ``below``)."""
        msgs = self.queue_msgs.get(queue)
        if msgs is None:
            return
        if below is None:
            del self.queue_msgs[queue]
            doomed: Iterable[int] = msgs
        else:
            doomed = [msg_id for msg_id in msgs if msg_id < below]
            for msg_id in doomed:
                del msgs[msg_id]
        for msg_id in doomed:
            self._left_queue(msg_id)

    # -------------------------------------------------------------- records

    def apply(self, records: Sequence[Record], sizes: Sequence[int], seg: Segment) -> None:
        """Apply a group of records that was written to ``seg``; ``sizes`` has each
        frame's (one per record, one per message of a ``MessagesStored``)."""
        frame = 0
        for record in records:
            kind = type(record)
            if kind is MessageStored:
                assert isinstance(record, MessageStored)
                self.store(record.msg_id, record.queues, seg, sizes[frame], None)
                frame += 1
                continue
            if kind is MessagesStored:
                assert isinstance(record, MessagesStored)
                end = frame + len(record.payloads)
                self.store_run(record.first_id, record.queues, seg, sizes[frame:end])
                frame = end
                continue
            frame += 1
            if kind is MessagesRemoved:
                assert isinstance(record, MessagesRemoved)
                self.remove(record.queue, record.msg_ids, seg)
            else:
                self.declare(record)

    def declare(self, record: Record) -> None:
        if isinstance(record, QueueDeclared):
            if self.decls.declare_queue(record.name, record.options, self.next_msg_id):
                msgs = self.queue_msgs.setdefault(record.name, {})
                if self.orphans.pop(record.name, None) is not None and msgs:
                    # messages whose declaration was lost: this one adopts them
                    self.decls.floors[record.name] = min(msgs)
        else:
            if isinstance(record, QueueDeleted):
                self.drop_queue(record.name)
                self.orphans.pop(record.name, None)
                self.gone[record.name] = self.next_msg_id
            self.decls.apply(record, self.next_msg_id)

    def snapshot(self, now: float | None = None) -> Snapshot:
        """The declarations now, with the remembered ids whose window has not ended by
        ``now`` (the others are forgotten here; None: keep them all)."""
        decls = self.decls
        if now is not None:
            decls.prune_ids(now)
        return Snapshot(
            self.next_msg_id,
            tuple(decls.exchanges.items()),
            tuple((name, opts, decls.floors[name]) for name, opts in decls.queues.items()),
            tuple(decls.bindings),
            tuple(decls.dedup_windows.items()),
            tuple(
                (name, msg_id, *unpack_id(value))
                for name, ids in decls.ids.items()
                for msg_id, value in ids.items()
            ),
        )

    def apply_snapshot(self, snap: Snapshot, seg: Segment) -> None:
        """Recovery met a snapshot: the declarations are exactly these."""
        self.next_msg_id = max(self.next_msg_id, snap.next_msg_id)
        floors = {name: floor for name, _opts, floor in snap.queues}
        for queue in list(self.queue_msgs):
            floor = floors.get(queue)
            if floor is None:
                self.drop_queue(queue)
                self.gone[queue] = snap.next_msg_id
            elif floor > self.decls.floors.get(queue, 0):
                self.drop_queue(queue, below=floor)
        decls = Declarations()
        windows = dict(snap.dedup_windows)
        for name, kind in snap.exchanges:
            decls.declare_exchange(name, kind, windows.get(name))
        for name, options, floor in snap.queues:
            decls.declare_queue(name, options, floor)
            self.queue_msgs.setdefault(name, {})
        for binding in snap.bindings:
            decls.bind(*binding)
        for name, msg_id, expires, reached in snap.ids:
            decls.ids.setdefault(name, {})[msg_id] = pack_id(expires, reached)
        self.decls = decls
        self.orphans.clear()  # dropped, or declared by the snapshot
        self.last_snapshot = max(self.last_snapshot, seg.number)

    def forget_payloads(self) -> None:
        """Drop the recovered messages (the broker has them now), keep the ids."""
        for queue, msgs in self.queue_msgs.items():
            self.queue_msgs[queue] = dict.fromkeys(msgs)

    def recovered_messages(self, queue: str) -> list[StoredMessage]:
        """The live messages of ``queue`` in id order, while recovery has them (until
        :meth:`forget_payloads`, every value in ``queue_msgs`` is a message)."""
        msgs = cast("dict[int, StoredMessage]", self.queue_msgs.get(queue, {}))
        return sorted_messages(msgs)

    def live_queues(self, msg_id: int, queues: Sequence[str]) -> tuple[str, ...]:
        return tuple(q for q in queues if msg_id in self.queue_msgs.get(q, _EMPTY))


_EMPTY: dict[int, StoredMessage | None] = {}
