"""The command handlers of one connection: each command to the broker, its reply
encoded, and the logged-in user's permissions checked on the way.

A handler raises :class:`~mbroker.errors.BrokerError` to refuse; the connection's
dispatch loop (:mod:`mbroker.server.protocol`) turns it into
``-ERR``.  Before a successful AUTH the connection uses :data:`PRE_AUTH_HANDLERS`
(``-ERR NO_AUTH`` for all but AUTH, PING, PONG, HELP and QUIT): a table swapped on
login, not a test per command.  Once logged in, each handler checks the user's
:class:`~mbroker.server.auth.Permissions` (PUBLISH through a per-connection cache).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, Union

from mbroker import errors
from mbroker.core.broker import Broker, Pulled
from mbroker.core.model import Published, Session
from mbroker.server.auth import Permissions, User
from mbroker.server.memwatch import MemoryWatch
from mbroker.server.output import Output, Slot
from mbroker.wire import frames
from mbroker.wire.encode import (
    encode_frame,
    encode_pulled,
    error_line,
    help_reply,
    published_line,
)

_OK = b"+OK\r\n"
_NO_AUTH = error_line(errors.NoAuth("log in first: AUTH <user> <password>"))
#: most names a connection remembers it may (or may not) publish to
_WRITE_CACHE_MAX = 4096
#: a user with every right: no check at all
_ALL = Permissions()

Publishing = Union[frames.Publish, frames.PublishRun]


class Connection(Protocol):
    """What the handlers ask of their connection (a ``BrokerProtocol``)."""

    @property
    def closing(self) -> bool:
        """The connection writes nothing more after its last reply."""

    @property
    def eof(self) -> bool:
        """The peer shut down its sending side."""

    def wait(self, pull: bool = False) -> None:
        """Hold later commands until :meth:`drain_backlog` (a PULL keeps reading)."""

    def drain_backlog(self) -> None:
        """The command that waited is answered: run what queued behind it."""

    def close(self) -> None:
        """Close once the last reply is written."""

    def hold_for_memory(self, f: Publishing) -> None:
        """Keep ``f`` and what follows until the broker's memory is under its mark."""

    def login(self, f: frames.Auth) -> None:
        """Check an AUTH, answering it in its place."""

    def heartbeat(self, ms: int) -> None:
        """Push PING after ``ms`` of silence, close after 3 x ``ms`` unheard (0: off)."""


def command_count(item: object) -> int:
    """How many commands, so replies, a decoded item stands for (a run of PUBLISH is
    many: each gets its own refusal when the run is refused)."""
    return len(item.payloads) if type(item) is frames.PublishRun else 1


