"""The cost of the HTTP side (``--http``): scrapes and the queues list, and whether a
Prometheus scrape every second slows the message path.

1. 1 -> 1 throughput (bench_pubsub's case) with no scrape, then with ``GET /metrics``
   every second from another thread, alternating, ``--rounds`` times each;
2. with ``--queues`` queues (one message each), the wall time of ``GET /metrics``,
   ``GET /api/queues`` and ``GET /api/overview`` (three back to back, then three a
   second apart: its queue totals are summed at most once a second) and the
   broker's RSS before and after.

Usage::

    python benchmarks/bench_http.py [--messages N] [--rounds N] [--queues N]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pubsub import connect, run_case  # noqa: E402
from brokerproc import BrokerProcess  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[float, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        size = len(r.read())
    return time.perf_counter() - t, size


def scraper(port: int, stop: threading.Event, times: list[float]) -> None:
    while not stop.wait(1.0):
        times.append(get(port, "/metrics")[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queues", type=int, default=10_000)
    args = ap.parse_args()
    port = free_port()
    with BrokerProcess("--http", f"tcp:{port}:interface=127.0.0.1", "--memory") as broker:
        rates: dict[bool, list[float]] = {False: [], True: []}
        scrape_times: list[float] = []
        for _ in range(args.rounds):
            for scraping in (False, True):
                stop = threading.Event()
                t = threading.Thread(target=scraper, args=(port, stop, scrape_times))
                if scraping:
                    t.start()
                row = run_case(broker, 1, args.messages, 128)
                stop.set()
                if scraping:
                    t.join()
                rates[scraping].append(row["delivered_per_s"])
                admin = connect(broker.host, broker.port)
                admin.sendall(b"DELETE bench1\r\n")
                admin.recv(100)
                admin.close()
        print("1 -> 1, 128-byte payloads, delivered/s per round")
        for scraping in (False, True):
            label = "scrape every 1 s" if scraping else "no scrape"
            print(f"  {label:18} " + "  ".join(f"{r:,.0f}" for r in rates[scraping]))
        if scrape_times:
            print(f"  scrapes: {len(scrape_times)}, slowest {max(scrape_times) * 1000:.1f} ms")
        rss0 = broker.rss_bytes()
        admin = connect(broker.host, broker.port)
        lines = b"".join(
            b"CREATE q%d queue\r\nPUBLISH q%d 1\r\nx\r\n" % (i, i) for i in range(args.queues)
        )
        admin.sendall(lines)
        got = b""
        while got.count(b"\r\n") < 2 * args.queues:
            got += admin.recv(1 << 20)
        rss1 = broker.rss_bytes()
        print(f"{args.queues} queues, one message each (RSS {rss1 / 2**20:.0f} MiB)")
        for path in ("/metrics", "/api/queues", "/api/overview"):
            times = []
            for _ in range(3):
                seconds, size = get(port, path)
                times.append(seconds)
            rss = broker.rss_bytes()
            print(
                f"  GET {path:14} best {min(times) * 1000:7.1f} ms  {size / 1e6:5.1f} MB  "
                f"RSS after {rss / 2**20:.0f} MiB"
            )
        # /api/overview sums the queues at most once a second: time requests that each
        # find the sum over a second old (a walk) apart from the ones above (mostly not)
        walks = []
        for _ in range(3):
            time.sleep(1.1)
            walks.append(get(port, "/api/overview")[0])
        print(f"  GET /api/overview  best {min(walks) * 1000:7.1f} ms  (each a second apart)")
        print(f"  RSS before the queues {rss0 / 2**20:.0f} MiB")
        admin.close()


if __name__ == "__main__":
    main()
