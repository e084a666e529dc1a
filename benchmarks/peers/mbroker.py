"""mbroker itself, as a peer among the others: ``twistd -n mbroker --memory``.

``pubsub(n)``: a fanout exchange with n ``SUBSCRIBE``rs (``ack=auto``), each counting
``MSG`` frames; the publisher counts its ``+OK`` replies.  ``queue()``: a queue
consumed with ``ack=manual``; tags on a connection run 1, 2, 3 …, so after each read
one ``ACK first-last`` acknowledges every delivery in it.
"""

from __future__ import annotations

from brokerproc import BrokerProcess
from rawclient import BATCH, AckRangeReader, Reader, Subscriber, command, connect, mbroker_publish

from peers import PeerServer, Setup


class Server(PeerServer):
    name = "mbroker"
    package = "mbroker"

    def __init__(self) -> None:
        super().__init__()
        self.broker: BrokerProcess | None = None
        self.host = "127.0.0.1"
        self._n = 0

    @classmethod
    def unavailable(cls) -> str | None:
        return None

    def version(self) -> str:
        from mbroker import __version__

        return f"mbroker {__version__} (this tree)"

    def start(self) -> None:
        self.broker = BrokerProcess("--memory")
        self.host, self.port = self.broker.host, self.broker.port

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def cpu_seconds(self) -> float:
        return self.broker.cpu_seconds() if self.broker else 0.0

    def cpu_wait_seconds(self) -> float:
        return self.broker.cpu_wait_seconds() if self.broker else 0.0

    def rss_bytes(self) -> int:
        return self.broker.rss_bytes() if self.broker else 0

    def _name(self, prefix: bytes) -> bytes:
        self._n += 1
        return b"%s%d" % (prefix, self._n)

    def setup_pubsub(self, subscribers: int, size: int) -> Setup:
        admin = connect(self.host, self.port)
        name = self._name(b"fan")
        command(admin, b"CREATE " + name + b" fanout")
        subs = []
        for _ in range(subscribers):
            s = connect(self.host, self.port)
            command(s, b"SUBSCRIBE " + name)
            subs.append(Subscriber(s, Reader(b"MSG ")))
        pub = connect(self.host, self.port)
        chunk = mbroker_publish(name, size) * BATCH
        return Setup(pub, [chunk], subs, Reader(b"+OK"), others=[admin])

    def setup_queue(self, size: int) -> Setup:
        admin = connect(self.host, self.port)
        name = self._name(b"work")
        command(admin, b"CREATE " + name + b" queue")
        s = connect(self.host, self.port)
        command(s, b"SUBSCRIBE " + name + b" ack=manual prefetch=1000")
        pub = connect(self.host, self.port)
        chunk = mbroker_publish(name, size) * BATCH
        return Setup(
            pub, [chunk], [Subscriber(s, AckRangeReader())], Reader(b"+OK"), 1, others=[admin]
        )
