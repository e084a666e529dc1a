"""Queue lifetime (``auto-delete``, ``expires=MS``) of shared queues, judged across nodes.

On one broker the core judges a queue's lifetime by its own consumers and uses.  On a
cluster node the core leaves that to :class:`Lifetime` for the shared queues with
either option (:meth:`~mbroker.core.broker.Broker.share_lifetimes`), and the state
lives in Redis, in the queue's hash slot:

- ``mb:life:{NAME}`` (hash): per node that has any, field ``NODE`` = ``C W``, its
  SUBSCRIBE consumers and waiting PULLs of the queue; field ``*had`` once the queue
  has had a SUBSCRIBE consumer;
- ``mb:used:{NAME}`` (string): when the queue was last used (PUBLISH, PULL or CREATE
  naming it, or a consumer or waiting PULL leaving it), epoch ms.

Both keys get a :data:`KEEP_MS` expiry, renewed by every report, so that nothing is
left behind once no node holds the queue.

A node reports a queue (:data:`SCRIPT`, one atomic script that also judges it) when a
SUBSCRIBE consumer comes or goes, and every :data:`TICK` seconds for each such queue
(its figures and the last use the core wrote, so a PUBLISH costs nothing more than on
one broker: the core's ``last_used``).  Before the script the node reads the hash's
fields and asks for the liveness key (``mb:node:{NODE}``,
:mod:`mbroker.cluster.watch`) of each other node named there: the fields of nodes
that are gone are removed by the script and count for nothing.  The script says
"delete" when

- ``auto-delete``: the queue has had a SUBSCRIBE consumer and no live node has one;
- ``expires``: no live node has a SUBSCRIBE consumer or a waiting PULL, and the last
  use is more than ``MS`` + :data:`GRACE_MS` ago (a node reports its uses up to a tick
  late: the grace keeps a use from being missed).

It then removes both keys, and the node deletes the queue through the shared DELETE
path (:meth:`~mbroker.cluster.node.ClusterBroker.delete`), which spreads to every node.

How late a deletion can come: ``auto-delete``, at once when the last consumer leaves
through a live node; when its node dies, once its liveness key has expired
(:data:`~mbroker.cluster.watch.LIVE_MS`) and another node's next round has run: about
:data:`~mbroker.cluster.watch.LIVE_MS` + :data:`TICK` seconds.  ``expires``: between
``MS`` + :data:`GRACE_MS` and ``MS`` + :data:`GRACE_MS` + :data:`TICK` after the last
use.  The Redis work runs in the link's read pool, one batch at a time (so in the
order the node saw things), off the reactor thread and out of the way of the
writes; a batch costs about three round trips per queue reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from mbroker import errors
from mbroker.cluster import keys
from mbroker.cluster.link import RedisLink
from mbroker.cluster.watch import judging
from mbroker.core.model import Queue

_log = Logger()

#: seconds between rounds
TICK = 1.0
#: a use is judged this much later than ``expires`` (ms): a node reports uses a tick late
GRACE_MS = 2000
#: the keys live this long after the last report of any node (ms)
KEEP_MS = 30000
#: the field that says the queue has had a SUBSCRIBE consumer
HAD = "*had"

#: KEYS: life, used.  ARGV: node, consumers, waiters, last use (ms), now (ms),
#: expires (ms, or -1), auto-delete (0/1), keep (ms), then the gone nodes.
#: Returns 1 when the queue is to be deleted (its keys are removed then).
SCRIPT = """
local life, used = KEYS[1], KEYS[2]
local c, w = tonumber(ARGV[2]), tonumber(ARGV[3])
local now, expires = tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 9, #ARGV do redis.call('HDEL', life, ARGV[i]) end
if c + w > 0 then
  redis.call('HSET', life, ARGV[1], c .. ' ' .. w)
else
  redis.call('HDEL', life, ARGV[1])
end
if c > 0 then redis.call('HSET', life, '*had', '1') end
local last = tonumber(redis.call('GET', used) or '0')
if last == 0 then last = now end
if tonumber(ARGV[4]) > last then last = tonumber(ARGV[4]) end
redis.call('SET', used, last, 'PX', ARGV[8])
redis.call('PEXPIRE', life, ARGV[8])
local consumers, waiters, had = 0, 0, false
local fields = redis.call('HGETALL', life)
for i = 1, #fields, 2 do
  if fields[i] == '*had' then
    had = true
  else
    local sc, sw = string.match(fields[i + 1], '(%d+) (%d+)')
    consumers = consumers + tonumber(sc)
    waiters = waiters + tonumber(sw)
  end
