"""What the agent remembers between loops, and the one pure function that moves it forward.

The model is etcd-io/raft's Ready/Advance contract: the core owns every state
transition; the I/O layer only carries out actions and *reports* what happened.

* ``AgentMemory`` is everything an agent carries from one loop to the next (a
  frozen value; the agent holds exactly one and replaces it).
* Handlers of the executor, background tasks and the REST API report typed
  ``Outcome`` values; nothing outside this module assigns memory.
* ``advance(memory, outcomes, observation, now)`` folds the outcomes in and
  derives the next ``LocalState``, including every judgement that depends on
  time: whether PostgreSQL crashed or was stopped on purpose, since when a
  replica has not streamed, whether a pre_promote veto still holds, whether
  peer polls are fresh enough to act on, and the clone back-off.

Like the rest of the core it reads no clock: ``now`` is the caller's
monotonic time, so simulations run it under virtual time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import reduce

from pgha.core.model import (
    ClusterConfig,
    ClusterView,
    LocalPostgres,
    LocalState,
    PeerStatus,
    PgRunState,
    Tags,
    TaskState,
)

# Seconds after a failed clone before the next attempt (the leader may still be starting).
CLONE_BACKOFF = 10.0
# Seconds poll answers count as "now".  A poll wakes the loop at once, so its answers are used
# within moments; this bound is not tied to loop_wait, which may be long (a reconcile interval).
POLL_FRESH = 2.0
# A stop the agent asked for this many seconds before PostgreSQL was first seen down still
# counts as on purpose (the loop notices the stop a little after it happened).
STOP_GRACE = 1.0


@dataclass(frozen=True)
class AgentMemory:
    """Everything an agent remembers between loops (monotonic times of this host)."""

    # Since when PostgreSQL has been down with no background task running (None: up or busy).
    down_since: float | None = None
    # When the agent last stopped PostgreSQL itself (a stop that is not a crash).
    stopped_on_purpose_at: float | None = None
    # Since when a running replica has not been streaming.
    not_streaming_since: float | None = None
    # How many hosts of standby_cluster.host the standby leader skips (pgha.core.standby.rotated).
    source_turn: int = 0
    # The role on_start / on_role_change last ran for (None: not yet started).
    announced_role: str | None = None
    # The switchover id our PgBouncer is paused for ("" when not paused).
    pgbouncer_paused_for: str = ""
    # The member our PgBouncer points at (None: not pointed since the agent started).
    pgbouncer_target: str | None = None
    # Intents carried out (by id), so that each one is done once.
    done_intents: frozenset[str] = frozenset()
    # Fingerprint of the parameters last written to PostgreSQL's files ("" before the first write).
    params_applied: str = ""
    # The members physical slots were last made to match (None: not since the agent started).
    slots_applied: tuple[str, ...] | None = None
    # Whether PostgreSQL ran as a primary at the last loop (None: not running), so that a change of
    # role between two loops makes the slots again.
    slots_primary: bool | None = None
    # synchronous_standby_names as last written.
    sync_names: str = ""
    # When the pre_promote hook last vetoed a promotion (None: no veto in force).
    promote_vetoed_at: float | None = None
    # When a clone last failed.
    clone_failed_at: float | None = None
    # "creating replica (NN%)" while a clone runs.
    clone_progress: str = ""
    # Failsafe: until when every member confirmed us as leader.
    failsafe_deadline: float | None = None
    # Failsafe: a leader that asked us to confirm it, and until when.
    vouched_leader: str | None = None
    vouched_until: float | None = None
    # The last switchover this agent ended, and how ("done: …", "refused: …", "aborted: …").
    last_switchover_id: str = ""
    last_switchover_outcome: str = ""
    # Whether we hold the VIP as far as we know, and when that was last checked.
    vip_held: bool | None = None
    vip_checked_at: float | None = None
    # The last answers of the other members, when they came, and the DCS revision they were asked at.
    peers: Mapping[str, PeerStatus] = field(default_factory=dict)
    peers_at: float | None = None
    peers_revision: int = 0


# --- outcomes: what the I/O layer reports ---------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Base class of everything the executor, a background task or the API can report."""


@dataclass(frozen=True)
class StoppedOnPurpose(Outcome):
    """The agent stopped (or is about to stop) PostgreSQL itself: not a crash."""

    at: float


@dataclass(frozen=True)
class Announced(Outcome):
    """on_start / on_role_change ran for ``role``."""

    role: str


@dataclass(frozen=True)
class BouncerPaused(Outcome):
    switchover_id: str


