"""Types shared by the adapter's modules (re-exported by pgha.postgres.node)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pgha.core.standby import StandbyCluster


class PostgresError(Exception):
    """A PostgreSQL operation failed; ``str()`` is one line naming what and why."""


@dataclass(frozen=True)
class Upstream:
    """Another member to clone from, rewind against or stream from."""

    name: str
    host: str
    port: int
    # The remote source of a standby cluster (name ``pgha.core.standby.REMOTE``): host and port are
    # then its first host, for pg_basebackup and pg_rewind; primary_conninfo names every host.
    remote: StandbyCluster | None = None


# progress(done_bytes, total_bytes or None, message)
Progress = Callable[[int, int | None, str], None]
