"""This node's PostgreSQL: the one object the agent uses to observe and drive it.

The methods are synchronous; the agent runs the long ones (initdb, clone,
rewind, start, promote) in its background task runner.  Secrets go to
PostgreSQL through a password file or the environment, never on a command
line or in a log.

When the agent runs as root (tests, or a host without systemd), PostgreSQL's
binaries run as the owner of the data directory's parent (normally
``postgres``); in production the agent itself runs as ``postgres``.

The work is split into modules: ``binaries`` (programs and the user they run
as), ``layout`` (file locations), ``conf`` (managed files), ``observe``,
``control`` (initdb/start/stop/promote/reload/checkpoint), ``clone``,
``rewind`` and ``slots``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from pgha.config import NodeConfig
from pgha.core.actions import SlotOp
from pgha.core.model import LocalPostgres
from pgha.postgres import clone as _clone
from pgha.postgres import conf, control, libpq, observe, permanent_slots, slots
from pgha.postgres import rewind as _rewind
from pgha.postgres.binaries import Binaries, RunAs
from pgha.postgres.common import PostgresError, Progress, Upstream
from pgha.postgres.layout import Layout

__all__ = ["PostgresError", "PostgresNode", "Progress", "Upstream"]

log = logging.getLogger(__name__)


class PostgresNode:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.layout = Layout.of(config)
        self._binaries: Binaries | None = None
        # What configure() wrote last (clone writes the replica files with them).
        self._parameters: dict[str, str | int | float | bool] = {
            **config.cluster_config.parameters,
            **config.postgresql.parameters,
        }
        # (postmaster identity, highest timeline seen while it runs as a standby).
        self._replica_timeline: tuple[str, int] | None = None
        # The connection and pg_control reading kept between loops.
        self._observer = observe.Observer(config, self.layout)
        # The other members' host:port, which the password file names (set_peers).
        self._peers: frozenset[tuple[str, int]] = frozenset()

    @property
    def binaries(self) -> Binaries:
        """bin_dir's programs, run as the data directory's user (resolved once, when first needed)."""
        if self._binaries is None:
            self._binaries = Binaries(
                self.config.postgresql.bin_dir, RunAs.for_data_dir(self.layout.data), self.layout.parent
            )
        return self._binaries

    @property
    def log_path(self) -> Path:
        """The server log pg_ctl writes (next to the data directory)."""
        return self.layout.log_file

    # --- observation (read-only, fast, never raises for a stopped server) -------
    def observe(self) -> LocalPostgres:
        try:
            binaries = self.binaries
        except PostgresError:
            return observe.observe_files_only(self.layout)
        if self.config.bootstrap.adopt and not self.layout.passfile.exists() and self.layout.parent.is_dir():
            # A server being adopted may want a password on its Unix socket until pgha's
            # pg_hba.conf is in place; the local connection reads it from here.
            self._write_passfile()
        pg = self._observer.observe(binaries)
        pm = observe.read_postmaster(self.layout)
        pg, self._replica_timeline = observe.carry_replica_timeline(pg, pm.identity if pm else None,
                                                                    self._replica_timeline)
        return pg

    def set_peers(self, peers: frozenset[tuple[str, int]]) -> None:
        """The members' host:port from the cluster view: the password file names them, kept current."""
        if peers == self._peers:
            return
        self._peers = peers
        if self.layout.passfile.exists():
            try:
                self._write_passfile()
            except (OSError, PostgresError) as exc:
                log.warning("cannot rewrite the password file %s (%s)", self.layout.passfile, exc)

    def _write_passfile(self, source: Upstream | None = None) -> None:
        """The password file for the members we know, and ``source`` (clone, rewind, upstream)."""
        peers = self._peers | ({(source.host, source.port)} if source is not None else set())
        if source is not None and source.remote is not None and source.remote.host:
            peers |= set(source.remote.hosts())
        conf.write_atomic(self.layout.passfile, libpq.render_passfile(self.config, peers), self.binaries.run_as)

    def live_lsn(self) -> int | None:
        """The furthest WAL position of the running server, read now (None when it cannot be)."""
        return observe.live_lsn(self.config, self.layout)

    def postmaster_pid(self) -> int | None:
        pm = observe.read_postmaster(self.layout)
        return pm.pid if pm else None

    # --- lifecycle ---------------------------------------------------------------
    def initdb(self) -> str:
        """initdb into the empty data dir; returns the new system identifier."""
        return control.initdb(self.config, self.layout, self.binaries)

    def bootstrap_roles(self) -> None:
        """On a running new primary: create (or update) the replication role with its password.

        The superuser's password was set by initdb (--pwfile).
        """
        control.bootstrap_roles(self.config, self.layout)

    def clone(self, source: Upstream, progress: Progress) -> None:
        """pg_basebackup from ``source`` into the empty data dir, then configure as its replica."""
        self._write_passfile(source)
        _clone.clone(self.config, self.layout, self.binaries, source, progress)
        self.configure(self._parameters, source)

    def rewind(self, source: Upstream) -> None:
        """pg_rewind against ``source`` (stopped data dir); raises PostgresError on failure."""
        self._write_passfile(source)
        _rewind.rewind(self.config, self.layout, self.binaries, source)

    def wipe(self) -> str:
        """Move the data dir aside (data.failed-<time>) and return where it went ("" if there was none)."""
        return control.wipe(self.layout)

    def configure(
        self,
        parameters: Mapping[str, str | int | float | bool],
        upstream: Upstream | None,
        synchronous_standby_names: str = "",
        standby: bool | None = None,
    ) -> bool:
        """Write the managed files for this role (upstream None: primary).

        ``standby`` (default: ``upstream is not None``) controls standby.signal, so a
        replica can stay in recovery without an upstream.  Returns True when a
        running server needs a restart for the files to apply.
        """
        self._parameters = dict(parameters)
        self._write_passfile(upstream)
        return control.configure(
            self.config,
            self.layout,
            self.binaries,
            parameters,
            upstream,
            synchronous_standby_names,
            upstream is not None if standby is None else standby,
        )

    def start(self, timeout: float) -> None:
        """Start with the current managed files and wait until it accepts connections."""
        control.start(self.config, self.layout, self.binaries, timeout)

    def close(self) -> None:
        """Close the observing session (a server left running keeps running)."""
        self._observer.close()

    def stop(self, mode: str, timeout: float) -> None:
        """Stop as pg_ctl stop -m fast|immediate does; returns once the postmaster is gone (no-op when stopped)."""
        self._observer.close()  # our own session must not hold up a smart shutdown
        control.stop(self.layout, mode, timeout)

    def reload(self) -> None:
        """SIGHUP the postmaster (no-op when stopped)."""
        control.reload(self.layout)

    def promote(self, timeout: float) -> None:
        """Replay everything received, then pg_promote(wait => true); the files become a primary's."""
        control.promote(self.config, self.layout, self.binaries, timeout)

    def checkpoint(self) -> None:
        control.checkpoint(self.config, self.layout)

    # --- on the primary ----------------------------------------------------------------
    def sync_slots(self, members: tuple[str, ...], keep: tuple[str, ...] = ()) -> None:
        """Physical slots exist for exactly these members (names sanitized; see pgha.postgres.slots)."""
        slots.sync_slots(self.config, self.layout, self.binaries.run_as, members, keep)

    def manage_slots(self, ops: tuple[SlotOp, ...]) -> None:
        """Create, advance and drop permanent slots here (see pgha.postgres.permanent_slots)."""
        permanent_slots.apply(self.config, self.layout, self.binaries.run_as, ops)

    def read_slot_states(self, leader: Upstream, names: list[str]) -> dict[str, bytes]:
        return permanent_slots.read_states(self.config, self.layout, leader, names)

    def install_slot_states(self, states: dict[str, bytes]) -> None:
        """PostgreSQL stopped: put copied logical slots in place (loaded at the next start)."""
        permanent_slots.install_states(self.layout, self.binaries.run_as, states)
