"""One table case per rule of the core (at least), and the ordering contracts of actions.py.

Each case is a plain ClusterView + LocalState; the expected value is the rule
id and the actions in order (by name, or by value where the fields matter).
A meta-test makes sure every row of RULES is hit by some case, so a new rule
without a case fails here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import pytest

from pgha.core import actions as A
from pgha.core.model import (
    ClusterView,
    DataDir,
    LocalState,
    MemberIntent,
    PgRunState,
    Switchover,
    Tags,
    TaskKind,
    TaskState,
)
from pgha.core.rules import RULES
from tests.unit.core_builders import (
    NOW,
    config,
    local,
    pg_empty,
    pg_primary,
    pg_replica,
    pg_stopped,
    poll,
    polls,
    primary,
    replica,
    replication,
    run,
    stopped,
    sync,
    tags,
    view,
)


@dataclass(frozen=True)
class Case:
    name: str
    view: ClusterView
    local: LocalState
    rule: str
    # Expected actions in order: a name compares the type only, an Action compares every field.
    actions: Sequence[str | A.Action]
    now: float = NOW


def healthy(leader: str = "a", lsn: int = 1000, tl: int = 1, **kw: object) -> ClusterView:
    """a (primary), b and c streaming from it."""
    members = [primary(leader, lsn, tl)] + [replica(n, leader, lsn, tl) for n in "abc" if n != leader]
    return view(*members, leader=leader, **kw)  # type: ignore[arg-type]


def nobody_leads(**kw: object) -> ClusterView:
    """The leader key expired: a's member key is gone, b and c are replicas of nobody."""
    return view(
        replica("b", None, 1000, state="running"),
        replica("c", None, 900, state="running"),
        leader=None,
        last_leader="a",
        **kw,
    )  # type: ignore[arg-type]


SW = Switchover(id="sw1", candidate="b")


def sw_view(phase: str, phase_at: float = 0.0, **kw: object) -> ClusterView:
    return healthy(switchover=replace(SW, phase=phase, phase_at=phase_at), **kw)


UPKEEP_REPLICA_B = [
    A.DisarmWatchdog(),
    A.SetVip(False),
    A.RepointPgBouncer("b"),
    A.RunCallback("on_start", "replica"),
]

