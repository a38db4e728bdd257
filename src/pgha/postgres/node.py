"""This node's PostgreSQL: the one object the agent uses to observe and drive it.

The methods are synchronous; the agent runs the long ones (initdb, clone,
rewind, start, promote) in its background task runner.  Secrets go to
PostgreSQL through a password file or the environment, never on a command
line or in a log.

When the agent runs as root (tests, or a host without systemd), PostgreSQL's
binaries run as the owner of the data directory's parent (normally
``postgres``); in production the agent itself runs as ``postgres``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pgha.config import NodeConfig
from pgha.core.model import LocalPostgres


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


class PostgresNode:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config

    # --- observation (read-only, fast, never raises for a stopped server) -------
    def observe(self) -> LocalPostgres:
        raise NotImplementedError

    def postmaster_pid(self) -> int | None:
        raise NotImplementedError

    # --- lifecycle ---------------------------------------------------------------
    def initdb(self) -> str:
        """initdb into the empty data dir; returns the new system identifier."""
        raise NotImplementedError

    def bootstrap_roles(self) -> None:
        """On a running new primary: set the superuser password, create the replication role."""
        raise NotImplementedError

    def clone(self, source: Upstream, progress: Progress) -> None:
        """pg_basebackup from ``source`` into the empty data dir, then configure as its replica."""
        raise NotImplementedError

    def rewind(self, source: Upstream) -> None:
        """pg_rewind against ``source`` (stopped data dir); raises PostgresError on failure."""
        raise NotImplementedError

    def wipe(self) -> str:
        """Move the data dir aside (data.failed-<time>) and return where it went."""
        raise NotImplementedError

    def configure(self, parameters: Mapping[str, str | int | float | bool], upstream: Upstream | None,
                  synchronous_standby_names: str = "") -> bool:
        """Write the managed files for this role (upstream None: primary).

        Returns True when a running server needs a restart for them to apply.
        """
        raise NotImplementedError

    def start(self, timeout: float) -> None:
        """Start with the current managed files and wait until it accepts connections."""
        raise NotImplementedError

    def stop(self, mode: str, timeout: float) -> None:
        """pg_ctl stop -m fast|immediate; returns once the postmaster is gone."""
        raise NotImplementedError

    def reload(self) -> None:
        raise NotImplementedError

    def promote(self, timeout: float) -> None:
        """Replay everything received, then pg_promote(wait => true)."""
        raise NotImplementedError

    def checkpoint(self) -> None:
        raise NotImplementedError

    # --- on the primary ----------------------------------------------------------------
    def sync_slots(self, members: tuple[str, ...]) -> None:
        """Physical slots exist for exactly these members (names sanitized)."""
        raise NotImplementedError
