"""The command table: every command's arguments, options and flags with their parsers
and writers, and its help text; usage lines and the argument parser come from it.

``SPECS`` is the one description of the commands: the decoder
(:mod:`mbroker.wire.commands`), the encoder (:func:`mbroker.wire.encode.encode_command`)
and HELP's replies (:func:`mbroker.wire.encode.help_reply`) all read it, so the list of
commands and their usage cannot drift from what the decoder accepts.

* A ``key=value`` token is an option, a listed bare word a flag; positional arguments come
  first (a bare word after an option is refused).  Keywords, kinds, option and flag
  names are case-insensitive; values are not.  A flag may also be written ``flag=1``
  (set) or ``flag=0`` (the same as leaving it out); any other value, an option without
  one, and a repeated option or flag are ``BAD_ARGS``.
* ``ttl``, ``wait`` and ``delay`` may be 0; ``ack-timeout`` must be at least 1 and needs
  ``ack=manual``.
* AUTH takes exactly two tokens of any bytes but space and tab.
* Each command's ``doc`` lines are sentences whose subject is the command: every HELP data
  line starts with its command's name (as a STAT line starts with STAT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from mbroker.errors import BadArgs
from mbroker.wire import frames
from mbroker.wire.frames import Command
from mbroker.wire.props import Props, is_prop, parse_props
from mbroker.wire.tokens import (
    decode_text,
    parse_heartbeat,
    parse_int,
    parse_key,
    parse_name,
    parse_pattern,
    parse_tags,
    parse_token,
    show,
    write_key,
    write_name,
    write_pattern,
    write_tags,
    write_token,
)


class Field(NamedTuple):
    """One argument: the frame attribute, how to read and write it, usage text, default."""

    attr: str
    parse: Callable[[bytes, str], Any]
    write: Callable[[Any], bytes]
    meta: str
    default: Any = None


def _number(attr: str, least: int = 0, meta: str = "N", default: int | None = None) -> Field:
    return Field(attr, lambda tok, what: parse_int(tok, what, least), b"%d".__mod__, meta, default)


def _choice(attr: str, values: dict[bytes, Any], default: Any, fold: bool = False) -> Field:
    back = {v: k for k, v in values.items()}
    meta = "|".join(k.decode() for k in values)

    def parse(tok: bytes, what: str) -> Any:
        value = values.get(tok.lower() if fold else tok, parse)
        if value is parse:
            raise BadArgs(f"{what} must be {meta}, not {show(tok)}")
        return value

    return Field(attr, parse, back.__getitem__, meta, default)


class Spec(NamedTuple):
    """A command's grammar: positional arguments (``required`` of them first), options,
    flags; and its help: ``doc`` lines, each a sentence whose subject is the command."""

    cls: Callable[..., Command]
    required: int
    positional: tuple[Field, ...] = ()
    options: dict[bytes, Field] = {}
    flags: dict[bytes, str] = {}
    doc: tuple[str, ...] = ()


def _command(tok: bytes, what: str) -> str:
    verb = tok.upper()
    if verb not in SPECS:
        raise BadArgs(f"unknown command {show(tok)}; HELP lists them")
    return verb.decode()


def _w_command(value: str) -> bytes:
    if not value.isascii() or value.upper().encode() not in SPECS:
        raise BadArgs(f"bad command {value!r}")
    return value.encode()


_NAME = Field("name", parse_name, write_name, "name")
_QUEUE = Field("queue", parse_name, write_name, "queue")
_TAGS = Field("tags", parse_tags, write_tags, "tags")
_ACK = {
    b"ack": _choice("manual", {b"auto": False, b"manual": True}, False),
    b"ack-timeout": _number("ack_timeout", 1, "MS"),
}
_KINDS = {b"queue": "queue", b"direct": "direct", b"fanout": "fanout", b"topic": "topic"}
_OVERFLOWS = {b"drop-head": "drop-head", b"reject": "reject"}
PUBLISH_SPEC = Spec(
    frames.Publish,
    1,
    (_NAME, Field("key", parse_key, write_key, "routing-key", "")),
    {b"ttl": _number("ttl", meta="MS")},
    doc=(
        "sends a message to an exchange or a queue and replies +OK <queues it went to>",
        "in the size form the line ends with the payload's size in bytes; that many bytes "
        "and a line end follow",
        "in the inline form the payload is the text after the first token that begins "
        "with ':', as in PUBLISH news sport :Goal!",
        "ttl=MS: the message expires after MS milliseconds",
        "h.NAME=VALUE: a header carried to every copy, VALUE percent-encoded (at most 64 "
        "headers, 8192 bytes of them)",
        "id=ID: a message id; a PUBLISH with an id already published to that name within "
        "its dedup window is not routed again (+OK <n> duplicate)",
        "priority=N: 0-9, higher first; delay=MS: each copy becomes ready MS later",
    ),
)
_BIND = Spec(
    frames.Bind,
    2,
    (
        _QUEUE,
        Field("exchange", parse_name, write_name, "exchange"),
        Field("key", parse_pattern, write_pattern, "key-or-pattern", ""),
    ),
    doc=(
        "binds a queue to an exchange with a routing key or a pattern",
        "in a pattern * stands for one word and # for any number of words; the key "
        "defaults to empty",
        "replies +OK; binding twice changes nothing",
    ),
)
#: Every command, in the contract's order: its grammar and its help.
SPECS: dict[bytes, Spec] = {
    b"CREATE": Spec(
        frames.Create,
        1,
        (_NAME, _choice("kind", _KINDS, "topic", fold=True)),
        {
            b"max-length": _number("max_length"),
            b"max-bytes": _number("max_bytes"),
            b"overflow": _choice("overflow", _OVERFLOWS, "drop-head"),
            b"ttl": _number("ttl", meta="MS"),
            b"dead-letter": Field("dead_letter", parse_name, write_name, "NAME"),
            b"max-deliver": _number("max_deliver", 1),
            b"expires": _number("expires", 1, "MS"),
            b"dedup-window": _number("dedup_window", 0, "MS"),
        },
        {b"durable": "durable", b"exclusive": "exclusive", b"auto-delete": "auto_delete"},
        (
            "makes an exchange (direct, fanout, or topic: the default) or a queue",
            "replies +OK created, or +OK exists when it exists with the same kind and "
            "options, else -ERR EXISTS",
            "durable: it survives a restart; exclusive: the queue goes with this "
            "connection; an exchange takes only durable",
            "max-length and max-bytes limit a queue's ready messages; overflow says what a "
            "full queue does with a new one",
            "ttl=MS: how long a message may wait; dead-letter=NAME: where expired, dropped "
            "and rejected messages go",
            "max-deliver=N: a message delivered N times without an ack is dead-lettered",
            "auto-delete: the queue is deleted when its last SUBSCRIBE consumer goes; "
            "expires=MS: it is deleted once unused for MS milliseconds",
            "dedup-window=MS: how long ids named by PUBLISH are remembered (0: off); "
            "exchanges take it too",
        ),
    ),
    b"DELETE": Spec(
        frames.Delete,
        1,
        (_NAME,),
        {},
        {b"if-empty": "if_empty", b"if-unused": "if_unused"},
        (
            "deletes an exchange or a queue and replies +OK <messages dropped>",
            "if-empty: not a queue that holds messages (-ERR NOT_EMPTY); if-unused: not a "
            "queue with consumers or an exchange with bindings (-ERR IN_USE)",
        ),
    ),
    b"BIND": _BIND,
    b"UNBIND": _BIND._replace(
        cls=frames.Unbind,
        doc=(
            "removes a binding that BIND made",
            "replies +OK, or -ERR NOT_FOUND when the queue was not bound so",
        ),
    ),
    b"PUBLISH": PUBLISH_SPEC,
    b"SUBSCRIBE": Spec(
        frames.Subscribe,
        1,
        (_NAME, Field("pattern", parse_pattern, write_pattern, "pattern")),
        {b"prefetch": _number("prefetch"), **_ACK},
        doc=(
            "makes this connection a consumer of a queue or an exchange",
            "on an exchange the server makes a private queue bound with the pattern (default #)",
            "replies +OK <sid>; then deliveries come as MSG <sid> <tag> <source> <key> "
            "<size> and the payload",
            "ack=manual: a delivery waits for ACK or NACK, and ack-timeout=MS gives it back "
            "unless acked in time",
            "prefetch=N: at most N deliveries unacknowledged at a time (0: no limit)",
        ),
    ),
    b"UNSUBSCRIBE": Spec(
        frames.Unsubscribe,
        1,
        (_number("sid", 1, "sid"),),
        doc=(
            "ends a subscription and replies +OK",
            "its unacknowledged messages go back to their queue",
        ),
    ),
    b"PULL": Spec(
        frames.Pull,
        1,
        (_QUEUE,),
        {b"max": _number("max", 1, default=1), b"wait": _number("wait", meta="MS"), **_ACK},
        doc=(
            "takes up to max=N messages (default 1) from a queue: MSG 0 frames, then +OK <count>",
            "wait=MS: an empty queue holds the reply up to MS milliseconds for a message",
            "ack=manual: each message waits for ACK or NACK, as with SUBSCRIBE",
        ),
    ),
    b"ACK": Spec(
        frames.Ack,
        1,
        (_TAGS,),
        doc=(
            "acknowledges deliveries by tag",
            "tags are a comma-separated list of tags and ranges a-b, as in 1,3,5-9",
            "replies +OK <n handled>, or -ERR NOT_FOUND naming the tags not outstanding",
        ),
    ),
    b"NACK": Spec(
        frames.Nack,
        1,
        (_TAGS,),
        {
            b"requeue": _choice("requeue", {b"1": True, b"0": False}, True),
            b"delay": _number("delay", meta="MS"),
        },
        doc=(
            "gives deliveries back to the head of their queue and replies +OK <n handled>",
            "requeue=0: dead-letters or drops them instead; delay=MS: they come back after "
            "MS milliseconds",
        ),
    ),
    b"TOUCH": Spec(
        frames.Touch,
        1,
        (_TAGS,),
        doc=(
            "restarts the ack-timeout of deliveries still being worked on",
            "replies +OK <n handled>",
        ),
    ),
    b"PURGE": Spec(
        frames.Purge,
        1,
        (_QUEUE,),
        doc=(
            "drops a queue's ready messages (not those delivered and unacknowledged)",
            "replies +OK <n dropped>",
        ),
    ),
    b"PING": Spec(
        frames.Ping,
        0,
        doc=("replies +PONG", "checks that the broker answers; allowed before AUTH"),
    ),
    b"PONG": Spec(
        frames.Pong,
        0,
        doc=("answers a PING that the server pushed", "gets no reply; allowed before AUTH"),
    ),
    b"HEARTBEAT": Spec(
        frames.Heartbeat,
        1,
        (Field("ms", parse_heartbeat, b"%d".__mod__, "MS"),),
        doc=(
            "asks the server to push PING after MS milliseconds of silence, and replies +OK <MS>",
            "takes MS of 0 (off, the default) or 1000 to 3600000; the client answers each "
            "pushed PING with PONG",
            "closes the connection with -ERR LIMIT heartbeat after 3 x MS milliseconds in "
            "which nothing came from the client",
        ),
    ),
    b"QUIT": Spec(
        frames.Quit,
        0,
        doc=("ends the connection", "replies +OK bye, then the server closes the connection"),
    ),
    b"HELP": Spec(
        frames.Help,
        0,
        (Field("command", _command, _w_command, "command"),),
        doc=(
            "lists the commands, or shows how to use one",
            "replies with one line per command, or with the usage of one and what it does, "
            "then +OK; allowed before AUTH",
        ),
    ),
    b"AUTH": Spec(
        frames.Auth,
        2,
        (
            Field("user", parse_token, write_token, "user"),
            Field("password", parse_token, write_token, "password"),
        ),
        doc=(
            "logs in, where the greeting says auth=required",
            "replies +OK, or -ERR AUTH for a wrong user or password",
        ),
    ),
    b"LIST": Spec(
        frames.List,
        0,
        doc=(
            "lists the exchanges and queues: an EXCHANGE or QUEUE line each",
            "replies +OK <count> after them",
        ),
    ),
    b"STATS": Spec(
        frames.Stats,
        0,
        (_NAME,),
        doc=(
            "shows the counters of the server, or of one exchange or queue",
            "replies STAT <key> <value> lines, then +OK",
        ),
    ),
}
VERBS = {spec.cls: verb for verb, spec in SPECS.items()}


def usage_line(verb: bytes, spec: Spec) -> str:
    words = [verb.decode()]
    for i, f in enumerate(spec.positional):
        words.append(f"<{f.meta}>" if i < spec.required else f"[{f.meta}]")
    words += [f"[{flag.decode()}]" for flag in spec.flags]
    words += [f"[{opt.decode()}={f.meta}]" for opt, f in spec.options.items()]
    if spec is PUBLISH_SPEC:
        words.append("<size>|:payload")
    return " ".join(words)


def usage(verb: bytes, spec: Spec) -> str:
    return "usage: " + usage_line(verb, spec)


def help_lines(verb: bytes, spec: Spec) -> list[str]:
    """``HELP <verb>``: the usage line, then what the command does (without the verb
    each line starts with; a bare verb would read as a pushed ``PING``)."""
    usage = usage_line(verb, spec)[len(verb) + 1 :] or "takes no arguments"
    lines = [usage, *spec.doc]
    if spec.flags:
        *most, last = [flag.decode() for flag in spec.flags]
        names = f"{', '.join(most)} and {last}" if most else last
        first = next(iter(spec.flags)).decode()
        lines.append(
            f"takes the flags {names}: {first} or {first}=1 sets one, and {first}=0 is the "
            "same as leaving it out"
        )
    return lines


def parse_args(verb: bytes, spec: Spec, args: list[bytes]) -> dict[str, Any]:
    """Parse ``args`` by ``spec``: the keyword arguments of its frame class."""
    fields, flags, options = spec.positional, spec.flags, spec.options
    kw: dict[str, Any] = {}
    i, n = 0, len(args)
    while i < n and i < len(fields):
        tok = args[i]
        if b"=" in tok or (i >= spec.required and tok.lower() in flags):
            break
        kw[fields[i].attr] = fields[i].parse(tok, fields[i].meta)
        i += 1
    if i < spec.required:
        raise BadArgs(f"missing arguments; {usage(verb, spec)}")
    opts: dict[str, Any] = {}
    off: set[str] = set()  # flags written flag=0: as if left out, but not twice
    for tok in args[i:]:
        key, eq, value = tok.partition(b"=")
        name = key.lower()
        if name in flags:
            attr = flags[name]
            if eq and value != b"1":
                if value != b"0":
                    raise BadArgs(f"flag {show(key)} takes no value but 1 or 0")
                if attr in opts or attr in off:
                    raise BadArgs(f"duplicate option {show(key)}")
                off.add(attr)
                continue
            parsed = True
        elif name in options:
            if not value:
                raise BadArgs(f"option {show(key)} needs a value")
            attr = options[name].attr
            parsed = options[name].parse(value, name.decode())
        elif eq:
            raise BadArgs(f"unknown option {show(key)} for {verb.decode()}")
        else:
            raise BadArgs(f"unexpected argument {show(tok)}; {usage(verb, spec)}")
        if attr in opts or attr in off:
            raise BadArgs(f"duplicate option {show(key)}")
        opts[attr] = parsed
    if opts.get("ack_timeout") is not None and not opts.get("manual"):
        raise BadArgs("ack-timeout needs ack=manual")
    if spec.cls is not frames.Create:
        kw.update(opts)
        return kw
    if kw["name"].startswith("mbroker."):
        raise BadArgs(
            f"reserved name '{kw['name']}': names beginning with 'mbroker.' are the server's"
        )
    kind = kw.get("kind", "topic")
    for attr in opts:
        if kind != "queue" and attr not in ("durable", "dedup_window"):
            option = attr.replace("_", "-")
            raise BadArgs(f"'{option}' is for queues; a {kind} exchange takes only 'durable'")
    kw["options"] = frames.QueueOptions(**opts) if opts else frames.DEFAULT_OPTIONS
    return kw


def publish_args(args: list[bytes]) -> tuple[str, str, int | None, Props | None]:
    """PUBLISH's arguments but the payload, as ``(name, key, ttl, props)``; ``props`` is
    None unless the line has a section 7 option (headers, id, priority, delay)."""
    n = len(args)
    if n == 1:
        return parse_name(args[0]), "", None, None
    if n == 2 and b"=" not in args[1]:
        return parse_name(args[0]), parse_key(args[1]), None, None
    props = None
    picked = [tok for tok in args if b"=" in tok and is_prop(tok)]
    if picked:
        rest = []
        option_seen = False
        for tok in args:
            if b"=" in tok:
                option_seen = True
                if is_prop(tok):
                    continue
            elif option_seen:
                raise BadArgs(f"unexpected argument {show(tok)}; {usage(b'PUBLISH', PUBLISH_SPEC)}")
            rest.append(tok)
        props = parse_props(picked)
        args = rest
    kw = parse_args(b"PUBLISH", PUBLISH_SPEC, args)
    return kw["name"], kw.get("key", ""), kw.get("ttl"), props


def parse_auth(args: list[bytes]) -> frames.Auth:
    if len(args) != 2:
        raise BadArgs(usage(b"AUTH", SPECS[b"AUTH"]))
    return frames.Auth(decode_text(args[0]), decode_text(args[1]))
