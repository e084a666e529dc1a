"""What every tutorial program shares: its command line's --host and --port."""

from __future__ import annotations

import argparse


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the broker's address (default localhost:5555)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--host", default="localhost", help="the broker's host")
    p.add_argument("--port", type=int, default=5555, help="the broker's port")
    return p
