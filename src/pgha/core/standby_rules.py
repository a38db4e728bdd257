"""The rows of a standby cluster (``standby_cluster`` set): its leader, the *standby leader*, holds the
leader key and runs as a replica of the other site; it never promotes.  Spliced into the rules table
(``pgha.core.rules``) where their precedence says: the bootstrap rows before initdb, the leader rows
before the switchover and leader sections, the election row before elect-win.

A failover inside the standby cluster is the usual election (same ranking, fencing and lease rules);
only the winner's last step differs: it takes the key and follows the other site instead of promoting.
"""

from __future__ import annotations

from pgha.core import election, slots, standby
from pgha.core.actions import (
    AcquireLeader,
    Action,
    Clone,
    DisarmWatchdog,
    Follow,
    NextSource,
    PublishInitialized,
    ReloadPostgres,
    Rewind,
    SeedConfig,
    SetVip,
    StartPostgres,
    StopPostgres,
    SyncSlots,
    WipeDataDir,
)
from pgha.core.facts import SOURCE_STALL, Facts
from pgha.core.model import PgRunState
from pgha.core.rule import Rule
from pgha.core.standby import REMOTE
from pgha.core.upkeep import announce, bouncer_upkeep, intents, slot_inputs


def has_host(f: Facts) -> bool:
    """The other site is given by host (pg_basebackup and pg_rewind need one; restore_command alone
    serves a data directory that exists)."""
    sc = f.config.standby_cluster
    return sc is not None and bool(sc.host)


def upkeep_standby_leader(f: Facts) -> list[Action]:
    """A healthy standby leader: physical slots for the members streaming from it, the VIP and
    PgBouncer (read-only, the site's entry point), hooks and intents.  No watchdog: it takes no writes."""
    others = tuple(sorted(n for n, m in f.view.members.items() if n != f.me and not m.tags.nostream))
    # The permanent slots (``slots:``) stay: the other site may stream through them once this one leads.
    keep = slots.kept_by_plan(slot_inputs(f, True))
    acts: list[Action] = [DisarmWatchdog(), SetVip(True), SyncSlots(others, keep)]
    if f.config_stale:
        acts.append(ReloadPostgres())
    acts += bouncer_upkeep(f)
    acts += announce(f, "standby_leader")
    acts += intents(f)
    return acts


def _initializing(f: Facts) -> bool:
    return f.standby and f.view.system_id is None and f.view.initializing == f.me and not f.local.adopt


def _leading(f: Facts) -> bool:
    return f.standby and f.i_lead


BOOTSTRAP: tuple[Rule, ...] = (
    Rule("standby-init-clone", "bootstrap",
         "We won /initialize of a standby cluster: clone the other site (pg_basebackup from standby_cluster.host), "
         "never initdb.",
         lambda f: _initializing(f) and f.data_empty and has_host(f) and not f.local.clone_backoff,
         lambda f: [AcquireLeader(), Clone(REMOTE)]),
    Rule("standby-init-wipe", "bootstrap",
         "A clone of the other site failed halfway: move the data aside to clone again.",
         lambda f: _initializing(f) and f.data_invalid and f.stopped,
         lambda f: [WipeDataDir("the clone of the other site is not a usable cluster")]),
    Rule("standby-init-start", "bootstrap",
         "We won /initialize of a standby cluster with data: start it as a replica of the other site.",
         lambda f: _initializing(f) and f.data_valid and f.stopped,
         lambda f: [AcquireLeader(), StartPostgres("replica", REMOTE)]),
    Rule("standby-init-publish", "bootstrap",
         "Our standby leader runs: publish its system identifier (the other site's) and seed the configuration.",
         lambda f: _initializing(f) and f.is_replica,
         lambda f: [AcquireLeader(), PublishInitialized(f.local.pg.system_id or ""), SeedConfig()]),
    Rule("standby-init-wait", "bootstrap",
         "We won /initialize of a standby cluster but cannot clone yet (a clone just failed, or no host is given "
         "to clone from): wait and retry; a standby cluster never runs initdb.",
         _initializing,
         lambda f: []),
)

