"""Point-in-time recovery into a NEW cluster: ``pgha restore`` and ``bootstrap.method: pgbackrest``.

``restore_into`` fills this member's empty data directory from the repository (stanza
``source``, the cluster restored from), writes pgha's files for the new node, starts PostgreSQL
to replay the archive up to the target and promote, removes pgBackRest's recovery settings,
and creates the new cluster's own stanza (a restored cluster never archives into the stanza it
came from).  It never connects to the cluster restored from: only to the repository.
"""

from __future__ import annotations

import datetime
import logging
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pgha.backup import archive
from pgha.backup.command import BackupError, first_error
from pgha.config import NodeConfig
from pgha.core.model import PgRunState
from pgha.postgres.binaries import RunAs
from pgha.postgres.conf import write_atomic
from pgha.postgres.node import PostgresError, PostgresNode

log = logging.getLogger("pgha.backup")

Say = Callable[[str], None]
# Seconds replay to the target may take (a long archive replays for a long time).
REPLAY_TIMEOUT = 3600.0
LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,63}$")
# The settings pgBackRest's restore writes into postgresql.auto.conf; gone once promoted.
RECOVERY_KEYS = ("restore_command", "recovery_target", "recovery_target_time", "recovery_target_lsn",
                 "recovery_target_name", "recovery_target_xid", "recovery_target_action",
                 "recovery_target_inclusive", "recovery_target_timeline")


class RestoreError(Exception):
    """One line naming what failed and where to look."""


@dataclass(frozen=True)
class Target:
    kind: Literal["latest", "time", "lsn", "name"] = "latest"
    value: str = ""

    def args(self) -> list[str]:
        if self.kind == "latest":
            return ["--type=default"]
        return [f"--type={self.kind}", f"--target={self.value}", "--target-action=promote"]

    def describe(self) -> str:
        return "the end of the archive" if self.kind == "latest" else f"{self.kind} {self.value}"


def parse_target(time_: str = "", lsn: str = "", name: str = "") -> Target:
    """The one target given (none: the latest point); RestoreError with one line otherwise."""
    given = [(k, v) for k, v in (("time", time_), ("lsn", lsn), ("name", name)) if v]
    if len(given) > 1:
        raise RestoreError("give one target: a time, an LSN or a restore point name (or none for the latest)")
    if not given:
        return Target()
    kind, value = given[0]
    if kind == "time":
        try:
            when = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            raise RestoreError(f"target time {value!r} is not ISO 8601; e.g. 2030-01-31T02:00:00+00:00") from None
        if when.tzinfo is None:
            when = when.astimezone()
        utc = when.astimezone(datetime.UTC)
        return Target("time", utc.strftime("%Y-%m-%d %H:%M:%S.%f+00"))
    if kind == "lsn":
        if not LSN_RE.match(value):
            raise RestoreError(f"target LSN {value!r} is not an LSN; e.g. 0/3000060")
        return Target("lsn", value.upper())
    if not NAME_RE.match(value):
        raise RestoreError(f"restore point name {value!r}: use letters, digits, '_', '.', ':' or '-'")
    return Target("name", value)


def _progress(line: str) -> str | None:
    """'restore file ... (12MB, 45.17%)' -> '45%'."""
    m = re.search(r"\((?:[^,()]*,\s*)?(\d+(?:\.\d+)?)%\)", line)
    return f"{float(m.group(1)):.0f}%" if m else None


