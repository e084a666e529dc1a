"""Redis (Debian ``redis-server``): PUBLISH / SUBSCRIBE over hand-encoded RESP.

The server runs with no persistence (``--save ''``, no AOF) in a private ``--dir``.
The publisher pipelines pre-encoded ``PUBLISH bench <payload>`` commands and counts the
integer replies (``:``); each subscriber counts ``$7\\r\\nmessage`` in the pushed
``*3 message bench <payload>`` frames.
"""

from __future__ import annotations

from rawclient import BATCH, Reader, Subscriber, connect, read_until

from peers import HOST, PeerServer, Setup

CHANNEL = b"bench"


def resp(*args: bytes) -> bytes:
    """One RESP command: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Server(PeerServer):
    name = "redis"
    package = "redis-server"
    binary = "redis-server"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", self.tmp,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def ready(self) -> bool:
        return self.answers(resp(b"PING"), lambda line: line == b"+PONG\r\n")

    def setup_pubsub(self, subscribers: int, size: int) -> Setup:
        subs = []
        for _ in range(subscribers):
            s = connect(HOST, self.port, greeting=False)
            s.sendall(resp(b"SUBSCRIBE", CHANNEL))
            read_until(s, b":1\r\n")
            subs.append(Subscriber(s, Reader(b"$7\r\nmessage")))
        pub = connect(HOST, self.port, greeting=False)
        chunk = resp(b"PUBLISH", CHANNEL, b"x" * size) * BATCH
        return Setup(pub, [chunk], subs, Reader(b":"))
