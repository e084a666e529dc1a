"""The broker's decoder: bytes in, one command or refusal per command line out.

* Only PUBLISH carries a payload.  Its size is its last token when that is all ASCII
  digits (``bytes.isdigit``: no sign, no other digits, nothing else inside), so
  ``PUBLISH q 123`` is a 123-byte payload with the empty key.  A size over
  ``max_payload`` (or of more than 18 digits) is ``TOO_BIG``, fatal; so is an inline
  payload over ``max_payload``.  A PUBLISH with a size always consumes its payload and
  line end before its refusal (``BAD_ARGS``) is emitted - or ``BAD_FRAME`` instead of it
  when the line end is missing.  The inline ``:`` is special for PUBLISH only.
* PUBLISH, the hot path, is parsed by hand in the common cases; every other command by
  the table of :mod:`mbroker.wire.grammar`.
* PONG (the answer to a pushed PING) is a command that gets no reply.
"""

from __future__ import annotations

from typing import Optional, Union

from mbroker.config import DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD
from mbroker.errors import BadArgs, BadCommand, BrokerError, Limit, TooBig
from mbroker.wire import frames
from mbroker.wire.framer import Framer, PublishHead
from mbroker.wire.frames import Command, Props
from mbroker.wire.grammar import PUBLISH_SPEC, SPECS, parse_args, parse_auth, publish_args, usage
from mbroker.wire.tokens import MAX_DIGITS, WS, show, split_tokens

#: what the decoder gives for a line: a command, or a refusal in its place
Item = Union[Command, BrokerError]
#: PUBLISH's arguments but the payload: (name, key, ttl, props)
_Args = tuple[str, str, Optional[int], Optional[Props]]

#: how many distinct PUBLISH heads a connection remembers as already validated
_HEAD_CACHE = 1024
#: the longest PUBLISH line remembered in those caches
_HEAD_MAX = 640


class CommandDecoder(Framer[Item]):
    """The broker's side: ``feed(bytes)`` gives one command or refusal per command line.

    A refusal is a :class:`~mbroker.errors.BrokerError` instance in its place in the list.
    A fatal one (``LINE_TOO_LONG``, ``TOO_BIG``, ``BAD_FRAME``) is the last item the
    decoder ever returns: it is ``closed`` from then on and ignores its input.
    """

    def __init__(
        self, max_line: int = DEFAULT_MAX_LINE, max_payload: int = DEFAULT_MAX_PAYLOAD
    ) -> None:
        super().__init__(max_line, max_payload)
        self._pending: _Args | BrokerError = BadArgs()
        #: PUBLISH heads already validated: the line up to its size -> their arguments
        self._prefixes: dict[bytes, _Args] = {}

    def _single(self, head: PublishHead, payload: bytes) -> Item:
        return frames.Publish(head[0], head[1], payload, head[2], head[4])

    def _run_start(self, out: list[Item], payload: bytes) -> list[bytes]:
        first = out[-1]
        assert isinstance(first, frames.Publish)
        run = [first.payload, payload]
        out[-1] = frames.PublishRun(first.name, first.key, run, first.ttl, first.props)
        return run

    def _fail(self, err: BrokerError, out: list[Item]) -> None:
        out.append(err)
        self._close()

    def _line(self, line: bytes, out: list[Item]) -> None:
        tokens = split_tokens(line)
        if not tokens:
            return
        verb = tokens[0].upper()
        if verb == b"PUBLISH":
            self._publish(line, tokens, out)
            return
        try:
            if verb == b"AUTH":
                out.append(parse_auth(tokens[1:]))
            elif verb in SPECS:
                spec = SPECS[verb]
                out.append(spec.cls(**parse_args(verb, spec, tokens[1:])))
            else:
                out.append(BadCommand(f"unknown command {show(tokens[0])}"))
        except BadArgs as err:
            out.append(err)

    def _publish(self, line: bytes, tokens: list[bytes], out: list[Item]) -> None:
        if b":" in line:
            colon = line.find(b":")
            while colon > 0 and line[colon - 1] not in WS:
                colon = line.find(b":", colon + 1)
            if colon > 0:  # the inline form
                payload = line[colon + 1 :]
                if len(payload) > self.max_payload:
                    self._fail(TooBig(f"payload over {self.max_payload} bytes"), out)
                    return
                try:
                    name, key, ttl, props = publish_args(split_tokens(line[:colon])[1:])
                except (BadArgs, Limit) as err:
                    out.append(err)
                    return
                out.append(frames.Publish(name, key, payload, ttl, props))
                return
        size = tokens[-1]
        if len(tokens) < 2 or not size.isdigit():
            out.append(
                BadArgs(f"PUBLISH needs a size or :payload; {usage(b'PUBLISH', PUBLISH_SPEC)}")
            )
        elif len(size) > MAX_DIGITS or int(size) > self.max_payload:
            self._fail(TooBig(f"payload over {self.max_payload} bytes"), out)
        else:
            head = line[: line.rfind(size)]
            # (a valid head is at most ~560 bytes unless padded with white space;
            # only short ones are remembered, so the caches stay small)
            cache = len(line) <= _HEAD_MAX
            args = self._prefixes.get(head)
            if args is None:
                try:
                    args = publish_args(tokens[1:-1])
                except (BadArgs, Limit) as err:
                    self._pending = err
                    self._payload(int(size))
                    return
                if cache:
                    if len(self._prefixes) >= _HEAD_CACHE:
                        self._prefixes.clear()
                    self._prefixes[head] = args
            nbytes = int(size)
            if cache:
                if len(self._heads) >= _HEAD_CACHE:
                    self._heads.clear()
                self._heads[line] = (args[0], args[1], args[2], nbytes, args[3])
            self._pending = args
            self._payload(nbytes)

    def _done(self, payload: bytes, out: list[Item]) -> None:
        pending = self._pending
        if isinstance(pending, BrokerError):
            out.append(pending)
        else:
            out.append(frames.Publish(pending[0], pending[1], payload, pending[2], pending[3]))
