"""mbroker: a message broker on Twisted with a line-based text protocol."""

__version__ = "0.1.0"
