"""A cheap raw-socket client and the table printer shared by the benchmark scripts.

The client does as little as it can so that the broker is what is measured:
frames are encoded once, written in large pipelined chunks, and deliveries are
counted with one ``bytes.count`` (or one regular-expression scan) per read.  The
payloads are all ``x``, so a marker such as ``MSG `` never occurs inside one.

:func:`run_flow` drives one publisher and any number of subscribers, for mbroker
and for every peer alike (``benchmarks/peers/``): it is the one client they share.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import platform
import resource
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Frames per pre-encoded chunk that the publisher writes with one ``sendall``.
BATCH = 1000


# ----------------------------------------------------------------- connecting


def connect(host: str, port: int, greeting: bool = True, timeout: float = 10.0) -> socket.socket:
    """A TCP connection with Nagle off; with *greeting*, the server's first line is read."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if greeting:
        read_until(s, b"\r\n")
    return s


def read_until(s: socket.socket, end: bytes, timeout: float = 10.0) -> bytes:
    """Bytes from *s* until they end with *end* (the caller expects nothing after it)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(end):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited for {end!r}, got {buf[-200:]!r}")
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed while waiting for {end!r}: {buf[-200:]!r}")
        buf += chunk
    return buf


def command(s: socket.socket, line: bytes) -> bytes:
    """Send one mbroker command and return its status line; raise on ``-ERR``."""
    s.sendall(line + b"\r\n")
    reply = read_until(s, b"\r\n")
    if not reply.startswith(b"+"):
        raise RuntimeError(f"{line!r} -> {reply!r}")
    return reply


def pipeline(s: socket.socket, data: bytes, replies: int, timeout: float = 120.0) -> None:
    """Send pipelined mbroker commands and wait for *replies* ``+OK``; raise on ``-ERR``."""
    s.sendall(data)
    seen = 0
    tail = b""
    deadline = time.monotonic() + timeout
    while seen < replies:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{seen} of {replies} replies")
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        if b"-ERR" in tail + chunk:
            raise RuntimeError((tail + chunk)[-300:].decode(errors="replace"))
        data = tail + chunk
        seen += data.count(b"+OK")
        tail = data[-2:]


def mbroker_publish(name: bytes, size: int, key: bytes = b"") -> bytes:
    """One pre-encoded ``PUBLISH`` frame with a payload of *size* ``x``."""
    key_part = b" " + key if key else b""
    return b"PUBLISH %s%s %d\r\n%s\r\n" % (name, key_part, size, b"x" * size)


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards *wanted*; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def client_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def runqueue_wait_seconds(pids: Sequence[int]) -> float:
    """Seconds the threads of *pids* spent runnable but waiting for a CPU (schedstat).

    High when other work on the machine competes for the cores: then the rates measured
    are lower than the broker could do, and its CPU seconds per message are the steadier
    figure.
    """
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


def tight_timers() -> None:
    """Ask for 1 ns timer slack so that short sleeps in a pacing loop end on time."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


# ------------------------------------------------------------------- readers


class Reader:
    """Counts deliveries in a byte stream: one ``bytes.count`` of *marker* per read.

    :meth:`feed` returns the deliveries in a chunk and the bytes to send back (none
    here; subclasses acknowledge).  The last ``len(marker) - 1`` bytes are kept so
    that a marker split across two reads is counted once.
    """

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self._keep = len(marker) - 1
        self._tail = b""

    def feed(self, chunk: bytes) -> tuple[int, bytes]:
        data = self._tail + chunk
        self._tail = data[-self._keep :] if self._keep else b""
        return data.count(self.marker), b""


class AckRangeReader(Reader):
    """mbroker with ``ack=manual``: tags on a connection run 1, 2, 3 …, so after a read
    that brought deliveries up to *n* one ``ACK first-n`` acknowledges all of them."""

    def __init__(self) -> None:
        super().__init__(b"MSG ")
        self._acked = 0

    def feed(self, chunk: bytes) -> tuple[int, bytes]:
        n, _ = super().feed(chunk)
        if not n:
            return 0, b""
        first, self._acked = self._acked + 1, self._acked + n
        return n, b"ACK %d-%d\r\n" % (first, self._acked)


# --------------------------------------------------------------------- a flow


@dataclass
class Subscriber:
    sock: socket.socket
    reader: Reader
    count: int = 0
    last: float = 0.0  # perf_counter of the last delivery


@dataclass
class FlowResult:
    published: int  # frames written by the publisher
    confirmed: int  # replies counted by the publisher (0 where the protocol has none)
    delivered: int  # deliveries counted over all subscribers
    expected: int  # published x subscribers (what a lossless broker delivers)
    publish_seconds: float  # first write until the last reply (or the last write)
    deliver_seconds: float  # first write until the last delivery
    broker_cpu: float = 0.0  # broker CPU seconds over the flow
    broker_wait: float = 0.0  # seconds the broker was runnable but waited for a CPU
    client_cpu: float = 0.0  # this process's CPU seconds over the flow (all threads)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def publish_rate(self) -> float:
        n = self.confirmed or self.published
        return n / self.publish_seconds if self.publish_seconds else 0.0

    @property
    def deliver_rate(self) -> float:
        return self.delivered / self.deliver_seconds if self.deliver_seconds else 0.0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.delivered)

    @property
    def seconds(self) -> float:
        return max(self.publish_seconds, self.deliver_seconds)


