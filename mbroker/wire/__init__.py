"""The sans-IO codec: bytes to frames and frames to bytes, with no sockets and no Twisted.

Every byte the broker writes on the wire is built here; every byte it reads is decoded
here.  The modules, each with one job:

* :mod:`~mbroker.wire.frames` - the protocol's vocabulary: command and reply types;
* :mod:`~mbroker.wire.tokens` - how a line splits, and names, keys, numbers and tags;
* :mod:`~mbroker.wire.grammar` - the command table, usage and help text;
* :mod:`~mbroker.wire.framer` - lines and payloads out of a byte stream;
* :mod:`~mbroker.wire.commands` - the broker's decoder (bytes -> commands);
* :mod:`~mbroker.wire.replies` - the client's decoder (bytes -> server frames);
* :mod:`~mbroker.wire.encode` - every byte written: status, errors, MSG, PUBLISH, HELP.

The protocol itself is described in docs/protocol.rst.
"""

from mbroker.wire.commands import CommandDecoder
from mbroker.wire.encode import (
    encode_command,
    encode_frame,
    error_line,
    hello_line,
    help_reply,
    msg_header,
    route_bytes,
    status,
)
from mbroker.wire.replies import ReplyDecoder
from mbroker.wire.tokens import valid_key, valid_name, valid_pattern

__all__ = [
    "CommandDecoder",
    "ReplyDecoder",
    "encode_command",
    "encode_frame",
    "error_line",
    "hello_line",
    "help_reply",
    "msg_header",
    "route_bytes",
    "status",
    "valid_key",
    "valid_name",
    "valid_pattern",
]
