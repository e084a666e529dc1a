"""One connection's output: replies in command order, written in batches.

Replies keep command order through a queue of reply slots: a reply that is not ready
yet (a PULL that waits, an AUTH being checked, a change the journal has not stored) holds
back the replies after it.  What is ready goes to a list of byte strings that is written
once per read or per reactor turn (see :class:`FlushScheduler`), or at once past
``FLUSH_AT`` bytes, so that the transport still tells the connection, as its producer,
when the peer stops reading.  A batch is joined into one ``bytes`` and, on plain TCP,
sent straight to the socket when the transport holds nothing unsent
(:func:`socket_writer`), else handed to the transport's ``write``; its length is added
to ``bytes_out``: one add per write, not per message (the HTTP API's ``send_oct``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import Protocol

from twisted.internet import tcp

from mbroker import errors
from mbroker.core.journal import Journal
from mbroker.core.model import Clock
from mbroker.wire.encode import error_line

#: queued output past this many bytes is written at once (Twisted's own buffer size)
FLUSH_AT = 64 * 1024


class Writer(Protocol):
    """Where the bytes go: the connection's transport."""

    def write(self, data: bytes) -> None: ...


class StreamTransport(Writer, Protocol):
    """What a front door's protocol uses of its transport (``ITCPTransport`` and the
    push-producer calls, typed for mypy): the native and the STOMP protocol alike."""

    def writeSequence(self, data: Iterable[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def registerProducer(self, producer: object, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def getPeer(self) -> object: ...


def socket_writer(transport: object) -> Callable[[bytes], None] | None:
    """For a plain TCP transport, a ``write`` that writes straight to the socket.

    Twisted's ``write`` only buffers: the bytes go out on the reactor's next turn, once
    ``epoll`` has said the socket is writable (two ``epoll_ctl`` calls and a turn per
    write).  When the transport holds nothing unsent, the function returned here sends
    at once with one ``send`` on the transport's socket (what its ``writeSomeData``
    does, less two wrappers), and gives the transport only what the socket did not
    take (so the order holds, and a peer that stops reading still fills the
    transport's buffer and pauses its producer); when the transport holds something,
    or is closing, it writes through the transport as usual.  A send that fails
    (``EAGAIN``, or a broken connection) leaves the bytes to the transport, whose own
    write finds out which it was.  One message at a time, this takes a reactor turn
    and three system calls off every delivery.  Both front doors write so: the native
    protocol's :class:`Output` and the STOMP connection's output.

    ``None`` for any other transport (TLS, a WebSocket, a test's ``StringTransport``),
    or a Twisted whose TCP buffers are not the ones read here.
    """
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", False):
        return None
    if not all(hasattr(transport, a) for a in ("dataBuffer", "_tempDataLen", "socket")):
        return None
    tr = transport
    send = tr.socket.send

    def write(data: bytes) -> None:
        # (dataBuffer and _tempDataLen: what Twisted's write() buffered and its last
        # doWrite() left unsent)
        if tr._tempDataLen or tr.dataBuffer or tr.disconnecting or not tr.connected:
            tr.write(data)
            return
        try:
            sent = send(data)
        except OSError:
            sent = 0
        if sent < len(data):
            tr.write(data[sent:] if sent else data)

    return write


class Flushable(Protocol):
    """A connection's output that a :class:`FlushScheduler` writes: an :class:`Output`,
    or a STOMP connection's."""

    def write_queued(self) -> None: ...


class FlushScheduler(Protocol):
    """What an :class:`Output` asks of its factory: to be written at the end of the
    read being handled (``reading``) or of the reactor turn.  The native factory is
    the one scheduler of a broker: the STOMP listener's connections use it too, so
    that a read on either front door writes what it delivered to both."""

    reading: bool

    def flush_later(self, output: Flushable) -> None: ...

    def flush_all(self) -> None: ...


class Flusher:
    """A :class:`FlushScheduler`: the connections that queued output while a read was
    handled (``reading``) are written when it is done (:meth:`flush_all`, which the
    reading connection calls); output queued at any other time (a timer, a store
    commit) is written at the end of the reactor turn, with one timer for them all.
    No timer per read: it would delay every reply."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._dirty: list[Flushable] = []
        self._flush_scheduled = False
        #: a connection is handling what it read (see flush_later)
        self.reading = False

    def flush_later(self, output: Flushable) -> None:
        """``output`` has bytes queued: write them at the end of this read or turn."""
        self._dirty.append(output)
        if not self._flush_scheduled and not self.reading:
            self._flush_scheduled = True
            self._clock.callLater(0, self._flush_turn)

    def _flush_turn(self) -> None:
        self._flush_scheduled = False
        self.flush_all()

    def flush_all(self) -> None:
        """Write every connection's queued output (deliveries made for others)."""
        dirty, self._dirty = self._dirty, []
        for output in dirty:
            output.write_queued()


class Slot:
    """One reply not written yet, in command order (``count``: how many commands it
    answers, so how many status lines a refusal of the whole slot must give)."""

    __slots__ = ("data", "after", "count")

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.after: Callable[[], None] | None = None
        self.count = 1


class Output:
    """The bytes for one peer: replies in command order, deliveries, batched writes."""

    def __init__(
        self, transport: Writer, journal: Journal | None, scheduler: FlushScheduler
    ) -> None:
        self._transport = transport
        #: the transport's write, or straight to its socket (plain TCP)
        self._write = socket_writer(transport) or transport.write
        self._journal = journal
        self._scheduler = scheduler
        self._slots: deque[Slot] = deque()
        #: bytes for the peer, written once per read or per reactor turn (flush)
        self.out: list[bytes] = []
        self._size = 0
        #: the scheduler will call :meth:`write_queued`
        self._dirty = False
        #: the journal's change count before the command being run
        self.mark = 0
        #: no more ``after`` callbacks run (the connection is closing)
        self.closing = False
        #: the connection is gone: queued bytes are dropped
        self.lost = False
        self._on_empty: Callable[[], None] | None = None
        #: something was written since the heartbeat timer last looked (and cleared it)
        self.wrote = False
        #: bytes handed to the transport (counted once per write, for monitoring)
        self.bytes_out = 0

    @property
    def waiting(self) -> bool:
        """Some reply is not ready yet."""
        return bool(self._slots)

    def reply(self, data: bytes, after: Callable[[], None] | None = None, count: int = 1) -> None:
        """Write a reply now, or queue it behind replies that are not ready.

        A command that changed durable state is answered only once the journal's
        commit stored the change, or, if it could not, with one ``-ERR UNAVAILABLE``
        per command the reply stands for (``count``: a run of PUBLISH is many)."""
        journal = self._journal
        if journal is not None and journal.changes != self.mark:
            slot = self.later()
            slot.count = count
            slot.after = after
            journal.on_commit(partial(self.committed, slot, data))
            return
        if not self._slots:
            self.send(data)
            if after is not None:
                after()
            return
        slot = Slot()
        slot.data = data
        slot.after = after
        self._slots.append(slot)

    def reply_late(self, make: Callable[[], bytes], count: int = 1) -> None:
        """A reply whose text is known once the journal's commit is answered (a
        cluster node learns from Redis whether a PUBLISH id is new): ``make`` writes it
        then, or ``-ERR UNAVAILABLE`` per command if the commit failed."""
        slot = self.later()
        slot.count = count
        journal = self._journal
        assert journal is not None  # (only a broker with a journal answers late)
        journal.on_commit(
            lambda err: self.committed(
                slot, b"" if err and not isinstance(err, errors.Refused) else make(), err
            )
        )

    def say(self, data: bytes) -> None:
        """A line of the broker's own (not a reply to a command): after the pending ones."""
        if not self._slots:
            self.send(data)
        else:
            slot = Slot()
            slot.data = data
            self._slots.append(slot)

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the peer, in no slot (it is written at the end of the read
        being handled, or of the reactor turn, or at once past ``FLUSH_AT`` bytes)."""
        self.out.append(data)
        self.queued(len(data))

    def queued(self, size: int) -> None:
        """``size`` more bytes are in ``out``: write now past ``FLUSH_AT``, else make
        sure they are written at the end of this read or turn."""
        self._size += size
        if self._size >= FLUSH_AT:
            self.flush()
        elif not self._dirty:
            self._dirty = True
            self._scheduler.flush_later(self)

    def flush(self) -> None:
        """Write what is queued."""
        out = self.out
        if out:
            self.out = []
            self._size = 0
            self.wrote = True
            data = out[0] if len(out) == 1 else b"".join(out)
            self.bytes_out += len(data)
            self._write(data)

    def write_queued(self) -> None:
        """The scheduler's call: write what is queued, unless the connection is gone."""
        self._dirty = False
        if not self.lost:
            self.flush()

    def later(self) -> Slot:
        """A place for a reply that is not ready: it holds back the replies after it."""
        slot = Slot()
        self._slots.append(slot)
        return slot

    def committed(self, slot: Slot, data: bytes, err: errors.BrokerError | None) -> None:
        """The journal's answer for ``slot``: ``data``, or ``err`` for each command."""
        if err is not None:
            if isinstance(err, errors.Refused):  # (some lines of a run: those)
                lines = data.splitlines(keepends=True)
                for i, e in err.lines.items():
                    if i < len(lines):
                        lines[i] = error_line(e)
                data = b"".join(lines)
            else:
                slot.after = None
                data = error_line(err) * slot.count
        self.fill(slot, data)

    def fill(self, slot: Slot, data: bytes) -> None:
        """``slot``'s reply is ready: write it and every ready one after it."""
        slot.data = data
        slots = self._slots
        write = self.send
        while slots:
            ready = slots[0].data
            if ready is None:
                break
            done = slots.popleft()
            write(ready)
            if done.after is not None and not self.closing:
                done.after()
        on_empty = self._on_empty
        if on_empty is not None and not slots:
            self._on_empty = None
            on_empty()
        else:
            self.flush()

    def when_replied(self, done: Callable[[], None]) -> None:
        """Call ``done`` once every reply is written: now, or when the last slot fills."""
        if self._slots:
            self._on_empty = done
        else:
            done()
