"""beanstalkd (Debian ``beanstalkd``): a work queue: put / reserve / delete.

beanstalkd has no publish/subscribe, so it takes part only in the acknowledged work
queue case (compared with mbroker's queue consumed with ``ack=manual``).  It runs
without a binlog (in memory, like ``mbroker --memory``) in a private directory.

The producer pipelines pre-encoded ``put`` commands and counts ``INSERTED``.  The
consumer keeps 1000 ``reserve`` commands outstanding; each read is scanned once with a
regular expression for ``RESERVED <id>``, and for each job one ``delete <id>`` and one
more ``reserve`` are sent back in one write (a job id must be echoed, so this client
does a little more per message than the others).
"""

from __future__ import annotations

import re

from rawclient import BATCH, Reader, Subscriber, connect

from peers import HOST, PeerServer, Setup

WINDOW = 1000


class ReserveReader(Reader):
    """Counts ``RESERVED <id> <bytes>`` and answers each with delete + reserve."""

    pattern = re.compile(rb"RESERVED (\d+) \d+\r\n")

    def __init__(self) -> None:
        super().__init__(b"RESERVED ")
        self._buf = b""

    def feed(self, chunk: bytes) -> tuple[int, bytes]:
        data = self._buf + chunk
        ids = []
        end = 0
        for m in self.pattern.finditer(data):
            ids.append(m.group(1))
            end = m.end()
        self._buf = data[end:][-64:]  # an incomplete header is shorter than that
        if not ids:
            return 0, b""
        return len(ids), b"".join(b"delete %s\r\nreserve\r\n" % i for i in ids)


class Server(PeerServer):
    name = "beanstalkd"
    package = "beanstalkd"
    binary = "beanstalkd"

    def command(self) -> list[str]:
        return [self.binary, "-l", HOST, "-p", str(self.port)]

    def ready(self) -> bool:
        return self.answers(b"stats\r\n", lambda line: line.startswith(b"OK"))

    def setup_queue(self, size: int) -> Setup:
        consumer = connect(HOST, self.port, greeting=False)
        consumer.sendall(b"reserve\r\n" * WINDOW)
        pub = connect(HOST, self.port, greeting=False)
        chunk = (b"put 0 0 120 %d\r\n%s\r\n" % (size, b"x" * size)) * BATCH
        return Setup(pub, [chunk], [Subscriber(consumer, ReserveReader())], Reader(b"INSERTED"), 1)
