"""RabbitMQ (Debian ``rabbitmq-server``): AMQP 0-9-1, hand-encoded; no pika.

The node runs in a private directory (its Mnesia database, logs, Erlang cookie, an
empty plugin list and a config file that listens on 127.0.0.1 only), with an ``epmd``
of its own on a free loopback port, started and stopped here.

Frames are encoded by hand (``struct``): the handshake, declarations and consumers
wait for their ``-Ok`` methods; the publisher pipelines pre-encoded ``basic.publish``
+ content header + body frames (no publisher confirms, like the QoS 0 and NATS
publishers: RabbitMQ's own credit flow stops reading the socket when it falls behind).
Each consumer counts ``basic.deliver`` method frames, whose first bytes are the same
for every delivery.  In the work-queue case the consumer (prefetch 1000) sends one
``basic.ack`` with ``multiple`` after each read: delivery tags on a channel run 1, 2, 3 …

:class:`StompServer` is the same node with the ``rabbitmq_stomp`` plugin enabled (in its
private ``enabled_plugins`` file) and listening on a second free loopback port,
``stomp_port``; ``bench_stomp.py`` drives it.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import struct
import subprocess
import time

from rawclient import BATCH, Reader, Subscriber, connect

from peers import HOST, PeerServer, Setup, free_port

SERVER_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"
FRAME_END = b"\xce"
EMPTY_TABLE = b"\x00\x00\x00\x00"
_names = itertools.count()


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel: int, cls: int, mth: int, args: bytes = b"") -> bytes:
    return frame(1, channel, struct.pack(">HH", cls, mth) + args)


def shortstr(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def longstr(s: bytes) -> bytes:
    return struct.pack(">I", len(s)) + s


def publish_frames(exchange: bytes, key: bytes, body: bytes) -> bytes:
    m = method(1, 60, 40, b"\x00\x00" + shortstr(exchange) + shortstr(key) + b"\x00")
    header = frame(2, 1, struct.pack(">HHQH", 60, 0, len(body), 0))
    return m + header + frame(3, 1, body)


def deliver_marker(consumer_tag: bytes, exchange: bytes, key: bytes) -> bytes:
    """The first bytes of every ``basic.deliver`` frame for this consumer."""
    size = 4 + 1 + len(consumer_tag) + 8 + 1 + 1 + len(exchange) + 1 + len(key)
    return struct.pack(">BHIHH", 1, 1, size, 60, 60) + shortstr(consumer_tag)


class AmqpConnection:
    """Just enough AMQP 0-9-1 to open a channel and wait for replies."""

    def __init__(self, port: int) -> None:
        self.sock = connect(HOST, port, greeting=False)
        self.buf = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(10, 10)  # connection.start
        login = shortstr(b"PLAIN") + longstr(b"\x00guest\x00guest") + shortstr(b"en_US")
        self.sock.sendall(method(0, 10, 11, EMPTY_TABLE + login))  # start-ok
        self.expect(10, 30)  # connection.tune
        self.sock.sendall(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
        self.sock.sendall(method(0, 10, 40, shortstr(b"/") + b"\x00\x00"))
        self.expect(10, 41)
        self.call(20, 10, b"\x00", 11)  # channel.open on channel 1

    def expect(self, cls: int, mth: int, timeout: float = 20.0) -> bytes:
        """Read frames until method *cls*.*mth* arrives; return its arguments."""
        deadline = time.monotonic() + timeout
        while True:
            while len(self.buf) >= 7:
                kind, _, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) < 8 + size:
                    break
                payload, self.buf = self.buf[7 : 7 + size], self.buf[8 + size :]
                if kind != 1:
                    continue
                c, m = struct.unpack(">HH", payload[:4])
                if (c, m) == (cls, mth):
                    return payload[4:]
                if (c, m) in ((10, 50), (20, 40)):  # connection.close, channel.close
                    raise ConnectionError(f"server closed: {payload[6:200]!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no method {cls}.{mth}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed while waiting for method {cls}.{mth}")
            self.buf += chunk

    def call(self, cls: int, mth: int, args: bytes, reply: int) -> bytes:
        self.sock.sendall(method(1 if cls != 10 else 0, cls, mth, args))
        return self.expect(cls, reply)

    def exchange_declare(self, name: bytes, kind: bytes) -> None:
        self.call(40, 10, b"\x00\x00" + shortstr(name) + shortstr(kind) + b"\x00" + EMPTY_TABLE, 11)

    def queue_declare(self, name: bytes, exclusive: bool) -> None:
        bits = b"\x04" if exclusive else b"\x00"
        self.call(50, 10, b"\x00\x00" + shortstr(name) + bits + EMPTY_TABLE, 11)

    def queue_bind(self, queue: bytes, exchange: bytes) -> None:
        args = b"\x00\x00" + shortstr(queue) + shortstr(exchange) + shortstr(b"") + b"\x00"
        self.call(50, 20, args + EMPTY_TABLE, 21)

    def qos(self, prefetch: int) -> None:
        self.call(60, 10, struct.pack(">IHB", 0, prefetch, 0), 11)

    def consume(self, queue: bytes, tag: bytes, no_ack: bool) -> None:
        bits = b"\x02" if no_ack else b"\x00"
        self.call(60, 20, b"\x00\x00" + shortstr(queue) + shortstr(tag) + bits + EMPTY_TABLE, 21)


class AckReader(Reader):
    """Counts ``basic.deliver`` and acknowledges everything so far with one ``multiple``."""

    def __init__(self, marker: bytes) -> None:
        super().__init__(marker)
        self._acked = 0

    def feed(self, chunk: bytes) -> tuple[int, bytes]:
        n, _ = super().feed(chunk)
        if not n:
            return 0, b""
        self._acked += n
        return n, method(1, 60, 80, struct.pack(">QB", self._acked, 1))


class Server(PeerServer):
    name = "rabbitmq"
    package = "rabbitmq-server"
    binary = SERVER_SCRIPT
    start_timeout = 90.0
    plugins: tuple[str, ...] = ()  # in the private enabled_plugins file

    def __init__(self) -> None:
        super().__init__()
        self.epmd: subprocess.Popen[bytes] | None = None
        self.epmd_port = 0

    @classmethod
    def unavailable(cls) -> str | None:
        if not os.access(SERVER_SCRIPT, os.X_OK):
            return f"{SERVER_SCRIPT} not found (apt-get install -y rabbitmq-server)"
        if not shutil.which("epmd"):
            return "epmd not found (it comes with erlang-base)"
        return None

    def prepare(self) -> None:
        self.epmd_port = free_port()
        self.epmd = subprocess.Popen(
            ["epmd", "-port", str(self.epmd_port), "-address", HOST],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(os.path.join(self.tmp, "enabled_plugins"), "w") as f:
            f.write(f"[{','.join(self.plugins)}].\n")
        with open(os.path.join(self.tmp, "rabbitmq.conf"), "w") as f:
            f.write(f"listeners.tcp.default = {HOST}:{self.port}\n")
            f.write(self.extra_config())
        open(os.path.join(self.tmp, "rabbitmq-env.conf"), "w").close()

    def extra_config(self) -> str:
        """Lines added to the private ``rabbitmq.conf``."""
        return ""

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=self.tmp,
            RABBITMQ_CONF_ENV_FILE=os.path.join(self.tmp, "rabbitmq-env.conf"),
            RABBITMQ_NODENAME=f"bench{self.port}@localhost",
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_CONFIG_FILE=os.path.join(self.tmp, "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.tmp, "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=os.path.join(self.tmp, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.tmp, "log"),
            RABBITMQ_PID_FILE=os.path.join(self.tmp, "rabbit.pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            RABBITMQ_LOGS="-",
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS=HOST,
        )
        return env

    def command(self) -> list[str]:
        return [SERVER_SCRIPT]

    def ready(self) -> bool:
        try:
            AmqpConnection(self.port).sock.close()
            return True
        except (OSError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        super().stop()
        if self.epmd is not None:
            self.epmd.terminate()
            try:
                self.epmd.wait(10)
            except subprocess.TimeoutExpired:
                self.epmd.kill()
                self.epmd.wait()
            self.epmd = None

    def setup_pubsub(self, subscribers: int, size: int) -> Setup:
        admin = AmqpConnection(self.port)
        admin.exchange_declare(b"bench", b"fanout")
        subs = []
        for _ in range(subscribers):
            c = AmqpConnection(self.port)
            q = b"bench-s%d" % next(_names)  # exclusive queues go away lazily: new names
            c.queue_declare(q, exclusive=True)
            c.queue_bind(q, b"bench")
            c.consume(q, b"c", no_ack=True)
            subs.append(Subscriber(c.sock, Reader(deliver_marker(b"c", b"bench", b""))))
        pub = AmqpConnection(self.port)
        chunk = publish_frames(b"bench", b"", b"x" * size) * BATCH
        return Setup(pub.sock, [chunk], subs, None, others=[admin.sock])

    def setup_queue(self, size: int) -> Setup:
        c = AmqpConnection(self.port)
        c.queue_declare(b"work", exclusive=False)
        c.qos(1000)
        c.consume(b"work", b"c", no_ack=False)
        sub = Subscriber(c.sock, AckReader(deliver_marker(b"c", b"", b"work")))
        pub = AmqpConnection(self.port)
        chunk = publish_frames(b"", b"work", b"x" * size) * BATCH
        return Setup(pub.sock, [chunk], [sub], None, fanout=1)


class StompServer(Server):
    """The node with ``rabbitmq_stomp`` on ``stomp_port`` (127.0.0.1 only)."""

    name = "rabbitmq-stomp"
    plugins = ("rabbitmq_stomp",)

    def __init__(self) -> None:
        super().__init__()
        self.stomp_port = 0

    @classmethod
    def unavailable(cls) -> str | None:
        why = super().unavailable()
        if why is None and not glob.glob("/usr/lib/rabbitmq/lib/*/plugins/rabbitmq_stomp-*"):
            return "the rabbitmq_stomp plugin is not installed"
        return why

    def prepare(self) -> None:
        self.stomp_port = free_port()
        super().prepare()

    def extra_config(self) -> str:
        return f"stomp.listeners.tcp.1 = {HOST}:{self.stomp_port}\n"

    def ready(self) -> bool:
        """Once the STOMP listener answers ``CONNECT`` with ``CONNECTED``."""
        try:
            s = connect(HOST, self.stomp_port, greeting=False, timeout=1)
        except OSError:
            return False
        try:
            s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
            s.settimeout(5)
            reply = b""
            while b"\x00" not in reply:  # (a newline follows the NUL)
                chunk = s.recv(4096)
                if not chunk:
                    return False
                reply += chunk
            return reply.startswith(b"CONNECTED")
        except OSError:
            return False
        finally:
            s.close()