CASES: list[Case] = [
    # ===== safety =====
    Case(
        "primary with 1.5 s of lease fences before anything else",
        healthy(),
        local("a", pg_primary(), lease_left=1.5),
        "fence-lease-expiring",
        ["Fence", A.SetVip(False), A.DisarmWatchdog()],
    ),
    Case(
        "primary whose lease is already gone fences",
        healthy(),
        local("a", pg_primary(), lease_left=-3.0),
        "fence-lease-expiring",
        ["Fence", "SetVip", "DisarmWatchdog"],
    ),
    Case(
        "primary cut off from the DCS fences at the margin",
        healthy(dcs_error="timeout"),
        local("a", pg_primary(), lease_left=2.0),
        "fence-lease-expiring",
        ["Fence", "SetVip", "DisarmWatchdog"],
    ),
    Case(
        "primary while b holds the leader key fences",
        healthy("b"),
        local("a", pg_primary()),
        "fence-not-leader",
        [A.Fence("b holds the leader key"), A.SetVip(False), A.DisarmWatchdog()],
    ),
    Case(
        "primary whose leader key is bound to another lease (it expires with it) fences",
        healthy(),
        replace(local("a", pg_primary()), lease_id=5),
        "fence-foreign-lease",
        [A.Fence("the leader key names us but is bound to a lease we do not hold"), A.SetVip(False),
         A.DisarmWatchdog()],
    ),
    Case(
        "stopped former primary, the key names it under a lease it lost: start nothing, wait for expiry",
        healthy(),
        replace(local("a", pg_stopped(was_primary=True, crashed=True)), lease_id=5),
        "idle",
        [],
    ),
    Case(
        "DCS down, failsafe on: ask the members to confirm us",
        healthy(dcs_error="timeout", cfg=config(failsafe_mode=True)),
        local("a", pg_primary()),
        "failsafe-confirm",
        [A.RequestFailsafe(), A.SetVip(True), A.ArmWatchdog()],
    ),
    Case(
        "DCS down, failsafe confirmed: no fence although the lease is nearly gone",
        healthy(dcs_error="timeout", cfg=config(failsafe_mode=True)),
        local("a", pg_primary(), lease_left=1.0, failsafe_deadline=NOW + 5),
        "failsafe-confirm",
        ["RequestFailsafe", "SetVip", "ArmWatchdog"],
    ),
    Case(
        "DCS down, lease valid: primary keeps serving",
        healthy(dcs_error="timeout"),
        local("a", pg_primary()),
        "dcs-down-primary-holds",
        [A.SetVip(True), A.ArmWatchdog()],
    ),
    Case(
        "DCS down: a replica changes nothing",
        healthy(dcs_error="timeout"),
        local("b", pg_replica("a")),
        "dcs-down-wait",
        [A.DisarmWatchdog(), A.SetVip(False)],
    ),
    Case(
        "DCS down with no leader: a replica does not start an election",
        nobody_leads(dcs_error="timeout"),
        local("b", pg_replica(None, streaming=False)),
        "dcs-down-wait",
        ["DisarmWatchdog", "SetVip"],
    ),
    # ===== busy =====
    Case(
        "a clone is running: wait, keeping PgBouncer pointed at the leader",
        healthy(),
        local("c", pg_empty(), task=TaskState(TaskKind.CLONE, running=True)),
        "task-running",
        [A.RepointPgBouncer("a")],
    ),
    Case(
        "busy restarting when a switchover begins: pause PgBouncer like every other member",
        sw_view("pausing"),
        local("c", pg_replica("a"), task=TaskState(TaskKind.RESTART, running=True)),
        "task-running",
        [A.PausePgBouncer("sw1")],
    ),
    Case(
        "old primary restarting as a replica after the handoff resumes its PgBouncer at the new primary",
        healthy("b"),
        local("a", pg_stopped(was_primary=True), task=TaskState(TaskKind.START, running=True),
              pgbouncer_paused_for="sw1", announced_role="primary"),
        "task-running",
        [A.ResumePgBouncer("b")],
    ),
    Case(
        "old primary restarting while the new leader still promotes: its PgBouncer stays paused",
        view(primary("a"), replica("b", None, state="promoting"), replica("c", "a"), leader="b"),
        local("a", pg_stopped(was_primary=True), task=TaskState(TaskKind.START, running=True),
              pgbouncer_paused_for="sw1", announced_role="primary"),
        "task-running",
        [],
    ),
    Case(
        "the switchover is still on: a busy member keeps its PgBouncer paused",
        sw_view("demoting"),
        local("c", pg_replica("a"), task=TaskState(TaskKind.RESTART, running=True),
              pgbouncer_paused_for="sw1"),
        "task-running",
        [],
    ),
    # ===== pause =====
    Case(
        "paused, our primary runs, no leader key: take it and nothing else",
        view(primary("a"), cfg=config(pause=True)),
        local("a", pg_primary()),
        "paused-leader-missing",
        [A.AcquireLeader()],
    ),
    Case(
        "paused leader keeps the VIP",
        healthy(cfg=config(pause=True)),
        local("a", pg_primary()),
        "paused",
        [A.SetVip(True)],
    ),
    Case(
        "paused: no fencing even with an expiring lease",
        healthy(cfg=config(pause=True)),
        local("a", pg_primary(), lease_left=0.5),
        "paused",
        [A.SetVip(True)],
    ),
    Case(
        "paused replica drops the VIP",
        healthy(cfg=config(pause=True)),
        local("b", pg_replica("a")),
        "paused",
        [A.SetVip(False)],
    ),
    # ===== bootstrap =====
    Case(
        "uninitialized cluster, empty data: race for /initialize",
        view(system_id=None),
        local("a", pg_empty()),
        "init-claim",
        [A.ClaimInitialize()],
    ),
    Case(
        "won /initialize with empty data: lease first, then initdb",
        view(system_id=None, initializing="a"),
        local("a", pg_empty()),
        "init-run-initdb",
        [A.AcquireLeader(), A.InitDB()],
    ),
    Case(
        "adopting a running primary: race for /initialize with its data",
        view(system_id=None),
        local("a", pg_primary(system_id="42"), adopt=True),
        "init-claim",
        [A.ClaimInitialize()],
    ),
    Case(
        "adopting a stopped primary's data: race for /initialize",
        view(system_id=None),
        local("a", pg_stopped(was_primary=True), adopt=True),
        "init-claim",
        [A.ClaimInitialize()],
    ),
    Case(
        "won /initialize to adopt a stopped primary's data: take the key, start it as primary",
        view(system_id=None, initializing="a"),
        local("a", pg_stopped(was_primary=True), adopt=True),
        "init-existing-start",
        [A.AcquireLeader(), A.StartPostgres("primary")],
    ),
    Case(
        "adopting a running primary, /initialize won: publish its system identifier, no restart",
        view(system_id=None, initializing="a"),
        local("a", pg_primary(system_id="42", unmanaged_conf=True), adopt=True),
        "init-publish",
        [A.AcquireLeader(), A.PublishInitialized("42"), A.SeedConfig()],
    ),
    Case(
        "adopting a running replica while nobody leads: wait for the primary's agent, never claim",
        view(system_id=None),
        local("b", pg_replica(None, streaming=True, configured_upstream=None), adopt=True),
        "init-adopt-wait",
        [],
    ),
    Case(
        "adopting a stopped replica's data: wait, never claim",
        view(system_id=None),
        local("b", pg_stopped(), adopt=True),
        "init-adopt-wait",
        [],
    ),
    Case(
        "adopting with an empty data directory: wait, never initdb",
        view(system_id=None),
        local("b", pg_empty(), adopt=True),
        "init-adopt-wait",
        [],
    ),
    Case(
        "existing data, uninitialized cluster, adopt not asked for: touch nothing",
        view(system_id=None),
        local("a", pg_primary(system_id="42")),
        "init-needs-adopt",
        [],
    ),
    Case(
        "existing replica data, adopt not asked for: never claim (it would be promoted)",
        view(system_id=None),
        local("a", pg_stopped()),
        "init-needs-adopt",
        [],
    ),
    Case(
        "our new primary runs: publish the system identifier",
        view(system_id=None, initializing="a", leader="a"),
        local("a", pg_primary(system_id="42")),
        "init-publish",
        [A.AcquireLeader(), A.PublishInitialized("42"), A.SeedConfig()],
    ),
    Case(
        "someone else initializes: wait",
        view(system_id=None, initializing="b"),
        local("a", pg_empty()),
        "init-wait",
        [],
    ),
    # ===== data =====
    Case(
        "adopting, but our data belongs to another system: refuse, leave it running",
        healthy(),
        local("c", pg_primary(system_id="999", unmanaged_conf=True), adopt=True),
        "adopt-foreign",
        [],
    ),
    Case(
        "an adopted replica (same system, files not pgha's yet) follows the leader in pgha's form",
        healthy(),
        local("c", pg_replica("a", configured_upstream=None, unmanaged_conf=True), adopt=True),
        "replica-follow",
        ["Follow", "DisarmWatchdog", "SetVip", "RepointPgBouncer", "RunCallback"],
    ),
    Case(
        "adopting a primary while another member leads: not fenced, the operator decides",
        healthy(),
        local("c", pg_primary(unmanaged_conf=True), adopt=True),
        "unmanaged-primary-conflict",
        [],
    ),
    Case(
        "adopting a running primary while etcd is unreachable: not fenced, no VIP",
        view(system_id=None, dcs_error="connection refused"),
        local("a", pg_primary(unmanaged_conf=True), lease_left=None, adopt=True),
        "dcs-down-wait",
        [],
    ),
    Case(
        "a primary whose files were replaced, adopt not asked for: still pgha's, fenced",
        healthy(),
        local("c", pg_primary(unmanaged_conf=True)),
        "fence-not-leader",
        ["Fence", "SetVip", "DisarmWatchdog"],
    ),
    Case(
        "running on another system's data: stop and leave it alone",
        healthy(),
        local("c", pg_replica("a", system_id="999")),
        "data-foreign",
        [A.StopPostgres("fast")],
    ),
    Case(
        "stopped on another system's data: do nothing",
        healthy(),
        local("c", pg_stopped(system_id="999")),
        "data-foreign",
        [],
    ),
    Case(
        "broken data directory: move it aside",
        healthy(),
        local("c", replace(pg_empty(), data_dir=DataDir.INVALID)),
        "data-invalid",
        ["WipeDataDir"],
    ),
    Case(
        "reinitialize requested: stop, wipe, complete the intent",
        healthy(intents={"c": MemberIntent("reinitialize", "i1")}),
        local("c", pg_replica("a")),
        "reinit-requested",
        [
            A.StopPostgres("fast"),
            A.WipeDataDir("reinitialize requested"),
            A.CompleteIntent("i1", "reinitialized"),
        ],
    ),
    # ===== switchover =====
    Case(
        "switchover to a non-member is refused with the reason",
        healthy(switchover=Switchover("sw1", candidate="zz")),
        local("a", pg_primary(), peers=polls(poll("b"), poll("c"))),
        "sw-refuse",
        [A.ClearSwitchover("refused: candidate zz is not a member of the cluster")],
    ),
    Case(
        "switchover naming another leader is refused",
        healthy(switchover=Switchover("sw1", leader="b")),
        local("a", pg_primary()),
        "sw-refuse",
        ["ClearSwitchover"],
    ),
    Case(
        "a switchover a former leader began is dropped by the new leader",
        healthy(switchover=Switchover("sw1", leader="b", candidate="a", phase="demoting")),
        local("a", pg_primary()),
        "sw-stale",
        [A.ClearSwitchover("obsolete: started by a former leader")],
    ),
    Case(
        "switchover due, candidates not asked yet: poll them before stopping writes",
        sw_view("requested"),
        local("a", pg_primary()),
        "sw-poll-candidate",
        [A.PollPeers()],
    ),
    Case(
        "switchover due, the last poll predates the request: poll again",
        sw_view("requested", switchover_revision=50),
        local("a", pg_primary(), peers=polls(poll("b", 10), poll("c")), peers_revision=49),
        "sw-poll-candidate",
        [A.PollPeers()],
    ),
    Case(
        "switchover due, candidate answered: checkpoint, enter pausing, pause our PgBouncer",
        sw_view("requested"),
        local("a", pg_primary(), peers=polls(poll("b"), poll("c"))),
        "sw-begin",
        [A.Checkpoint(), A.SetSwitchoverPhase("pausing"), A.PausePgBouncer("sw1")],
    ),
    Case(
        "candidate's published position is old, but it answered the poll caught up: go ahead",
        replace(sw_view("requested", lsn=5_000_000),
                members={**healthy(lsn=5_000_000).members, "b": replica("b", "a", 1000)}),
        local("a", pg_primary(5_000_000), peers=polls(poll("b", 5_000_000), poll("c", 5_000_000))),
        "sw-begin",
        ["Checkpoint", "SetSwitchoverPhase", "PausePgBouncer"],
    ),
    Case(
        "candidate answered the poll far behind (more than maximum_lag_on_failover): refused",
        sw_view("requested", lsn=5_000_000),
        local("a", pg_primary(5_000_000), peers=polls(poll("b", 1000), poll("c", 5_000_000))),
        "sw-refuse",
        [A.ClearSwitchover("refused: candidate b lags 4999000 bytes, more than maximum_lag_on_failover")],
    ),
    Case(
        "switchover in a one-member cluster: refused at once (nobody to poll)",
        view(primary("a"), leader="a", switchover=Switchover("sw1")),
        local("a", pg_primary()),
        "sw-refuse",
        [A.ClearSwitchover("refused: no healthy replica can take over")],
    ),
    Case(
        "switchover to a candidate whose agent froze (its member key still looks healthy): refused",
        sw_view("requested"),
        local("a", pg_primary(), peers=polls(poll("b", None, api="timeout", in_recovery=None), poll("c"))),
        "sw-refuse",
        [A.ClearSwitchover("refused: candidate b does not answer (its agent's API: timeout)")],
    ),
    Case(
        "frozen candidate whose stale member key also shows lag: the poll's verdict is the reason",
        replace(sw_view("requested", lsn=5_000_000),
                members={**healthy(lsn=5_000_000).members, "b": replica("b", "a", 1000)}),
        local("a", pg_primary(5_000_000), peers=polls(poll("b", None, api="timeout", in_recovery=None))),
        "sw-refuse",
        [A.ClearSwitchover("refused: candidate b does not answer (its agent's API: timeout)")],
    ),
    Case(
        "switchover to a candidate whose PostgreSQL is down right now: refused",
        sw_view("requested"),
        local("a", pg_primary(), peers=polls(poll("b", None, pg="refused", in_recovery=None), poll("c"))),
        "sw-refuse",
        [A.ClearSwitchover("refused: candidate b does not run PostgreSQL as a replica (its agent says so now)")],
    ),
    Case(
        "switchover to any replica: a frozen one is passed over",
        healthy(switchover=Switchover("sw1")),
        local("a", pg_primary(), peers=polls(poll("b", None, api="timeout", in_recovery=None), poll("c"))),
        "sw-begin",
        ["Checkpoint", "SetSwitchoverPhase", "PausePgBouncer"],
    ),
    Case(
        "switchover to any replica when none answers a poll: refused",
        healthy(switchover=Switchover("sw1")),
        local("a", pg_primary(), peers=polls(poll("b", None, api="timeout", in_recovery=None),
                                              poll("c", None, api="refused", pg="refused", in_recovery=None))),
        "sw-refuse",
        [A.ClearSwitchover("refused: no healthy replica can take over")],
    ),
    Case(
        "scheduled switchover not yet due: steady leader",
        healthy(switchover=Switchover("sw1", candidate="b", scheduled_at=5000.0)),
        local("a", pg_primary(), wall_now=100.0, announced_role="primary"),
        "leader-steady",
        ["ArmWatchdog", "SetVip", "SyncSlots", "RepointPgBouncer"],
    ),
    Case(
        "every PgBouncer paused: drop the VIP and stop cleanly",
        sw_view("pausing"),
        local("a", pg_primary()),
        "sw-demote",
        [A.SetSwitchoverPhase("demoting"), A.SetVip(False), A.DisarmWatchdog(), A.StopPostgres("fast"),
         A.PollPeers()],
    ),
    Case(
        "PgBouncers not paused yet, 1 s in: wait",
        replace(
            sw_view("pausing", phase_at=99.0),
            members={**healthy().members, "c": replica("c", "a", pgbouncer=True)},
        ),
        local("a", pg_primary(), wall_now=100.0),
        "sw-wait-stop",
        [],
    ),
    Case(
        "PgBouncers not paused after 3 s: demote anyway",
        replace(
            sw_view("pausing", phase_at=97.0),
            members={**healthy().members, "c": replica("c", "a", pgbouncer=True)},
        ),
        local("a", pg_primary(), wall_now=100.0),
        "sw-demote",
        ["SetSwitchoverPhase", "SetVip", "DisarmWatchdog", "StopPostgres", "PollPeers"],
    ),
    Case(
        "shut down, candidate caught up: hand the key over",
        sw_view("demoting"),
        local("a", pg_stopped(1000, was_primary=True), peers=polls(poll("b", 1000))),
        "sw-handoff",
        [A.HandoffLeader("b")],
    ),
    Case(
        "stopped uncleanly (a hung shutdown finished with SIGQUIT): its checkpoint is not the end of"
        " the WAL, so a candidate 'caught up' to it may miss writes: never hand over",
        sw_view("demoting", phase_at=95.0),
        local("a", pg_stopped(1000, was_primary=True, crashed=True, control_state="in production"),
              peers=polls(poll("b", 1000)), wall_now=100.0),
        "sw-wait-catchup",
        [A.PollPeers()],
    ),
    Case(
        "switchover to any replica, shut down: hand over to the most advanced one that answered",
        replace(
            healthy(switchover=Switchover("sw1", phase="demoting", phase_at=0.0)),
            members={
                "a": primary("a"),
                "b": replica("b", None, state="running"),
                "c": replica("c", None, state="running"),
            },
        ),
        local("a", pg_stopped(1000, was_primary=True), peers=polls(poll("b", 990), poll("c", 1000))),
        "sw-handoff",
        [A.HandoffLeader("c")],
    ),
    Case(
        "switchover to any replica, shut down, nobody answered yet: poll (no crash)",
        replace(
            healthy(switchover=Switchover("sw1", phase="demoting", phase_at=0.0)),
            members={"a": primary("a"), "b": replica("b", None, state="running")},
        ),
        local("a", pg_stopped(1000, was_primary=True)),
        "sw-wait-catchup",
        [A.PollPeers()],
    ),
    Case(
        "shut down, candidate behind: ask it again",
        sw_view("demoting", phase_at=95.0),
        local("a", pg_stopped(1000, was_primary=True), peers=polls(poll("b", 900)), wall_now=100.0),
        "sw-wait-catchup",
        [A.PollPeers()],
    ),
    Case(
        "candidate never caught up: restart as primary, drop the request",
        sw_view("demoting", phase_at=80.0),
        local("a", pg_stopped(1000, was_primary=True), peers=polls(poll("b", 900)), wall_now=100.0),
        "sw-abort",
        [A.StartPostgres("primary"), "ClearSwitchover"],
    ),
    Case(
        "stop still running past the timeout: drop the request",
        sw_view("demoting", phase_at=80.0),
        local("a", pg_primary(), wall_now=100.0),
        "sw-abort",
        ["ClearSwitchover"],
    ),
    # ===== leader =====
    Case(
        "steady leader: watchdog, VIP, slots, routing, on_start",
        healthy(),
        local("a", pg_primary()),
        "leader-steady",
        [
            A.ArmWatchdog(),
            A.SetVip(True),
            A.SyncSlots(("b", "c")),
            A.RepointPgBouncer("a"),
            A.RunCallback("on_start", "primary"),
        ],
    ),
    Case(
        "steady leader after a promotion runs on_role_change once",
        healthy(),
        local("a", pg_primary(), announced_role="replica"),
        "leader-steady",
        [
            "ArmWatchdog",
            "SetVip",
            "SyncSlots",
            "RepointPgBouncer",
            A.RunCallback("on_role_change", "primary"),
        ],
    ),
    Case(
        "just promoted by a switchover, our member key still says promoting: resume our PgBouncer now",
        view(replica("a", None, state="promoting"), replica("b", "a"), replica("c", "a"), leader="a"),
        local("a", pg_primary(), announced_role="replica", pgbouncer_paused_for="sw1"),
        "leader-steady",
        [
            "ArmWatchdog",
            "SetVip",
            "SyncSlots",
            A.ResumePgBouncer("a"),
            A.RunCallback("on_role_change", "primary"),
        ],
    ),
    Case(
        "steady leader with changed parameters reloads",
        healthy(),
        local("a", pg_primary(), announced_role="primary", config_applied=False),
        "leader-steady",
        ["ArmWatchdog", "SetVip", "SyncSlots", "ReloadPostgres", "RepointPgBouncer"],
    ),
    Case(
        "steady leader carries out a restart intent",
        healthy(intents={"a": MemberIntent("restart", "r1")}),
        local("a", pg_primary(), announced_role="primary"),
        "leader-steady",
        [
            "ArmWatchdog",
            "SetVip",
            "SyncSlots",
            "RepointPgBouncer",
            A.RestartPostgres(),
            A.CompleteIntent("r1", "restarted"),
        ],
    ),
    Case(
        "restart intent only if pending, none pending: skipped",
        healthy(intents={"a": MemberIntent("restart", "r1", only_if_pending=True)}),
        local("a", pg_primary(), announced_role="primary"),
        "leader-steady",
        [
            "ArmWatchdog",
            "SetVip",
            "SyncSlots",
            "RepointPgBouncer",
            A.CompleteIntent("r1", "skipped: no restart pending"),
        ],
    ),
    Case(
        "reload intent for replicas only, on the leader: skipped",
        healthy(intents={"a": MemberIntent("reload", "r2", role="replica")}),
        local("a", pg_primary(), announced_role="primary"),
        "leader-steady",
        [
            "ArmWatchdog",
            "SetVip",
            "SyncSlots",
            "RepointPgBouncer",
            A.CompleteIntent("r2", "skipped: role is primary, not replica"),
        ],
    ),
    Case(
        "synchronous_mode on, fresh leader: name b in PostgreSQL first",
        healthy(cfg=config(synchronous_mode="on")),
        local("a", pg_primary(), announced_role="primary"),
        "leader-steady",
        ["ArmWatchdog", "SetVip", "SyncSlots", A.SetSyncStandbys(("b",), 1, "first"), "RepointPgBouncer"],
    ),
    Case(
        "synchronous_mode on, PostgreSQL confirms b: publish it",
        healthy(cfg=config(synchronous_mode="on")),
        local(
            "a",
            pg_primary(synchronous_standby_names='FIRST 1 ("b")', replication=replication("b")),
            announced_role="primary",
        ),
        "leader-steady",
        ["ArmWatchdog", "SetVip", "SyncSlots", A.PublishSync(("b",), 1), "RepointPgBouncer"],
    ),
    Case(
        "synchronous_mode on, b stopped streaming: unpublish b before PostgreSQL switches to c",
        replace(
            healthy(cfg=config(synchronous_mode="on"), sync=sync("a", "b")),
            members={**healthy().members, "b": replica("b", None, state="running")},
        ),
        local(
            "a",
            pg_primary(synchronous_standby_names='FIRST 1 ("b")', replication=replication("b")),
            announced_role="primary",
        ),
        "leader-steady",
        [
            "ArmWatchdog",
            "SetVip",
            "SyncSlots",
            A.PublishSync((), 0),
            A.SetSyncStandbys(("c",), 1, "first"),
            "RepointPgBouncer",
        ],
    ),
    Case(
        "promoted with the key held: history first, then promote",
        healthy(),
        local("a", pg_replica(None, streaming=False)),
        "leader-promote",
        [A.AppendHistory("leader key acquired"), A.Promote()],
    ),
    Case(
        "handed the key by a switchover: history, promote, and the switchover is done",
        view(
            replica("a", None, state="running"),
            stopped("b"),
            leader="a",
            switchover=Switchover("sw1", leader="b", candidate="a", phase="demoting"),
        ),
        local("a", pg_replica(None, streaming=False)),
        "leader-promote",
        ["AppendHistory", A.Promote(), A.ClearSwitchover("done: a promoted")],
    ),
    Case(
        "key held, a pre_promote hook configured: run it first, before any history entry",
        healthy(),
        local("a", pg_replica(None, streaming=False), pre_promote_hook=True),
        "leader-promote",
        [A.PrePromote()],
    ),
    Case(
        "key held, the pre_promote hook allowed it: history, then promote",
        healthy(),
        local("a", pg_replica(None, streaming=False), pre_promote_hook=True,
              task=TaskState(TaskKind.PRE_PROMOTE, running=False, ok=True)),
        "leader-promote",
        [A.AppendHistory("leader key acquired"), A.Promote()],
    ),
    Case(
        "promotion succeeded but the observation still says replica (taken during it): look again, "
        "no second promotion or fork (fault suite finding #2)",
        healthy(),
        local("a", pg_replica(None, tl=2, streaming=False), task=TaskState(TaskKind.PROMOTE, running=False, ok=True)),
        "leader-promote-settling",
        [],
    ),
    Case(
        "pre_promote vetoed: give the key back",
        healthy(),
        local("a", pg_replica(None, streaming=False), promote_vetoed=True),
        "leader-promote-vetoed",
        [A.ReleaseLeader()],
    ),
    Case(
        "agent restarted holding the leader key 1 s ago: wait before starting as primary",
        healthy(),
        local("a", pg_stopped(was_primary=True, down_since_mono=NOW - 1)),
        "leader-restart-wait",
        [],
    ),
    Case(
        "primary down, key held, lease ends in 0.4 s (within fence_margin): do not start as primary",
        healthy(),
        local("a", pg_stopped(was_primary=True, down_since_mono=NOW - 5), lease_left=0.4),
        "leader-start-lease-short",
        [],
    ),
    Case(
        "agent restarted holding the leader key 5 s ago: restart as primary",
        healthy(),
        local("a", pg_stopped(was_primary=True, down_since_mono=NOW - 5)),
        "leader-crash-restart",
        [A.StartPostgres("primary")],
    ),
    Case(
        "our primary crashed 3 s ago: restart it in place",
        healthy(),
        local("a", pg_stopped(was_primary=True, crashed=True, down_since_mono=NOW - 3), announced_role="primary"),
        "leader-crash-restart",
        [A.StartPostgres("primary")],
    ),
    Case(
        "our primary did not come back in time: release the key",
        healthy(),
        local("a", pg_stopped(was_primary=True, crashed=True, down_since_mono=NOW - 30)),
        "leader-crash-giveup",
        [A.SetVip(False), A.DisarmWatchdog(), A.ReleaseLeader()],
    ),
    Case(
        "holding the key over a stopped replica's data: start it to promote",
        healthy(),
        local("a", pg_stopped()),
        "leader-start-replica-data",
        [A.StartPostgres("replica", None)],
    ),
    Case(
        "holding the key without data: give it back",
        healthy(),
        local("a", pg_empty()),
        "leader-no-data",
        [A.ReleaseLeader()],
    ),
    Case(
        "holding the key, PostgreSQL starting: nothing to do",
        healthy(),
        local("a", replace(pg_stopped(), run_state=PgRunState.STARTING)),
        "idle",
        [],
    ),
    # ===== replica =====
    Case(
        "empty data, leader primary: clone from it",
        healthy(),
        local("c", pg_empty()),
        "replica-clone",
        [A.Clone("a")],
    ),
    Case(
        "empty data, a clone failed just now: wait",
        healthy(),
        local("c", pg_empty(), clone_backoff=True),
        "replica-wait-leader",
        [],
    ),
    Case(
        "empty data, leader not running yet: wait",
        view(stopped("a"), leader="a"),
        local("c", pg_empty()),
        "replica-wait-leader",
        [],
    ),
    Case(
        "pg_rewind failed: wipe to clone afresh",
        healthy(tl=2),
        local("c", pg_stopped(), task=TaskState(TaskKind.REWIND, running=False, ok=False)),
        "replica-rewind-failed-clone",
        ["WipeDataDir"],
    ),
    Case(
        "pg_rewind failed, clone_on_rewind_failure off: stay stopped",
        healthy(tl=2, cfg=config(clone_on_rewind_failure=False)),
        local("c", pg_stopped(), task=TaskState(TaskKind.REWIND, running=False, ok=False)),
        "replica-rewind-failed-stay",
        [],
    ),
    Case(
        "pg_rewind succeeded: start as replica of the leader",
        healthy(tl=2),
        local("c", pg_stopped(), task=TaskState(TaskKind.REWIND, running=False, ok=True)),
        "replica-start-rewound",
        [A.StartPostgres("replica", "a")],
    ),
    Case(
        "stopped on an older timeline: rewind against the leader",
        healthy(tl=2),
        local("c", pg_stopped(tl=1, was_primary=True)),
        "replica-rewind",
        [A.Rewind("a")],
    ),
    Case(
        "diverged with pg_rewind off: wipe",
        healthy(tl=2, cfg=config(use_pg_rewind=False), forks={1: 500}),
        local("c", pg_stopped(1000, tl=1)),
        "replica-diverged-clone",
        ["WipeDataDir"],
    ),
    Case(
        "stopped with usable data: start as replica",
        healthy(),
        local("c", pg_stopped()),
        "replica-start",
        [A.DisarmWatchdog(), A.SetVip(False), A.StartPostgres("replica", "a")],
    ),
    Case(
        "stopped, older timeline but not diverged, pg_rewind off: start and follow",
        healthy(tl=2, cfg=config(use_pg_rewind=False), forks={1: 2000}),
        local("c", pg_stopped(1000, tl=1)),
        "replica-start",
        ["DisarmWatchdog", "SetVip", A.StartPostgres("replica", "a")],
    ),
    Case(
        "running replica that diverged from the new leader: stop to rewind",
        healthy(tl=2, forks={1: 500}),
        local("c", pg_replica("a", 1000, tl=1, streaming=False)),
        "replica-diverged-running",
        [A.StopPostgres("fast")],
    ),
    Case(
        "running replica pointed at the old leader: follow the new one",
        healthy("b"),
        local("c", pg_replica("a")),
        "replica-follow",
        [A.Follow("b"), *UPKEEP_REPLICA_B],
    ),
    Case(
        "not streaming, leader refuses on both ports: revoke its key",
        healthy("b"),
        local(
            "c",
            pg_replica("b", streaming=False),
            peers=polls(poll("b", None, api="refused", pg="refused")),
            peers_revision=42,
        ),
        "replica-leader-dead",
        [A.RevokeDeadLeader("b", 42)],
    ),
    Case(
        "not streaming because the leader shut down for a switchover: no revoke, no poll, wait for the handoff",
        healthy("b", switchover=Switchover("sw1", leader="b", candidate="c", phase="demoting", phase_at=99.0)),
        local(
            "c",
            pg_replica("b", streaming=False),
            peers=polls(poll("b", None, api="ok", pg="refused")),
            peers_revision=42,
        ),
        "replica-switchover-wait",
        ["DisarmWatchdog", "SetVip", A.PausePgBouncer("sw1"), "RunCallback"],
    ),
    Case(
        "leader refused on both ports, but the poll predates its leader key: only poll again",
        healthy("b"),
        local(
            "c",
            pg_replica("b", streaming=False),
            peers=polls(poll("b", None, api="refused", pg="refused")),
            peers_revision=41,
        ),
        "replica-check-leader",
        [A.PollPeers(), *UPKEEP_REPLICA_B],
    ),
    Case(
        "no leader, quorum mode, the other synchronous standby not seen yet: poll",
        nobody_leads(cfg=config(synchronous_mode="quorum"), sync=sync("a", "b", "c", quorum=1)),
        local("b", pg_replica(None, 1000, streaming=False)),
        "elect-ineligible",
        [A.SetVip(False), A.DisarmWatchdog(), A.PollPeers()],
    ),
    Case(
        "following the right leader, not streaming for 20 s, leader on a newer timeline: restart",
        healthy("b", tl=2, forks={1: 5000}),
        local("c", pg_replica("b", 1000, tl=1, streaming=False), not_streaming_since=NOW - 20),
        "replica-stuck-restart",
        [A.StopPostgres("fast")],
    ),
    Case(
        "not streaming: poll the leader",
        healthy("b"),
        local("c", pg_replica("b", streaming=False)),
        "replica-check-leader",
        [A.PollPeers(), *UPKEEP_REPLICA_B],
    ),
    Case(
        "streaming from the leader: steady",
        healthy("b"),
        local("c", pg_replica("b")),
        "replica-steady",
        UPKEEP_REPLICA_B,
    ),
    Case(
        "tagged nostream, pointed at the leader, not streaming (archive only): steady, no polling",
        healthy("b"),
        local("c", pg_replica("b", streaming=False, restore_command=True), tags=Tags(nostream=True)),
        "replica-nostream",
        UPKEEP_REPLICA_B,
    ),
    Case(
        "replica whose PgBouncer is paused for a finished switchover resumes it at the new primary",
        healthy("b"),
        local("c", pg_replica("b"), pgbouncer_paused_for="sw1", announced_role="replica"),
        "replica-steady",
        [A.DisarmWatchdog(), A.SetVip(False), A.ResumePgBouncer("b")],
    ),
    Case(
        "replica whose PgBouncer is paused keeps it paused while the new leader still promotes",
        view(replica("a", None, state="stopped"), replica("b", None, state="promoting"), replica("c", "b"),
             leader="b"),
        local("c", pg_replica("b"), pgbouncer_paused_for="sw1", announced_role="replica"),
        "replica-steady",
        [A.DisarmWatchdog(), A.SetVip(False)],
    ),
    Case(
        "replica asked to pause its PgBouncer for the running switchover",
        healthy(switchover=replace(SW, phase="pausing")),
        local("c", pg_replica("a"), announced_role="replica"),
        "replica-steady",
        [A.DisarmWatchdog(), A.SetVip(False), A.PausePgBouncer("sw1")],
    ),
    Case(
        "replica reload intent: reload, on_reload, complete",
        healthy(intents={"c": MemberIntent("reload", "r3")}),
        local("c", pg_replica("a"), announced_role="replica"),
        "replica-steady",
        [
            "DisarmWatchdog",
            "SetVip",
            "RepointPgBouncer",
            A.ReloadPostgres(),
            A.RunCallback("on_reload", "replica"),
            A.CompleteIntent("r3", "reloaded"),
        ],
    ),
    Case(
        "PostgreSQL starting under another leader: wait",
        healthy(),
        local("c", replace(pg_stopped(), run_state=PgRunState.STARTING)),
        "replica-starting",
        [],
    ),
    # ===== election =====
    Case(
        "no leader; our own last history entry forks timeline 90, but we never left it: retract it",
        view(replica("b", None, tl=90, state="running"), forks={89: 100, 90: 2000}, last_leader="a"),
        local("a", pg_replica(None, 2000, tl=90, streaming=False)),
        "elect-void-fork",
        [A.RetractHistory(90)],
    ),
    Case(
        "no leader; our history entry forks timeline 90 and a member is past it: it happened",
        view(replica("b", None, tl=91, state="running"), forks={90: 2000}, last_leader="a"),
        local("a", pg_replica(None, 2000, tl=90, streaming=False)),
        "elect-ineligible",
        [A.SetVip(False), A.DisarmWatchdog()],
    ),
    Case(
        "no leader; another member's history entry forks timeline 90 and nobody reached 91: not ours to retract",
        view(replica("b", None, tl=90, state="running"), forks={90: 2000}, last_leader="b"),
        local("a", pg_replica(None, 2000, tl=90, streaming=False)),
        "elect-ineligible",
        [A.SetVip(False), A.DisarmWatchdog()],
    ),
    Case(
        "no leader, our lease expired and is being granted again: take no key bound to no lease",
        view(replica("b", None, state="running"), last_leader="a"),
        local("a", pg_stopped(was_primary=True), lease_left=None),
        "elect-no-lease",
        [A.SetVip(False), A.DisarmWatchdog()],
    ),
    Case(
        "no leader key, we still run as primary: take it back",
        view(primary("a"), replica("b", "a")),
        local("a", pg_primary()),
        "elect-primary-reclaim",
        [A.AcquireLeader()],
    ),
    Case(
        "no leader, we were the last leader and are stopped on the latest timeline: resume",
        view(replica("b", None, state="running"), last_leader="a"),
        local("a", pg_stopped(was_primary=True)),
        "elect-resume-last-leader",
        [A.AcquireLeader(), A.StartPostgres("primary")],
    ),
    Case(
        "no leader, stopped replica data: start as a replica to take part",
        nobody_leads(),
        local("c", pg_stopped()),
        "elect-start-as-replica",
        [A.StartPostgres("replica", None)],
    ),
    Case(
        "operator failover names c: b stands aside",
        nobody_leads(switchover=Switchover("f1", kind="failover", candidate="c")),
        local("b", pg_replica(None, streaming=False)),
        "elect-failover-other",
        [],
    ),
    Case(
        "no leader, nofailover: ineligible",
        nobody_leads(),
        local("b", pg_replica(None, streaming=False), tags=tags(nofailover=True)),
        "elect-ineligible",
        [A.SetVip(False), A.DisarmWatchdog()],
    ),
    Case(
        "no leader, lagging beyond maximum_lag_on_failover: ineligible",
        nobody_leads(cfg=config(maximum_lag_on_failover=100)),
        local("c", pg_replica(None, 800, streaming=False)),
        "elect-ineligible",
        ["SetVip", "DisarmWatchdog"],
    ),
    Case(
        "no leader, synchronous mode, not in /sync: ineligible",
        nobody_leads(cfg=config(synchronous_mode="on"), sync=sync("a", "b")),
        local("c", pg_replica(None, 1000, streaming=False)),
        "elect-ineligible",
        ["SetVip", "DisarmWatchdog"],
    ),
    Case(
        "no leader, our pre_promote hook vetoed our last promotion: ineligible (let another win)",
        nobody_leads(),
        local("b", pg_replica(None, 1000, streaming=False), promote_vetoed=True, peers=polls(poll("c", 900))),
        "elect-ineligible",
        [A.SetVip(False), A.DisarmWatchdog()],
    ),
    Case(
        "no leader, the more advanced b published a pre_promote veto: c wins instead of deferring",
        view(replica("b", None, 1000, state="running", promote_vetoed=True),
             replica("c", None, 900, state="running"), leader=None, last_leader="a"),
        local("c", pg_replica(None, 900, streaming=False), peers=polls(poll("b", 1000))),
        "elect-win",
        [A.AcquireLeader(), A.AppendHistory("failover: leader key expired or revoked"), A.Promote()],
    ),
    Case(
        "no leader, candidate without polls yet: poll",
        nobody_leads(),
        local("b", pg_replica(None, streaming=False)),
        "elect-poll",
        [A.PollPeers()],
    ),
    Case(
        "no leader, most advanced candidate: take the key, record history, promote",
        nobody_leads(),
        local("b", pg_replica(None, 1000, streaming=False), peers=polls(poll("c", 900))),
        "elect-win",
        [A.AcquireLeader(), A.AppendHistory("failover: leader key expired or revoked"), A.Promote()],
    ),
    Case(
        "no leader, most advanced candidate with a pre_promote hook: take the key, run the hook only",
        nobody_leads(),
        local("b", pg_replica(None, 1000, streaming=False), peers=polls(poll("c", 900)), pre_promote_hook=True),
        "elect-win",
        [A.AcquireLeader(), A.PrePromote()],
    ),
    Case(
        "no leader, c is more advanced: defer",
        nobody_leads(),
        local("b", pg_replica(None, 1000, streaming=False), peers=polls(poll("c", 1100))),
        "elect-defer",
        [A.PollPeers()],
    ),
]


