"""The rules table: every behaviour of the agent is one named row.

Each row has an id, a one-line comment, a guard over ``Facts`` and a function
returning the actions.  The first row whose guard holds decides; rows are
grouped into sections whose order is the order of precedence, written down in
``docs/rules.md`` (generated from this table by ``pgha rules``).

Rows only *decide*.  Routine upkeep of a healthy leader or replica (slots,
synchronous standbys, routing, callbacks) is added by ``upkeep_*`` so that
every steady row carries the same upkeep.
"""

from __future__ import annotations

from pgha.core import election, standby_rules
from pgha.core.actions import (
    AcquireLeader,
    ArmWatchdog,
    Checkpoint,
    ClaimInitialize,
    ClearSwitchover,
    Clone,
    CompleteIntent,
    DisarmWatchdog,
    Follow,
    HandoffLeader,
    InitDB,
    PausePgBouncer,
    PollPeers,
    PublishInitialized,
    ReleaseLeader,
    RequestFailsafe,
    RetractHistory,
    RevokeDeadLeader,
    Rewind,
    SeedConfig,
    SetSwitchoverPhase,
    SetVip,
    StartPostgres,
    StopPostgres,
    WipeDataDir,
)
from pgha.core.facts import (
    BOUNCER_PAUSE_TIMEOUT,
    NOT_STREAMING_REWIND_AFTER,
    SWITCHOVER_PHASE_TIMEOUT,
    Facts,
)
from pgha.core.model import PgRunState
from pgha.core.rule import Rule as Rule
from pgha.core.switchover import (
    sw_candidate,
    sw_caught_up,
    sw_in,
    sw_polled,
    sw_refused,
    sw_stale,
    switchover_target,
)
from pgha.core.upkeep import (
    bouncer_upkeep,
    clone_source,
    demote_now,
    poll_if_quorum_unseen,
    promote,
    stale_poll_window,
    upkeep_leader,
    upkeep_replica,
)


def adopt_wait_detail(f: Facts) -> str:
    """What keeps an adopting member from claiming the cluster, for the operator."""
    if f.data_empty:
        return "our data directory is empty"
    if f.is_replica:
        return "our server runs as a replica and nobody leads yet"
    if f.running or f.local.pg.run_state == PgRunState.STARTING:
        return "our server runs but cannot be queried yet"
    return f"our stopped data is not a primary's ({f.local.pg.control_state or 'no control data'})"


# --- the table --------------------------------------------------------------------------