LEADER: tuple[Rule, ...] = (
    Rule("standby-leader-demote", "standby",
         "demote-cluster: we lead a standby cluster but run as primary: stop taking writes, shut down cleanly.",
         lambda f: _leading(f) and f.is_primary,
         lambda f: [SetVip(False), DisarmWatchdog(), StopPostgres("fast")]),
    Rule("standby-leader-rewind-failed", "standby",
         "pg_rewind against the other site failed: move the data aside to clone it (clone_on_rewind_failure), "
         "else stay stopped for the operator.",
         lambda f: _leading(f) and f.stopped and f.last_task_failed("rewind"),
         lambda f: ([WipeDataDir("pg_rewind against the other site failed")]
                    if f.config.clone_on_rewind_failure else []),
         keeps_task_result=True),
    Rule("standby-leader-start-rewound", "standby",
         "pg_rewind against the other site succeeded: start as its replica.",
         lambda f: _leading(f) and f.stopped and f.last_task_ok("rewind"),
         lambda f: [StartPostgres("replica", REMOTE)],
         keeps_task_result=True),
    Rule("standby-leader-rewind", "standby",
         "Our stopped data last ran as a primary (demote-cluster): pg_rewind against the other site, a no-op "
         "unless the timelines diverged.",
         lambda f: _leading(f) and f.stopped and f.data_valid and f.primary_data and has_host(f)
         and f.config.use_pg_rewind,
         lambda f: [Rewind(REMOTE)]),
    Rule("standby-leader-clone", "standby",
         "We lead a standby cluster with an empty data directory: clone the other site.",
         lambda f: _leading(f) and f.data_empty and has_host(f) and not f.local.clone_backoff,
         lambda f: [Clone(REMOTE)]),
    Rule("standby-leader-start", "standby",
         "We lead a standby cluster and PostgreSQL is stopped: start it as a replica of the other site.",
         lambda f: _leading(f) and f.stopped and f.data_valid,
         lambda f: [DisarmWatchdog(), StartPostgres("replica", REMOTE)]),
    Rule("standby-leader-follow", "standby",
         "We lead a standby cluster (elected, or it just became one) and follow a member: follow the other "
         "site instead; never promote.",
         lambda f: _leading(f) and f.is_replica and f.local.pg.configured_upstream != REMOTE,
         lambda f: [Follow(REMOTE), SetVip(True)]),
    Rule("standby-leader-next-source", "standby",
         f"We lead a standby cluster and have not streamed from the other site for {SOURCE_STALL:g} s, and it "
         "names several hosts: try them from the next one on.  A host that accepts the connection but never "
         "answers (frozen) would hold the WAL receiver forever: it has no connect timeout.",
         lambda f: (_leading(f) and f.is_replica and f.local.pg.configured_upstream == REMOTE
                    and standby.several_hosts(f.config.standby_cluster) and f.not_streaming_for > SOURCE_STALL),
         lambda f: [NextSource(), *upkeep_standby_leader(f)]),
    Rule("standby-leader-steady", "standby",
         "We are the standby leader, following the other site: keep slots for our replicas and routing right.",
         lambda f: _leading(f) and f.is_replica,
         upkeep_standby_leader),
    Rule("standby-leader-wait", "standby",
         "We lead a standby cluster and PostgreSQL is starting: wait.",
         lambda f: _leading(f) and f.local.pg.run_state == PgRunState.STARTING,
         lambda f: []),
)

REPLICA: tuple[Rule, ...] = (
    Rule("standby-replica-diverged", "replica",
         "Standby cluster: we replayed past where the other site's timeline forked off ours (demote-cluster) "
         "and cannot follow it: stop, to rewind against the standby leader.",
         lambda f: f.standby and f.other_leads and f.is_replica and f.past_remote_fork,
         lambda f: [StopPostgres("fast")]),
)

ELECTION: tuple[Rule, ...] = (
    Rule("standby-elect-win", "election",
         "No leader in a standby cluster and we are the most advanced candidate: take the key and follow "
         "the other site (no promotion).",
         lambda f: f.standby and f.leader_name is None and election.i_am_best(f),
         lambda f: [AcquireLeader()],
         election.ranking),
)
