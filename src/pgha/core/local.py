"""Frozen inputs of the decision core about this node: its PostgreSQL, its task, its lease, its peers.

Observed once per loop by the agent (see pgha.core.model for the cluster side and the time conventions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pgha.core.tags import Tags


class PgRunState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    STARTING = "starting"
    # The postmaster died without the agent asking it to.
    CRASHED = "crashed"


class DataDir(StrEnum):
    EMPTY = "empty"  # missing or empty: needs initdb or clone
    VALID = "valid"  # has a cluster (PG_VERSION and global/pg_control)
    INVALID = "invalid"  # not empty but not a usable cluster


@dataclass(frozen=True)
class Replication:
    """One row of pg_stat_replication as seen on the primary."""

    application_name: str
    state: str
    sync_state: str
    flush_lsn: int | None
    replay_lsn: int | None


@dataclass(frozen=True)
class LocalSlot:
    """One row of pg_replication_slots on this node."""

    name: str
    type: str  # physical or logical
    plugin: str = ""
    database: str = ""
    active: bool = False
    restart_lsn: int | None = None
    confirmed_flush_lsn: int | None = None


@dataclass(frozen=True)
class LocalPostgres:
    """This node's PostgreSQL as observed at the start of the loop."""

    data_dir: DataDir = DataDir.EMPTY
    system_id: str | None = None
    run_state: PgRunState = PgRunState.STOPPED
    in_recovery: bool | None = None
    timeline: int | None = None
    wal_lsn: int | None = None
    received_lsn: int | None = None
    replayed_lsn: int | None = None
    # Status of the WAL receiver ("streaming", …) and who it streams from (member name).
    receiver_status: str | None = None
    following: str | None = None
    # The member primary_conninfo names, from the configuration files.
    configured_upstream: str | None = None
    # pg_controldata "Database cluster state"; when stopped, wal_lsn is the latest checkpoint location.
    control_state: str | None = None
    pending_restart: bool = False
    replication: tuple[Replication, ...] = ()
    synchronous_standby_names: str = ""
    # Monotonic time since when the postmaster has been down unexpectedly.
    down_since_mono: float | None = None
    # The data directory holds a cluster whose postgresql.conf pgha did not write (not adopted yet).
    unmanaged_conf: bool = False
    # Reported as Patroni reports them (/patroni, patroni_* metrics); no rule reads them.
    server_version: int = 0  # server_version_num, e.g. 150010
    postmaster_start: float | None = None  # epoch seconds of pg_postmaster_start_time()
    replay_timestamp: float | None = None  # epoch seconds of pg_last_xact_replay_timestamp()
    replay_paused: bool = False  # pg_is_wal_replay_paused()
    restore_command: bool = False  # a restore_command is set (archive recovery when not streaming)
    # pg_replication_slots while it runs, and the slots pgha created here (its pgha.slots record).
    slots: tuple[LocalSlot, ...] = ()
    owned_slots: frozenset[str] = frozenset()
    # A replica's oldest WAL position still in pg_wal (None: unknown, or a primary).
    wal_floor: int | None = None


class TaskKind(StrEnum):
    INITDB = "initdb"
    CLONE = "clone"
    REWIND = "rewind"
    START = "start"
    STOP = "stop"
    PROMOTE = "promote"
    RESTART = "restart"
    PRE_PROMOTE = "pre_promote"


@dataclass(frozen=True)
class TaskState:
    """A long action running in the background, or the result of the last one."""

    kind: TaskKind
    running: bool
    ok: bool | None = None
    detail: str = ""


@dataclass(frozen=True)
class PeerStatus:
    """How another member answered this agent just now (for election and liveness)."""

    name: str
    # "ok", "refused" (host up, nothing listening) or "timeout"
    api: str
    pg: str
    lsn: int | None = None
    timeline: int | None = None
    in_recovery: bool | None = None
    # What that member currently believes about leadership (for failsafe).
    sees_leader: str | None = None


@dataclass(frozen=True)
class LocalState:
    """Everything about this node the core needs, observed once per loop."""

    name: str
    pg: LocalPostgres = LocalPostgres()
    tags: Tags = Tags()
    # Monotonic time until which our own lease is certainly alive in etcd (None: no lease).
    lease_deadline: float | None = None
    lease_id: int = 0
    task: TaskState | None = None
    # Probes of the other members, filled when the leader looks gone or an election runs.
    peers: Mapping[str, PeerStatus] = field(default_factory=dict)
    # ClusterView.revision of the loop that asked for ``peers`` (0: unknown).  A poll proves a
    # leader dead only if that leader key was already there when the poll was asked for.
    peers_revision: int = 0
    # Failsafe: monotonic time until which every member confirmed us as leader.
    failsafe_deadline: float | None = None
    # Failsafe: a leader that asked us to confirm it, and until when (monotonic).
    failsafe_leader: str | None = None
    failsafe_leader_until: float | None = None
    # Whether the pre_promote hook vetoed the last promotion attempt.
    promote_vetoed: bool = False
    # Whether a pre_promote hook is configured (it then runs before any promotion).
    pre_promote_hook: bool = False
    # Intents already carried out (by id), so a restart is done once.
    done_intents: frozenset[str] = frozenset()
    # Whether a clone has failed so recently that we should not retry yet.
    clone_backoff: bool = False
    # Wall-clock now (epoch seconds), only for operator schedules.
    wall_now: float = 0.0
    # The switchover id our PgBouncer is paused for ("" when not paused).
    pgbouncer_paused_for: str = ""
    # The role we last ran on_start / on_role_change for (None: not yet started).
    announced_role: str | None = None
    # False when the cluster or node parameters changed since the files were last written.
    config_applied: bool = True
    # Monotonic time since when a running replica has not been streaming.
    not_streaming_since: float | None = None
    # bootstrap.adopt: take over a cluster pgha did not create (never initdb, never stop it).
    adopt: bool = False
