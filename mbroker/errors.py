"""One exception hierarchy for the whole project.

Each class carries the wire code of the contract (``docs/protocol.rst``, error codes).
The broker raises these from its handlers and exactly one place, the connection's
dispatch loop, turns them into ``-ERR <CODE> <text>`` lines.  The client raises the
same classes when the broker answers with an error, so user code catches
``mbroker.errors.NotFound`` whichever side it is on.
"""

from __future__ import annotations

from typing import ClassVar


class BrokerError(Exception):
    """Base of every error that has a wire code."""

    code: ClassVar[str] = "INTERNAL"
    #: A fatal error closes the connection after its ``-ERR`` line (framing errors).
    fatal: ClassVar[bool] = False

    def __init__(self, text: str = "") -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.text else self.code

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BrokerError) and type(self) is type(other) and self.text == other.text
        )

    def __hash__(self) -> int:
        return hash((type(self), self.text))


class BadCommand(BrokerError):
    """The command keyword is unknown."""

    code = "BAD_COMMAND"


class BadArgs(BrokerError):
    """Wrong arguments or options."""

    code = "BAD_ARGS"


class BadFrame(BrokerError):
    """A payload was not followed by a line end."""

    code = "BAD_FRAME"
    fatal = True


class LineTooLong(BrokerError):
    """A control line is longer than the connection's limit."""

    code = "LINE_TOO_LONG"
    fatal = True


class TooBig(BrokerError):
    """A declared payload is larger than max-payload."""

    code = "TOO_BIG"
    fatal = True


class NotFound(BrokerError):
    """No object (or outstanding delivery tag) by that name."""

    code = "NOT_FOUND"


class Exists(BrokerError):
    """The name exists with another kind or other options."""

    code = "EXISTS"


class WrongKind(BrokerError):
    """A queue was named where an exchange was expected, or the other way round."""

    code = "WRONG_KIND"


class NotEmpty(BrokerError):
    """DELETE if-empty on a queue that holds messages."""

    code = "NOT_EMPTY"


class InUse(BrokerError):
    """DELETE if-unused on an object in use."""

    code = "IN_USE"


class Overflow(BrokerError):
    """A target queue with overflow=reject is full."""

    code = "OVERFLOW"


class Refused(BrokerError):
    """Some of the commands one reply stands for were refused once the store had
    answered (a cluster node learns from Redis that a queue was full): ``lines`` maps
    the line of each refused command to its error.  As a plain error it is the first
    of them."""

    def __init__(self, lines: dict[int, BrokerError]) -> None:
        first = lines[min(lines)]
        super().__init__(first.text)
        self.code = first.code  # type: ignore[misc]
        self.lines = lines


class NoAuth(BrokerError):
    """The broker requires AUTH first."""

    code = "NO_AUTH"


class AuthFailed(BrokerError):
    """AUTH with a wrong user or password."""

    code = "AUTH"


class Forbidden(BrokerError):
    """The user has no right to do this."""

    code = "FORBIDDEN"


class Limit(BrokerError):
    """A server limit was reached."""

    code = "LIMIT"


class Unavailable(BrokerError):
    """The store cannot take writes; nothing was lost."""

    code = "UNAVAILABLE"


class Internal(BrokerError):
    """A bug in the broker."""

    code = "INTERNAL"


#: Wire code -> exception class, for decoding ``-ERR`` lines.
ERRORS_BY_CODE: dict[str, type[BrokerError]] = {
    cls.code: cls
    for cls in (
        BadCommand,
        BadArgs,
        BadFrame,
        LineTooLong,
        TooBig,
        NotFound,
        Exists,
        WrongKind,
        NotEmpty,
        InUse,
        Overflow,
        NoAuth,
        AuthFailed,
        Forbidden,
        Limit,
        Unavailable,
        Internal,
    )
}


def error_for_code(code: str, text: str = "") -> BrokerError:
    """The exception for a wire code; unknown codes become a plain BrokerError."""
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        # a code this version does not know: an error class of its own that carries it
        unknown: type[BrokerError] = type("BrokerError", (BrokerError,), {"code": code})
        return unknown(text)
    return cls(text)