@dataclass(frozen=True)
class BouncerResumed(Outcome):
    """PgBouncer runs again, pointed at ``target`` (None: not repointed)."""

    target: str | None


@dataclass(frozen=True)
class BouncerPointed(Outcome):
    target: str


@dataclass(frozen=True)
class IntentDone(Outcome):
    intent_id: str


@dataclass(frozen=True)
class ParamsApplied(Outcome):
    """PostgreSQL's files now hold the parameters with this fingerprint."""

    key: str


@dataclass(frozen=True)
class SlotsApplied(Outcome):
    members: tuple[str, ...]


@dataclass(frozen=True)
class SyncNamesSet(Outcome):
    value: str


@dataclass(frozen=True)
class PrePromoteStarted(Outcome):
    """The pre_promote hook is asked again: an earlier veto no longer holds."""


@dataclass(frozen=True)
class PromoteVetoed(Outcome):
    at: float


@dataclass(frozen=True)
class CloneFailed(Outcome):
    at: float


@dataclass(frozen=True)
class CloneProgressed(Outcome):
    text: str


@dataclass(frozen=True)
class FailsafeConfirmed(Outcome):
    """Every member confirmed us as leader during a DCS outage: we may run until ``until``."""

    until: float


@dataclass(frozen=True)
class VouchedForLeader(Outcome):
    """We confirmed ``leader`` to itself during a DCS outage, valid until ``until``."""

    leader: str
    until: float


@dataclass(frozen=True)
class SwitchoverEnded(Outcome):
    switchover_id: str
    outcome: str


@dataclass(frozen=True)
class VipSet(Outcome):
    present: bool
    at: float


@dataclass(frozen=True)
class SourceTurned(Outcome):
    """The standby leader now tries the other site's hosts from the ``turn``-th on, since ``at``."""

    turn: int
    at: float


@dataclass(frozen=True)
class PeersPolled(Outcome):
    peers: Mapping[str, PeerStatus]
    at: float
    # ClusterView.revision of the loop that asked for the poll.
    revision: int


def apply(memory: AgentMemory, outcome: Outcome) -> AgentMemory:
    """Memory after one outcome."""
    m = memory
    match outcome:
        case StoppedOnPurpose(at=at):
            return replace(m, stopped_on_purpose_at=at)
        case Announced(role=role):
            return replace(m, announced_role=role)
        case BouncerPaused(switchover_id=sid):
            return replace(m, pgbouncer_paused_for=sid)
        case BouncerResumed(target=target):
            return replace(m, pgbouncer_paused_for="", pgbouncer_target=target or m.pgbouncer_target)
        case BouncerPointed(target=target):
            return replace(m, pgbouncer_target=target)
        case IntentDone(intent_id=iid):
            return replace(m, done_intents=m.done_intents | {iid})
        case ParamsApplied(key=key):
            return replace(m, params_applied=key)
        case SlotsApplied(members=members):
            return replace(m, slots_applied=members)
        case SyncNamesSet(value=value):
            return replace(m, sync_names=value)
        case PrePromoteStarted():
            return replace(m, promote_vetoed_at=None)
        case PromoteVetoed(at=at):
            return replace(m, promote_vetoed_at=at)
        case CloneFailed(at=at):
            return replace(m, clone_failed_at=at, clone_progress="")
        case CloneProgressed(text=text):
            return replace(m, clone_progress=text)
        case FailsafeConfirmed(until=until):
            return replace(m, failsafe_deadline=until)
        case VouchedForLeader(leader=leader, until=until):
            return replace(m, vouched_leader=leader, vouched_until=until)
        case SwitchoverEnded(switchover_id=sid, outcome=text):
            return replace(m, last_switchover_id=sid, last_switchover_outcome=text)
        case VipSet(present=present, at=at):
            return replace(m, vip_held=present, vip_checked_at=at)
        case SourceTurned(turn=turn, at=at):
            # Not streaming is counted again from the new order.
            return replace(m, source_turn=turn, not_streaming_since=at)
        case PeersPolled(peers=peers, at=at, revision=revision):
            return replace(m, peers=dict(peers), peers_at=at, peers_revision=revision)
    raise TypeError(f"unknown outcome {outcome!r}")  # pragma: no cover


def apply_all(memory: AgentMemory, outcomes: Iterable[Outcome]) -> AgentMemory:
    return reduce(apply, outcomes, memory)


