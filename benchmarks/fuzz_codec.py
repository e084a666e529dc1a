"""Fuzz the codec (and whole connections) for longer than the test suite does.

Two engines:

``python benchmarks/fuzz_codec.py --atheris [-- ATHERIS/LIBFUZZER OPTIONS]``
    coverage-guided fuzzing of :mod:`mbroker.wire` with atheris (``pip install
    atheris``; it is not a dependency of mbroker).  For example
    ``python benchmarks/fuzz_codec.py --atheris -- -max_total_time=600``.  A crash
    leaves its input in a ``crash-…`` file; replay it with ``--replay FILE``.
``python benchmarks/fuzz_codec.py --hypothesis [N]``
    the suite's hypothesis properties (``tests/test_fuzz_connection.py``: whole
    connections, open and with AUTH) with N examples each (default 20,000).

The properties, for any bytes fed in any pieces: ``CommandDecoder`` returns the same
items whichever way the bytes were split, never raises, and a fatal error is the last
thing it returns; ``ReplyDecoder`` raises nothing but ``BadFrame``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mbroker.errors import BadFrame, BrokerError  # noqa: E402
from mbroker.wire import CommandDecoder, ReplyDecoder  # noqa: E402


def check(data: bytes) -> None:
    """One fuzz input: the first two bytes say where to cut, the rest is the stream."""
    if len(data) < 2:
        return
    cut, max_line, stream = data[0], 16 + data[1] % 64, data[2:]
    cut = cut % (len(stream) + 1)
    whole = CommandDecoder(max_line=max_line, max_payload=32)
    expected = whole.feed(stream)
    split = CommandDecoder(max_line=max_line, max_payload=32)
    items = split.feed(stream[:cut]) + split.feed(stream[cut:])
    if items != expected:
        raise AssertionError(f"split at {cut}: {items!r} != {expected!r}")
    fatal = [i for i, item in enumerate(items) if isinstance(item, BrokerError) and item.fatal]
    if fatal and fatal != [len(items) - 1]:
        raise AssertionError(f"items after a fatal error: {items!r}")
    replies = ReplyDecoder(max_line=max_line, max_payload=32)
    try:
        replies.feed(stream[:cut])
        replies.feed(stream[cut:])
    except BadFrame:
        pass


def run_atheris(args: list[str]) -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris (it needs clang/libFuzzer wheels)")
        return 2
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *args], check)
    atheris.Fuzz()
    return 0


def run_hypothesis(examples: int) -> int:
    env = dict(os.environ, MBROKER_FUZZ_EXAMPLES=str(examples))
    command = [sys.executable, "-m", "pytest", "-q", "tests/test_fuzz_connection.py"]
    return subprocess.call(command, cwd=ROOT, env=env)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--atheris"]:
        rest = argv[1:]
        return run_atheris(rest[1:] if rest[:1] == ["--"] else rest)
    if argv[:1] == ["--hypothesis"]:
        return run_hypothesis(int(argv[1]) if len(argv) > 1 else 20_000)
    if argv[:1] == ["--replay"] and len(argv) == 2:
        check(Path(argv[1]).read_bytes())
        print("no failure")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