def _receive(sub: Subscriber, stop: threading.Event) -> None:
    # poll, not a socket timeout: the publisher's socket is shared with its sender
    poller = select.poll()
    poller.register(sub.sock, select.POLLIN)
    while not stop.is_set():
        if not poller.poll(100):
            continue
        try:
            chunk = sub.sock.recv(1 << 20)
        except OSError:
            return
        if not chunk:
            return
        n, reply = sub.reader.feed(chunk)
        if n:
            sub.count += n
            sub.last = time.perf_counter()
        if reply:
            try:
                sub.sock.sendall(reply)
            except OSError:
                return


def run_flow(
    pub: socket.socket,
    chunks: Sequence[bytes],
    subscribers: Sequence[Subscriber],
    ack_reader: Reader | None,
    *,
    seconds: float,
    max_messages: int,
    per_chunk: int = BATCH,
    fanout: int | None = None,
    idle: float = 2.0,
    window_chunks: int = 8,
    cpu: Callable[[], float] | None = None,
    cpu_wait: Callable[[], float] | None = None,
) -> FlowResult:
    """Publish pre-encoded *chunks* (each *per_chunk* frames, cycled) for *seconds* or
    *max_messages*, whichever ends first, while every subscriber counts deliveries.

    Ends when every subscriber has ``published x fanout`` deliveries (*fanout* defaults
    to one copy per subscriber; pass 1 for competing consumers of a queue), or when
    none came for *idle* seconds.  *ack_reader* counts the publisher's replies, and then
    at most *window_chunks* chunks are unanswered at a time (so a run ends close to
    *seconds* instead of draining megabytes of socket buffers); without one the replies
    are read and dropped, and only TCP holds the publisher back.
    """
    stop = threading.Event()
    pub_side = Subscriber(pub, ack_reader or Reader(b"\x00never\x00"))
    threads = [
        threading.Thread(target=_receive, args=(s, stop), daemon=True)
        for s in [*subscribers, pub_side]
    ]
    for t in threads:
        t.start()
    cpu0 = cpu() if cpu else 0.0
    wait0 = cpu_wait() if cpu_wait else 0.0
    client0 = client_cpu_seconds()
    t0 = time.perf_counter()
    sent = 0
    i = 0
    end = t0 + seconds
    pub.settimeout(None)
    limit = None if ack_reader is None else window_chunks * per_chunk
    while sent < max_messages and time.perf_counter() < end:
        if limit is not None and sent - pub_side.count >= limit:
            time.sleep(0.0002)  # wait for replies: keep at most window_chunks in flight
            continue
        pub.sendall(chunks[i % len(chunks)])
        i += 1
        sent += per_chunk
    t_sent = time.perf_counter()
    copies = len(subscribers) if fanout is None else fanout
    expected = sent * copies

    def progress() -> int:
        return sum(s.count for s in subscribers) + pub_side.count

    def done() -> bool:
        if ack_reader is not None and pub_side.count < sent:
            return False
        if fanout == 1:
            return sum(s.count for s in subscribers) >= sent
        return all(s.count >= sent for s in subscribers)

    last_progress, last_seen = progress(), time.perf_counter()
    hard_end = t_sent + max(60.0, 4 * seconds)
    while not done() and time.perf_counter() < hard_end:
        time.sleep(0.01)
        now_progress = progress()
        if now_progress != last_progress:
            last_progress, last_seen = now_progress, time.perf_counter()
        elif time.perf_counter() - last_seen > idle:
            break
    broker_cpu = (cpu() - cpu0) if cpu else 0.0
    broker_wait = (cpu_wait() - wait0) if cpu_wait else 0.0
    client_cpu = client_cpu_seconds() - client0
    stop.set()
    for t in threads:
        t.join(2)
    delivered = sum(s.count for s in subscribers)
    last_delivery = max((s.last for s in subscribers), default=0.0)
    if ack_reader is not None and pub_side.count:
        publish_seconds = pub_side.last - t0
    else:
        publish_seconds = t_sent - t0
    return FlowResult(
        published=sent,
        confirmed=pub_side.count if ack_reader is not None else 0,
        delivered=delivered,
        expected=expected,
        publish_seconds=publish_seconds,
        deliver_seconds=(last_delivery - t0) if delivered else 0.0,
        broker_cpu=broker_cpu,
        broker_wait=broker_wait,
        client_cpu=client_cpu,
    )


# ------------------------------------------------------------ tables, options


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(title)
    for n, row in enumerate(cells):
        line = "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)
        )
        print(line.rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print(flush=True)


def fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=(doc or "").split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    return ap


def machine() -> str:
    """``<cpu model>, <n> cores, <GiB> RAM, <kernel>``: what the figures were measured on."""
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    with open("/proc/meminfo") as f:
        kib = int(f.readline().split()[1])
    return (
        f"{model}, {os.cpu_count()} cores, {kib / (1 << 20):.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def load_note() -> str:
    """The machine's load average: other work on it makes the figures noisier."""
    one, five, _ = os.getloadavg()
    return f"load average before the run: {one:.2f} (1 min), {five:.2f} (5 min)"
