"""Users files with cheap argon2 hashes, for tests that log in."""

from __future__ import annotations

from pathlib import Path

from argon2 import PasswordHasher

from mbroker.server.auth import (
    hash_password,
)

#: argon2id with tiny costs: the tests check logic, not the cost
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def cheap_hash(password: str) -> str:
    return hash_password(password, CHEAP)


def write_users(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
