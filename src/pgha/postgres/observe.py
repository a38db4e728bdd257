"""Read-only observation of the local PostgreSQL: files, control data, postmaster, SQL.

Nothing here raises for a stopped, missing or hung server: what cannot be
read is left None.  The SQL part costs at most one bounded connection attempt
(2 s), and it is only tried when a live postmaster owns the data directory.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from pgha.config import NodeConfig
from pgha.core.model import DataDir, LocalPostgres, LocalSlot, PgRunState, Replication
from pgha.postgres import conf, db
from pgha.postgres.binaries import Binaries
from pgha.postgres.common import PostgresError
from pgha.postgres.controldata import ControlData, parse
from pgha.postgres.layout import Layout
from pgha.postgres.lsn import parse_lsn, timeline_of_walfile
from pgha.postgres.slots import read_owned

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
        return False  # gone (pgha runs on Linux only: /proc is always there)
    except OSError:
        return True
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    fields = stat[stat.rfind(")") + 1 :].split()
    return bool(fields) and fields[0] != "Z" and comm.startswith(("postgres", "postmaster"))



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
    """postgresql.conf exists and pgha did not write it (a cluster not adopted yet), in the data directory
    or in the configuration directory the server was started from (postgresql.config_dir)."""
    files = [layout.conf] + ([layout.config_dir / "postgresql.conf"] if layout.config_dir else [])
    for path in files:
        try:
            with open(path) as f:
                if not f.read(len(conf.MARKER)).startswith(conf.MARKER):
                    return True
        except (OSError, UnicodeDecodeError):
            pass
    return False


def configured_upstream(layout: Layout) -> tuple[str | None, str | None]:
    try:
        return conf.read_upstream(layout.conf.read_text())
    except (OSError, UnicodeDecodeError):
        return None, None


class Observer:
    """Looks at the local PostgreSQL once per loop, keeping between loops what makes that cheap.

    * One connection to the local server, reused while the same postmaster runs (a broken one
      is replaced at once, in the same call), so a loop costs one round trip: ``OBSERVE_SQL``.
    * pg_control's last reading: ``pg_controldata`` runs again only when the file changed or the
      server is not up (stopped, crashed, starting), instead of one process per loop.
    """

    def __init__(self, config: NodeConfig, layout: Layout) -> None:
        self.config = config
        self.layout = layout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._conn_of = ""  # identity of the postmaster the connection was opened to
        self._control_key: tuple[str, int, int, int] | None = None
        self._control: ControlData | None = None

    def observe(self, binaries: Binaries) -> LocalPostgres:
        with self._lock:
            return self._observe(binaries)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _controldata(self, binaries: Binaries, pm: Postmaster | None) -> ControlData | None:
        if pm is None or pm.status not in ("ready", "standby"):
            self._control_key = None
            return controldata(binaries, self.layout)
        try:
            st = (self.layout.data / "global" / "pg_control").stat()
        except OSError:
            self._control_key = None
            return controldata(binaries, self.layout)
        key = (pm.identity, st.st_ino, st.st_size, st.st_mtime_ns)
        if key == self._control_key:
            return self._control
        cd = controldata(binaries, self.layout)
        # A file written within the last second may be written again within the same timestamp
        # tick, which the key would not see: read it again next time.
        self._control_key = key if cd is not None and time.time() - st.st_mtime > 1.0 else None
        self._control = cd
        return cd

    def _observe(self, binaries: Binaries) -> LocalPostgres:
        layout = self.layout
        state = data_dir_state(layout)
        if state == DataDir.EMPTY:
            self._drop()
            return LocalPostgres(data_dir=DataDir.EMPTY)
        upstream, upstream_addr = configured_upstream(layout)
        pm = read_postmaster(layout)
        cd = self._controldata(binaries, pm) if state == DataDir.VALID else None
        base = LocalPostgres(
            data_dir=state,
            system_id=cd.system_id if cd else None,
            control_state=cd.state if cd else None,
            configured_upstream=upstream,
            unmanaged_conf=state == DataDir.VALID and unmanaged_conf(layout),
            owned_slots=frozenset(read_owned(layout)),
        )
        if pm is None:
            self._drop()
            crashed = layout.pid_file.exists()
            return replace(
                base,
                run_state=PgRunState.CRASHED if crashed else PgRunState.STOPPED,
                timeline=cd.latest_timeline if cd else None,
                wal_lsn=cd.checkpoint_lsn if cd else None,
            )
        if pm.status in ("starting", "stopping"):
            # Alive but not serving queries (recovering before consistency, or shutting down).
            self._drop()
            return replace(base, run_state=PgRunState.STARTING, timeline=cd.latest_timeline if cd else None)
        if self._conn_of != pm.identity or (self._conn is not None and self._conn.broken):
            self._drop()
        for fresh in (self._conn is None, True):
            try:
                if self._conn is None:
                    self._conn = db.local(self.config, layout, statement_timeout_ms=1000)
                    self._conn_of = pm.identity
                return _sql(self._conn, base, cd, upstream, upstream_addr)
            except psycopg.Error as exc:
                self._drop()
                if fresh:
                    log.debug("observe: cannot query the local server: %s", db.one_line(exc))
                    break
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


# Everything a loop needs from a running server, in one statement.  Each branch only runs on
# the side it is for (CASE evaluates lazily, and so do the sub-selects in it): the primary's WAL
# position and walsenders; a standby's positions, the timelines it may be on, its WAL receiver.
OBSERVE_SQL = """
SELECT r.rec, current_setting('synchronous_standby_names'),
  coalesce((SELECT bool_or(pending_restart) FROM pg_settings), false),
  CASE WHEN NOT r.rec THEN pg_current_wal_lsn()::text END,
  CASE WHEN NOT r.rec THEN pg_walfile_name(pg_current_wal_lsn()) END,
  CASE WHEN NOT r.rec THEN (SELECT json_agg(json_build_array(application_name, state, sync_state,
      flush_lsn::text, replay_lsn::text) ORDER BY application_name) FROM pg_stat_replication) END,
  CASE WHEN r.rec THEN pg_last_wal_receive_lsn()::text END,
  CASE WHEN r.rec THEN pg_last_wal_replay_lsn()::text END,
  CASE WHEN r.rec THEN (SELECT timeline_id FROM pg_control_checkpoint()) END,
  CASE WHEN r.rec THEN (SELECT min_recovery_end_timeline FROM pg_control_recovery()) END,
  CASE WHEN r.rec THEN (SELECT max(name) FROM pg_ls_waldir()
      WHERE name ~ '^[0-9A-F]{24}(\\.partial)?$') END,
  CASE WHEN r.rec THEN (SELECT json_build_array(status, received_tli, sender_host, sender_port)
      FROM pg_stat_wal_receiver) END,
  current_setting('server_version_num')::int, extract(epoch FROM pg_postmaster_start_time())::float8,
  CASE WHEN r.rec THEN extract(epoch FROM pg_last_xact_replay_timestamp())::float8 END,
  CASE WHEN r.rec THEN pg_is_wal_replay_paused() END,
  current_setting('restore_command') <> '',
  (SELECT json_agg(json_build_array(s.slot_name, s.slot_type, s.plugin, s.database, s.active,
      s.restart_lsn::text, s.confirmed_flush_lsn::text) ORDER BY s.slot_name) FROM pg_replication_slots s),
  CASE WHEN r.rec THEN (SELECT json_build_array(min(name),
      (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'))
      FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$') END
FROM (SELECT pg_is_in_recovery() AS rec) r
"""


def _sql(
    conn: psycopg.Connection[tuple[Any, ...]],
    base: LocalPostgres,
    cd: ControlData | None,
    upstream: str | None,
    upstream_addr: str | None,
) -> LocalPostgres:
    row = conn.execute(OBSERVE_SQL).fetchone()
    assert row is not None
    in_recovery, sync_names, pending = bool(row[0]), str(row[1]), bool(row[2])
    pg = replace(
        base,
        run_state=PgRunState.RUNNING,
        in_recovery=in_recovery,
        synchronous_standby_names=sync_names,
        pending_restart=pending,
        server_version=int(row[12] or 0),
        postmaster_start=float(row[13]) if row[13] is not None else None,
        restore_command=bool(row[16]),
        slots=tuple(LocalSlot(str(n), str(t), str(p or ""), str(d or ""), bool(a), parse_lsn(r), parse_lsn(c))
                    for n, t, p, d, a, r, c in (row[17] or [])),
    )
    if not in_recovery:
        reps = row[5] or []
        return replace(
            pg,
            wal_lsn=parse_lsn(row[3]),
            timeline=timeline_of_walfile(row[4]),
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
    w = row[11]
    status = str(w[0]) if w else None
    tls = [int(t) for t in (row[8], row[9], w[1] if w else None) if t]
    if row[10]:
        tls.append(timeline_of_walfile(str(row[10])))
    following = None
    if status == "streaming" and upstream is not None:
        sender = f"{w[2]}:{w[3]}" if w and w[2] is not None else None
        following = upstream if upstream_addr is None or sender is None or sender == upstream_addr else None
    return replace(
        pg,
        received_lsn=parse_lsn(row[6]),
        replayed_lsn=parse_lsn(row[7]),
        timeline=max(tls) if tls else (cd.latest_timeline if cd else None),
        receiver_status=status,
        following=following,
        replay_timestamp=float(row[14]) if row[14] is not None else None,
        replay_paused=bool(row[15]),
        wal_floor=_segment_start(row[18]),
    )


def _segment_start(found: Any) -> int | None:
    """The LSN where the oldest WAL segment in pg_wal starts ([name, wal_segment_size] or None)."""
    if not found or not found[0] or not found[1]:
        return None
    name, size = str(found[0]), int(found[1])
    return (int(name[8:16], 16) << 32) + int(name[16:24], 16) * size


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
