"""The blocking facade's first documented home; it lives in :mod:`mbroker.client.blocking`."""

from mbroker.client.blocking import BlockingMessage, BlockingSubscription, Connection

__all__ = ["BlockingMessage", "BlockingSubscription", "Connection"]
