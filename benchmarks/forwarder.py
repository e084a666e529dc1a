"""A bare Twisted line forwarder: the ceiling mbroker's design is measured against.

No broker logic at all: a :class:`~twisted.protocols.basic.LineOnlyReceiver` with the
delimiter ``\\n``; a connection that sends the line ``SUB`` becomes the subscriber (the
most recent one wins), and every other line from any connection is written, as it
came plus ``\\n``, to the subscriber with one ``transport.write``; with no subscriber
it is dropped.  Nothing is parsed, queued, routed or acknowledged, so a publisher gets
no reply.  It runs on the default reactor (epoll on Linux, as under ``twistd``) and
prints ``forwarder listening on <host>:<port>`` once it listens.  Usage::

    python benchmarks/forwarder.py [--port 0] [--interface 127.0.0.1]

:class:`ForwarderProcess` runs it as a subprocess the way
:class:`brokerproc.BrokerProcess` runs ``twistd -n mbroker`` (same ``cpu_seconds``,
``pin``, ``stop`` …), for ``bench_forwarder.py`` and ``bench_latency.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from brokerproc import BrokerProcess  # noqa: E402
from rawclient import connect, read_until  # noqa: E402

_LISTENING = re.compile(rb"forwarder listening on ([0-9.]+):(\d+)")


class Forward(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536  # far above the 128-byte lines of the benchmarks

    def lineReceived(self, line: bytes) -> None:
        if line == b"SUB":
            self.factory.subscriber = self
            return
        sub = self.factory.subscriber
        if sub is not None:
            sub.transport.write(line + b"\n")

    def connectionLost(self, reason: object = None) -> None:
        if self.factory.subscriber is self:
            self.factory.subscriber = None


class ForwardFactory(Factory):
    protocol = Forward

    def __init__(self) -> None:
        self.subscriber: Forward | None = None


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    ap.add_argument("--interface", default="127.0.0.1")
    args = ap.parse_args()
    from twisted.internet import reactor  # the default one, as twistd installs it

    port = reactor.listenTCP(args.port, ForwardFactory(), interface=args.interface)
    addr = port.getHost()
    print(f"forwarder listening on {addr.host}:{addr.port} ({type(reactor).__name__})", flush=True)
    reactor.run()


class ForwarderProcess(BrokerProcess):
    """``python benchmarks/forwarder.py --port 0`` in a subprocess, on 127.0.0.1.

    Everything but the start is :class:`BrokerProcess`'s: ``host``, ``port``,
    ``cpu_seconds()``, ``cpu_wait_seconds()``, ``rss_bytes()``, ``pin(cpus)``,
    ``stop()`` and the context manager.
    """

    listening = _LISTENING
    name = "forwarder"

    def __init__(self) -> None:
        self._tmp = None
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.host, self.port = self._wait_for_port(deadline=time.monotonic() + 30)

    def subscribed_pair(self) -> tuple[socket.socket, socket.socket]:
        """(subscriber, publisher) connections, the ``SUB`` known to be in effect.

        ``SUB`` has no reply, so the publisher sends ``probe`` lines until one comes out
        on the subscriber, then one ``sync`` line: once that is read nothing is in flight.
        """
        sub = connect(self.host, self.port, greeting=False)
        pub = connect(self.host, self.port, greeting=False)
        sub.sendall(b"SUB\n")
        sub.settimeout(0.2)
        deadline = time.monotonic() + 10
        while True:
            pub.sendall(b"probe\n")
            try:
                if sub.recv(65536):
                    break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        sub.settimeout(10)
        pub.sendall(b"sync\n")
        read_until(sub, b"sync\n")
        return sub, pub

    def __enter__(self) -> ForwarderProcess:
        return self


if __name__ == "__main__":
    main()
