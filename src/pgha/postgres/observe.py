"""Read-only observation of the local PostgreSQL: files, control data, postmaster, SQL.

Nothing here raises for a stopped, missing or hung server: what cannot be
read is left None.  The SQL part costs at most one bounded connection attempt
(2 s), and it is only tried when a live postmaster owns the data directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from pgha.config import NodeConfig
from pgha.core.model import DataDir, LocalPostgres, PgRunState, Replication
from pgha.postgres import conf, db
from pgha.postgres.binaries import Binaries
from pgha.postgres.common import PostgresError
from pgha.postgres.controldata import ControlData, parse
from pgha.postgres.layout import Layout
from pgha.postgres.lsn import parse_lsn, timeline_of_walfile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Postmaster:
    pid: int
    # postmaster.pid's status line: "starting", "stopping", "ready" or "standby" (PG 10+).
    status: str
    # postmaster.pid's start time line (epoch seconds): with the pid, names this server's life.
    started: str = ""

    @property
    def identity(self) -> str:
        return f"{self.pid}@{self.started}"


def read_postmaster(layout: Layout) -> Postmaster | None:
    """The live postmaster of this data directory, or None (no pid file, or its process is gone)."""
    try:
        lines = layout.pid_file.read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if not postmaster_alive(pid):
        return None
    status = lines[7].strip() if len(lines) > 7 else ""
    return Postmaster(pid, status, lines[2].strip() if len(lines) > 2 else "")


def carry_replica_timeline(
    pg: LocalPostgres, postmaster: str | None, seen: tuple[str, int] | None
) -> tuple[LocalPostgres, tuple[str, int] | None]:
    """A standby's timeline, and the (postmaster identity, timeline) to remember for next time.

    What SQL shows of a standby's timeline (last restartpoint, minimum recovery point, WAL
    receiver) drops back to its last restartpoint's while no WAL receiver runs, e.g. right
    after its upstream shut down for a switchover; a replica that followed a promotion then
    looked like it was still on the old timeline, past the fork, and was stopped to be
    rewound for nothing.  Recovery never goes back to an older timeline, so while the same
    postmaster runs the highest timeline seen is still the one it replays.
    """
    if postmaster is None:
        return pg, None
    if seen is not None and seen[0] != postmaster:
        seen = None
    if pg.run_state != PgRunState.RUNNING or not pg.in_recovery or pg.timeline is None:
        return pg, seen
    if seen is not None and seen[1] > pg.timeline:
        return replace(pg, timeline=seen[1]), seen
    return pg, (postmaster, pg.timeline)


def postmaster_alive(pid: int) -> bool:
    """``pid`` is a live postgres process (a zombie, or the pid reused by another program, is not)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc/self") and _signalable(pid)
    except OSError:
        return True
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    fields = stat[stat.rfind(")") + 1 :].split()
    return bool(fields) and fields[0] != "Z" and comm.startswith(("postgres", "postmaster"))