class Commands:
    """The handlers of one connection: ``HANDLERS[type(command)](commands, command)``."""

    def __init__(
        self, conn: Connection, broker: Broker, session: Session, output: Output, watch: MemoryWatch
    ) -> None:
        self._conn = conn
        self._broker = broker
        self._session = session
        self._output = output
        self._watch = watch
        self._journal = broker.journal
        self.reply = output.reply
        #: the logged-in user (None: nobody yet, or an open broker)
        self.user: User | None = None
        #: the user's rights; None: everything is allowed (an open broker)
        self.perms: Permissions | None = None
        #: names the user may (True) or may not (False) PUBLISH to, once looked up
        self.may_write: dict[str, bool] = {}

    def logged_in(self, user: User) -> None:
        """From now on, check what ``user`` may do."""
        self.user = user
        self.perms = None if user.permissions == _ALL else user.permissions
        self.may_write.clear()

    # ------------------------------------------------------------ permissions

    def _forbid(self, what: str, name: str) -> errors.Forbidden:
        user = self.user.name if self.user is not None else "?"
        return errors.Forbidden(f"{user} may not {what} {name}")

    def _check(self, may: Callable[[str], bool], what: str, name: str) -> None:
        if not may(name):
            raise self._forbid(what, name)

    def _own_private(self, name: str) -> bool:
        return name.startswith(f"mbroker.sub.{self._session.id}.")

    def _may_publish(self, name: str) -> None:
        assert self.perms is not None
        may = self.may_write.get(name)
        if may is None:
            if len(self.may_write) >= _WRITE_CACHE_MAX:
                self.may_write.clear()
            may = self.may_write[name] = self.perms.may_write(name)
        if not may:
            raise self._forbid("write to", name)

    # --------------------------------------------------------------- handlers

    def create(self, f: frames.Create) -> None:
        perms = self.perms
        if perms is not None:
            self._check(perms.may_configure, "configure", f.name)
            dead_letter = f.options.dead_letter
            if dead_letter is not None:
                self._check(perms.may_write, "write to", dead_letter)
        made = self._broker.create(self._session, f.name, f.kind, f.options)
        self.reply(b"+OK created\r\n" if made else b"+OK exists\r\n")

    def delete(self, f: frames.Delete) -> None:
        if self.perms is not None:
            self._check(self.perms.may_configure, "configure", f.name)
        self.reply(b"+OK %d\r\n" % self._broker.delete(f.name, f.if_empty, f.if_unused))

    def _binding(self, queue: str, exchange: str) -> None:
        perms = self.perms
        if perms is not None:
            self._check(perms.may_configure, "configure", queue)
            self._check(perms.may_read, "read from", exchange)

    def bind(self, f: frames.Bind) -> None:
        self._binding(f.queue, f.exchange)
        self._broker.bind(f.queue, f.exchange, f.key)
        self.reply(_OK)

    def unbind(self, f: frames.Unbind) -> None:
        self._binding(f.queue, f.exchange)
        self._broker.unbind(f.queue, f.exchange, f.key)
        self.reply(_OK)

    def publish(self, f: frames.Publish) -> None:
        if self._watch.alarm:
            self._conn.hold_for_memory(f)
            return
        if self.perms is not None:
            self._may_publish(f.name)
        props = f.props
        if props is None:
            self.reply(b"+OK %d\r\n" % self._broker.publish(f.name, f.key, f.payload, f.ttl))
        else:
            result = self._broker.publish_props(f.name, f.key, f.payload, f.ttl, props)
            if isinstance(result, Published):
                self._output.reply_late(partial(_late_line, result))
            else:
                self.reply(published_line(*result))

    def publish_run(self, f: frames.PublishRun) -> None:
        """Many PUBLISH, one reply each (see :class:`~mbroker.wire.frames.PublishRun`)."""
        # (the checks of publish, written out again: a call more per publish costs)
        if self._watch.alarm:
            self._conn.hold_for_memory(f)
            return
        if self.perms is not None:
            self._may_publish(f.name)
        n = len(f.payloads)
        props = f.props
        if props is not None and (props.id is not None or props.delay or props.priority):
            # each its own: ids, delays, priorities (contract section 7)
            lines: list[bytes | Published] = []
            late = False
            for payload in f.payloads:
                try:
                    result = self._broker.publish_props(f.name, f.key, payload, f.ttl, props)
                except errors.BrokerError as e:
                    lines.append(error_line(e))
                else:
                    late = late or isinstance(result, Published)
                    lines.append(
                        result if isinstance(result, Published) else published_line(*result)
                    )
            if late:
                self._output.reply_late(partial(_late_lines, lines), count=n)
            else:
                self.reply(b"".join(lines), count=n)  # type: ignore[arg-type]
            return
        # (a refusal of the whole run is answered once per publish by the dispatch loop)
        reached, refused = self._broker.publish_many(f.name, f.key, f.payloads, f.ttl, props=props)
        ok = b"+OK %d\r\n" % reached
        if not refused:
            self.reply(ok * n, count=n)
        else:
            self.reply(
                b"".join([error_line(refused[i]) if i in refused else ok for i in range(n)]),
                count=n,
            )

    def subscribe(self, f: frames.Subscribe) -> None:
        if self.perms is not None:
            self._check(self.perms.may_read, "read from", f.name)
        broker = self._broker
        c = broker.subscribe(self._session, f.name, f.pattern, f.prefetch, f.manual, f.ack_timeout)
        self.reply(b"+OK %d\r\n" % c.sid, lambda: broker.activate(c))

    def unsubscribe(self, f: frames.Unsubscribe) -> None:
        self._broker.unsubscribe(self._session, f.sid)
        self.reply(_OK)

    def pull(self, f: frames.Pull) -> None:
        if self.perms is not None:
            self._check(self.perms.may_read, "read from", f.queue)
        slot: list[Slot] = []
        conn, output, journal = self._conn, self._output, self._journal

        def done(pulled: Pulled) -> None:
            # May run inside another connection's publish: write the reply now (or
            # once the removal of auto-acked durable messages is stored), but run
            # the commands that queued behind it on a later reactor turn.
            data = encode_pulled(pulled)
            if journal is not None and not f.manual and any(m.msg_id for _, m in pulled):
                journal.on_commit(partial(output.committed, slot[0], data))
            else:
                output.fill(slot[0], data)
            if not conn.closing:
                self._broker.clock.callLater(0, conn.drain_backlog)

        # (a client that has shut down its sending side waits for nothing more)
        wait = None if conn.eof else f.wait
        out = self._broker.pull(
            self._session, f.queue, f.max, wait, f.manual, f.ack_timeout, on_done=done
        )
        if out is not None:
            self.reply(encode_pulled(out))
            return
        slot.append(output.later())
        conn.wait(pull=True)

    def ack(self, f: frames.Ack) -> None:
        self.reply(b"+OK %d\r\n" % self._broker.ack(self._session, f.tags))

    def nack(self, f: frames.Nack) -> None:
        self.reply(b"+OK %d\r\n" % self._broker.nack(self._session, f.tags, f.requeue, f.delay))

    def touch(self, f: frames.Touch) -> None:
        self.reply(b"+OK %d\r\n" % self._broker.touch(self._session, f.tags))

    def purge(self, f: frames.Purge) -> None:
        if self.perms is not None:
            self._check(self.perms.may_read, "read from", f.queue)
        self.reply(b"+OK %d\r\n" % self._broker.purge(f.queue))

    def ping(self, f: frames.Ping) -> None:
        self.reply(b"+PONG\r\n")

    def pong(self, f: frames.Pong) -> None:
        pass  # the answer to a pushed PING gets no reply

    def heartbeat(self, f: frames.Heartbeat) -> None:
        self._conn.heartbeat(f.ms)
        self.reply(b"+OK %d\r\n" % f.ms)

    def help(self, f: frames.Help) -> None:
        self.reply(help_reply(f.command))

    def quit(self, f: frames.Quit) -> None:
        self.reply(b"+OK bye\r\n")
        self._conn.close()

    def auth(self, f: frames.Auth) -> None:
        if self.user is not None:
            raise errors.Forbidden(f"already logged in as {self.user.name}")
        self._conn.login(f)

    def no_auth(self, f: Any) -> None:
        self.reply(_NO_AUTH * command_count(f))

    def list(self, f: frames.List) -> None:
        rows = self._broker.list_objects()
        perms = self.perms
        if perms is not None:
            rows = [r for r in rows if perms.may_see(r.name) or self._own_private(r.name)]
        self.reply(b"".join([encode_frame(r) for r in rows]) + b"+OK %d\r\n" % len(rows))

    def stats(self, f: frames.Stats) -> None:
        perms = self.perms
        if perms is not None:
            if f.name is None:
                if not perms.may_see_broker():
                    raise self._forbid("see", "the broker's figures (no right on any name)")
            elif not (perms.may_see(f.name) or self._own_private(f.name)):
                raise self._forbid("see", f.name)
        pairs = self._broker.stats(f.name)
        if f.name is None:
            watch = self._watch
            pairs += [
                ("memory_high_water", str(watch.high_water)),
                ("memory_alarm", str(int(watch.alarm))),
                ("connections_blocked", str(len(watch.blocked))),
            ]
        self.reply(b"".join([encode_frame(frames.Stat(k, v)) for k, v in pairs]) + _OK)


