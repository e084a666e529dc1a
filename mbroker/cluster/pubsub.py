"""Transient messages across nodes, through Redis sharded pub/sub.

A message published to an exchange reaches the shared queues bound to it through
their streams; the subscriptions to the exchange (SUBSCRIBE on an exchange: a
private queue on the subscriber's node) get it through Redis pub/sub instead, so that
a fanout writes no stream it does not need: the publishing node sends one
``SPUBLISH mb:x:{EXCHANGE} "key LF payload"`` (batched with its other writes), and
every node with a subscription to that exchange listens on that channel
(``SSUBSCRIBE``) and puts the message in its matching private queues (the publishing
node puts it in its own at once, and skips its echo).  The reply to a SUBSCRIBE on an
exchange comes once Redis has the node's subscription, so a message published
anywhere after that reply reaches it.  As with Redis pub/sub, this is at most once: a
node that is not connected when it is sent (a failover of the master that owns the
channel) misses it.

:class:`PubSubThread` owns one redis-py ``ClusterPubSub`` (which keeps a connection
to each master that owns a channel it listens to) in a thread of its own: it
subscribes to the channels asked for, waits for messages and hands each to the
reactor thread.  The namespace notifications (``{mb}:ns``) come the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from queue import Empty, SimpleQueue
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from mbroker.cluster.link import RedisLink

_log = Logger()

#: how long one poll of a master's connection waits (s)
POLL = 0.02
#: after a lost connection: build the subscriptions again after (s)
RETRY = 0.5


class PubSubThread:
    """Listen on sharded channels; ``on_message(channel, data)`` on the reactor."""

    def __init__(self, link: RedisLink, on_message: Callable[[bytes, bytes], None]) -> None:
        self._link = link
        self._on_message = on_message
        self._requests: SimpleQueue[str] = SimpleQueue()
        self._channels: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mbroker-pubsub", daemon=True)
        #: the channels asked for (read on the reactor thread)
        self.listening: set[str] = set()
        #: the channels the thread has subscribed to (written through the reactor)
        self.subscribed: set[str] = set()
        self._waiting: dict[str, list[Deferred[None]]] = {}

    def start(self) -> None:
        self._thread.start()

    def listen(self, channel: str) -> Deferred[None]:
        """Listen on ``channel``; fires once Redis has the subscription (a few ms)."""
        if channel in self.subscribed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.setdefault(channel, []).append(d)
        if channel not in self.listening:
            self.listening.add(channel)
            self._requests.put(channel)
        return d

    def _subscribed(self, channel: str) -> None:
        self.subscribed.add(channel)
        for d in self._waiting.pop(channel, []):
            d.callback(None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        pubsub: Any = None
        call = self._link.reactor.callFromThread  # type: ignore[attr-defined]
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._link.client.pubsub()
                    if self._channels:
                        pubsub.ssubscribe(*self._channels)
                while True:
                    try:
                        chan = self._requests.get_nowait()
                    except Empty:
                        break
                    self._channels.add(chan)
                    pubsub.ssubscribe(chan)
                    call(self._subscribed, chan)
                if not self._channels:
                    time.sleep(POLL)  # (nothing to listen to yet)
                    continue
                message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=POLL)
                while message is not None:
                    if message.get("type") in ("smessage", b"smessage"):
                        call(self._on_message, message["channel"], message["data"])
                    message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0)
            except Exception as e:  # noqa: BLE001 (a master failed over: subscribe again)
                if self._stop.is_set():
                    break
                call(_log.warn, "Redis pub/sub failed ({reason}); subscribing again", reason=str(e))
                try:
                    if pubsub is not None:
                        pubsub.close()
                except Exception:  # noqa: BLE001
                    pass
                pubsub = None
                self._stop.wait(RETRY)
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001
                pass
