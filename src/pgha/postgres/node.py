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

from collections.abc import Mapping
from pathlib import Path

from pgha.config import NodeConfig
from pgha.core.model import LocalPostgres
from pgha.postgres import clone as _clone
from pgha.postgres import conf, control, observe, slots
from pgha.postgres import rewind as _rewind
from pgha.postgres.binaries import Binaries, RunAs
from pgha.postgres.common import PostgresError, Progress, Upstream
from pgha.postgres.layout import Layout

__all__ = ["PostgresError", "PostgresNode", "Progress", "Upstream"]


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
            conf.write_atomic(self.layout.passfile, conf.render_passfile(self.config), binaries.run_as)
        pg = self._observer.observe(binaries)
        pm = observe.read_postmaster(self.layout)
        pg, self._replica_timeline = observe.carry_replica_timeline(pg, pm.identity if pm else None,
                                                                    self._replica_timeline)
        return pg

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
        """pg_basebackup from ``source`` (or a restore from the pgBackRest repository, as
        ``create_replica_methods`` says) into the empty data dir, then configure as its replica."""
        if self.config.postgresql.create_replica_methods == ("basebackup",):
            _clone.clone(self.config, self.layout, self.binaries, source, progress)
        else:
            from pgha.backup.replica import create_replica

            create_replica(self.config, self.layout, self.binaries, source, progress)
        self.configure(self._parameters, source)

    def rewind(self, source: Upstream) -> None:
        """pg_rewind against ``source`` (stopped data dir); raises PostgresError on failure."""
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
    def sync_slots(self, members: tuple[str, ...]) -> None:
        """Physical slots exist for exactly these members (names sanitized; see pgha.postgres.slots)."""
        slots.sync_slots(self.config, self.layout, self.binaries.run_as, members)
