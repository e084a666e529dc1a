"""``twistd mbroker``: the command-line options and the service they make.

This is the only module that reads command-line options, and the entry point that
touches the global reactor (by a function-local import in :func:`makeService`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.application import service
from twisted.python import usage

from mbroker import config
from mbroker.server.auth import Users, UsersFileError
from mbroker.server.service import DEFAULT_BACKLOG, BrokerService, IServiceReactor

#: Where the broker listens when no ``--listen`` is given: loopback only, on purpose.
DEFAULT_LISTEN = "tcp:5555:interface=127.0.0.1"
#: Where durable state goes when no ``--data-dir`` is given.
DEFAULT_DATA_DIR = "mbroker-data"


def _positive_int(option: str) -> Callable[[str], int]:
    """A coerce function for ``--option``: a positive decimal integer, or a UsageError."""

    def coerce(value: str) -> int:
        try:
            number = int(value, 10)
        except ValueError:
            number = 0
        if number <= 0:
            raise usage.UsageError(f"--{option} must be a positive integer, not {value!r}")
        return number

    coerce.coerceDoc = "A positive integer."  # type: ignore[attr-defined]
    return coerce


def _seconds(option: str) -> Callable[[str], float]:
    """A coerce function for a time in seconds: a number >= 0 (0: no limit)."""

    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0 <= number < 10**9:  # also refuses nan and inf
            raise usage.UsageError(f"--{option} must be a number of seconds >= 0, not {value!r}")
        return number

    coerce.coerceDoc = "Seconds, 0 for no limit."  # type: ignore[attr-defined]
    return coerce


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _byte_size(option: str) -> Callable[[str], int]:
    """A coerce function for a size: bytes, or with a suffix K, M, G (KiB, MiB, GiB)."""

    def coerce(value: str) -> int:
        text = value.strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:] in _UNITS else ""
        digits = text[: len(text) - len(unit)]
        if not digits.isdigit() or len(digits) > 18:
            raise usage.UsageError(
                f"--{option} must be a size in bytes (or with K, M, G), not {value!r}"
            )
        return int(digits) * _UNITS[unit]

    coerce.coerceDoc = "Bytes, or with a suffix K, M or G; 0 for no mark."  # type: ignore[attr-defined]
    return coerce


def _users_file(value: str) -> str:
    try:
        Users.load(value)
    except UsersFileError as e:
        raise usage.UsageError(str(e)) from None
    return value


_users_file.coerceDoc = "A users file (see mbroker user --help)."  # type: ignore[attr-defined]


def _fsync_policy(value: str) -> str:
    if value not in ("always", "interval", "never"):
        raise usage.UsageError(f"--fsync must be always, interval or never, not {value!r}")
    return value


_fsync_policy.coerceDoc = "One of always, interval, never."  # type: ignore[attr-defined]


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
            "backlog",
            None,
            DEFAULT_BACKLOG,
            "Listen backlog: connections the kernel queues before the broker accepts "
            "them, for each --listen endpoint that does not give its own backlog= "
            "(capped by the kernel's net.core.somaxconn).",
            _positive_int("backlog"),
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Endpoint to listen on; repeatable [default: tcp:5555:interface=127.0.0.1]"""
        self["listen"].append(description)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]


def makeService(options: Options) -> service.IService:
    """Build the broker service that ``twistd mbroker`` runs."""
    from twisted.internet import reactor

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
    )
    data_dir = None if options["memory"] else options["data-dir"]
    return BrokerService(
        cast(IServiceReactor, reactor),
        broker_config,
        list(options["listen"]),
        data_dir,
        fsync=options["fsync"],
        backlog=options["backlog"],
    )
