"""How fast the Deferred client publishes: pipelined, windowed, and one at a time.

The broker runs in a subprocess (the real ``BrokerFactory`` on a loopback port, with
no plugin discovery in the way); this process runs the client.  Each case publishes
to a queue and waits until every publish is confirmed (``+OK 1``).

* ``raw socket``: pre-encoded PUBLISH frames written in large chunks, replies only
  counted: the broker's own limit, with next to no client cost.
* ``client, all at once``: ``client.publish`` N times in one go, then wait for all.
* ``client, window 1000``: at most 1000 in flight (what ``mbroker publish`` does);
  the coroutine resumes once per reply.
* ``client, chunks of 1000``: publishes issued 1000 at a time, two chunks in flight,
  one await per chunk: the cost of the client's own publish and reply path.
* ``client, one at a time``: ``await client.publish(...)`` in a loop: a round trip each.

For each it prints messages per second, the client's CPU time per message (this
process) and the broker's (the subprocess).  Usage::

    python benchmarks/bench_client.py [--messages N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import Deferred, gatherResults  # noqa: E402

from mbroker.client.connection import Client, connect  # noqa: E402

BROKER = """
import sys
from twisted.internet import reactor
from mbroker.config import Config
from mbroker.server.factory import BrokerFactory
from mbroker.core.broker import Broker
config = Config(max_payload=16 * 1024 * 1024)
port = reactor.listenTCP(0, BrokerFactory(Broker(reactor, config), config, reactor),
                         interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""


class BrokerProcess:
    """The broker in a subprocess; ``cpu()`` is its user+system CPU time so far."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", BROKER], stdout=subprocess.PIPE, env=env, cwd=ROOT
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def cpu(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def raw_case(port: int, queue: str, n: int, size: int) -> None:
    """Pre-encoded publishes over a plain socket, replies counted with bytes.count."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.recv(4096)  # HELLO (small enough to come alone)
    frame = b"PUBLISH %s %d\r\n%s\r\n" % (queue.encode(), size, b"x" * size)
    batch = 1000
    chunk = frame * batch
    s.setblocking(True)
    seen = 0
    tail = b""
    sent = 0
    while sent < n:
        count = min(batch, n - sent)
        s.sendall(chunk if count == batch else frame * count)
        sent += count
        while seen < sent - 5 * batch:  # keep at most ~5 batches unanswered
            data = tail + s.recv(1 << 20)
            seen += data.count(b"+OK")
            tail = data[-2:]
    while seen < n:
        data = tail + s.recv(1 << 20)
        seen += data.count(b"+OK")
        tail = data[-2:]
    s.close()


async def all_at_once(client: Client, queue: str, n: int, payload: bytes) -> None:
    await gatherResults([client.publish(queue, payload) for _ in range(n)])


async def windowed(client: Client, queue: str, n: int, payload: bytes) -> None:
    window: deque[Deferred[int]] = deque()
    for _ in range(n):
        if len(window) >= 1000:
            await window.popleft()
        window.append(client.publish(queue, payload))
    while window:
        await window.popleft()


async def chunked(client: Client, queue: str, n: int, payload: bytes) -> None:
    """Chunks of 1000, two in flight; awaiting a chunk's last publish is enough, since
    replies come in order (a real program would also check each result)."""
    previous: Deferred[int] | None = None
    for start in range(0, n, 1000):
        last = [client.publish(queue, payload) for _ in range(min(1000, n - start))][-1]
        if previous is not None:
            await previous
        previous = last
    if previous is not None:
        await previous


async def one_at_a_time(client: Client, queue: str, n: int, payload: bytes) -> None:
    for _ in range(n):
        await client.publish(queue, payload)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    broker = BrokerProcess()
    try:
        client = await connect(reactor, f"tcp:127.0.0.1:{broker.port}")
        payload = b"x" * args.size
        n = args.messages
        rows: list[tuple[str, int, float, float, float]] = []

        async def case(name: str, count: int, body: Any) -> None:
            queue = f"bench{len(rows)}"
            await client.create(queue, "queue", max_length=count + 1)
            b0, c0, t0 = broker.cpu(), time.process_time(), time.perf_counter()
            await body(queue, count)
            elapsed = time.perf_counter() - t0
            client_cpu, broker_cpu = time.process_time() - c0, broker.cpu() - b0
            await client.delete(queue)
            rows.append((name, count, count / elapsed, client_cpu / count, broker_cpu / count))

        def raw(q: str, c: int) -> Deferred[None]:
            return task.deferLater(reactor, 0, raw_case, broker.port, q, c, args.size)

        await case("raw socket (broker limit)", n, raw)
        await case("client, all at once", n, lambda q, c: all_at_once(client, q, c, payload))
        await case("client, window 1000", n, lambda q, c: windowed(client, q, c, payload))
        await case("client, chunks of 1000", n, lambda q, c: chunked(client, q, c, payload))
        small = max(1000, n // 20)
        await case("client, one at a time", small,
                   lambda q, c: one_at_a_time(client, q, c, payload))  # fmt: skip
        await client.close()
    finally:
        broker.stop()
    print(f"PUBLISH to a queue, {args.size}-byte payloads, every one confirmed")
    print(f"{'case':<28}{'messages':>10}{'msg/s':>12}{'client us/msg':>15}{'broker us/msg':>15}")
    for name, count, rate, client_cpu, broker_cpu in rows:
        cpu = f"{client_cpu * 1e6:>15.1f}{broker_cpu * 1e6:>15.1f}"
        print(f"{name:<28}{count:>10,}{rate:>12,.0f}{cpu}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=128)
    task.react(main, (parser.parse_args(),))