# --- observation -> LocalState -------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What the agent read this loop (I/O), before any judgement."""

    name: str
    view: ClusterView
    # As PostgresNode.observe() returns it: a stopped server is STOPPED, never CRASHED.
    pg: LocalPostgres
    task: TaskState | None
    lease_deadline: float | None
    lease_id: int
    tags: Tags
    # The effective cluster configuration.
    config: ClusterConfig
    # Fingerprint of the parameters PostgreSQL should run with now.
    params_key: str
    pre_promote_hook: bool
    # Wall-clock now (epoch seconds), only for operator schedules.
    wall_now: float
    # bootstrap.adopt in the node file.
    adopt: bool = False


def peers_fresh(memory: AgentMemory, config: ClusterConfig, now: float) -> bool:
    """Polls answer "now" for POLL_FRESH seconds; older answers are not acted on."""
    return memory.peers_at is not None and now - memory.peers_at < POLL_FRESH


def veto_holds(memory: AgentMemory, view: ClusterView, name: str, config: ClusterConfig, now: float) -> bool:
    """A pre_promote veto holds for this election: until another member leads, or for one ttl
    (then the hook is asked again, should nobody else have been able to take over)."""
    at = memory.promote_vetoed_at
    if at is None:
        return False
    other_leads = view.leader is not None and view.leader.name != name
    return not other_leads and now - at <= config.ttl


def crashed(pg: LocalPostgres, memory: AgentMemory, down_since: float | None) -> bool:
    """The postmaster of the primary we announced died without the agent asking it to."""
    if pg.run_state != PgRunState.STOPPED or down_since is None or memory.announced_role != "primary":
        return False
    stopped = memory.stopped_on_purpose_at
    return stopped is None or stopped < down_since - STOP_GRACE


def advance(memory: AgentMemory, outcomes: Iterable[Outcome], obs: Observation,
            now: float) -> tuple[AgentMemory, LocalState]:
    """Fold the reported outcomes into memory and derive this loop's LocalState."""
    m = apply_all(memory, outcomes)
    pg = obs.pg
    running = pg.run_state == PgRunState.RUNNING
    busy = obs.task is not None and obs.task.running
    down_since = None if running or busy else (m.down_since if m.down_since is not None else now)
    if crashed(pg, m, down_since):
        pg = replace(pg, run_state=PgRunState.CRASHED)
    pg = replace(pg, down_since_mono=down_since)
    streaming = running and pg.in_recovery and pg.receiver_status == "streaming"
    if running and pg.in_recovery and not streaming:
        not_streaming_since = m.not_streaming_since if m.not_streaming_since is not None else now
    else:
        not_streaming_since = None
    vetoed = veto_holds(m, obs.view, obs.name, obs.config, now)
    # Slots live in the data directory; a node that stopped or changed role (rewound, cloned,
    # restarted as a replica) may have lost them, so it makes them again.  A replica keeps slots too,
    # for the members that cascade from it (replicatefrom), so its record stands while it runs as one.
    # Fix (found by the fault suite, docs/faults-findings.md #3): a leader that lost its slots while it
    # was a replica never made them again, and its replicas could not stream.
    primary = running and pg.in_recovery is False
    same_role = running and m.slots_primary in (None, primary)
    m = replace(m, down_since=down_since, not_streaming_since=not_streaming_since,
                slots_applied=m.slots_applied if same_role else None, slots_primary=primary if running else None,
                promote_vetoed_at=m.promote_vetoed_at if vetoed else None)
    fresh = peers_fresh(m, obs.config, now)
    local = LocalState(
        name=obs.name,
        pg=pg,
        tags=obs.tags,
        lease_deadline=obs.lease_deadline,
        lease_id=obs.lease_id,
        task=obs.task,
        peers=m.peers if fresh else {},
        peers_revision=m.peers_revision if fresh else 0,
        failsafe_deadline=m.failsafe_deadline,
        failsafe_leader=m.vouched_leader,
        failsafe_leader_until=m.vouched_until,
        promote_vetoed=vetoed,
        pre_promote_hook=obs.pre_promote_hook,
        done_intents=m.done_intents,
        clone_backoff=m.clone_failed_at is not None and now - m.clone_failed_at < CLONE_BACKOFF,
        wall_now=obs.wall_now,
        pgbouncer_paused_for=m.pgbouncer_paused_for,
        announced_role=m.announced_role,
        config_applied=not m.params_applied or m.params_applied == obs.params_key,
        not_streaming_since=not_streaming_since,
        adopt=obs.adopt,
    )
    return m, local
