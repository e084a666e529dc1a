"""``twistd mbroker``: the command-line options and the service they make.

This is the only module that reads command-line options, and the entry point that
touches the global reactor (by a function-local import in :func:`makeService`).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application import service
from twisted.python import usage

from mbroker import config
from mbroker.service import BrokerService

#: Where the broker listens when no ``--listen`` is given: loopback only, on purpose.
DEFAULT_LISTEN = "tcp:5555:interface=127.0.0.1"


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


class Options(usage.Options):
    """The options of ``twistd mbroker``."""

    synopsis = "[--listen ENDPOINT ...] [--data-dir DIR] [options]"
    longdesc = (
        "Run the mbroker message broker. It speaks the mbroker line protocol on every "
        "--listen endpoint, a Twisted endpoint description such as "
        "tcp:5555:interface=0.0.0.0 or unix:/run/mbroker.sock (default: "
        + DEFAULT_LISTEN
        + "). Without --data-dir, everything, durable queues included, lives in memory only."
    )

    optParameters = [
        [
            "data-dir",
            None,
            None,
            "Directory for durable exchanges, queues and messages. "
            "Default: none, keep everything in memory only.",
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
    )
    return BrokerService(reactor, broker_config, list(options["listen"]), options["data-dir"])
