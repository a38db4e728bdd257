"""Frozen inputs of the decision core: the cluster as read from the DCS, and this node.

Nothing here does I/O.  Times are plain floats supplied by the caller:
``*_at`` fields are wall-clock epoch seconds (comparable across hosts, used
only for display and schedules), ``*_deadline``/``*_mono`` fields are
``time.monotonic()`` seconds of this host (used for every safety timeout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, TypeVar

from pgha.core import names
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
    # Keep this node out of read load balancing: /replica, /read-only and /async answer 503 (Patroni's tag).
    noloadbalance: bool = False
    # New replicas clone from this member (a running replica) instead of the primary (Patroni's tag).
    clonefrom: bool = False
    # Preference for being chosen as a synchronous standby: higher first; 0 never (Patroni's tag).
    sync_priority: int = 1
    # Never stream: replay only what restore_command fetches from the archive (Patroni's tag); the
    # primary keeps no slot for it, it is never a synchronous standby and keeps no logical slots.
    nostream: bool = False
    # Not used by pgha; shown in `list` and matched by /replica?tag_KEY=VALUE.
    extra: Mapping[str, str] = field(default_factory=dict)


# The timing settings each profile gives, unless the configuration sets them itself.  "default" is
# also what ClusterConfig's fields default to: this table is the one place the timing defaults are
# written (docs/configuration.md's table and generate-config's comment are generated from it).
PROFILES: Mapping[str, Mapping[str, float]] = {
    # ttl 10 with a renewal every ttl/3: a silent host death fails over in about 9 s, a primary has
    # 10 - 2 - 3.3 = 4.7 s for a late etcd answer, and an idle agent sends 18 keepalives a minute.
    "default": {"ttl": 10.0, "loop_wait": 5.0, "retry_timeout": 3.0, "fence_margin": 2.0, "renew_interval": 0.0},
    "fast": {"ttl": 2.0, "loop_wait": 0.25, "retry_timeout": 1.0, "fence_margin": 0.5, "renew_interval": 0.2},
}
# What each profile is for, one line each (shown in docs/configuration.md and `pgha demo up --help`).
PROFILE_USES: Mapping[str, str] = {
    "default": "a silent host death fails over in about 9 s; cheap at rest, rides out 3 s etcd stalls",
    "fast": "a silent host death fails over in about 2.5 s, at five etcd requests a second per agent; "
            "for an etcd on a disk of its own (with a 3-member etcd add `ttl: 4`)",
}
_DEFAULT = PROFILES["default"]


def profile_config(name: str) -> ClusterConfig:
    """The settings of profile ``name`` with nothing set over them."""
    return ClusterConfig(**{"profile": name, **PROFILES[name]})  # type: ignore[arg-type]

T = TypeVar("T")


def _setting(default: T, doc: str) -> T:
    """A field with its default and the one line docs/configuration.md shows for it."""
    return field(default=default, metadata={"doc": doc})


# The built-in tags as Patroni names them, each defined once: shown in `list` and /patroni when they
# differ from their default, matched by ?tag_KEY=VALUE.
BOOL_TAGS = ("nofailover", "nosync", "noloadbalance", "clonefrom", "nostream")
INT_TAGS = ("failover_priority", "sync_priority")


# What PostgreSQL accepts as a slot name; plugin and database names are held to the same plain
# identifier shape (letters, digits, underscore; a database name may also hold '-') before any SQL.
SLOT_NAME_RE = re.compile(r"[a-z0-9_]{1,63}")
PLUGIN_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,63}")
DATABASE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")


@dataclass(frozen=True)
class SlotSpec:
    """One permanent replication slot (Patroni's ``slots:`` entry)."""

    type: Literal["physical", "logical"] = "physical"
    # Logical slots only: the output plugin (e.g. pgoutput, test_decoding) and the database.
    plugin: str = ""
    database: str = ""


@dataclass(frozen=True)
class IgnoreSlot:
    """One ``ignore_slots`` matcher (Patroni's format): a slot matching every field given is never
    dropped by pgha."""

    name: str = ""
    type: Literal["", "physical", "logical"] = ""
    plugin: str = ""
    database: str = ""

    def matches(self, name: str, type: str, plugin: str, database: str) -> bool:
        return all(not want or want == got for want, got in
                   ((self.name, name), (self.type, type), (self.plugin, plugin), (self.database, database)))


def slots_problem(slots: Mapping[str, SlotSpec]) -> str | None:
    """One line naming the first bad ``slots:`` entry and the fix, or None."""
    for name, spec in slots.items():
        if not SLOT_NAME_RE.fullmatch(name):
            return (f"slots.{name}: not a valid slot name; use 1 to 63 lowercase letters, digits "
                    "or underscores")
        if spec.type == "physical":
            if spec.plugin or spec.database:
                return f"slots.{name}: a physical slot takes no plugin or database; remove them"
            continue
        if not PLUGIN_NAME_RE.fullmatch(spec.plugin):
            return (f"slots.{name}.plugin: {spec.plugin!r} is not a plugin name; give one such as "
                    "pgoutput or test_decoding (letters, digits, underscores)")
        if not DATABASE_NAME_RE.fullmatch(spec.database):
            return (f"slots.{name}.database: {spec.database!r} is not a database name pgha accepts; "
                    "use letters, digits, '_' or '-' (63 at most)")
    return None


@dataclass(frozen=True)
class ClusterConfig:
    """Cluster-wide settings kept at /pgha/<cluster>/config (editable with edit-config).

    Each field's ``doc`` is its line in docs/configuration.md (generated by ``pgha.core.defaults``).
    """

    profile: Literal["default", "fast"] = _setting(
        "default", "timing preset for the five settings below (a key set explicitly wins over it)")
    ttl: float = _setting(
        _DEFAULT["ttl"], "seconds the leader lease lives without renewal (≥ 2); a host that vanishes silently "
        "is replaced within about this long")
    loop_wait: float = _setting(
        _DEFAULT["loop_wait"], "seconds between two full reconciles when nothing wakes the agent earlier "
        "(≤ ttl/2). Not the failure-detection path: DCS watch events, the postmaster or WAL receiver "
        "exiting, operator intents and finished tasks wake the agent at once")
    retry_timeout: float = _setting(
        _DEFAULT["retry_timeout"], "seconds one etcd or PostgreSQL operation may take (< ttl)")
    fence_margin: float = _setting(
        _DEFAULT["fence_margin"], "a primary fences itself this long before its lease could expire")
    renew_interval: float = _setting(
        _DEFAULT["renew_interval"], "seconds between two lease renewals; 0: min(ttl/3, 2 * loop_wait). A "
        "primary whose etcd answers late has `ttl - fence_margin - renew_interval` before it must fence, so "
        "a short ttl wants a short interval (0.05 to ttl/3; each renewal is one etcd request)")
    maximum_lag_on_failover: int = _setting(
        1024 * 1024, "bytes a replica may lag behind the last known primary position and still be promoted")
    synchronous_mode: SyncMode = _setting(
        "off", "`off`, `on`, `strict` (block writes rather than go asynchronous), `quorum`")
    synchronous_node_count: int = _setting(1, "number of synchronous standbys (`ANY N` in quorum mode)")
    failsafe_mode: bool = _setting(
        False, "keep the primary writable through an etcd outage while every member confirms it")
    primary_start_timeout: float = _setting(
        10.0, "seconds a crashed primary may take to restart in place before the cluster fails over")
    use_pg_rewind: bool = _setting(True, "rewind a former primary instead of cloning it")
    clone_on_rewind_failure: bool = _setting(
        True, "when pg_rewind fails, move the data directory aside and clone afresh")
    pause: bool = _setting(
        False, "maintenance mode: agents publish state but take no automatic action (`pgha pause` / `resume`)")
    parameters: Mapping[str, str | int | float | bool] = field(
        default_factory=dict, metadata={"doc": "PostgreSQL parameters for every node"})
    maximum_lag_on_syncnode: int = _setting(
        -1, "bytes a synchronous standby may lag (by its flush position) behind the most advanced replica, or "
        "the primary when only one streams, before another standby replaces it; -1 or 0: never (Patroni's "
        "setting and meaning)")
    check_timeline: bool = _setting(
        True, "refuse to promote a member on an older timeline than the cluster's latest. Patroni's default is "
        "false; pgha keeps checking unless set false (then a member that missed a promotion may be promoted, "
        "and what the newer timeline wrote is lost)")
    slots: Mapping[str, SlotSpec] = field(default_factory=dict, metadata={
        "doc": "permanent replication slots, Patroni's format: `NAME: {type: physical}` or `NAME: {type: "
               "logical, plugin: PLUGIN, database: DB}`; kept on the primary and on every member that could "
               "be promoted (see below)"})
    ignore_slots: tuple[IgnoreSlot, ...] = field(default=(), metadata={
        "doc": "slots pgha never drops, Patroni's format: a list of matchers, each with any of `name`, `type`, "
               "`plugin`, `database` (a slot matching every field an entry gives is left alone)"})
    backup: BackupPolicy = field(default_factory=BackupPolicy, metadata={
        "doc": "scheduled backups and restore tests, e.g. `{schedule: {full: \"weekly sun 01:00\", incr: \"daily "
               "01:00\", verify: \"daily 03:00\"}}` (operations.md, \"Scheduled backups\")"})

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
                    f"({self.ttl / 3:.3g}) seconds")
        if self.maximum_lag_on_failover < 0:
            return "maximum_lag_on_failover: must be zero or more bytes"
        if self.maximum_lag_on_syncnode < -1:
            return "maximum_lag_on_syncnode: must be -1 or 0 (off) or a number of bytes"
        if self.synchronous_node_count < 1:
            return "synchronous_node_count: must be at least 1"
        if self.primary_start_timeout < 0:
            return "primary_start_timeout: must be zero or more seconds"
        bad_parameter = names.parameters_problem(self.parameters)
        if bad_parameter is not None:
            return f"parameters: {bad_parameter}"
        if (problem := slots_problem(self.slots)) is not None:
            return problem
        logical = sorted(n for n, s in self.slots.items() if s.type == "logical")
        if logical and str(self.parameters.get("wal_level", "")) != "logical":
            return (f"slots.{logical[0]}: logical slots need parameters.wal_level: logical; "
                    "set it (the next restart applies it)")
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
    # PostgreSQL's server_version_num while it runs (0: not running or not read yet).
    server_version: int = 0
    # Its pre_promote hook vetoed its last promotion: the others must not wait for it to win.
    promote_vetoed: bool = False
    # How the last switchover this agent ended went ("refused: ...", "done: ...", "aborted: ..."),
    # published before /switchover is deleted so that whoever asked can read the verdict.
    last_switchover_id: str = ""
    last_switchover_outcome: str = ""
    # The /config revision this member's last decision was made with (0: not published, an
    # older agent), so that `pgha pause --wait` knows the member saw the change.
    config_revision: int = 0
    # Primary only: the position of each permanent slot (confirmed_flush_lsn of a logical slot,
    # restart_lsn of a physical one), which the replicas advance their copies to.
    slots: Mapping[str, int] = field(default_factory=dict)
    # Primary only: the restart_lsn of each permanent logical slot (the oldest WAL a copy needs).
    slot_restart: Mapping[str, int] = field(default_factory=dict)
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
