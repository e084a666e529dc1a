"""A small blocking client for end-to-end tests: raw lines in, raw lines out.

It deliberately does not use :mod:`mbroker.wire`: the end-to-end tests check the bytes
the broker really sends against the contract, with an independent reader.
Every read has a deadline; nothing sleeps.
"""

from __future__ import annotations

import socket
import time
from collections import deque

import attrs


class ConnectionClosed(ConnectionError):
    """The broker closed the connection while a read was waiting for more bytes."""


@attrs.frozen
class Msg:
    """A ``MSG <sid> <tag> <source> <key|-> [attr=value ...] <size>`` frame."""

    sid: int
    tag: int
    source: str
    key: str  # "" when the wire says "-"
    attrs: dict[str, str]
    payload: bytes
    header: bytes  # the control line as received, without its line end


class LineClient:
    """``LineClient(host, port)`` connects and reads the greeting into ``hello``."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._buf = bytearray()
        #: Pushed frames (MSG with a sid other than 0, CANCEL lines) that
        #: :meth:`read_reply` read past; :meth:`read_push` returns these first.
        self.pushed: deque[Msg | bytes] = deque()
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.hello: bytes = self.readline()

    # ------------------------------------------------------------------ writing

    def send(self, data: bytes) -> None:
        """Send raw bytes (add your own line ends)."""
        self.sock.sendall(data)

    def send_line(self, line: bytes | str) -> None:
        """Send one line with CRLF."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.sock.sendall(line + b"\r\n")

    def request(
        self, line: bytes | str, timeout: float | None = None
    ) -> tuple[list[bytes | Msg], bytes]:
        """Send one command line and read its reply (see :meth:`read_reply`)."""
        self.send_line(line)
        return self.read_reply(timeout)

    # ------------------------------------------------------------------ reading

    def _deadline(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _fill(self, deadline: float) -> None:
        """Receive at least one byte into the buffer before ``deadline``."""
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):  # the same since Python 3.10, not on 3.9
            raise TimeoutError(
                f"nothing complete before the deadline; buffered {bytes(self._buf)!r}"
            ) from None
        if not chunk:
            raise ConnectionClosed(f"connection closed; buffered {bytes(self._buf)!r}")
        self._buf += chunk

    def readline(self, timeout: float | None = None) -> bytes:
        """Read one line and return it without its LF or CRLF."""
        deadline = self._deadline(timeout)
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            start = len(self._buf)
            self._fill(deadline)

    def read_exact(self, n: int, timeout: float | None = None) -> bytes:
        """Read exactly ``n`` bytes."""
        deadline = self._deadline(timeout)
        while len(self._buf) < n:
            self._fill(deadline)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def read_push(self, timeout: float | None = None) -> Msg | bytes:
        """The next pushed frame: a :class:`Msg`, or a ``CANCEL …`` line as bytes."""
        if self.pushed:
            return self.pushed.popleft()
        deadline = self._deadline(timeout)
        line = self.readline(deadline - time.monotonic())
        if line.startswith(b"MSG "):
            return self._read_msg_after(line, deadline)
        if line.startswith(b"CANCEL "):
            return line
        raise AssertionError(f"expected a pushed frame, got {line!r}")

    def read_msg(self, timeout: float | None = None) -> Msg:
        """Read the next pushed MSG frame: header, payload and the line end after it."""
        frame = self.read_push(timeout)
        if not isinstance(frame, Msg):
            raise AssertionError(f"expected a MSG frame, got {frame!r}")
        return frame

    def _read_msg_after(self, header: bytes, deadline: float) -> Msg:
        words = header.split()
        if len(words) < 6 or words[0] != b"MSG":
            raise AssertionError(f"expected a MSG frame, got {header!r}")
        size = int(words[-1])
        payload = self.read_exact(size, deadline - time.monotonic())
        end = self.readline(deadline - time.monotonic())
        if end != b"":
            raise AssertionError(f"payload of {header!r} not followed by a line end: {end!r}")
        attributes: dict[str, str] = {}
        for word in words[5:-1]:
            name, _, value = word.decode("ascii").partition("=")
            attributes[name] = value
        key = words[4].decode("ascii")
        return Msg(
            sid=int(words[1]),
            tag=int(words[2]),
            source=words[3].decode("ascii"),
            key="" if key == "-" else key,
            attrs=attributes,
            payload=payload,
            header=header,
        )

    def read_reply(self, timeout: float | None = None) -> tuple[list[bytes | Msg], bytes]:
        """Read one reply: its data lines, then its status line (``+…`` or ``-…``).

        Returns ``(data, status)``: ``data`` holds the data lines (bytes, line end
        removed) and PULL's MSG frames (sid 0), parsed with their payloads.  Pushed
        frames that come before the status line go to :attr:`pushed`.
        """
        deadline = self._deadline(timeout)
        data: list[bytes | Msg] = []
        while True:
            line = self.readline(deadline - time.monotonic())
            if line[:1] in (b"+", b"-"):
                return data, line
            if line.startswith(b"MSG "):
                msg = self._read_msg_after(line, deadline)
                (data if msg.sid == 0 else self.pushed).append(msg)
            elif line.startswith(b"CANCEL "):
                self.pushed.append(line)
            else:
                data.append(line)

    # ------------------------------------------------------------------ closing

    def expect_closed(self, timeout: float | None = None) -> bool:
        """True once the broker closes the connection, False if it is still open at the
        deadline.  Bytes received meanwhile stay readable with the read methods."""
        deadline = self._deadline(timeout)
        while True:
            try:
                self._fill(deadline)
            except TimeoutError:
                return False
            except (ConnectionClosed, ConnectionResetError):
                return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def ok(client: LineClient, line: str) -> bytes:
    """Send ``line``; its reply must be a success (``+…``), which is returned."""
    _, status = client.request(line)
    assert status.startswith(b"+"), (line, status)
    return status


def pull_all(client: LineClient, queue: str) -> list[Msg]:
    """Every message ``queue`` holds, pulled (auto-acked) until it is empty."""
    out: list[Msg] = []
    while True:
        data, status = client.request(f"PULL {queue} max=1000")
        assert status.startswith(b"+OK"), status
        msgs = [m for m in data if isinstance(m, Msg)]
        out.extend(msgs)
        if not msgs:
            return out
