"""NATS (Debian ``nats-server``): PUB / SUB in the text protocol, core NATS (no JetStream).

The subscriber counts ``MSG bench`` lines; the publisher's ``PUB`` gets no reply
(``verbose`` off), so only TCP holds it back, and a subscriber that falls behind may be
cut off by the server as a slow consumer: ``lost`` shows it.
"""

from __future__ import annotations

from rawclient import BATCH, Reader, Subscriber, connect, read_until

from peers import HOST, PeerServer, Setup

CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"echo":false}\r\n'


class Server(PeerServer):
    name = "nats"
    package = "nats-server"
    binary = "nats-server"

    def command(self) -> list[str]:
        return [self.binary, "-a", HOST, "-p", str(self.port)]

    def ready(self) -> bool:
        return self.answers(b"", lambda line: line.startswith(b"INFO"))

    def setup_pubsub(self, subscribers: int, size: int) -> Setup:
        subs = []
        for i in range(subscribers):
            s = connect(HOST, self.port)
            s.sendall(CONNECT + b"SUB bench %d\r\nPING\r\n" % (i + 1))
            read_until(s, b"PONG\r\n")
            subs.append(Subscriber(s, Reader(b"MSG bench")))
        pub = connect(HOST, self.port)
        pub.sendall(CONNECT + b"PING\r\n")
        read_until(pub, b"PONG\r\n")
        chunk = (b"PUB bench %d\r\n%s\r\n" % (size, b"x" * size)) * BATCH
        return Setup(pub, [chunk], subs, None)
