"""pg_rewind against the new primary, keeping pgha's managed files.

pg_rewind copies the source's configuration files along with the changed
data; pgha puts its own back afterwards.  PostgreSQL 15's pg_rewind first
runs crash recovery in single-user mode when the target was not shut down
cleanly, so a crashed old primary can be rewound directly.

It also reads the source's timeline from the source's pg_control, which a just-promoted
primary updates only at its first checkpoint (requested at promotion, and spread): until
then pg_rewind sees both servers on one timeline, answers "no rewind required", and the
target cannot start ("requested timeline 2 is not a child of this server's history").  So
the source is asked for a checkpoint first when its pg_control lags its WAL timeline
(pg_rewind 16 reads the timeline history instead: the table in postgres/versions.py says which
majors need it).  Found by the fault suite.
"""

from __future__ import annotations

import contextlib
import logging
import time

import psycopg

from pgha.config import NodeConfig
from pgha.core.model import DataDir
from pgha.postgres import conf, control, db, libpq, versions
from pgha.postgres.binaries import Binaries, last_line
from pgha.postgres.common import PostgresError, Upstream
from pgha.postgres.layout import Layout
from pgha.postgres.lsn import parse_lsn
from pgha.postgres.observe import data_dir_state, read_postmaster

log = logging.getLogger(__name__)

KEEP = (
    "postgresql.conf",
    "postgresql.base.conf",
    "pg_hba.conf",
    "pg_ident.conf",
    "standby.signal",
    "pgha.slots",
)


def rewind(config: NodeConfig, layout: Layout, binaries: Binaries, source: Upstream) -> None:
    if data_dir_state(layout) != DataDir.VALID:
        raise PostgresError(f"postgresql.data_dir: {layout.data} holds no cluster; nothing to rewind")
    if read_postmaster(layout) is not None:
        raise PostgresError("pg_rewind needs a stopped server; stop PostgreSQL first")
    # pg_rewind finishes a crashed target's recovery with `postgres --single`, which refuses while
    # postmaster.pid names a process that exists at all: the fenced postmaster's zombie (seen on the
    # fault soak, after a frozen host was fenced), or a reused PID.  start() clears them the same way.
    control.clear_stale_locks(layout, config.postgresql.port)
    binaries.path("pg_rewind")
    saved: dict[str, bytes] = {}
    for name in KEEP:
        with contextlib.suppress(FileNotFoundError):
            saved[name] = (layout.data / name).read_bytes()
    dsn = conf.conninfo(
        host=source.host,
        port=source.port,
        user=config.postgresql.superuser.username,
        dbname="postgres",
        passfile=str(layout.passfile),
        application_name=f"{config.name}_rewind",
        connect_timeout=5,
        **libpq.for_tools(config),
    )
    major = versions.bin_dir_major(str(binaries.bin_dir))
    checkpoint_source(config, layout, source, versions.features(major).rewind_needs_source_checkpoint)
    log.info("rewind: pg_rewind against %s (%s:%s)", source.name, source.host, source.port)
    try:
        r = binaries.run(
            "pg_rewind",
            ["--target-pgdata", str(layout.data), "--source-server", dsn, "--progress"],
            timeout=3600,
        )
    finally:
        _restore(layout, binaries, saved)
    out = (r.stdout + "\n" + r.stderr).strip()
    if r.returncode != 0:
        # The whole of pg_rewind's report (it names no password), for the post-mortem of a rare failure.
        log.warning("rewind: pg_rewind exited %s: %s", r.returncode,
                    " | ".join(ln.strip() for ln in out.splitlines()[-30:] if ln.strip()))
        errors = [ln.strip() for ln in out.splitlines() if "error:" in ln or "fatal:" in ln]
        gist = errors[-1] if errors else last_line(out, f"exit code {r.returncode}")
        raise PostgresError(f"rewind against {source.name} failed: {gist}")
    log.info("rewind: %s", last_line(out, "done"))


# Whether the source is in recovery, the timeline of its last checkpoint (a standby's: restartpoint), and
# the one it is on now: a primary's WAL timeline; a standby's received or replayed one (15 has no function
# for the replayed timeline; pg_control's minRecoveryPointTLI follows replay, lazily).
TIMELINES = (
    "SELECT pg_is_in_recovery(), c.timeline_id, CASE WHEN pg_is_in_recovery()"
    " THEN greatest((SELECT received_tli FROM pg_stat_wal_receiver),"
    " (SELECT min_recovery_end_timeline FROM pg_control_recovery()))"
    " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
    " FROM pg_control_checkpoint() c"
)
# How long a standby source may take to replay a checkpoint record of its new timeline, so that a
# restartpoint can carry its pg_control onto that timeline.
STANDBY_CHECKPOINT_WAIT = 30.0


def fork_point(layout: Layout, timeline: int) -> int | None:
    """Where ``timeline`` ended in the newest timeline history file of the data directory (after a
    rewind, the source's: e.g. the other site's promotion), or None when no history file names it."""
    histories = sorted(layout.data.glob("pg_wal/*.history"))
    if not histories:
        return None
    try:
        text = histories[-1].read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == str(timeline):
            with contextlib.suppress(ValueError):
                return parse_lsn(fields[1])
    return None


def checkpoint_source(config: NodeConfig, layout: Layout, source: Upstream, primary_needs: bool) -> None:
    """A CHECKPOINT on the source while its pg_control names an older timeline than it is on (see above).

    A primary source needs it only where pg_rewind reads the timeline from pg_control alone
    (``primary_needs``, postgres/versions.py).  A standby source (the standby leader of a standby
    cluster, for its own replicas after demote-cluster) needs it on every major: its pg_control moves to
    the new timeline only at a restartpoint, and minRecoveryPointTLI follows replay lazily; without it
    pg_rewind answers "no rewind required" and the target cannot start ("requested timeline N is not a
    child of this server's history", found in the two-site lab).  A restartpoint needs a checkpoint
    record of the new timeline replayed first, so a standby is asked again until its pg_control catches up.
    """
    deadline = time.monotonic() + STANDBY_CHECKPOINT_WAIT
    try:
        with db.remote(config, layout, source, config.postgresql.superuser.username) as conn:
            conn.execute("SET statement_timeout = '120s'")
            while True:
                row = conn.execute(TIMELINES).fetchone()
                if row is None or row[2] is None or row[1] >= row[2] or not (row[0] or primary_needs):
                    return
                log.info("rewind: %s has not checkpointed on timeline %s yet: CHECKPOINT first", source.name, row[2])
                conn.execute("CHECKPOINT")
                if not row[0] or time.monotonic() > deadline:
                    return
                time.sleep(0.5)
    except psycopg.Error as exc:
        log.info("rewind: cannot check the checkpoint timeline of %s (%s)", source.name, db.one_line(exc))


def _restore(layout: Layout, binaries: Binaries, saved: dict[str, bytes]) -> None:
    for name in KEEP:
        path = layout.data / name
        if name in saved:
            conf.write_atomic(path, saved[name].decode(errors="replace"), binaries.run_as)
        else:
            conf.remove(path)
