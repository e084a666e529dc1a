"""Reading state a test has just changed, out of reach of mypy's narrowing."""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


def now(read: Callable[[], T]) -> T:
    """``read()``: the value as it is now.

    After ``assert not t.disconnecting`` mypy takes ``t.disconnecting`` to be false for the
    rest of the function, whatever the calls in between did, and reports the code after a
    later ``assert t.disconnecting`` as unreachable. A value read through a call is not
    narrowed, so ``assert now(lambda: t.disconnecting)`` checks what it says.
    """
    return read()