Handler = Callable[[Commands, Any], None]

HANDLERS: dict[type, Handler] = {
    frames.Create: Commands.create,
    frames.Delete: Commands.delete,
    frames.Bind: Commands.bind,
    frames.Unbind: Commands.unbind,
    frames.Publish: Commands.publish,
    frames.PublishRun: Commands.publish_run,
    frames.Subscribe: Commands.subscribe,
    frames.Unsubscribe: Commands.unsubscribe,
    frames.Pull: Commands.pull,
    frames.Ack: Commands.ack,
    frames.Nack: Commands.nack,
    frames.Touch: Commands.touch,
    frames.Purge: Commands.purge,
    frames.Ping: Commands.ping,
    frames.Pong: Commands.pong,
    frames.Heartbeat: Commands.heartbeat,
    frames.Quit: Commands.quit,
    frames.Help: Commands.help,
    frames.Auth: Commands.auth,
    frames.List: Commands.list,
    frames.Stats: Commands.stats,
}
#: before a successful AUTH: AUTH, PING, PONG, HELP and QUIT, and ``-ERR NO_AUTH`` for the rest
PRE_AUTH_HANDLERS: dict[type, Handler] = {cls: Commands.no_auth for cls in HANDLERS}
PRE_AUTH_HANDLERS.update(
    {
        cls: HANDLERS[cls]
        for cls in (frames.Auth, frames.Ping, frames.Pong, frames.Help, frames.Quit)
    }
)


def _late_line(result: Published) -> bytes:
    return published_line(result.reached, result.duplicate)


def _late_lines(lines: list[bytes | Published]) -> bytes:
    return b"".join([_late_line(x) if isinstance(x, Published) else x for x in lines])
