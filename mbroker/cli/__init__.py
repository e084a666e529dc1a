"""The ``mbroker`` command: argument parsing, the subcommands and their output."""

from mbroker.cli.main import main

__all__ = ["main"]
