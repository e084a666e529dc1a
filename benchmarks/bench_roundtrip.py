"""Where one STOMP SEND -> MESSAGE round trip goes: mbroker beside servers that do less.

One message at a time, as ``bench_stomp.py``'s latency rounds: a publisher connection
sends one frame, the client waits until the subscriber connection has it, then sends the
next.  The same raw-socket client measures, in the same run and placed the same way:

* ``C epoll``: a forwarder in C (``epoll_wait``, ``recv``, ``send``; compiled with
  ``cc`` into a temporary directory, left out when there is none): the kernel's
  loopback TCP and the client alone;
* ``Python epoll``: the same loop in Python (``select.epoll``), no framework;
* ``Twisted, direct write``: a Twisted protocol (the default reactor, as under
  ``twistd``) that writes each read straight to the subscriber's socket with
  :func:`mbroker.server.output.socket_writer`, as mbroker's outputs do;
* ``Twisted on uvloop, direct write``: the same protocol on Twisted's asyncio reactor
  running a uvloop (libuv) event loop, which dispatches ready sockets in C and without
  the default reactor's ``log.callWithLogger`` per event (left out when ``uvloop`` is
  not installed: ``pip install uvloop``);
* ``Twisted, buffered write``: ``forwarder.py`` (``transport.write``: out on the
  reactor's next turn);
* ``mbroker``: ``twistd -n mbroker --memory --stomp ...``, a ``SEND`` of 100 bytes to
  ``/queue/Q`` with an ``ack:auto`` subscriber (``MBROKER_SRC=<tree>`` runs another
  checkout, as in every benchmark here).

The forwarders get 100 bytes of ``x`` and a newline.  Every round starts every server
afresh (a process can be a few µs slower for its whole life, whatever it runs), and the
servers are measured in alternating order.  ``srv CPU`` and ``client CPU`` are each
side's CPU time per round trip (``schedstat`` of all the server's threads; the
client's ``process_time``): on one CPU they add up to the round trip.

Placements (``--pin``): ``same`` (server and client on CPU 0: they take turns, no
CPU is ever idle), ``cross`` (server on CPU 0, client on CPU 1: each message wakes an
idle CPU) and ``none``.  ``--spin`` makes the client poll its socket instead of
blocking in ``recv``.  Usage::

    python benchmarks/bench_roundtrip.py [--pin same|cross|none] [--rounds 5]
        [--messages 3000] [--spin] [--quick]
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_stomp import StompBroker, send_frame, stomp_connect, subscribe  # noqa: E402
from brokerproc import BrokerProcess, set_affinity  # noqa: E402
from forwarder import ForwarderProcess  # noqa: E402
from rawclient import base_parser, load_note, machine, print_table  # noqa: E402

LINE = b"x" * 100 + b"\n"

C_SOURCE = rb"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
int main(void) {
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1, sub = -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = inet_addr("127.0.0.1");
    socklen_t l = sizeof a;
    bind(ls, (void *)&a, sizeof a);
    listen(ls, 16);
    getsockname(ls, (void *)&a, &l);
    printf("forwarder listening on 127.0.0.1:%d (C)\n", ntohs(a.sin_port));
    fflush(stdout);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls}, evs[16];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    static char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, evs, 16, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c = accept(ls, 0, 0);
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                struct epoll_event e = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
                continue;
            }
            ssize_t r = recv(fd, buf, sizeof buf, 0);
            if (r <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, 0);
                close(fd);
                if (fd == sub) sub = -1;
            } else if (r >= 4 && !memcmp(buf, "SUB\n", 4)) {
                sub = fd;
            } else if (sub >= 0) {
                send(sub, buf, r, 0);
            }
        }
    }
}
"""


def serve_python_epoll() -> None:
    """The forwarder of ``forwarder.py`` as a bare ``select.epoll`` loop."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    print(f"forwarder listening on 127.0.0.1:{ls.getsockname()[1]} (epoll)", flush=True)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    socks: dict[int, socket.socket] = {}
    sub: socket.socket | None = None
    while True:
        for fd, _ in ep.poll():
            if fd == ls.fileno():
                c, _ = ls.accept()
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                socks[c.fileno()] = c
                ep.register(c.fileno(), select.EPOLLIN)
                continue
            s = socks[fd]
            data = s.recv(65536)
            if not data:
                ep.unregister(fd)
                del socks[fd]
                s.close()
            elif data.startswith(b"SUB\n"):
                sub = s
            elif sub is not None:
                sub.send(data)


def serve_twisted_direct(uv: bool = False) -> None:
    """The forwarder on Twisted's default reactor (or on uvloop: ``uv``), writing with
    ``socket_writer``."""
    if uv:
        import uvloop
        from twisted.internet import asyncioreactor

        asyncioreactor.install(uvloop.new_event_loop())
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from mbroker.server.output import socket_writer

    subscriber: list[Callable[[bytes], None]] = []

    class Forward(Protocol):
        def dataReceived(self, data: bytes) -> None:
            if data.startswith(b"SUB\n"):
                write = socket_writer(self.transport)
                assert write is not None
                subscriber[:] = [write]
            elif subscriber:
                subscriber[0](data)

    port = reactor.listenTCP(0, Factory.forProtocol(Forward), interface="127.0.0.1")
    print(f"forwarder listening on 127.0.0.1:{port.getHost().port} (twisted)", flush=True)
    reactor.run()


class Forwarder(ForwarderProcess):
    """A forwarder run as ``command`` (same ``SUB`` protocol as ``forwarder.py``)."""

    def __init__(self, command: list[str] | None = None) -> None:
        if command is None:
            super().__init__()
            return
        self._tmp = None
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.host, self.port = self._wait_for_port(deadline=time.monotonic() + 30)


# ------------------------------------------------------------------ the client


def server_cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far (``schedstat``, nanoseconds)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return total


def recv_blocking(s: socket.socket) -> bytes:
    return s.recv(65536)


def recv_spinning(s: socket.socket) -> bytes:
    while True:
        try:
            return s.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass


def round_trips(
    pid: int, pub: socket.socket, sub: socket.socket, frame: bytes, end: bytes, n: int, spin: bool
) -> tuple[float, float, float, float]:
    """p50 and p99 of ``n`` round trips (after 100 uncounted), and the server's and the
    client's CPU µs per round trip."""
    recv = recv_spinning if spin else recv_blocking
    rest = b""
    times: list[float] = []
    perf = time.perf_counter_ns
    s0 = c0 = 0
    for i in range(100 + n):
        if i == 100:
            s0, c0 = server_cpu_ns(pid), time.process_time_ns()
        t0 = perf()
        pub.sendall(frame)
        data = rest
        while True:
            j = data.find(end)
            if j >= 0:
                rest = data[j + len(end) :]
                break
            chunk = recv(sub)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        if i >= 100:
            times.append((perf() - t0) / 1000)
    server = (server_cpu_ns(pid) - s0) / n / 1000
    client = (time.process_time_ns() - c0) / n / 1000
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)], server, client