RULES: tuple[Rule, ...] = (
    # ===== safety first: these hold whatever else is going on =====
    # A primary being adopted (``f.unmanaged``: bootstrap.adopt, files not written by pgha yet) is
    # not pgha's to fence or to give the VIP: it was fenced at once when the DCS was unreachable
    # as its agent started, a production outage caused by installing pgha.
    Rule("fence-lease-expiring", "safety",
         "A primary whose lease may expire within fence_margin stops accepting writes now.",
         lambda f: (f.is_primary and (f.i_lead or not f.dcs_ok) and f.must_fence and not f.view.config.pause
                    and not f.unmanaged),
         lambda f: demote_now(f, f"lease ends in {f.lease_left:.1f}s and cannot be renewed")),
    Rule("fence-not-leader", "safety",
         "A primary while another member holds the leader key stops accepting writes now.",
         lambda f: f.is_primary and f.dcs_ok and f.other_leads and not f.unmanaged,
         lambda f: demote_now(f, f"{f.leader_name} holds the leader key")),
    Rule("fence-foreign-lease", "safety",
         "A primary whose leader key is bound to a lease it does not renew stops accepting writes now.",
         lambda f: f.is_primary and f.dcs_ok and f.leader_name == f.me and not f.i_lead and not f.unmanaged,
         lambda f: demote_now(f, "the leader key names us but is bound to a lease we do not hold")),
    Rule("failsafe-confirm", "safety",
         "DCS down, failsafe_mode on: ask every member to confirm us as leader before the lease ends.",
         lambda f: f.is_primary and not f.dcs_ok and f.config.failsafe_mode and not f.unmanaged,
         lambda f: [RequestFailsafe(), SetVip(True), ArmWatchdog()]),
    Rule("dcs-down-primary-holds", "safety",
         "DCS down, lease still valid: keep serving writes and the VIP until fence_margin.",
         lambda f: f.is_primary and not f.dcs_ok and not f.unmanaged,
         lambda f: [SetVip(True), ArmWatchdog()]),
    Rule("dcs-down-wait", "safety",
         "DCS down: replicas keep replaying, stopped nodes wait; nobody changes role.",
         lambda f: not f.dcs_ok,
         lambda f: [DisarmWatchdog(), SetVip(False)] if not f.is_primary else []),

    # ===== a long action is running: wait for it, the lease keeps being renewed =====
    # Fix: PgBouncer does not depend on the local PostgreSQL, so its routing is kept right here
    # too.  The old primary restarts as a replica (or rewinds) right after the handoff, and with no
    # action here its PgBouncer stayed paused, its clients waiting, until that task finished; a
    # member busy when a switchover began never paused its PgBouncer, whose clients then got errors.
    Rule("task-running", "busy",
         "A background action (initdb, clone, rewind, start, promote) is running: wait for it, "
         "keeping PgBouncer paused, resumed or pointed at the leader.",
         lambda f: f.task_running,
         bouncer_upkeep),

    # ===== maintenance mode =====
    Rule("paused-leader-missing", "pause",
         "Maintenance mode, our primary runs but nobody holds the leader key: take it, change nothing else.",
         lambda f: f.view.config.pause and f.is_primary and f.leader_name is None,
         lambda f: [AcquireLeader()]),
    Rule("paused", "pause",
         "Maintenance mode: publish state and keep routing right, take no automatic action.",
         lambda f: f.view.config.pause,
         lambda f: ([SetVip(True)] if f.i_lead and f.is_primary else [SetVip(False)])),

    # ===== the cluster has no system identifier yet =====
    # Only an empty data directory is initialized, and only with bootstrap.adopt is existing data
    # claimed, and then only a primary's: a replica winning the race would be promoted beside the
    # running primary.
    Rule("init-claim", "bootstrap",
         "Uninitialized cluster, nobody racing, empty data (or, to adopt, a primary's data): race for /initialize.",
         lambda f: (f.view.system_id is None and f.view.initializing is None
                    and ((f.data_empty and not f.local.adopt) or f.adoptable_primary)),
         lambda f: [ClaimInitialize()]),
    *standby_rules.BOOTSTRAP,
    Rule("init-run-initdb", "bootstrap",
         "We won /initialize with an empty data directory: initdb and start as primary.",
         lambda f: f.view.system_id is None and f.view.initializing == f.me and f.data_empty and not f.local.adopt,
         lambda f: [AcquireLeader(), InitDB()]),
    Rule("init-existing-start", "bootstrap",
         "We won /initialize to adopt a stopped primary's data: take the key and start it as primary.",
         lambda f: f.view.system_id is None and f.view.initializing == f.me and f.adoptable_primary and f.stopped,
         lambda f: [AcquireLeader(), StartPostgres("primary")]),
    Rule("init-publish", "bootstrap",
         "Our primary runs (new, or adopted as it runs): publish its system identifier and seed the configuration.",
         lambda f: f.view.system_id is None and f.view.initializing == f.me and f.is_primary,
         lambda f: [AcquireLeader(), PublishInitialized(f.local.pg.system_id or ""), SeedConfig()]),
    # The agent on an existing replica (or an empty directory) waits for the primary's agent;
    # after that the usual replica rows adopt it (same system identifier: follow, no clone).
    Rule("init-adopt-wait", "bootstrap",
         "Adopting, and our server is not a primary: wait for the primary's agent to adopt the cluster "
         "(start pgha adopt on the primary).",
         lambda f: f.view.system_id is None and f.local.adopt and f.view.initializing in (None, f.me),
         lambda f: [],
         adopt_wait_detail),
    Rule("init-needs-adopt", "bootstrap",
         "Uninitialized cluster and our data directory holds a cluster pgha did not create: touch nothing "
         "until bootstrap.adopt is set (or pgha adopt runs).",
         lambda f: f.view.system_id is None and not f.local.adopt and f.data_valid,
         lambda f: []),
    Rule("init-wait", "bootstrap",
         "Another member is initializing the cluster: wait for it.",
         lambda f: f.view.system_id is None,
         lambda f: []),

    # ===== the data directory cannot be used =====
    Rule("adopt-foreign", "data",
         "Adopting, but our data's system identifier is not the cluster's: refuse, and leave PostgreSQL as it is.",
         lambda f: f.foreign_data and f.local.adopt,
         lambda f: []),
    Rule("unmanaged-primary-conflict", "data",
         "Adopting a primary while another member leads: touch nothing, the operator must stop one of them.",
         lambda f: f.is_primary and f.unmanaged and f.other_leads,
         lambda f: []),
    Rule("data-foreign", "data",
         "The data directory belongs to another system identifier: refuse to touch it.",
         lambda f: f.foreign_data,
         lambda f: [StopPostgres("fast")] if f.running else []),
    Rule("data-invalid", "data",
         "The data directory is neither empty nor a cluster (e.g. a broken clone): move it aside.",
         lambda f: f.data_invalid and f.stopped,
         lambda f: [WipeDataDir("data directory is not a usable cluster")]),
    Rule("reinit-requested", "data",
         "The operator asked to reinitialize this replica: stop, move the data aside, clone again.",
         lambda f: (not f.i_lead and f.me in f.view.intents and f.view.intents[f.me].action == "reinitialize"
                    and f.view.intents[f.me].id not in f.local.done_intents and f.leader_name is not None),
         lambda f: [StopPostgres("fast"), WipeDataDir("reinitialize requested"),
                    CompleteIntent(f.view.intents[f.me].id, "reinitialized")]),

    # ===== we lead a standby cluster: follow the other site, never promote =====
    *standby_rules.LEADER,

    # ===== we hold the leader key =====
    Rule("sw-poll-candidate", "switchover",
         "Switchover due: ask the members how far they got and whether they live, before judging the candidate.",
         lambda f: sw_in(f, "requested") and f.is_primary and not sw_polled(f),
         lambda f: [PollPeers()]),
    Rule("sw-refuse", "switchover",
         "A due switchover names an unusable candidate (or none is healthy): refuse it with the reason.",
         lambda f: f.i_lead and f.is_primary and sw_refused(f),
         lambda f: [ClearSwitchover(f"refused: {switchover_target(f)[1]}")]),
    Rule("sw-stale", "switchover",
         "A switchover another leader began is still pending: it is over, drop it.",
         lambda f: sw_stale(f) and f.is_primary,
         lambda f: [ClearSwitchover("obsolete: started by a former leader")]),
    Rule("sw-begin", "switchover",
         "Switchover due: checkpoint while writable, pause PgBouncer, and ask the others to pause theirs.",
         lambda f: sw_in(f, "requested") and f.is_primary,
         lambda f: [Checkpoint(), SetSwitchoverPhase("pausing"), PausePgBouncer(f.view.switchover.id)]),  # type: ignore[union-attr]
    Rule("sw-demote", "switchover",
         "Every PgBouncer paused (or 2 s passed): drop the VIP, shut down cleanly (shipping all WAL), "
         "then ask the candidate how far it got.",
         lambda f: sw_in(f, "pausing") and f.is_primary and (f.bouncers_paused or f.phase_age > BOUNCER_PAUSE_TIMEOUT),
         # Probing right after the shutdown lets the next loop hand over at once (no loop in between).
         lambda f: [SetSwitchoverPhase("demoting"), SetVip(False), DisarmWatchdog(), StopPostgres("fast"),
                    PollPeers()]),
    Rule("sw-handoff", "switchover",
         "We are shut down and the candidate received everything: hand it the leader key.",
         # Only after a clean shutdown: its checkpoint is the end of our WAL, so "received up to
         # it" means received everything.  A shutdown that hung and was finished with SIGQUIT
         # leaves the last regular checkpoint, older than what we wrote: wait, then sw-abort.
         lambda f: sw_in(f, "demoting") and f.stopped and f.local.pg.control_state == "shut down"
         and sw_caught_up(f),
         lambda f: [HandoffLeader(sw_candidate(f))]),
    Rule("sw-wait-catchup", "switchover",
         "We are shut down; ask the candidate how far it got.",
         lambda f: sw_in(f, "demoting") and f.stopped and f.phase_age <= SWITCHOVER_PHASE_TIMEOUT,
         lambda f: [PollPeers()]),
    Rule("sw-abort", "switchover",
         "The switchover stalled past its timeout: resume as primary and drop the request.",
         lambda f: (sw_in(f, "pausing") or sw_in(f, "demoting")) and f.phase_age > SWITCHOVER_PHASE_TIMEOUT,
         lambda f: ([StartPostgres("primary")] if f.stopped else [])
         + [ClearSwitchover("aborted: candidate did not catch up in time")]),
    Rule("sw-wait-stop", "switchover",
         "Switchover in progress (waiting for PgBouncers or for the shutdown): keep going.",
         lambda f: (sw_in(f, "pausing") or sw_in(f, "demoting")),
         lambda f: []),
    Rule("leader-steady", "leader",
         "We hold the leader key and run as primary: keep slots, sync standbys and routing right.",
         lambda f: f.i_lead and f.is_primary,
         upkeep_leader),
    Rule("leader-promote-settling", "leader",
         "We hold the key and our promotion just succeeded, yet PostgreSQL looks like a replica: a stale "
         "observation; look again instead of promoting (and recording a fork) a second time.",
         # Fix (found by the fault suite, docs/faults-findings.md #2): a loop that observed PostgreSQL
         # during the promotion (in recovery, already on the new timeline's first segment) ran
         # leader-promote again; its AppendHistory recorded a fork at the new timeline, and every member
         # was "behind the latest timeline" for good.  pg_promote(wait => true) succeeded, so the server
         # is out of recovery; any later task replaces the result this row waits on.
         lambda f: f.i_lead and f.is_replica and f.last_task_ok("promote"),
         lambda f: [],
         keeps_task_result=True, recheck_in=0.1),
    Rule("leader-promote", "leader",
         "We hold the leader key and run as a replica (failover or handoff): pre_promote hook, then promote.",
         lambda f: f.i_lead and f.is_replica and not f.local.promote_vetoed,
         lambda f: promote(f, "leader key acquired")),  # the reason names a switchover when it is one
    Rule("leader-promote-vetoed", "leader",
         "pre_promote vetoed our promotion: give the leader key back.",
         lambda f: f.i_lead and f.is_replica and f.local.promote_vetoed,
         lambda f: [ReleaseLeader()]),
    Rule("leader-restart-wait", "leader",
         "Our agent restarted holding the leader key, PostgreSQL down: wait out polls that found us dead.",
         lambda f: (f.i_lead and f.stopped and f.local.announced_role is None and f.crashed_for is not None
                    and f.crashed_for < stale_poll_window(f)),
         lambda f: []),
    Rule("leader-start-lease-short", "leader",
         "Our primary is down and our lease may end within fence_margin: start nothing until it is renewed.",
         # Fix: found by the simulation (leader cut from etcd while its postmaster crashed): back in
         # touch 0.4 s before its lease ended, it restarted PostgreSQL as primary; the lease expired
         # during the start, another member was promoted, and both were writable.
         lambda f: f.i_lead and f.stopped and f.primary_data and f.must_fence,
         lambda f: []),
    Rule("leader-crash-restart", "leader",
         "Our primary's postmaster died: restart it in place while within primary_start_timeout.",
         lambda f: (f.i_lead and f.data_valid and f.stopped and f.primary_data
                    and (f.crashed_for is None or f.crashed_for < f.config.primary_start_timeout)),
         lambda f: [StartPostgres("primary")]),
    Rule("leader-crash-giveup", "leader",
         "Our primary did not come back within primary_start_timeout: release the key so others fail over.",
         lambda f: f.i_lead and f.stopped and f.primary_data,
         lambda f: [SetVip(False), DisarmWatchdog(), ReleaseLeader()]),
    Rule("leader-start-replica-data", "leader",
         "We hold the key but our data is a stopped replica's: start it so it can be promoted.",
         lambda f: f.i_lead and f.data_valid and f.stopped,
         lambda f: [StartPostgres("replica", None)]),
    Rule("leader-no-data", "leader",
         "We hold the key without usable data: give it back.",
         lambda f: f.i_lead and not f.data_valid,
         lambda f: [ReleaseLeader()]),

    # ===== another member leads =====
    *standby_rules.REPLICA,
    Rule("replica-clone", "replica",
         "Empty data directory and a running leader: clone from a streaming member tagged clonefrom, "
         "else from the leader.",
         lambda f: (f.other_leads and f.data_empty and not f.local.clone_backoff
                    and f.leader_serves),
         lambda f: [Clone(clone_source(f))],
         lambda f: f"source {clone_source(f)}"),
    Rule("replica-wait-leader", "replica",
         "Empty data directory and the leader is not ready yet (or a clone just failed): wait.",
         lambda f: f.other_leads and f.data_empty,
         lambda f: []),
    Rule("replica-rewind-failed-clone", "replica",
         "pg_rewind failed and clone_on_rewind_failure is on: move the data aside to clone afresh.",
         lambda f: f.other_leads and f.stopped and f.last_task_failed("rewind") and f.config.clone_on_rewind_failure,
         lambda f: [WipeDataDir("pg_rewind failed; clone_on_rewind_failure is on")],
         keeps_task_result=True),
    Rule("replica-rewind-failed-stay", "replica",
         "pg_rewind failed and clone_on_rewind_failure is off: stay stopped for the operator.",
         lambda f: f.other_leads and f.stopped and f.last_task_failed("rewind"),
         lambda f: [],
         keeps_task_result=True),
    Rule("replica-start-rewound", "replica",
         "pg_rewind just succeeded: start as a replica of the leader.",
         lambda f: f.other_leads and f.stopped and f.last_task_ok("rewind"),
         lambda f: [StartPostgres("replica", f.leader_name)],
         keeps_task_result=True),
    Rule("replica-rewind", "replica",
         "Stopped on an older timeline than the leader: pg_rewind (a no-op unless our WAL diverged).",
         lambda f: (f.other_leads and f.stopped and f.behind_leader_timeline and f.config.use_pg_rewind
                    and f.leader_serves),
         lambda f: [Rewind(f.leader_name or "")]),
    Rule("replica-diverged-clone", "replica",
         "Stopped and diverged, with pg_rewind disabled: move the data aside to clone afresh.",
         lambda f: f.other_leads and f.stopped and f.diverged and not f.config.use_pg_rewind,
         lambda f: [WipeDataDir("diverged from the leader and use_pg_rewind is off")]),
    Rule("replica-start", "replica",
         "Stopped with usable data: start as a replica of the leader.",
         lambda f: f.other_leads and f.stopped and f.data_valid,
         lambda f: [DisarmWatchdog(), SetVip(False), StartPostgres("replica", f.leader_name)]),
    Rule("replica-diverged-running", "replica",
         "Running replica that diverged from the new leader (it got WAL the leader never had): stop to rewind.",
         lambda f: f.other_leads and f.is_replica and f.diverged and not f.streaming_from_leader,
         lambda f: [StopPostgres("fast")]),
    Rule("replica-follow", "replica",
         "Running replica pointed at someone other than the leader: follow the leader.",
         lambda f: f.other_leads and f.is_replica and f.local.pg.configured_upstream != f.leader_name,
         lambda f: [Follow(f.leader_name or ""), *upkeep_replica(f, files_written=True)]),
    Rule("replica-nostream", "replica",
         "Tagged nostream and pointed at the leader: we replay from the archive (restore_command) and never "
         "stream; keep routing and hooks right.",
         lambda f: (f.other_leads and f.is_replica and f.local.tags.nostream
                    and f.local.pg.configured_upstream == f.leader_name),
         upkeep_replica,
         lambda f: "" if f.local.pg.restore_command else "no restore_command is set: this replica cannot catch up"),
    Rule("replica-switchover-wait", "replica",
         "Not streaming because the leader shuts down for a switchover: wait for the handoff, no polling "
         "(a poll would delay our next loop, and the candidate's promotion, by its duration).",
         lambda f: f.other_leads and f.is_replica and not f.streaming_from_leader and f.leader_stops_for_switchover,
         upkeep_replica),
    Rule("replica-leader-dead", "replica",
         "Not streaming, and the leader's agent and PostgreSQL both refuse connections: it is dead, revoke it.",
         lambda f: (f.other_leads and f.is_replica and not f.streaming_from_leader
                    and f.leader_proven_dead),
         lambda f: [RevokeDeadLeader(f.leader_name or "", f.view.leader.mod_revision)]),  # type: ignore[union-attr]
    Rule("replica-stuck-restart", "replica",
         "Following the right leader but not streaming for long: restart to rewind if we diverged.",
         lambda f: (f.other_leads and f.is_replica and not f.streaming_from_leader
                    and f.not_streaming_for > NOT_STREAMING_REWIND_AFTER
                    and f.leader_serves and f.behind_leader_timeline),
         lambda f: [StopPostgres("fast")]),
    Rule("replica-check-leader", "replica",
         "Not streaming from the leader: poll it, so a dead leader is found without waiting for its lease.",
         lambda f: f.other_leads and f.is_replica and not f.streaming_from_leader,
         lambda f: [PollPeers(), *upkeep_replica(f)]),
    Rule("replica-steady", "replica",
         "Streaming from the leader: keep routing and hooks right.",
         lambda f: f.other_leads and f.is_replica,
         upkeep_replica),
    Rule("replica-starting", "replica",
         "PostgreSQL is starting: wait for it.",
         lambda f: f.other_leads and f.local.pg.run_state == PgRunState.STARTING,
         lambda f: []),

    # ===== nobody leads: election =====
    # Fix (found by the VIP host-death lab test): after etcd came back from a freeze that outlived
    # every lease, an agent took the leader key while its lease thread was granting a new lease,
    # bound to lease 0: a key that never expires, so when that leader's host died nobody could
    # ever take over.  The leader key is only ever taken with a lease that outlives fence_margin.
    Rule("elect-no-lease", "election",
         "No leader, but our lease is gone or about to end (being granted again): take no key until it lives.",
         lambda f: f.leader_name is None and (not f.local.lease_id or f.lease_left <= f.config.fence_margin),
         lambda f: [SetVip(False), DisarmWatchdog()] if not f.is_primary else []),
    # Fix (found by the 200-fault soak, seed 30654185, fault #171 switchover+etcd-blip): the
    # candidate's leader-promote wrote /history, but the write timed out (applied all the same),
    # so the decision stopped before Promote; its lease then ran out in the etcd cut.  The fork to
    # timeline 91 was on record, nobody had reached it, and every member was "behind the latest
    # timeline" for ever: no leader.  The member the entry names knows it never promoted.
    Rule("elect-void-fork", "election",
         "No leader, and our own latest history entry records a promotion we never made: remove it.",
         lambda f: f.leader_name is None and f.void_fork is not None,
         lambda f: [RetractHistory(f.void_fork or 0)]),
    Rule("elect-primary-reclaim", "election",
         "No leader but we run as primary (e.g. the DCS came back): take the key back if we can.",
         lambda f: f.leader_name is None and f.is_primary,
         lambda f: [AcquireLeader()]),
    Rule("elect-resume-last-leader", "election",
         "No leader, our data is the last leader's on the latest timeline, stopped: take the key and start.",
         lambda f: (f.leader_name is None and f.stopped and f.data_valid and f.primary_data
                    and f.view.last_leader == f.me and (f.local.pg.timeline or 0) >= f.latest_timeline
                    and not f.local.tags.nofailover and not f.standby),
         lambda f: [AcquireLeader(), StartPostgres("primary")]),
    Rule("elect-start-as-replica", "election",
         "No leader and we are stopped: start as a replica (no upstream) so we can take part.",
         lambda f: f.leader_name is None and f.stopped and f.data_valid,
         lambda f: [StartPostgres("replica", None)]),
    Rule("elect-failover-other", "election",
         "An operator's failover names another candidate: let it take over.",
         lambda f: (f.leader_name is None and f.view.switchover is not None
                    and f.view.switchover.kind == "failover" and f.view.switchover.candidate not in (None, f.me)),
         lambda f: []),
    Rule("elect-ineligible", "election",
         "No leader, but we may not be promoted (lag, timeline, nofailover, not synchronous).",
         lambda f: f.leader_name is None and election.why_not_candidate(f) is not None,
         lambda f: [SetVip(False), DisarmWatchdog(), *poll_if_quorum_unseen(f)],
         lambda f: election.why_not_candidate(f) or ""),
    Rule("elect-poll", "election",
         "No leader and we are a candidate: ask every member how far it got.",
         lambda f: f.leader_name is None and not f.local.peers and len(f.view.members) > 1,
         lambda f: [PollPeers()]),
    *standby_rules.ELECTION,
    Rule("elect-win", "election",
         "No leader and we are the most advanced candidate: take the key and promote.",
         lambda f: f.leader_name is None and election.i_am_best(f),
         lambda f: [AcquireLeader(), *promote(f, "failover: leader key expired or revoked")],
         election.ranking),
    Rule("elect-defer", "election",
         "No leader, but another candidate is more advanced: let it win.",
         lambda f: f.leader_name is None,
         lambda f: [PollPeers()],
         election.ranking),

    # ===== anything else =====
    Rule("idle", "idle",
         "Nothing to do in this state (e.g. waiting for the leader's PostgreSQL to start).",
         lambda f: True,
         lambda f: []),
)

RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}
assert len(RULES_BY_ID) == len(RULES), "rule ids must be unique"
