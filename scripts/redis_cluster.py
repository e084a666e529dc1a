#!/usr/bin/env python3
"""Start a throw-away Redis Cluster on loopback ports, for development and tests.

``python scripts/redis_cluster.py [--replicas 1] [--port-base N]`` starts 3 masters
(and, with ``--replicas 1``, one replica each) with ``redis-server --cluster-enabled
yes`` in a temporary directory, joins them with ``redis-cli --cluster create``, waits
(with a deadline) until every node reports ``cluster_state:ok`` and, with replicas,
until each master's writes reach its replicas as they come, prints the startup
nodes as the ``--cluster`` option of ``twistd mbroker`` takes them, and runs until
interrupted (Ctrl-C, SIGTERM); then it stops its own processes, by pid, and removes
the directory.

The tests import :class:`DevCluster` from this file (tests/helpers/redis_cluster.py);
it is test and development tooling, not part of the ``mbroker`` package.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: how long the cluster may take to form on a loaded machine
START_TIMEOUT = 60.0


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free now, each with its cluster bus port (+10000) free too."""
    ports: list[int] = []
    socks: list[socket.socket] = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port + 10000 > 65535 or port in ports:
                s.close()
                continue
            bus = socket.socket()
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                s.close()
                bus.close()
                continue
            socks += [s, bus]
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


class DevCluster:
    """A local Redis Cluster: :meth:`start` it, read :attr:`url`, :meth:`stop` it."""

    def __init__(self, masters: int = 3, replicas: int = 0, port_base: int = 0) -> None:
        self.masters = masters
        self.replicas = replicas
        self.port_base = port_base
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.directory: Path | None = None

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.ports]

    @property
    def url(self) -> str:
        """The startup nodes, as ``--cluster`` takes them."""
        return "redis://" + ",".join(f"{h}:{p}" for h, p in self.nodes)

    def start(self, timeout: float = START_TIMEOUT) -> DevCluster:
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError(
                "redis-server and redis-cli are needed (apt-get install redis-server)"
            )
        n = self.masters * (1 + self.replicas)
        if self.port_base:
            self.ports = list(range(self.port_base, self.port_base + n))
        else:
            self.ports = free_ports(n)
        self.directory = Path(tempfile.mkdtemp(prefix="mbroker-redis-cluster."))
        deadline = time.monotonic() + timeout
        try:
            for port in self.ports:
                self._start_node(server, port)
            for port in self.ports:
                self._wait_ping(cli, port, deadline)
            subprocess.run(
                [cli, "--cluster", "create", *[f"{h}:{p}" for h, p in self.nodes]]
                + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=max(deadline - time.monotonic(), 1),
            )
            for port in self.ports:
                self._wait_ok(cli, port, deadline)
            if self.replicas:
                for port in self.ports:
                    self._wait_synced(cli, port, deadline)
                for port in self.ports:
                    self._wait_streaming(cli, port, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, server: str, port: int) -> None:
        assert self.directory is not None
        d = self.directory / str(port)
        d.mkdir()
        args = [
            server,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(d / "nodes.conf"),
            "--cluster-node-timeout", "2000",
            # (a replica may take over however long ago it last heard its master: a
            # fresh test cluster's replicas have not always synced yet)
            "--cluster-replica-validity-factor", "0",
            # (a replica's first sync starts at once, not 5 s later in case others come)
            "--repl-diskless-sync-delay", "0",
            "--dir", str(d),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(d / "redis.log"),
        ]  # fmt: skip
        self.processes[port] = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _cli(self, cli: str, port: int, *args: str) -> str:
        out = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), *args],
            capture_output=True,
            timeout=10,
        )
        return out.stdout.decode("utf-8", "replace")

    def _wait_ping(self, cli: str, port: int, deadline: float) -> None:
        while "PONG" not in self._cli(cli, port, "ping"):
            if self.processes[port].poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {port} did not answer PING")
            time.sleep(0.05)

    def _wait_ok(self, cli: str, port: int, deadline: float) -> None:
        while "cluster_state:ok" not in self._cli(cli, port, "cluster", "info"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {port} never reported cluster_state:ok")
            time.sleep(0.05)

    def _wait_synced(self, cli: str, port: int, deadline: float) -> None:
        """A replica: wait until its link to its master is up (it has the data)."""
        while True:
            info = self._cli(cli, port, "info", "replication")
            if "role:master" in info or "master_link_status:up" in info:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica {port} never synced with its master")
            time.sleep(0.05)

    def _wait_streaming(self, cli: str, port: int, deadline: float) -> None:
        """A master: wait until its replicas take its writes as they come.

        A replica that has loaded its master's data (``master_link_status:up``) gets
        the writes that follow only once the master has had its first ``REPLCONF
        ACK``; after a diskless sync that may be a second later.  A master killed
        meanwhile loses every write made since the cluster formed (its replica,
        promoted, has none).  So: a write (``FLUSHALL`` of the empty node) and
        ``WAIT`` on the same connection, until every replica has it.
        """
        if "role:master" not in self._cli(cli, port, "info", "replication"):
            return
        while True:
            out = subprocess.run(
                [cli, "-h", "127.0.0.1", "-p", str(port)],
                input=f"FLUSHALL\nWAIT {self.replicas} 200\n".encode(),
                capture_output=True,
                timeout=10,
            )
            if out.stdout.split()[-1:] == [str(self.replicas).encode()]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replicas of node {port} never took its writes")

    def kill(self, port: int) -> None:
        """``kill -9`` one node (to test a failover)."""
        p = self.processes.get(port)
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(10)

    def stop(self) -> None:
        """Stop every node this object started (by pid) and remove the directory."""
        for p in self.processes.values():
            if p.poll() is None:
                p.terminate()
        for p in self.processes.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        self.processes.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=0, help="replicas per master (0 or 1)")
    parser.add_argument("--port-base", type=int, default=0, help="first port (default: free ports)")
    args = parser.parse_args(argv)
    cluster = DevCluster(args.masters, args.replicas, args.port_base).start()
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(cluster.url, flush=True)
    print(f"# twistd -n mbroker --cluster {cluster.url} --node-name n1", flush=True)
    try:
        while not stop and all(p.poll() is None for p in cluster.processes.values()):
            signal.pause() if hasattr(signal, "pause") else time.sleep(1)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
