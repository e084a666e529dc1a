"""A reply that waited for the store hears that some of the commands it stands for
were refused after the fact (a cluster node's Redis found a queue full): those
lines become errors, the others stand (mbroker.server.output.Output.committed)."""

from __future__ import annotations

from twisted.internet import task

from mbroker import errors
from mbroker.core import records as rec
from mbroker.core.journal import Done, Journal
from mbroker.server.output import Flusher, Output


class Transport:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def test_refused_lines_of_a_run_become_errors_and_the_rest_stand() -> None:
    clock = task.Clock()
    answers: list[Done] = []
    journal = Journal(clock, lambda records, done: answers.append(done), lambda: True)
    transport = Transport()
    out = Output(transport, journal, Flusher(clock))
    for reply, count in ((b"+OK 1\r\n" * 3, 3), (b"+OK 2\r\n", 1)):
        out.mark = journal.changes
        journal.add(rec.MessagesRemoved("q", ()))
        out.reply(reply, count=count)
        clock.advance(0)
    first, second = answers
    second(errors.Unavailable("down"))  # (answered in order: waits behind the first)
    first(errors.Refused({1: errors.Overflow("q is full")}))
    out.flush()
    assert transport.data == (
        b"+OK 1\r\n-ERR OVERFLOW q is full\r\n+OK 1\r\n-ERR UNAVAILABLE down\r\n"
    )