def measure(proc: BrokerProcess, n: int, spin: bool) -> tuple[float, float, float, float]:
    if isinstance(proc, StompBroker):
        sub = stomp_connect(proc.port)
        pub = stomp_connect(proc.port)
        subscribe(sub, b"/queue/Q", b"auto")
        frame, end = send_frame(b"/queue/Q"), b"\x00"
    else:
        assert isinstance(proc, ForwarderProcess)
        sub, pub = proc.subscribed_pair()
        frame, end = LINE, b"\n"
    try:
        return round_trips(proc.proc.pid, pub, sub, frame, end, n, spin)
    finally:
        pub.close()
        sub.close()


# ------------------------------------------------------------------ the run


def starters(tmp: str) -> list[tuple[str, Callable[[], BrokerProcess]]]:
    here = os.path.abspath(__file__)
    found: list[tuple[str, Callable[[], BrokerProcess]]] = []
    c_path = os.path.join(tmp, "cfwd")
    source = os.path.join(tmp, "cfwd.c")
    with open(source, "wb") as f:
        f.write(C_SOURCE)
    built = subprocess.run(["cc", "-O2", "-o", c_path, source], capture_output=True)
    if built.returncode == 0:
        found.append(("C epoll", lambda: Forwarder([c_path])))
    else:
        print("# no C compiler: the C epoll row is left out", flush=True)
    py = [sys.executable, here, "--serve"]
    found += [
        ("Python epoll", lambda: Forwarder([*py, "epoll"])),
        ("Twisted, direct write", lambda: Forwarder([*py, "twisted"])),
    ]
    try:
        import uvloop  # noqa: F401
    except ImportError:
        print("# no uvloop: the uvloop row is left out", flush=True)
    else:
        found.append(("Twisted on uvloop, direct write", lambda: Forwarder([*py, "uvloop"])))
    found += [
        ("Twisted, buffered write", lambda: Forwarder()),
        ("mbroker STOMP", StompBroker),
    ]
    return found


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--pin", choices=["same", "cross", "none"], default="same")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=3000, help="per server per round")
    ap.add_argument("--spin", action="store_true", help="the client polls its socket")
    ap.add_argument("--serve", choices=["epoll", "twisted", "uvloop"], help=argparse_hidden())
    args = ap.parse_args()
    if args.serve == "epoll":
        serve_python_epoll()
        return
    if args.serve in ("twisted", "uvloop"):
        serve_twisted_direct(args.serve == "uvloop")
        return
    rounds, n = (1, 300) if args.quick else (args.rounds, args.messages)
    server_cpus, client_cpus = {"same": ({0}, {0}), "cross": ({0}, {1}), "none": (None, None)}[
        args.pin
    ]
    print(f"# {machine()}", flush=True)
    print(f"# {load_note()}", flush=True)
    results: dict[str, list[tuple[float, float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="mbroker-roundtrip-") as tmp:
        servers = starters(tmp)
        set_affinity(0, client_cpus)
        try:
            for r in range(rounds):
                order = servers if r % 2 == 0 else servers[::-1]
                for name, start in order:
                    proc = start()
                    try:
                        proc.pin(server_cpus)
                        results.setdefault(name, []).append(measure(proc, n, args.spin))
                    finally:
                        proc.stop()
        finally:
            set_affinity(0, None)
    rows: list[list[object]] = []
    for name, _ in servers:
        got = results[name]
        p50s = [g[0] for g in got]
        rows.append(
            [
                name,
                min(p50s),
                statistics.median(p50s),
                statistics.median([g[1] for g in got]),
                statistics.median([g[2] for g in got]),
                statistics.median([g[3] for g in got]),
            ]
        )
    client = "spinning" if args.spin else "blocking"
    print_table(
        f"one round trip at a time, {n} x {rounds} rounds, placement {args.pin}, "
        f"{client} client (us: p50 best and median of the rounds, CPU per round trip)",
        ["server", "p50 best", "p50 median", "p99 median", "srv CPU", "client CPU"],
        rows,
    )


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
