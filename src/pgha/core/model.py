"""Frozen inputs of the decision core: the cluster as read from the DCS, and this node.

Nothing here does I/O.  Times are plain floats supplied by the caller:
``*_at`` fields are wall-clock epoch seconds (comparable across hosts, used
only for display and schedules), ``*_deadline``/``*_mono`` fields are
``time.monotonic()`` seconds of this host (used for every safety timeout).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from pgha.core.schedule import BackupPolicy

SyncMode = Literal["off", "on", "strict", "quorum"]


@dataclass(frozen=True)
class Tags:
    """Per-node tags, published in the member key."""

    # Never promote this node automatically or by switchover.
    nofailover: bool = False
    # Tie-breaker between equally advanced candidates: higher wins.
    failover_priority: int = 1
    # Never choose this node as a synchronous standby.
    nosync: bool = False
    # Not used by pgha; shown in `list` and matched by /replica?tag_KEY=VALUE.
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterConfig:
    """Cluster-wide settings kept at /pgha/<cluster>/config (editable with edit-config)."""

    # Timing preset the settings below default to (PROFILES): "default" is cheap at rest and rides
    # out etcd hiccups (a silent host death is noticed within ttl); "fast" (ttl 2) in about 2.5 s.
    profile: Literal["default", "fast"] = "default"
    # Seconds the leader lease lives without renewal (a silent host death fails over within it).
    ttl: float = 30.0
    # Seconds between two full reconciles when nothing wakes the agent earlier (watch events, the
    # postmaster or WAL receiver exiting, intents and finished tasks wake it at once).
    loop_wait: float = 10.0
    # Seconds one DCS or PostgreSQL operation may retry before it counts as failed.
    retry_timeout: float = 3.0
    # A primary fences itself this many seconds before its lease could expire.
    fence_margin: float = 2.0
    # Seconds between two lease renewals; 0: min(ttl/3, 2 * loop_wait).  A primary whose etcd
    # answers late has ttl - fence_margin - renew_interval before it must fence, so a short
    # ttl wants a short interval (one keepalive each time: cheap for a few clusters, not a fleet).
    renew_interval: float = 0.0
    # Bytes a replica may lag behind the last known primary position and still be promoted.
    maximum_lag_on_failover: int = 1024 * 1024
    synchronous_mode: SyncMode = "off"
    # How many synchronous standbys (ANY N in quorum mode).
    synchronous_node_count: int = 1
    # Keep the primary writable through an etcd outage while every member confirms it.
    failsafe_mode: bool = False
    # Seconds a crashed primary may take to restart locally before the cluster fails over.
    primary_start_timeout: float = 10.0
    use_pg_rewind: bool = True
    # When pg_rewind fails, wipe the data directory and clone again.
    clone_on_rewind_failure: bool = True
    # Maintenance mode: agents publish state but take no automatic action.
    pause: bool = False
    # Cluster-wide PostgreSQL parameters.
    parameters: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    # Scheduled backups and restore tests (core/schedule.py): backup.schedule.
    backup: BackupPolicy = field(default_factory=BackupPolicy)

    def problem(self) -> str | None:
        """One line naming the first invalid setting and the fix, or None."""
        if (found := self.backup.problem()) is not None:
            return found
        if self.ttl < 2:
            return f"ttl: {self.ttl} is too short; use at least 2 seconds"
        if self.loop_wait <= 0 or self.loop_wait * 2 > self.ttl:
            return f"loop_wait: {self.loop_wait} must be positive and at most half of ttl ({self.ttl})"
        if self.retry_timeout <= 0 or self.retry_timeout >= self.ttl:
            return f"retry_timeout: {self.retry_timeout} must be positive and below ttl ({self.ttl})"
        if not 0 < self.fence_margin < self.ttl - self.loop_wait:
            return f"fence_margin: {self.fence_margin} must be positive and below ttl - loop_wait"
        if self.renew_interval != 0 and not 0.05 <= self.renew_interval <= self.ttl / 3:
            return (f"renew_interval: {self.renew_interval} must be 0 (automatic) or 0.05 to ttl/3 "
                    f"({self.ttl / 3:g}) seconds")
        if self.maximum_lag_on_failover < 0:
            return "maximum_lag_on_failover: must be zero or more bytes"
        if self.synchronous_node_count < 1:
            return "synchronous_node_count: must be at least 1"
        if self.primary_start_timeout < 0:
            return "primary_start_timeout: must be zero or more seconds"
        return None

    def renewal_period(self) -> float:
        """Seconds between two lease renewals (``renew_interval``, or the automatic one)."""
        if self.renew_interval:
            return self.renew_interval
        return max(0.2, min(self.ttl / 3, self.loop_wait * 2))

    def keepalive_timeout(self, request_timeout: float) -> float:
        """Seconds one DCS server may take to answer a renewal: at most half of what a primary has
        for a late answer (ttl - fence_margin - renewal period), so after a server that does not
        answer, the next one still has time; never more than ``request_timeout``."""
        room = self.ttl - self.fence_margin - self.renewal_period()
        return min(request_timeout, max(0.2, room / 2))


# The timing settings each profile gives, unless the configuration sets them itself.
PROFILES: Mapping[str, Mapping[str, float]] = {
    "default": {"ttl": 30.0, "loop_wait": 10.0, "retry_timeout": 3.0, "fence_margin": 2.0, "renew_interval": 0.0},
    "fast": {"ttl": 2.0, "loop_wait": 0.25, "retry_timeout": 1.0, "fence_margin": 0.5, "renew_interval": 0.2},
}


class Role(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"
    UNINITIALIZED = "uninitialized"


@dataclass(frozen=True)
class BackupEndpoint:
    """Where the pgBackRest repository host reaches a member (its ``pgbackrest server`` and PostgreSQL)."""

    host: str
    port: int
    data_dir: str
    pg_port: int
    socket_dir: str
    user: str = "postgres"


@dataclass(frozen=True)
class MemberInfo:
    """What one agent publishes at members/<name> (bound to that agent's lease)."""

    name: str
    role: Role = Role.UNINITIALIZED
    # running, streaming, starting, stopped, creating replica, rewinding, crashed, fenced…
    state: str = "stopped"
    timeline: int | None = None
    # Primary: current WAL write position.  Replica: received and replayed positions.
    wal_lsn: int | None = None
    received_lsn: int | None = None
    replayed_lsn: int | None = None
    api_url: str = ""
    host: str = ""
    port: int = 0
    tags: Tags = Tags()
    rule_id: str = ""
    reason: str = ""
    pending_restart: bool = False
    # Name of the member this replica streams from.
    following: str | None = None
    lease_id: int = 0
    # Set when the agent has paused its PgBouncer for the switchover with this id.
    pgbouncer_paused_for: str = ""
    # Whether this member runs a PgBouncer that must be paused during a switchover.
    pgbouncer: bool = False
    version: str = ""
    # Its pre_promote hook vetoed its last promotion: the others must not wait for it to win.
    promote_vetoed: bool = False
    # How the last switchover this agent ended went ("refused: ...", "done: ...", "aborted: ..."),
    # published before /switchover is deleted so that whoever asked can read the verdict.
    last_switchover_id: str = ""
    last_switchover_outcome: str = ""
    # The /config revision this member's last decision was made with (0: not published, an
    # older agent), so that `pgha pause --wait` knows the member saw the change.
    config_revision: int = 0
    # With backup: configured, where the repository host reaches this member to take backups.
    backup: BackupEndpoint | None = None
    # The newest timeline whose .history file and first switched segment this member, as primary,
    # saw reach the repository (pgbackrest check after its promotion); 0: none yet.
    archived_timeline: int = 0

    @property
    def lsn(self) -> int:
        """The most advanced position this member is known to have (for ranking)."""
        return max(x or 0 for x in (self.wal_lsn, self.received_lsn, self.replayed_lsn))


@dataclass(frozen=True)
class Leader:
    name: str
    lease_id: int
    mod_revision: int


@dataclass(frozen=True)
class SyncState:
    """/sync: who may be promoted without losing acknowledged writes.

    ``standbys`` are the members that were synchronous with ``leader``; in
    quorum mode ``quorum`` of them acknowledge every commit.
    """

    leader: str
    standbys: tuple[str, ...] = ()
    quorum: int = 0
    mod_revision: int = 0


@dataclass(frozen=True)
class Switchover:
    """/switchover: an operator's request to move the primary."""

    id: str
    kind: Literal["switchover", "failover"] = "switchover"
    leader: str | None = None
    candidate: str | None = None
    scheduled_at: float | None = None
    # Progress written by the current leader: requested, pausing, demoting.
    phase: str = "requested"
    # Wall-clock time the phase was entered (bounds each phase).
    phase_at: float | None = None


@dataclass(frozen=True)
class BackupRequest:
    """/backup/request: an operator's request for a backup, carried out by the repository host."""

    id: str
    type: Literal["full", "diff", "incr"] = "full"
    # Wall-clock epoch seconds of the request.
    requested_at: float = 0.0


@dataclass(frozen=True)
class MemberIntent:
    """/intents/<member>: restart or reinitialize requested for one member."""

    action: Literal["restart", "reinitialize", "reload"]
    id: str
    scheduled_at: float | None = None
    only_if_pending: bool = False
    role: str | None = None
    from_leader: bool = False


@dataclass(frozen=True)
class ClusterView:
    """One immutable snapshot of /pgha/<cluster>/, read once per loop."""

    name: str
    revision: int = 0
    # The system identifier once the cluster is initialized.
    system_id: str | None = None
    # Member racing to initialize (while system_id is still unset).
    initializing: str | None = None
    leader: Leader | None = None
    members: Mapping[str, MemberInfo] = field(default_factory=dict)
    config: ClusterConfig = ClusterConfig()
    # The DCS revision /config was last written at (0 when there is none: defaults).
    config_revision: int = 0
    sync: SyncState | None = None
    switchover: Switchover | None = None
    # The DCS revision /switchover was last written at (0 when there is none).
    switchover_revision: int = 0
    intents: Mapping[str, MemberIntent] = field(default_factory=dict)
    # From /history: timeline that ended -> the LSN where the next one forked off.
    forks: Mapping[int, int] = field(default_factory=dict)
    # The member that became leader last (newest history entry, or the initializer).
    last_leader: str | None = None
    # Set when the last read of the DCS failed; the other fields are then the last good read.
    dcs_error: str | None = None


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