def run_restore(config: NodeConfig, run_as: RunAs, stanza: str, args: list[str], say: Say) -> None:
    """``pgbackrest restore`` of ``stanza`` into this node's data directory, with progress every 10%."""
    pgbr = archive.client(config, run_as)
    pgbr.stanza = stanza
    argv = pgbr.argv("restore", [f"--pg1-path={config.postgresql.data_dir}", *args, "--log-level-console=detail"])
    tail: list[str] = []
    shown = -10
    with subprocess.Popen(argv, env=pgbr.env(), cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace", **run_as.popen_kwargs()) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail, line][-20:]
            pct = _progress(line)
            if pct is not None and int(pct[:-1]) >= shown + 10:
                shown = int(pct[:-1]) // 10 * 10
                say(f"restoring files: {pct}")
    if proc.returncode != 0:
        raise RestoreError(f"pgbackrest restore failed: {first_error(''.join(tail))}")


def strip_recovery_settings(config: NodeConfig, run_as: RunAs) -> None:
    """Remove the recovery settings pgBackRest's restore wrote into postgresql.auto.conf (pgha's
    postgresql.conf has its own restore_command; a recovery target must not outlive the restore)."""
    auto = Path(config.postgresql.data_dir) / "postgresql.auto.conf"
    try:
        text = auto.read_text()
    except FileNotFoundError:
        return
    kept = [ln for ln in text.splitlines() if ln.split("=", 1)[0].strip().lower() not in RECOVERY_KEYS]
    write_atomic(auto, "\n".join(kept) + "\n", run_as)


def restore_into(config: NodeConfig, source: str, target: Target, parameters: dict[str, str | int | float | bool],
                 say: Say) -> str:
    """Restore stanza ``source`` into this node's empty data directory, replay to ``target`` and
    promote; PostgreSQL is left running as the new cluster's primary.  Returns its system identifier."""
    if config.backup is None:
        raise RestoreError("a restore needs the backup: section (where the repository is)")
    own = config.backup.stanza_for(config.cluster)
    if own == source:
        raise RestoreError(f"backup.stanza: the restored cluster would archive into {source!r}, the stanza it "
                           "is restored from; give the new cluster its own stanza (or another cluster name)")
    data = Path(config.postgresql.data_dir)
    if data.exists() and any(data.iterdir()):
        raise RestoreError(f"postgresql.data_dir: {data} is not empty; a restore builds a new cluster in an "
                           "empty directory")
    run_as = RunAs.for_data_dir(data)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    run_as.chown(data)
    archive.write_config(config, run_as)
    started = time.monotonic()
    say(f"restoring stanza {source} from {config.backup.repository} to {target.describe()}")
    run_restore(config, run_as, source, target.args(), say)
    pg = PostgresNode(config)
    try:
        pg.configure(parameters, None, "", standby=False)
        say(f"files restored in {time.monotonic() - started:.0f} s; replaying WAL from the archive")
        pg.start(REPLAY_TIMEOUT)
        _wait_promoted(pg, say)
        strip_recovery_settings(config, run_as)
        pg.reload()
        pg.bootstrap_roles()
        sid = pg.observe().system_id or "?"
    except PostgresError as exc:
        raise RestoreError(f"{exc} (log: {data.parent / 'postgresql.log'})") from None
    finally:
        pg.close()
    say(f"promoted at {target.describe()} in {time.monotonic() - started:.0f} s (system identifier {sid})")
    try:
        archive.client(config, run_as).run("stanza-create", timeout=120)
        archive.client(config, run_as).run("check", timeout=120)
        say(f"stanza {own} created for the new cluster; WAL archiving works")
    except BackupError as exc:
        say(f"warning: {exc}; WAL archiving of the new cluster waits for 'pgha backup stanza-create'")
    return sid


def _wait_promoted(pg: PostgresNode, say: Say) -> None:
    deadline = time.monotonic() + REPLAY_TIMEOUT
    last = ""
    while True:
        local = pg.observe()
        if local.run_state != PgRunState.RUNNING:
            raise PostgresError("PostgreSQL stopped during recovery (a target the archive does not reach?)")
        if local.in_recovery is False:
            return
        text = f"replaying: {local.replayed_lsn or 0:X}"
        if text != last and local.replayed_lsn:
            say(f"replayed up to {local.replayed_lsn >> 32:X}/{local.replayed_lsn & 0xFFFFFFFF:X}")
            last = text
        if time.monotonic() > deadline:
            raise PostgresError(f"recovery did not reach its target within {REPLAY_TIMEOUT:.0f} s")
        time.sleep(1.0)
