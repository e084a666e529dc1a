"""Broker configuration: the named limits and defaults, one frozen value."""

from __future__ import annotations

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
    auth_required: bool = False
