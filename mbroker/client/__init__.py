"""The Deferred client: ``connect()`` gives a :class:`Client` whose methods are the commands.

The names below are the public client API; they live in the modules of this package.
"""

from mbroker.client.connection import (
    DEFAULT_ENDPOINT,
    Client,
    ClientError,
    ConnectionLost,
    Message,
    NotConnected,
    Subscription,
    Unconfirmed,
    connect,
    tcp_endpoint,
)
from mbroker.client.messages import Published

__all__ = [
    "DEFAULT_ENDPOINT",
    "Client",
    "ClientError",
    "ConnectionLost",
    "Message",
    "NotConnected",
    "Published",
    "Subscription",
    "Unconfirmed",
    "connect",
    "tcp_endpoint",
]
