"""The framer shared by both decoders: lines and payloads out of a byte stream.

* ``feed`` walks its chunk with one bounded ``find(b"\\n", pos, pos + max_line + 2)`` per
  line from a moving offset: 80,000 pipelined lines in one chunk cost 80,000 finds and
  slices, never a re-scan or re-slice of the whole buffer.  Only an unfinished line is
  kept between calls, in a ``bytearray`` never longer than ``max_line + 1`` bytes (the
  ``+ 1`` being a CR that may come before the LF).  One CR right before the LF is dropped.
* A PUBLISH line is parsed once per connection: its meaning is remembered by the whole
  line (``PUBLISH q k 128``), and a later identical line whose payload is in the same
  read costs one dict look-up.  Consecutive such commands become one run item (a
  pipelining publisher's stream), which the broker routes once.
* Payload bytes are never scanned: they are kept as slices of the chunks they arrive in
  (the chunk itself when it is all payload) and joined once, so a payload fed a byte at a
  time is still linear.  CRLF or LF must follow it, else ``BAD_FRAME``.

What a line means is the subclass's business (:class:`~mbroker.wire.commands.CommandDecoder`,
:class:`~mbroker.wire.replies.ReplyDecoder`).
"""

from __future__ import annotations

from typing import Generic, Optional, TypeVar

from mbroker.errors import BadFrame, BrokerError, LineTooLong
from mbroker.wire.frames import Props

_T = TypeVar("_T")
#: a PUBLISH line's meaning: (name, key, ttl, payload size, properties)
PublishHead = tuple[str, str, Optional[int], int, Optional[Props]]


class Framer(Generic[_T]):
    """Lines and payloads out of a byte stream; subclasses say what a line means."""

    def __init__(self, max_line: int, max_payload: int) -> None:
        self.max_line = max_line
        self.max_payload = max_payload
        #: True after a fatal error; later feeds return ``[]``.
        self.closed = False
        self._buf = bytearray()  # an unfinished line, or the CR after a payload
        self._need = -1  # -1: reading lines; n >= 0: payload bytes still to come
        self._chunks: list[bytes] = []
        #: complete PUBLISH lines already checked -> (name, key, ttl, size, props); see feed
        self._heads: dict[bytes, PublishHead] = {}

    def _single(self, head: PublishHead, payload: bytes) -> _T:
        raise NotImplementedError

    def _run_start(self, out: list[_T], payload: bytes) -> list[bytes]:
        raise NotImplementedError

    def _line(self, line: bytes, out: list[_T]) -> None:
        raise NotImplementedError

    def _done(self, payload: bytes, out: list[_T]) -> None:
        raise NotImplementedError

    def _fail(self, err: BrokerError, out: list[_T]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        self.closed = True
        self._buf.clear()
        self._chunks = []
        self._need = -1

    def _payload(self, size: int) -> None:
        self._need = size
        self._chunks = []

    def _complete(self, out: list[_T]) -> None:
        payload = b"".join(self._chunks)
        self._chunks = []
        self._need = -1
        self._done(payload, out)

    def _too_long(self, out: list[_T]) -> None:
        self._fail(LineTooLong(f"line longer than {self.max_line} bytes"), out)

    def _partial(self, data: bytes, start: int, out: list[_T]) -> None:
        """Keep ``data[start:]``, an unfinished line, unless it is already too long."""
        over = len(self._buf) + len(data) - start - self.max_line
        if over > 1 or (over == 1 and data[-1] != 13):
            self._too_long(out)
        else:
            self._buf += memoryview(data)[start:]

    def feed(self, data: bytes) -> list[_T]:
        out: list[_T] = []
        if self.closed or not data:
            return out
        pos = 0
        buf = self._buf
        max_line = self.max_line
        if buf:
            if self._need == 0:  # the CR after a payload came last time
                buf.clear()
                if data[0] != 10:
                    self._fail(BadFrame("payload not followed by a line end"), out)
                    return out
                pos = 1
                self._complete(out)
            else:  # an unfinished line
                nl = data.find(b"\n", 0, max_line + 2 - len(buf))
                if nl < 0:
                    self._partial(data, 0, out)
                    return out
                buf += memoryview(data)[:nl]
                if buf[-1] == 13:
                    del buf[-1]
                line = bytes(buf)
                buf.clear()
                pos = nl + 1
                if len(line) > max_line:
                    self._too_long(out)
                    return out
                self._line(line, out)
        n = len(data)
        heads = self._heads
        last: PublishHead | None = None
        last_n = 0
        run: list[bytes] | None = None
        while pos < n and not self.closed:
            need = self._need
            if need > 0:
                if n - pos > need:
                    self._chunks.append(data[pos : pos + need])
                    pos += need
                    self._need = 0
                else:
                    self._chunks.append(data[pos:] if pos else data)
                    self._need = need - (n - pos)
                    break
            elif need == 0:
                c = data[pos]
                if c == 10:
                    pos += 1
                elif c == 13 and pos + 1 == n:
                    buf.append(13)
                    break
                elif c == 13 and data[pos + 1] == 10:
                    pos += 2
                else:
                    self._fail(BadFrame("payload not followed by a line end"), out)
                    break
                self._complete(out)
            else:
                nl = data.find(b"\n", pos, pos + max_line + 2)
                if nl < 0:
                    self._partial(data, pos, out)
                    break
                end = nl - 1 if nl > pos and data[nl - 1] == 13 else nl
                if end - pos > max_line:
                    self._too_long(out)
                    break
                line = data[pos:end]
                head = heads.get(line)
                if head is not None:
                    # Fastest path: a PUBLISH line seen before, its payload and line
                    # end in this read.  A run of them becomes one item.
                    start = nl + 1
                    stop = start + head[3]
                    if stop + 1 < n and data[stop] == 13 and data[stop + 1] == 10:
                        after = stop + 2
                    elif stop < n and data[stop] == 10:
                        after = stop + 1
                    else:
                        after = 0
                    if after:
                        if head is last and len(out) == last_n:
                            if run is None:
                                run = self._run_start(out, data[start:stop])
                            else:
                                run.append(data[start:stop])
                        else:
                            out.append(self._single(head, data[start:stop]))
                            last = head
                            last_n = len(out)
                            run = None
                        pos = after
                        continue
                self._line(line, out)
                pos = nl + 1
                need = self._need
                if need >= 0:
                    # Fast path: the whole payload and its line end are in this read.
                    end = pos + need
                    if end + 1 < n and data[end] == 13 and data[end + 1] == 10:
                        self._need = -1
                        self._done(data[pos:end], out)
                        pos = end + 2
                    elif end < n and data[end] == 10:
                        self._need = -1
                        self._done(data[pos:end], out)
                        pos = end + 1
        return out