end
local gone = false
if ARGV[7] == '1' and had and consumers == 0 then gone = true end
if expires >= 0 and consumers + waiters == 0 and now - last >= expires then gone = true end
if gone then redis.call('DEL', life, used) end
if gone then return 1 end
return 0
"""


def life_key(queue: str) -> str:
    return f"mb:life:{{{queue}}}"


def used_key(queue: str) -> str:
    return f"mb:used:{{{queue}}}"


def judged(q: Queue) -> bool:
    """Whether ``q`` (a shared queue) has a lifetime option."""
    options = q.options
    return options.auto_delete or options.expires is not None


#: what a node reports of a queue: ``(name, consumers, waiters, last use in epoch ms,
#: expires in ms or -1, auto-delete)``
Report = tuple[str, int, int, int, int, bool]


def report(client: Any, node: str, r: Report, alive: dict[str, bool], judge: bool = True) -> bool:
    """On the write thread: report ``r`` and judge the queue; True: delete it.
    ``alive`` caches the liveness of the nodes asked about (one round); ``judge``:
    whether a node without a liveness key is gone (see :class:`Lifetime`)."""
    name, consumers, waiters, last, expires, auto = r
    life = life_key(name)
    gone = []
    for field in client.hkeys(life):
        other = field.decode() if isinstance(field, bytes) else field
        if other == HAD or other == node:
            continue
        if other not in alive:  # (asked even when not judging: see Lifetime)
            alive[other] = bool(client.exists(keys.node_key(other)))
        if not alive[other] and judge:
            gone.append(other)
    now = int(time.time() * 1000)
    grace = expires + GRACE_MS if expires >= 0 else -1
    args = (node, consumers, waiters, last, now, grace, int(auto), KEEP_MS, *gone)
    return bool(client.eval(SCRIPT, 2, life, used_key(name), *args))


class Lifetime:
    """The lifetime of one node's shared queues with ``auto-delete`` or ``expires``
    (see the module's text).  ``queues`` gives the node's shared queues; ``delete``
    deletes one through the shared DELETE path.

    After a batch that failed, no node is judged gone until LIVE_MS after the end of
    the first batch that passes again (:func:`~mbroker.cluster.watch.judging`): a
    failover of the master holding a node's liveness key lets the key expire while
    that node lives, and its consumers would count for nothing (an ``auto-delete``
    queue would go, with its messages).  The liveness keys are asked for meanwhile
    all the same, so that the batches fail for as long as their master is down."""

    def __init__(
        self,
        link: RedisLink,
        clock: Any,
        node: str,
        queues: Callable[[], list[Queue]],
        delete: Callable[[str], object],
    ) -> None:
        self._link = link
        self._clock = clock
        self.node = node
        self._queues = queues
        self._delete = delete
        self._call: LoopingCall | None = None
        #: queues deleted by this node because their lifetime ended
        self.ended = 0
        #: what waits for the next batch (one at a time, in order, in the read pool):
        #: the latest report of each queue, and the names made afresh here
        self._pending: dict[str, Report] = {}
        self._fresh: set[str] = set()
        self._busy = False
        self._stopped = False
        #: when the last batch that failed, or the first that passed after it, ended
        self._trouble_at: float | None = None
        self._recovering = False

    def start(self) -> None:
        call = self._call = LoopingCall(self._round)
        call.clock = self._clock
        call.start(TICK, now=False).addErrback(
            lambda f: _log.failure("the queue lifetime round stopped", failure=f)
        )

    def stop(self) -> None:
        self._stopped = True
        if self._call is not None and self._call.running:
            self._call.stop()

    def _figures(self, q: Queue) -> Report:
        """What this node knows of ``q`` now (on the reactor thread)."""
        age = self._clock.seconds() - q.last_used if q.idle_timer is not None else 0.0
        last = int((time.time() - max(age, 0.0)) * 1000)
        expires = q.options.expires
        return (
            q.name,
            len(q.consumers),
            len(q.waiters),
            last,
            -1 if expires is None else expires,
            q.options.auto_delete,
        )

    def changed(self, q: Queue) -> None:
        """A SUBSCRIBE consumer came to or left ``q``: report it now."""
        if q.deleted or not judged(q):
            return
        self._pending[q.name] = self._figures(q)
        self._next()

    def fresh(self, name: str) -> None:
        """Queue ``name`` was just made through this node: no state of a former queue
        of that name counts."""
        self._pending.pop(name, None)
        self._fresh.add(name)
        self._next()

    def _round(self) -> None:
        for q in self._queues():
            if judged(q):
                self._pending[q.name] = self._figures(q)
        self._next()

    def _next(self) -> None:
        """Send what waits, unless a batch is on its way (then after it)."""
        if self._busy or self._stopped or not (self._pending or self._fresh):
            return
        reports, self._pending = list(self._pending.values()), {}
        fresh, self._fresh = list(self._fresh), set()
        client, node = self._link.client, self.node
        clock = self._clock
        judge = judging(self._trouble_at, clock.seconds())

        def job() -> list[str]:
            for name in fresh:
                client.delete(life_key(name), used_key(name))
            alive: dict[str, bool] = {}
            return [r[0] for r in reports if report(client, node, r, alive, judge)]

        def done(names: list[str]) -> None:
            if self._recovering:  # (it may have waited for the cluster to come back)
                self._recovering = False
                self._trouble_at = clock.seconds()
            for name in names:
                try:
                    self._delete(name)
                except errors.BrokerError:
                    continue  # (deleted meanwhile)
                self.ended += 1
                _log.info("queue {name} deleted: its lifetime ended", name=name)

        def failed(f: Failure) -> None:
            self._trouble_at = clock.seconds()
            self._recovering = True
            _log.warn("the queue lifetime round failed: {reason}", reason=f.getErrorMessage())

        def again(_: object) -> None:
            self._busy = False
            self._next()

        self._busy = True
        self._link.read(job).addCallbacks(done, failed).addBoth(again)
