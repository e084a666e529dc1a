"""Helpers for the replay tests: replay a log both ways and compare everything."""

from __future__ import annotations

from typing import Any

from mbroker.store.files import CrashFS
from mbroker.store.replay import ReplayResult, replay
from tests.helpers.store import DATA


def everything(res: ReplayResult) -> dict[str, Any]:
    """What replay produced, for comparing the bulk path with the general loop."""
    rec, ledger = res.recovered, res.ledger
    return {
        "exchanges": rec.exchanges,
        "queues": rec.queues,
        "bindings": rec.bindings,
        "messages": rec.messages,
        "next_msg_id": rec.next_msg_id,
        "warnings": rec.warnings,
        "tail": (res.tail, res.tail_good, res.tail_size),
        "home": list(ledger.home.items()),
        "queue_msgs": {queue: list(msgs) for queue, msgs in ledger.queue_msgs.items()},
        "multi": ledger.multi,
        "copies": ledger.copies,
        "segments": {
            n: (seg.size, seg.live, seg.live_bytes, seg.refs) for n, seg in ledger.segments.items()
        },
        "ledger_next": ledger.next_msg_id,
        "last_snapshot": ledger.last_snapshot,
    }


def both(fs: CrashFS) -> tuple[ReplayResult, ReplayResult]:
    """Replay in bulk and one frame at a time; check they agree; both results."""
    fast = replay(fs, DATA)
    slow = replay(fs, DATA, bulk=False)
    assert slow.bulk_frames == 0 and slow.batch_frames == 0
    assert everything(fast) == everything(slow)
    return fast, slow
