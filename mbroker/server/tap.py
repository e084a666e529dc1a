"""``twistd mbroker``: the command-line options and the service they make.

This is the only module that reads command-line options, and the entry point that
touches the global reactor (by a function-local import in :func:`makeService`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from twisted.application import service
from twisted.python import usage

from mbroker import config
from mbroker.server import configfile, logformat
from mbroker.server.auth import Users, UsersFileError
from mbroker.server.service import DEFAULT_BACKLOG, BrokerService

#: Where the broker listens when no ``--listen`` is given: loopback only, on purpose.
DEFAULT_LISTEN = "tcp:5555:interface=127.0.0.1"
#: Where durable state goes when no ``--data-dir`` is given.
DEFAULT_DATA_DIR = "mbroker-data"

T = TypeVar("T")


def _coerce(parse: Callable[[str], T], doc: str) -> Callable[[str], Callable[[str], T]]:
    """Coerce functions for options: ``parse`` (one of :mod:`mbroker.config`'s number
    parsers) with its error as a UsageError that names the option."""

    def for_option(option: str) -> Callable[[str], T]:
        def coerce(value: str) -> T:
            try:
                return parse(value)
            except config.BadNumber as e:
                raise usage.UsageError(f"--{option} must be {e}, not {value!r}") from None

        return config.Documented(coerce, doc)

    return for_option


_positive_int = _coerce(config.positive_int, "A positive integer.")
_non_negative_int = _coerce(config.natural_int, "An integer, 0 or more.")
_seconds = _coerce(config.seconds_or_zero, "Seconds, 0 for no limit.")
_natural_int = _coerce(config.natural_int, "A non-negative integer.")
_byte_size = _coerce(config.byte_size, "Bytes, or with a suffix K, M or G; 0 for no mark.")


def _check_users_file(value: str) -> str:
    try:
        Users.load(value)
    except UsersFileError as e:
        raise usage.UsageError(str(e)) from None
    return value


_users_file = config.Documented(_check_users_file, "A users file (see mbroker user --help).")


def _check_fsync_policy(value: str) -> str:
    if value not in ("always", "interval", "never"):
        raise usage.UsageError(f"--fsync must be always, interval or never, not {value!r}")
    return value


_fsync_policy = config.Documented(_check_fsync_policy, "One of always, interval, never.")


class Options(usage.Options):
    """The options of ``twistd mbroker``."""

    synopsis = "[--listen ENDPOINT ...] [--data-dir DIR] [options]"
    longdesc = (
        "Run the mbroker message broker. It speaks the mbroker line protocol on every "
        "--listen endpoint, a Twisted endpoint description such as "
        "tcp:5555:interface=0.0.0.0 or unix:/run/mbroker.sock (default: "
        + DEFAULT_LISTEN
        + "). Durable exchanges, queues and messages are kept in --data-dir (default "
        + DEFAULT_DATA_DIR
        + " in the working directory); --memory keeps everything in memory only."
    )

    optFlags = [
        [
            "disconnect-slow",
            None,
            "Disconnect a subscriber whose private queue overflows (-ERR LIMIT slow "
            "consumer) instead of dropping its oldest messages.",
        ],
        [
            "memory",
            None,
            "Keep everything in memory only, durable queues included: no data "
            "directory is used and nothing survives a restart.",
        ],
    ]

    optParameters = [
        [
            "data-dir",
            None,
            DEFAULT_DATA_DIR,
            "Directory of the embedded store: durable exchanges, queues, bindings and "
            "messages, in an append-only log of segment files. Created if missing.",
        ],
        [
            "fsync",
            None,
            "always",
            "When a durable change is confirmed: 'always' (after fsync: survives a power "
            "cut; many clients share one fsync), 'interval' (after the OS write; fsync "
            "every 200 ms: survives a crash of the broker, may lose the last 200 ms on "
            "power loss), 'never' (after the OS write; the OS flushes when it likes).",
            _fsync_policy,
        ],
        [
            "max-payload",
            None,
            config.DEFAULT_MAX_PAYLOAD,
            "Largest message payload accepted, in BYTES; a larger one gets "
            "-ERR TOO_BIG and the connection is closed.",
            _positive_int("max-payload"),
        ],
        [
            "max-line",
            None,
            config.DEFAULT_MAX_LINE,
            "Longest control line accepted, in BYTES; a longer one gets "
            "-ERR LINE_TOO_LONG and the connection is closed.",
            _positive_int("max-line"),
        ],
        [
            "max-connections",
            None,
            config.Config().max_connections,
            "Most client connections at once; one more gets -ERR LIMIT and is closed.",
            _positive_int("max-connections"),
        ],
        [
            "max-subscriptions",
            None,
            config.Config().max_subscriptions,
            "Most subscriptions one connection may hold; one more gets -ERR LIMIT.",
            _positive_int("max-subscriptions"),
        ],
        [
            "private-max-length",
            None,
            config.DEFAULT_PRIVATE_MAX_LENGTH,
            "Most messages the private queue of an exchange subscription holds before "
            "it drops its oldest ones.",
            _positive_int("private-max-length"),
        ],
        [
            "private-max-bytes",
            None,
            config.DEFAULT_PRIVATE_MAX_BYTES,
            "Most payload BYTES the private queue of an exchange subscription holds "
            "before it drops its oldest messages.",
            _positive_int("private-max-bytes"),
        ],
        [
            "users",
            None,
            None,
            "Users FILE: user names, argon2id password hashes and permissions, managed "
            "with 'mbroker user add|remove|list'. With it every connection must AUTH; "
            "without it the broker is open to anyone who can connect (keep it on "
            "loopback then). The file is re-read when it changes.",
            _users_file,
        ],
        [
            "auth-timeout",
            None,
            config.DEFAULT_AUTH_TIMEOUT,
            "Seconds a connection has to log in when --users is given; then -ERR LIMIT "
            "and it is closed (0: no limit).",
            _seconds("auth-timeout"),
        ],
        [
            "idle-timeout",
            None,
            0.0,
            "Seconds a connection without subscriptions may send nothing; then -ERR "
            "LIMIT and it is closed (default 0: no limit).",
            _seconds("idle-timeout"),
        ],
        [
            "memory-high-water",
            None,
            config.DEFAULT_MEMORY_HIGH_WATER,
            "Resident memory (BYTES, or with K, M, G) over which the broker stops reading "
            "from connections that publish until it is back under it (default 1G; 0: "
            "no mark).",
            _byte_size("memory-high-water"),
        ],
        [
            "dedup-window",
            None,
            config.DEFAULT_DEDUP_WINDOW,
            "Milliseconds an exchange or queue created without dedup-window= remembers "
            "the id= of each PUBLISH naming it, so that a retried PUBLISH is not routed "
            "again (default 120000: 2 minutes; 0: off).",
            _natural_int("dedup-window"),
        ],
        [
            "dedup-max-ids",
            None,
            config.DEFAULT_DEDUP_MAX_IDS,
            "Most PUBLISH ids one exchange or queue remembers; past it the oldest are "
            "forgotten before their window ends (counted in STATS: dedup_forgotten).",
            _positive_int("dedup-max-ids"),
        ],
        [
            "backlog",
            None,
            DEFAULT_BACKLOG,
            "Listen backlog: connections the kernel queues before the broker accepts "
            "them, for each --listen endpoint that does not give its own backlog= "
            "(capped by the kernel's net.core.somaxconn).",
            _positive_int("backlog"),
        ],
        [
            "config",
            None,
            None,
            "TOML FILE of options: the long names above as keys (max-payload = 65536, "
            'listen = ["tcp:5555"], memory = true); the command line wins.',
        ],
        [
            "cluster",
            None,
            None,
            "Run as a node of a cluster on Redis Cluster: redis://HOST:PORT[,HOST:PORT...] "
            "(some of its nodes). Exchanges, queues and messages live in Redis, not in "
            "--data-dir; needs mbroker[cluster] (see docs/cluster.rst).",
        ],
        [
            "node-name",
            None,
            None,
            "This node's name in the cluster (unique; default: HOSTNAME-PID). A node "
            "restarted under the same name gives back what it held unacknowledged at once.",
        ],
        [
            "cluster-replicas-ack",
            None,
            0,
            "With --cluster: confirm a write only once this many replicas of its Redis "
            "master have it (Redis WAIT).",
            _non_negative_int("cluster-replicas-ack"),
        ],
        [
            "log-format",
            None,
            "text",
            "text, or json: one JSON object per line (time, level, namespace, message "
            "and the event's own fields), for log shippers.",
            logformat.log_format,
        ],
    ]

    #: Why the ``--config`` file cannot be used (one line), or None.
    config_problem: str | None = None
    _command_line: Sequence[str] = ()

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["http"] = []
        self["stomp"] = []
        self["stomp-ws"] = []

    def opt_listen(self, description: str) -> None:
        """Endpoint to listen on; repeatable [default: tcp:5555:interface=127.0.0.1]"""
        self["listen"].append(description)

    def opt_http(self, description: str) -> None:
        """Endpoint for the HTTP API, /metrics and /healthz; repeatable [default: none]"""
        self["http"].append(description)

    def opt_stomp(self, description: str) -> None:
        """Endpoint for STOMP 1.0-1.2 clients (see docs/stomp.rst); repeatable"""
        self["stomp"].append(description)

    def opt_stomp_ws(self, description: str) -> None:
        """Endpoint for STOMP over WebSocket (stomp.js; needs mbroker[ws]); repeatable"""
        self["stomp-ws"].append(description)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        self._command_line = sys.argv[1:] if options is None else list(options)
        super().parseOptions(options)

    def postOptions(self) -> None:
        if self["config"]:
            self.config_problem = configfile.apply_file(self, self["config"], self._command_line)
        if self["log-format"] == "json":
            logformat.use_json(self.parent)
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if self["cluster"] and importlib.util.find_spec("redis") is None:
            raise usage.UsageError("--cluster needs redis-py: pip install 'mbroker[cluster]'")
        if self["cluster"]:
            try:
                parse_nodes(self["cluster"])
            except ValueError as e:
                raise usage.UsageError(f"--cluster: {e}") from None
        name = self["node-name"]
        if name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise usage.UsageError(f"--node-name must be 1-64 of A-Z a-z 0-9 _ - . (not {name!r})")
        if self["stomp-ws"] and importlib.util.find_spec("autobahn") is None:
            raise usage.UsageError(
                "--stomp-ws needs Autobahn: pip install 'mbroker[ws]' (or autobahn[twisted])"
            )


def parse_nodes(url: str) -> list[str]:
    """The ``host:port`` parts of ``--cluster`` (ValueError when there are none, or
    one is not ``host:port``); the cluster package checks them again when it starts."""
    text = url.split("://", 1)[1] if "://" in url else url
    if "://" in url and not url.startswith("redis://"):
        raise ValueError(f"{url!r}: only redis:// is supported")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError(f"{url!r} names no Redis node")
    for part in parts:
        host, _, port = part.rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{part!r} is not HOST:PORT")
    return parts


def _cluster(options: Options) -> config.ClusterConfig | None:
    if not options["cluster"]:
        return None
    name = options["node-name"] or f"{socket.gethostname()}-{os.getpid()}"
    return config.ClusterConfig(options["cluster"], name, options["cluster-replicas-ack"])


def makeService(options: Options) -> service.IService:
    """Build the broker service that ``twistd mbroker`` runs."""
    from twisted.internet import reactor

    if options.config_problem is not None:
        return configfile.FailedStart(reactor, options.config_problem)
    broker_config = config.Config(
        max_line=options["max-line"],
        max_payload=options["max-payload"],
        private_max_length=options["private-max-length"],
        private_max_bytes=options["private-max-bytes"],
        max_connections=options["max-connections"],
        max_subscriptions=options["max-subscriptions"],
        slow_consumer_disconnect=bool(options["disconnect-slow"]),
        users_file=options["users"],
        auth_timeout=options["auth-timeout"],
        idle_timeout=options["idle-timeout"],
        memory_high_water=options["memory-high-water"],
        dedup_window=options["dedup-window"],
        dedup_max_ids=options["dedup-max-ids"],
    )
    data_dir = None if options["memory"] else options["data-dir"]
    broker_service = BrokerService(
        reactor,
        broker_config,
        list(options["listen"]),
        data_dir,
        fsync=options["fsync"],
        backlog=options["backlog"],
        stomp_endpoints=list(options["stomp"]),
        stomp_ws_endpoints=list(options["stomp-ws"]),
        cluster=_cluster(options),
    )
    if options["http"]:
        from mbroker.server.http.service import HttpService

        HttpService(reactor, broker_service, options["http"]).setServiceParent(broker_service)
    return broker_service
