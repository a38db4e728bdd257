"""The closed set of actions the core can ask for, and the Decision it returns.

A Decision's actions run in list order and the executor stops at the first
failure, so ordering contracts are written as list order.  The contracts the
rules rely on are:

* ``Fence`` comes before ``ReleaseLeader``: writes stop before anyone else may lead.
* ``AcquireLeader`` (or holding the lease) comes before ``Promote``.
* ``SetSyncStandbys`` adds a standby in PostgreSQL before ``PublishSync`` names it,
  and ``PublishSync`` removes it before PostgreSQL stops waiting for it.
* ``HandoffLeader`` comes after the old primary stopped and the candidate caught up.
* ``PausePgBouncer`` before ``StopPostgres``; ``ResumePgBouncer`` is always run
  by the executor once a switchover ends, even on failure.
* A PgBouncer action that fails does not stop the rest of the decision (nothing
  after it depends on it, and a PgBouncer that is down must not hold up callbacks
  and intents); the core decides it again on the next loop.

Long actions (``InitDB``, ``Clone``, ``Rewind``, ``StartPostgres``, ``Promote``,
``RestartPostgres``) run in the background; while one runs the core sees
``LocalState.task`` and waits, and the lease keeps being renewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Action:
    """Base class; every concrete action is a frozen dataclass below."""

    @property
    def name(self) -> str:
        return type(self).__name__


# --- DCS: initialization and leadership -------------------------------------------


@dataclass(frozen=True)
class ClaimInitialize(Action):
    """Race for /initialize with a create_revision == 0 transaction."""


@dataclass(frozen=True)
class PublishInitialized(Action):
    """Record the system identifier of the freshly initialized cluster at /initialize."""

    system_id: str


@dataclass(frozen=True)
class SeedConfig(Action):
    """Write the cluster-wide configuration from this node's file if /config is absent."""


@dataclass(frozen=True)
class AcquireLeader(Action):
    """Take /leader with our lease (transaction on create_revision == 0)."""


@dataclass(frozen=True)
class ReleaseLeader(Action):
    """Delete /leader if it is still ours."""


@dataclass(frozen=True)
class HandoffLeader(Action):
    """Rewrite /leader to ``candidate`` bound to the candidate's own lease (switchover)."""

    candidate: str


@dataclass(frozen=True)
class RevokeDeadLeader(Action):
    """Delete /leader of a leader proven dead (its API and PostgreSQL refuse connections)."""

    leader: str
    mod_revision: int


@dataclass(frozen=True)
class PublishSync(Action):
    """Write /sync: the members that may be promoted without losing acknowledged writes."""

    standbys: tuple[str, ...]
    quorum: int


@dataclass(frozen=True)
class SetSwitchoverPhase(Action):
    phase: str


@dataclass(frozen=True)
class ClearSwitchover(Action):
    """Delete /switchover (done, refused or obsolete); ``outcome`` is logged and published first
    in our member key (``last_switchover_outcome``), where the CLI reads the verdict."""

    outcome: str


@dataclass(frozen=True)
class AppendHistory(Action):
    """Append a promotion to /history: the timeline that ended, its last LSN, and why."""

    reason: str


@dataclass(frozen=True)
class RetractHistory(Action):
    """Remove our own latest /history entry, a promotion to ``timeline + 1`` that never happened."""

    timeline: int


@dataclass(frozen=True)
class CompleteIntent(Action):
    """Remove a member intent (restart, reinitialize, reload) once carried out or refused."""

    intent_id: str
    outcome: str


# --- PostgreSQL -------------------------------------------------------------------


@dataclass(frozen=True)
class InitDB(Action):
    """initdb, start as primary, create the replication role (background task)."""


@dataclass(frozen=True)
class Clone(Action):
    """pg_basebackup from ``source`` into an empty data directory (background task)."""

    source: str


@dataclass(frozen=True)
class WipeDataDir(Action):
    """Move the data directory aside so that it can be cloned again."""

    reason: str


@dataclass(frozen=True)
class Rewind(Action):
    """pg_rewind against ``source`` (background task); the result shows in LocalState.task."""

    source: str


@dataclass(frozen=True)
class StartPostgres(Action):
    """Start PostgreSQL; as a replica of ``upstream`` when role is replica (background)."""

    role: Literal["primary", "replica"]
    upstream: str | None = None


@dataclass(frozen=True)
class StopPostgres(Action):
    mode: Literal["fast", "immediate"] = "fast"
    # Take a checkpoint first, while still writable, so the shutdown is short.
    checkpoint_first: bool = False


