"""A replica from the repository: ``create_replica_methods: [pgbackrest, basebackup]``.

A new or reinitialized member restores the latest backup with
``pgbackrest restore --type=standby --delta`` (the repository serves it over TLS; the primary
sends nothing but, afterwards, the WAL since that backup by streaming), then the agent configures
it as a replica of the leader as after pg_basebackup.  When the restore fails (no backup yet, the
repository unreachable), the next method is tried: ``basebackup`` is pg_basebackup from the leader.
"""

from __future__ import annotations

import logging
import shutil
import time

from pgha.backup import archive
from pgha.backup.command import BackupError
from pgha.config import NodeConfig
from pgha.core.model import DataDir
from pgha.postgres.binaries import Binaries
from pgha.postgres.clone import clone as basebackup
from pgha.postgres.common import PostgresError, Progress, Upstream
from pgha.postgres.control import make_data_dir
from pgha.postgres.layout import Layout
from pgha.postgres.observe import data_dir_state

log = logging.getLogger(__name__)

# Seconds one restore may take (a big database from a remote repository takes long).
RESTORE_TIMEOUT = 6 * 3600.0


def restore_replica(config: NodeConfig, layout: Layout, binaries: Binaries, progress: Progress) -> None:
    """The latest backup into the empty data directory, as a standby (BackupError or PostgresError)."""
    if config.backup is None:
        raise BackupError("create_replica_methods: pgbackrest needs a backup: section")
    if data_dir_state(layout) != DataDir.EMPTY:
        raise PostgresError(f"postgresql.data_dir: {layout.data} is not empty; a restore needs an empty directory")
    make_data_dir(layout, binaries)
    pgbr = archive.client(config, binaries.run_as)
    started = time.monotonic()
    progress(0, None, "restoring the latest backup from the pgBackRest repository")
    log.info("clone: pgbackrest restore --type=standby --delta from the repository %s", config.backup.repository)
    try:
        pgbr.run("restore", ["--type=standby", "--delta", "--target-timeline=latest"], timeout=RESTORE_TIMEOUT)
    except BackupError:
        # Leave the directory empty for the next method.
        shutil.rmtree(layout.data, ignore_errors=True)
        raise
    log.info("clone: restored from the repository in %.1f s", time.monotonic() - started)
    progress(1, 1, "restore from the repository complete")


def create_replica(config: NodeConfig, layout: Layout, binaries: Binaries, source: Upstream,
                   progress: Progress) -> str:
    """Try each of ``create_replica_methods`` in order; the method that built the replica."""
    methods = config.postgresql.create_replica_methods
    failures = []
    for method in methods:
        try:
            if method == "pgbackrest":
                restore_replica(config, layout, binaries, progress)
            else:
                basebackup(config, layout, binaries, source, progress)
            return method
        except (BackupError, PostgresError) as exc:
            failures.append(f"{method}: {exc}")
            if method != methods[-1]:
                log.warning("clone: %s failed (%s); trying %s", method, exc, methods[methods.index(method) + 1])
    raise PostgresError("; ".join(failures) if len(failures) > 1 else failures[0].split(": ", 1)[1])