def _signalable(pid: int) -> bool:
    """Without /proc: whether kill(pid, 0) finds the process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def data_dir_state(layout: Layout) -> DataDir:
    d = layout.data
    try:
        if not any(d.iterdir()):
            return DataDir.EMPTY
    except FileNotFoundError:
        return DataDir.EMPTY
    except NotADirectoryError:
        return DataDir.INVALID
    if (d / "PG_VERSION").is_file() and (d / "global" / "pg_control").is_file():
        return DataDir.VALID
    return DataDir.INVALID


def controldata(binaries: Binaries, layout: Layout) -> ControlData | None:
    try:
        r = binaries.run("pg_controldata", ["-D", str(layout.data)], timeout=10)
    except PostgresError as exc:
        log.warning("pg_controldata: %s", exc)
        return None
    if r.returncode != 0:
        return None
    return parse(r.stdout)


def unmanaged_conf(layout: Layout) -> bool:
    """postgresql.conf exists and pgha did not write it (a cluster not adopted yet)."""
    try:
        with open(layout.conf) as f:
            return not f.read(len(conf.MARKER)).startswith(conf.MARKER)
    except (OSError, UnicodeDecodeError):
        return False


def configured_upstream(layout: Layout) -> tuple[str | None, str | None]:
    try:
        return conf.read_upstream(layout.conf.read_text())
    except (OSError, UnicodeDecodeError):
        return None, None


def observe(config: NodeConfig, layout: Layout, binaries: Binaries) -> LocalPostgres:
    state = data_dir_state(layout)
    if state == DataDir.EMPTY:
        return LocalPostgres(data_dir=DataDir.EMPTY)
    upstream, upstream_addr = configured_upstream(layout)
    cd = controldata(binaries, layout) if state == DataDir.VALID else None
    pm = read_postmaster(layout)
    base = LocalPostgres(
        data_dir=state,
        system_id=cd.system_id if cd else None,
        control_state=cd.state if cd else None,
        configured_upstream=upstream,
        unmanaged_conf=state == DataDir.VALID and unmanaged_conf(layout),
    )
    if pm is None:
        crashed = layout.pid_file.exists()
        return replace(
            base,
            run_state=PgRunState.CRASHED if crashed else PgRunState.STOPPED,
            timeline=cd.latest_timeline if cd else None,
            wal_lsn=cd.checkpoint_lsn if cd else None,
        )
    if pm.status in ("starting", "stopping"):
        # Alive but not serving queries (recovering before consistency, or shutting down).
        return replace(base, run_state=PgRunState.STARTING, timeline=cd.latest_timeline if cd else None)
    try:
        with db.local(config, layout, statement_timeout_ms=1000) as conn:
            return _sql(conn, base, cd, upstream, upstream_addr)
    except psycopg.Error as exc:
        log.debug("observe: cannot query the local server: %s", db.one_line(exc))
        return replace(base, run_state=PgRunState.STARTING, timeline=cd.latest_timeline if cd else None)


def live_lsn(config: NodeConfig, layout: Layout) -> int | None:
    """Greatest of the current, received and replayed WAL positions, or None (not running)."""
    if read_postmaster(layout) is None:
        return None
    try:
        with db.local(config, layout, statement_timeout_ms=300) as conn:
            row = conn.execute(
                "SELECT CASE WHEN pg_is_in_recovery() THEN greatest(pg_last_wal_receive_lsn(),"
                " pg_last_wal_replay_lsn()) ELSE pg_current_wal_lsn() END::text"
            ).fetchone()
    except psycopg.Error:
        return None
    return parse_lsn(row[0]) if row is not None and row[0] is not None else None


def _sql(
    conn: psycopg.Connection[tuple[Any, ...]],
    base: LocalPostgres,
    cd: ControlData | None,
    upstream: str | None,
    upstream_addr: str | None,
) -> LocalPostgres:
    row = conn.execute(
        "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names'),"
        " coalesce((SELECT bool_or(pending_restart) FROM pg_settings), false)"
    ).fetchone()
    assert row is not None
    in_recovery, sync_names, pending = bool(row[0]), str(row[1]), bool(row[2])
    pg = replace(
        base,
        run_state=PgRunState.RUNNING,
        in_recovery=in_recovery,
        synchronous_standby_names=sync_names,
        pending_restart=pending,
    )
    if not in_recovery:
        r = conn.execute(
            "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())"
        ).fetchone()
        assert r is not None
        reps = conn.execute(
            "SELECT application_name, state, sync_state, flush_lsn::text, replay_lsn::text"
            " FROM pg_stat_replication ORDER BY application_name"
        ).fetchall()
        return replace(
            pg,
            wal_lsn=parse_lsn(r[0]),
            timeline=timeline_of_walfile(r[1]),
            replication=tuple(
                Replication(str(a), str(s), str(ss), parse_lsn(f), parse_lsn(rp)) for a, s, ss, f, rp in reps
            ),
        )
    # Fix: the timeline a replica is on.  received_tli is only there while the WAL receiver
    # runs, and the checkpoint's timeline only moves at the next restartpoint, so a replica
    # that had switched to the new leader's timeline reported the old one again as soon as that
    # leader died, and was refused as a failover candidate ("behind the latest timeline") until
    # its member key expired.  WAL segments in pg_wal are named by the timeline they were
    # received or recycled on, which the replica only does once it follows that timeline (a
    # diverged replica is refused the new timeline and never gets its segments).
    r = conn.execute(
        "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,"
        " (SELECT timeline_id FROM pg_control_checkpoint()),"
        " (SELECT min_recovery_end_timeline FROM pg_control_recovery()),"
        " (SELECT max(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}(\\.partial)?$')"
    ).fetchone()
    assert r is not None
    w = conn.execute(
        "SELECT status, received_tli, sender_host, sender_port FROM pg_stat_wal_receiver"
    ).fetchone()
    status = str(w[0]) if w else None
    tls = [int(t) for t in (r[2], r[3], w[1] if w else None) if t]
    if r[4]:
        tls.append(timeline_of_walfile(str(r[4])))
    following = None
    if status == "streaming" and upstream is not None:
        sender = f"{w[2]}:{w[3]}" if w and w[2] is not None else None
        following = upstream if upstream_addr is None or sender is None or sender == upstream_addr else None
    return replace(
        pg,
        received_lsn=parse_lsn(r[0]),
        replayed_lsn=parse_lsn(r[1]),
        timeline=max(tls) if tls else (cd.latest_timeline if cd else None),
        receiver_status=status,
        following=following,
    )


def observe_files_only(layout: Layout) -> LocalPostgres:
    """What can be seen without PostgreSQL's programs (bin_dir broken): files and the postmaster."""
    state = data_dir_state(layout)
    if state == DataDir.EMPTY:
        return LocalPostgres(data_dir=state)
    upstream, _ = configured_upstream(layout)
    pm = read_postmaster(layout)
    run = (
        PgRunState.STARTING if pm else PgRunState.CRASHED if layout.pid_file.exists() else PgRunState.STOPPED
    )
    return LocalPostgres(data_dir=state, run_state=run, configured_upstream=upstream,
                         unmanaged_conf=state == DataDir.VALID and unmanaged_conf(layout))
