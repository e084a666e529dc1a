"""Mosquitto (Debian ``mosquitto``): MQTT 3.1.1, QoS 0, hand-encoded packets.

The broker runs from a private config file (one listener on 127.0.0.1, anonymous,
no persistence) in a private directory.  Clients send a hand-encoded CONNECT (clean
session, keep-alive off) and SUBSCRIBE; the publisher pipelines pre-encoded QoS 0
PUBLISH packets, which get no reply (only TCP holds it back).  Every delivered PUBLISH
starts with the same bytes (fixed header, remaining length, topic), which each
subscriber counts once per read.
"""

from __future__ import annotations

import os
import socket

from rawclient import BATCH, Reader, Subscriber, connect, read_until

from peers import HOST, PeerServer, Setup

TOPIC = b"bench"


def varint(n: int) -> bytes:
    """MQTT's remaining-length encoding."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def string(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def connect_packet(client_id: bytes) -> bytes:
    # protocol name, level 4 (3.1.1), flags: clean session, keep-alive 0 (off)
    return packet(0x10, string(b"MQTT") + b"\x04\x02\x00\x00" + string(client_id))


def publish_header(size: int) -> bytes:
    return b"\x30" + varint(2 + len(TOPIC) + size) + string(TOPIC)


class Server(PeerServer):
    name = "mosquitto"
    package = "mosquitto"
    binary = "mosquitto"

    def prepare(self) -> None:
        with open(os.path.join(self.tmp, "mosquitto.conf"), "w") as f:
            f.write(
                f"listener {self.port} {HOST}\n"
                "allow_anonymous true\n"
                "persistence false\n"
                "log_dest stdout\n"
            )

    def command(self) -> list[str]:
        return [self.binary, "-c", os.path.join(self.tmp, "mosquitto.conf")]

    def _client(self, name: bytes) -> socket.socket:
        s = connect(HOST, self.port, greeting=False)
        s.sendall(connect_packet(name))
        if read_until(s, b"\x20\x02\x00\x00") != b"\x20\x02\x00\x00":
            raise ConnectionError("no CONNACK")
        return s

    def ready(self) -> bool:
        try:
            self._client(b"ready").close()
            return True
        except OSError:
            return False

    def setup_pubsub(self, subscribers: int, size: int) -> Setup:
        subs = []
        for i in range(subscribers):
            s = self._client(b"sub%d" % i)
            s.sendall(packet(0x82, b"\x00\x01" + string(TOPIC) + b"\x00"))
            read_until(s, b"\x90\x03\x00\x01\x00")
            subs.append(Subscriber(s, Reader(publish_header(size))))
        pub = self._client(b"pub")
        chunk = (publish_header(size) + b"x" * size) * BATCH
        return Setup(pub, [chunk], subs, None)
