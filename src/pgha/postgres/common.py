"""Types shared by the adapter's modules (re-exported by pgha.postgres.node)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class PostgresError(Exception):
    """A PostgreSQL operation failed; ``str()`` is one line naming what and why."""


@dataclass(frozen=True)
class Upstream:
    """Another member to clone from, rewind against or stream from."""

    name: str
    host: str
    port: int


# progress(done_bytes, total_bytes or None, message)
Progress = Callable[[int, int | None, str], None]
