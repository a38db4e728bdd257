"""pgBackRest on a database member, as the agent's ``Archive`` port: its configuration file, the
stanza, pushing ``.ready`` segments, and ``check`` (a WAL switch that waits for the archive)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from pgha.backup import archive
from pgha.backup.command import BackupError, PgBackRest
from pgha.config import NodeConfig
from pgha.postgres.binaries import RunAs

log = logging.getLogger("pgha.backup")

# Seconds the initializing member keeps trying stanza-create: the repository host lets a member
# in once it has read the member's key from the DCS.
STANZA_CREATE_WITHIN = 90.0


class MemberArchive:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.run_as = RunAs.for_data_dir(Path(config.postgresql.data_dir))

    def client(self) -> PgBackRest:
        return archive.client(self.config, self.run_as)

    def prepare(self) -> None:
        """Write this member's pgbackrest.conf (before PostgreSQL can call archive_command)."""
        path = archive.write_config(self.config, self.run_as)
        log.info("pgBackRest configuration written to %s", path)

    def create_stanza(self) -> str:
        """stanza-create (idempotent), then check: the whole archive path works."""
        deadline = time.monotonic() + STANZA_CREATE_WITHIN
        while True:
            try:
                self.client().run("stanza-create", timeout=120)
                break
            except BackupError as exc:
                if time.monotonic() > deadline:
                    raise
                log.info("%s; retrying (the repository may not know this member yet)", exc)
                time.sleep(2.0)
        self.client().run("check", timeout=120)
        return f"stanza {self.client().stanza} created and checked"

    def restore_replica(self, say: Callable[[str], None]) -> None:
        """Build this replica's empty data directory from the newest backup in the repository
        (``restore --type=standby``); PostgreSQL then replays the archive and streams.  Nothing
        is read from the primary."""
        from pgha.backup.restore import RestoreError, run_restore, strip_recovery_settings

        data = Path(self.config.postgresql.data_dir)
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_as.chown(data)
        archive.write_config(self.config, self.run_as)
        try:
            run_restore(self.config, self.run_as, self.client().stanza, ["--type=standby"], say)
        except RestoreError as exc:
            raise BackupError(str(exc)) from None
        strip_recovery_settings(self.config, self.run_as)

    def push_ready(self) -> int:
        return archive.push_ready(self.config, self.run_as)

    def check(self) -> int:
        """On a new primary: push the earlier timelines' segments it holds (a dead primary may not
        have archived them), then force a WAL switch and wait until that segment is archived.
        Returns the timeline now confirmed in the repository."""
        timeline = archive.current_timeline(self.config)
        pushed = archive.push_previous_timelines(self.config, self.run_as, timeline)
        if pushed:
            log.info("pushed %d segment(s) of earlier timelines from pg_wal (already archived ones are kept)",
                     pushed)
        self.client().run("check", timeout=120)
        return timeline
