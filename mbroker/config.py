"""Broker configuration: the named limits and defaults, one frozen value, and the
parsers of the numbers that command lines give them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

KiB = 1024
MiB = 1024 * KiB

#: Default limits, named once here and used by the codec, the broker and the docs.
DEFAULT_MAX_LINE = 16 * KiB
DEFAULT_MAX_PAYLOAD = 1 * MiB
DEFAULT_PRIVATE_MAX_LENGTH = 10_000
DEFAULT_PRIVATE_MAX_BYTES = 64 * MiB
DEFAULT_MANUAL_PREFETCH = 1000
NAME_MAX = 255
KEY_MAX = 255
GiB = 1024 * MiB
DEFAULT_AUTH_TIMEOUT = 10.0
DEFAULT_MEMORY_HIGH_WATER = 1 * GiB
#: how much a connection may send before it has logged in (beyond the chunk that
#: holds its AUTH): enough for a few lines, not for payloads
DEFAULT_PRE_AUTH_MAX_BYTES = 64 * KiB
#: how long a failed AUTH waits before its ``-ERR AUTH``
DEFAULT_AUTH_FAIL_DELAY = 0.5
#: how long an exchange or queue remembers PUBLISH ids (ms) unless CREATE says
DEFAULT_DEDUP_WINDOW = 120_000
#: most ids one exchange or queue remembers; past it the oldest are forgotten early
DEFAULT_DEDUP_MAX_IDS = 100_000


@attrs.frozen
class ClusterConfig:
    """``--cluster``: this broker is a node of a cluster on Redis Cluster."""

    #: ``redis://host:port,host:port,…``: some nodes of the Redis Cluster
    url: str
    #: this node's name, unique in the cluster (its consumer name in Redis)
    node_name: str
    #: confirm a write once this many replicas of its master have it (Redis WAIT)
    replicas_ack: int = 0


@attrs.frozen
class Config:
    """What a broker is told at start-up (``twistd mbroker`` options end up here)."""

    max_line: int = DEFAULT_MAX_LINE
    max_payload: int = DEFAULT_MAX_PAYLOAD
    private_max_length: int = DEFAULT_PRIVATE_MAX_LENGTH
    private_max_bytes: int = DEFAULT_PRIVATE_MAX_BYTES
    #: disconnect a subscriber whose private queue overflows instead of dropping
    slow_consumer_disconnect: bool = False
    max_connections: int = 10_000
    max_subscriptions: int = 1_000
    #: ``auth=required`` in the greeting; implied by ``users_file``
    auth_required: bool = False
    #: the users file (``--users``): passwords and permissions; None: an open broker
    users_file: str | None = None
    #: seconds a connection has to log in when auth is required (``-ERR LIMIT``, closed)
    auth_timeout: float = DEFAULT_AUTH_TIMEOUT
    auth_fail_delay: float = DEFAULT_AUTH_FAIL_DELAY
    pre_auth_max_bytes: int = DEFAULT_PRE_AUTH_MAX_BYTES
    #: seconds without a byte from a connection (that has no subscription) before it is
    #: closed with ``-ERR LIMIT``; 0: never
    idle_timeout: float = 0.0
    #: resident memory (bytes) over which the broker stops reading from connections
    #: that publish, until it falls back under it; 0: no mark
    memory_high_water: int = DEFAULT_MEMORY_HIGH_WATER
    #: seconds between two looks at the broker's memory
    memory_check_interval: float = 0.1
    #: milliseconds an exchange or queue without ``dedup-window`` remembers PUBLISH
    #: ids (section 7); 0: not at all
    dedup_window: int = DEFAULT_DEDUP_WINDOW
    #: most ids one exchange or queue remembers at once
    dedup_max_ids: int = DEFAULT_DEDUP_MAX_IDS


# ------------------------------------------------------------ number parsers
#
# One set for every command line (``mbroker …``'s argparse, ``twistd mbroker``'s usage
# options): each takes the text of an option and returns its value, or raises
# :class:`BadNumber`, whose text says what was expected ("a positive integer"); the
# command line wraps that in its own kind of usage error.


class BadNumber(ValueError):
    """An option's text is not the number it should be; ``str()`` says what it should be."""


def _integer(text: str) -> int | None:
    try:
        return int(text, 10)
    except ValueError:
        return None


def positive_int(text: str) -> int:
    """A decimal integer of at least 1."""
    value = _integer(text)
    if value is None or value <= 0:
        raise BadNumber("a positive integer")
    return value


def natural_int(text: str) -> int:
    """A decimal integer of at least 0."""
    value = _integer(text)
    if value is None or value < 0:
        raise BadNumber("a non-negative integer")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535."""
    value = _integer(text)
    if value is None or not 0 < value < 65536:
        raise BadNumber("a port number (1-65535)")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0 (a timeout that must end)."""
    value = _number(text)
    if not 0 < value < float("inf"):  # also refuses nan
        raise BadNumber("a positive number of seconds")
    return value


def seconds_or_zero(text: str) -> float:
    """A number of seconds of at least 0, where 0 means no limit."""
    value = _number(text)
    if not 0 <= value < 10**9:  # also refuses nan and inf
        raise BadNumber("a number of seconds >= 0")
    return value


_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1024 * GiB}


def byte_size(text: str) -> int:
    """Bytes, or with a suffix K, M, G or T (KiB, MiB, GiB, TiB; ``1G``, ``512MiB``)."""
    lowered = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = lowered[-1:] if lowered[-1:] in _UNITS else ""
    digits = lowered[: len(lowered) - len(unit)]
    if not digits.isdigit() or len(digits) > 18:
        raise BadNumber("a size in bytes (or with K, M, G)")
    return int(digits) * _UNITS[unit]


_T = TypeVar("_T")


class Documented(Generic[_T]):
    """A parse function that says what it takes (``coerceDoc``): a ``twistd mbroker``
    option's coerce function, whose doc ``--help`` shows beside the option."""

    def __init__(self, parse: Callable[[str], _T], doc: str) -> None:
        self._parse = parse
        self.coerceDoc = doc

    def __call__(self, value: str) -> _T:
        return self._parse(value)