def matches(expected: Sequence[str | A.Action], actual: Sequence[A.Action]) -> bool:
    if len(expected) != len(actual):
        return False
    return all(e == a.name if isinstance(e, str) else e == a for e, a in zip(expected, actual, strict=True))


# --- ordering contracts (actions.py), checked on every decision ----------------------------


def contract_violations(v: ClusterView, loc: LocalState, actions: Sequence[A.Action]) -> list[str]:
    """The ordering contracts of actions.py that ``actions`` breaks (empty: none)."""
    out: list[str] = []
    names = [a.name for a in actions]

    def first(pred: type[A.Action], cond: object = None) -> int | None:
        for i, a in enumerate(actions):
            if isinstance(a, pred) and (cond is None or cond == a):
                return i
        return None

    fence = first(A.Fence)
    if fence is not None:
        for later in (first(A.ReleaseLeader), first(A.SetVip, A.SetVip(False)), first(A.HandoffLeader)):
            if later is not None and later < fence:
                out.append(f"Fence must precede {names[later]}: {names}")
    promote = first(A.Promote)
    if promote is not None:
        acquire = first(A.AcquireLeader)
        holds = v.leader is not None and v.leader.name == loc.name
        if not holds and (acquire is None or acquire > promote):
            out.append(f"AcquireLeader (or holding the key) must precede Promote: {names}")
        hist = first(A.AppendHistory)
        if hist is not None and hist > promote:
            out.append(f"AppendHistory must precede Promote: {names}")
    pause, stop = first(A.PausePgBouncer), first(A.StopPostgres)
    if pause is not None and stop is not None and stop < pause:
        out.append(f"PausePgBouncer must precede StopPostgres: {names}")
    handoff = first(A.HandoffLeader)
    if handoff is not None and stop is not None and stop > handoff:
        out.append(f"HandoffLeader must follow StopPostgres: {names}")
    out += _sync_order_violations(v, loc, actions)
    return out