@dataclass(frozen=True)
class Checkpoint(Action):
    """CHECKPOINT while still writable, so that a following shutdown is short."""


@dataclass(frozen=True)
class RestartPostgres(Action):
    """Restart in the same role (pending parameters, operator request)."""


@dataclass(frozen=True)
class ReloadPostgres(Action):
    """Write the managed configuration files and reload."""


@dataclass(frozen=True)
class Fence(Action):
    """Stop accepting writes now: immediate shutdown of a primary that may lose its lease."""

    reason: str


@dataclass(frozen=True)
class Promote(Action):
    """pg_promote after replaying all received WAL (background)."""


@dataclass(frozen=True)
class PrePromote(Action):
    """Run the pre_promote hook (background); a non-zero exit, a timeout or a failure to start
    vetoes the promotion.  Its own step so that a veto comes before the history entry."""


@dataclass(frozen=True)
class Follow(Action):
    """Point a running replica at ``upstream`` (rewrite primary_conninfo and reload)."""

    upstream: str


@dataclass(frozen=True)
class NextSource(Action):
    """Standby leader: try the other site's hosts from the next one on (rewrite primary_conninfo, reload)."""


@dataclass(frozen=True)
class SyncSlots(Action):
    """On the primary: physical slots exist for exactly these members.  ``keep``: slots the
    permanent-slot plan handles (``slots:``, ``ignore_slots``), never dropped as a member's."""

    members: tuple[str, ...]
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlotOp:
    """One step of the permanent-slot plan (core/slots.py), with the slot row that chose it."""

    kind: Literal["create_physical", "create_logical", "advance", "copy", "drop"]
    name: str
    plugin: str = ""
    database: str = ""
    lsn: int = 0
    # PostgreSQL 17+: create the logical slot as a failover slot (the server syncs it to standbys).
    failover: bool = False
    rule_id: str = ""


@dataclass(frozen=True)
class ManageSlots(Action):
    """Carry out the permanent-slot plan on this member (copies restart PostgreSQL, in a task)."""

    ops: tuple[SlotOp, ...]


@dataclass(frozen=True)
class SetSyncStandbys(Action):
    """Set synchronous_standby_names (empty tuple: asynchronous; '*' entry: block writes)."""

    standbys: tuple[str, ...]
    quorum: int
    mode: Literal["first", "any"] = "first"


# --- Routing ----------------------------------------------------------------------


@dataclass(frozen=True)
class PausePgBouncer(Action):
    """PAUSE the local PgBouncer for switchover ``switchover_id`` and publish that it is paused."""

    switchover_id: str


@dataclass(frozen=True)
class ResumePgBouncer(Action):
    """Repoint the local PgBouncer at ``leader``, RELOAD and RESUME."""

    leader: str | None


@dataclass(frozen=True)
class RepointPgBouncer(Action):
    """Point the local PgBouncer at ``leader`` and drop server connections to anyone else."""

    leader: str | None


@dataclass(frozen=True)
class SetVip(Action):
    """Hold (``present``) or drop the virtual IP; adding it sends a gratuitous ARP."""

    present: bool


@dataclass(frozen=True)
class ArmWatchdog(Action):
    """Tell the watchdog to fence PostgreSQL unless renewed before the lease deadline."""


@dataclass(frozen=True)
class DisarmWatchdog(Action):
    pass


@dataclass(frozen=True)
class RequestFailsafe(Action):
    """Ask every member to confirm us as leader while the DCS is unreachable."""


@dataclass(frozen=True)
class RunCallback(Action):
    """Run a user hook in the background: on_start, on_stop, on_role_change, on_reload."""

    event: Literal["on_start", "on_stop", "on_role_change", "on_reload"]
    role: str


@dataclass(frozen=True)
class PollPeers(Action):
    """Ask every member for its WAL position and liveness; the answers feed the next loop."""


ALL_ACTIONS: tuple[type[Action], ...] = tuple(
    cls for cls in list(globals().values()) if isinstance(cls, type) and issubclass(cls, Action) and cls is not Action
)


@dataclass(frozen=True)
class Decision:
    """What the core decided: actions to run in order, the rule that chose them, and why."""

    actions: tuple[Action, ...]
    rule_id: str
    reason: str
    # Seconds until the agent should run the next loop at the latest.
    wake_in: float | None = None
    # Keep a finished background task's result for the next loops (Rule.keeps_task_result).
    keeps_task_result: bool = False