def _sync_order_violations(v: ClusterView, loc: LocalState, actions: Sequence[A.Action]) -> list[str]:
    """FIRST: PostgreSQL names a standby before /sync does, /sync drops it before PostgreSQL does.
    ANY (quorum): the reverse."""
    out: list[str] = []
    published = set(v.sync.standbys) if v.sync is not None and v.sync.leader == loc.name else set()
    current_pg = _pg_names(loc.pg.synchronous_standby_names)
    for i, a in enumerate(actions):
        if isinstance(a, A.PublishSync):
            added = set(a.standbys) - published
            if v.config.synchronous_mode != "quorum" and added - current_pg:
                out.append(f"/sync names {sorted(added - current_pg)} before PostgreSQL does (action {i})")
            published = set(a.standbys)
        elif isinstance(a, A.SetSyncStandbys):
            new_pg = set(a.standbys) - {"*"}
            if a.mode == "first" and published - new_pg:
                out.append(f"PostgreSQL stops waiting for {sorted(published - new_pg)} still in /sync (action {i})")
            if a.mode == "any" and new_pg - published:
                out.append(f"PostgreSQL counts {sorted(new_pg - published)} before /sync names them (action {i})")
            current_pg = new_pg
    return out


def _pg_names(value: str) -> set[str]:
    if "(" not in value:
        return set()
    inner = value[value.index("(") + 1 : value.rindex(")")]
    return {s.strip().strip('"') for s in inner.split(",") if s.strip()}


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule_table(case: Case) -> None:
    d = run(case.view, case.local, case.now)
    assert d.rule_id == case.rule, f"{case.name}: rule {d.rule_id} ({d.reason}) instead of {case.rule}"
    assert matches(case.actions, d.actions), f"{case.name}: {list(d.actions)}"
    assert d.reason, "every decision carries a reason"
    assert contract_violations(case.view, case.local, d.actions) == []


def test_every_rule_has_a_case() -> None:
    from tests.unit.test_standby_rules import STANDBY_CASES

    hit = {c.rule for c in CASES + STANDBY_CASES}
    every = {r.id for r in RULES}
    assert hit - every == set(), "cases name rules that do not exist"
    assert every - hit == set(), "rules without a table case: add one to CASES"


def test_every_emitted_action_type_is_in_all_actions() -> None:
    emitted = {type(a) for c in CASES for a in run(c.view, c.local, c.now).actions}
    assert emitted <= set(A.ALL_ACTIONS)


def test_contract_checker_catches_bad_orders() -> None:
    """The checker itself must reject the orders the contracts forbid."""
    v, loc = healthy(), local("a", pg_primary())
    assert contract_violations(v, loc, [A.SetVip(False), A.Fence("x")])
    assert contract_violations(v, loc, [A.ReleaseLeader(), A.Fence("x")])
    assert contract_violations(view(), local("b"), [A.Promote(), A.AcquireLeader()])
    assert contract_violations(view(), local("b"), [A.AcquireLeader(), A.Promote(), A.AppendHistory("x")])
    assert contract_violations(v, loc, [A.StopPostgres(), A.PausePgBouncer("s")])
    on = healthy(cfg=config(synchronous_mode="on"), sync=sync("a", "b"))
    pg_b = local("a", pg_primary(synchronous_standby_names='FIRST 1 ("b")'))
    assert contract_violations(on, pg_b, [A.SetSyncStandbys(("c",), 1), A.PublishSync((), 0)])
    fresh = healthy(cfg=config(synchronous_mode="on"))
    assert contract_violations(fresh, local("a", pg_primary()), [A.PublishSync(("b",), 1)])
    q = healthy(cfg=config(synchronous_mode="quorum"))
    assert contract_violations(q, local("a", pg_primary()), [A.SetSyncStandbys(("b",), 1, "any")])


def test_wake_soon_enough_to_fence() -> None:
    """A primary's next loop comes before its fence point, whatever loop_wait says."""
    d = run(healthy(), local("a", pg_primary(), lease_left=3.0))
    assert d.rule_id == "leader-steady"
    assert d.wake_in is not None and d.wake_in <= 1.0 + 1e-9
    d = run(healthy(cfg=config(loop_wait=5.0, ttl=20.0)), local("a", pg_primary(), lease_left=2.5))
    assert d.wake_in is not None and d.wake_in <= 0.5 + 1e-9


def test_decide_is_deterministic_and_pure() -> None:
    for c in CASES:
        assert run(c.view, c.local, c.now) == run(c.view, c.local, c.now)
