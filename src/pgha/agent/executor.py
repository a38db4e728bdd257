"""Carry out a Decision's actions in order; stop at the first one that fails.

Every Action type in ``pgha.core.actions.ALL_ACTIONS`` has exactly one
handler here (a test checks it).  Handlers are idempotent: running a decision
twice is harmless.  Long ones hand their work to the TaskRunner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgha.core import actions as A
from pgha.core.model import ClusterView, LocalState, TaskKind
from pgha.core.syncrep import render_names
from pgha.dcs.base import DCSError
from pgha.dcs.store import HistoryEntry
from pgha.postgres.node import PostgresError, Upstream
from pgha.routing.errors import RoutingError

if TYPE_CHECKING:
    from pgha.agent.agent import Agent

log = logging.getLogger("pgha.agent")


class ActionFailed(Exception):
    """An action could not be carried out; the rest of the decision is skipped."""


class ActionSkipped(Exception):
    """An action failed, but nothing after it depends on it: the rest of the decision runs.

    For PgBouncer: a PgBouncer that is down or hangs must not hold up the member's callbacks
    and intents, which the rules list after it.  The core decides the action again next loop.
    """


Handler = Callable[["Executor", Any, ClusterView, LocalState], None]
HANDLERS: dict[type[A.Action], Handler] = {}


def handles(cls: type[A.Action]) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[cls] = fn
        return fn

    return register


class Executor:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def run(self, decision: A.Decision, view: ClusterView, local: LocalState) -> None:
        for action in decision.actions:
            handler = HANDLERS[type(action)]
            try:
                handler(self, action, view, local)
                self.agent.count_action(action.name, True)
            except ActionSkipped as exc:
                self.agent.count_action(action.name, False)
                log.warning("[%s] %s failed: %s; going on with the rest of this decision",
                            decision.rule_id, action.name, exc)
            except (ActionFailed, PostgresError, DCSError, OSError) as exc:
                self.agent.count_action(action.name, False)
                log.warning("[%s] %s failed: %s; skipping the rest of this decision",
                            decision.rule_id, action.name, exc)
                return

    # --- helpers -------------------------------------------------------------------
    def upstream(self, view: ClusterView, name: str | None) -> Upstream | None:
        if name is None:
            return None
        m = view.members.get(name)
        if m is None or not m.host:
            raise ActionFailed(f"member {name} has not published its address")
        return Upstream(name=name, host=m.host, port=m.port)

    def task(self, kind: TaskKind, fn: Callable[[], str | None]) -> None:
        if not self.agent.tasks.start(kind, fn):
            raise ActionFailed(f"another background action is running; {kind.value} must wait")
        self.agent.on_task_started(kind)


# --- DCS ---------------------------------------------------------------------------


@handles(A.ClaimInitialize)
def _claim(ex: Executor, a: A.ClaimInitialize, view: ClusterView, local: LocalState) -> None:
    if not ex.agent.store.claim_initialize(local.name, ex.agent.lease.lease_id):
        raise ActionFailed("another member claimed /initialize first")
    log.info("won the race to initialize cluster %s", view.name)


@handles(A.PublishInitialized)
def _published(ex: Executor, a: A.PublishInitialized, view: ClusterView, local: LocalState) -> None:
    if not a.system_id:
        raise ActionFailed("no system identifier observed yet")
    ex.agent.store.publish_initialized(a.system_id, local.name)
    ex.agent.store.append_history(HistoryEntry(timeline=0, lsn=0, at=time.time(), reason="cluster initialized",
                                               new_leader=local.name, kind="bootstrap"))
    log.info("cluster %s initialized with system identifier %s", view.name, a.system_id)


@handles(A.SeedConfig)
def _seed(ex: Executor, a: A.SeedConfig, view: ClusterView, local: LocalState) -> None:
    ex.agent.store.seed_config(ex.agent.config.cluster_config)


@handles(A.AcquireLeader)
def _acquire(ex: Executor, a: A.AcquireLeader, view: ClusterView, local: LocalState) -> None:
    if view.leader is not None and view.leader.name == local.name:
        return
    if not ex.agent.store.acquire_leader(local.name, ex.agent.lease.lease_id):
        raise ActionFailed("another member holds the leader key")
    log.info("acquired the leader key")


@handles(A.ReleaseLeader)
def _release(ex: Executor, a: A.ReleaseLeader, view: ClusterView, local: LocalState) -> None:
    ex.agent.store.release_leader(local.name)


@handles(A.HandoffLeader)
def _handoff(ex: Executor, a: A.HandoffLeader, view: ClusterView, local: LocalState) -> None:
    m = view.members.get(a.candidate)
    if m is None or not m.lease_id:
        raise ActionFailed(f"candidate {a.candidate} has no lease published")
    if not ex.agent.store.handoff_leader(local.name, a.candidate, m.lease_id):
        raise ActionFailed("the leader key changed under us")
    log.info("handed the leader key to %s", a.candidate)


@handles(A.RevokeDeadLeader)
def _revoke(ex: Executor, a: A.RevokeDeadLeader, view: ClusterView, local: LocalState) -> None:
    if ex.agent.store.delete_leader_if(a.leader, a.mod_revision):
        log.warning("leader %s is dead (agent and PostgreSQL refuse connections): revoked its leader key",
                    a.leader)


@handles(A.PublishSync)
def _pub_sync(ex: Executor, a: A.PublishSync, view: ClusterView, local: LocalState) -> None:
    if not ex.agent.store.publish_sync(local.name, a.standbys, a.quorum):
        raise ActionFailed("could not write /sync")


@handles(A.SetSwitchoverPhase)
def _sw_phase(ex: Executor, a: A.SetSwitchoverPhase, view: ClusterView, local: LocalState) -> None:
    if view.switchover is None or not ex.agent.store.update_switchover_phase(view.switchover.id, a.phase,
                                                                             local.name):
        raise ActionFailed("the switchover request disappeared")
    log.info("switchover %s: %s", view.switchover.id, a.phase)


@handles(A.ClearSwitchover)
def _sw_clear(ex: Executor, a: A.ClearSwitchover, view: ClusterView, local: LocalState) -> None:
    if view.switchover is not None:
        # The verdict first, then the request goes: a reader never sees it gone without a reason.
        ex.agent.last_switchover = (view.switchover.id, a.outcome)
        ex.agent.publish_now()
        ex.agent.store.clear_switchover(view.switchover.id)
        log.info("switchover %s %s", view.switchover.id, a.outcome)


@handles(A.AppendHistory)
def _history(ex: Executor, a: A.AppendHistory, view: ClusterView, local: LocalState) -> None:
    kind = "switchover" if a.reason.startswith("switchover") else "failover"
    lsn = max(x or 0 for x in (local.pg.received_lsn, local.pg.replayed_lsn))
    ex.agent.store.append_history(HistoryEntry(
        timeline=local.pg.timeline or 0, lsn=lsn, at=time.time(), reason=a.reason,
        new_leader=local.name, old_leader=view.last_leader, kind=kind))


@handles(A.CompleteIntent)
def _intent_done(ex: Executor, a: A.CompleteIntent, view: ClusterView, local: LocalState) -> None:
    ex.agent.done_intents.add(a.intent_id)
    ex.agent.store.clear_intent(local.name, a.intent_id)
    log.info("intent %s: %s", a.intent_id, a.outcome)


# --- PostgreSQL -----------------------------------------------------------------------


@handles(A.InitDB)
def _initdb(ex: Executor, a: A.InitDB, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent

    def work() -> str:
        sid = agent.pg.initdb()
        # No standby exists yet, so nothing can be acknowledged elsewhere: start asynchronous
        # (with '*' creating the replication role would wait forever); the sync plan takes over.
        agent.sync_names = ""
        agent.pg.configure(agent.parameters(), None, "")
        agent.pg.start(agent.start_timeout())
        agent.pg.bootstrap_roles()
        agent.params_applied = agent.params_key()
        return f"system identifier {sid}"

    ex.task(TaskKind.INITDB, work)


@handles(A.Clone)
def _clone(ex: Executor, a: A.Clone, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    source = ex.upstream(view, a.source)
    assert source is not None

    def work() -> str:
        try:
            agent.pg.clone(source, agent.clone_progress)
        except PostgresError:
            agent.clone_failed_at = time.monotonic()
            raise
        agent.pg.configure(agent.parameters(), source)
        agent.params_applied = agent.params_key()
        agent.pg.start(agent.start_timeout())
        return f"cloned from {source.name}"

    ex.task(TaskKind.CLONE, work)


@handles(A.WipeDataDir)
def _wipe(ex: Executor, a: A.WipeDataDir, view: ClusterView, local: LocalState) -> None:
    ex.agent.pg.stop("immediate", 10)
    where = ex.agent.pg.wipe()
    log.warning("moved the data directory aside to %s: %s", where, a.reason)
    ex.agent.tasks.forget()


@handles(A.Rewind)
def _rewind(ex: Executor, a: A.Rewind, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    source = ex.upstream(view, a.source)
    assert source is not None

    def work() -> str:
        agent.pg.rewind(source)
        agent.pg.configure(agent.parameters(), source)
        return f"rewound against {source.name}"

    ex.task(TaskKind.REWIND, work)


@handles(A.StartPostgres)
def _start(ex: Executor, a: A.StartPostgres, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    upstream = ex.upstream(view, a.upstream) if a.role == "replica" else None
    sync = agent.sync_names_for_primary(view) if a.role == "primary" else ""

    def work() -> str:
        agent.pg.configure(agent.parameters(), upstream, sync, standby=a.role == "replica")
        agent.params_applied = agent.params_key()
        agent.pg.start(agent.start_timeout())
        return f"started as {a.role}" + (f" following {upstream.name}" if upstream else "")

    ex.task(TaskKind.START, work)


@handles(A.StopPostgres)
def _stop(ex: Executor, a: A.StopPostgres, view: ClusterView, local: LocalState) -> None:
    if a.checkpoint_first:
        ex.agent.pg.checkpoint()
    ex.agent.expect_stop()
    ex.agent.pg.stop(a.mode, ex.agent.cluster_config.retry_timeout * 10)


@handles(A.Checkpoint)
def _checkpoint(ex: Executor, a: A.Checkpoint, view: ClusterView, local: LocalState) -> None:
    ex.agent.pg.checkpoint()


@handles(A.RestartPostgres)
def _restart(ex: Executor, a: A.RestartPostgres, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    upstream = ex.upstream(view, view.leader.name) if (local.pg.in_recovery and view.leader
                                                        and view.leader.name != local.name) else None
    sync = agent.sync_names if not local.pg.in_recovery else ""

    def work() -> str:
        agent.expect_stop()
        agent.pg.stop("fast", agent.cluster_config.retry_timeout * 10)
        agent.pg.configure(agent.parameters(), upstream, sync, standby=bool(local.pg.in_recovery))
        agent.params_applied = agent.params_key()
        agent.pg.start(agent.start_timeout())
        return "restarted"

    ex.task(TaskKind.RESTART, work)


@handles(A.ReloadPostgres)
def _reload(ex: Executor, a: A.ReloadPostgres, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    upstream = ex.upstream(view, local.pg.configured_upstream) if local.pg.in_recovery and \
        local.pg.configured_upstream in view.members else None
    agent.pg.configure(agent.parameters(), upstream, agent.sync_names, standby=bool(local.pg.in_recovery))
    agent.pg.reload()
    agent.params_applied = agent.params_key()


@handles(A.Fence)
def _fence(ex: Executor, a: A.Fence, view: ClusterView, local: LocalState) -> None:
    log.warning("fencing: %s; stopping PostgreSQL immediately", a.reason)
    ex.agent.expect_stop()
    try:
        ex.agent.pg.stop("immediate", 5)
    except PostgresError as exc:
        pid = ex.agent.pg.postmaster_pid()
        log.error("immediate stop failed (%s); killing postmaster %s", exc, pid)
        if pid:
            from pgha.agent.watchdog import fence_postmaster

            fence_postmaster(pid)


@handles(A.PrePromote)
def _pre_promote(ex: Executor, a: A.PrePromote, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    agent.promote_vetoed = False

    def work() -> str:
        if not agent.callbacks.pre_promote("primary"):
            agent.promote_vetoed_at = time.monotonic()
            agent.promote_vetoed = True
            raise ActionFailed("the pre_promote hook vetoed the promotion")
        return "the pre_promote hook allows the promotion"

    ex.task(TaskKind.PRE_PROMOTE, work)


@handles(A.Promote)
def _promote(ex: Executor, a: A.Promote, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent

    def work() -> str:
        if agent.cluster_config.synchronous_mode != "off":
            # Until /sync names our standbys, block commits rather than acknowledge them alone.
            agent.sync_names = "*"
            agent.pg.configure(agent.parameters(), None, "*", standby=True)
            agent.pg.reload()
        agent.pg.promote(agent.cluster_config.retry_timeout * 10)
        return "promoted"

    ex.task(TaskKind.PROMOTE, work)


@handles(A.Follow)
def _follow(ex: Executor, a: A.Follow, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    upstream = ex.upstream(view, a.upstream)
    needs_restart = agent.pg.configure(agent.parameters(), upstream, "", standby=True)
    if needs_restart:
        _restart(ex, A.RestartPostgres(), view, local)
    else:
        agent.pg.reload()
    log.info("now following %s", a.upstream)


@handles(A.SyncSlots)
def _slots(ex: Executor, a: A.SyncSlots, view: ClusterView, local: LocalState) -> None:
    if ex.agent.slots_applied != a.members:
        ex.agent.pg.sync_slots(a.members)
        ex.agent.slots_applied = a.members


@handles(A.SetSyncStandbys)
def _set_sync(ex: Executor, a: A.SetSyncStandbys, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    value = "*" if a.standbys == ("*",) else render_names(a.standbys, a.quorum, a.mode)
    agent.sync_names = value
    agent.pg.configure(agent.parameters(), None, value)
    agent.pg.reload()
    log.info("synchronous_standby_names = %r", value)


# --- routing ---------------------------------------------------------------------------


@handles(A.PausePgBouncer)
def _bouncer_pause(ex: Executor, a: A.PausePgBouncer, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    if agent.bouncer is not None and agent.pgbouncer_paused_for != a.switchover_id:
        try:
            agent.bouncer.pause(timeout=2.0)
        except Exception as exc:  # a stuck PAUSE must not stop the switchover
            log.warning("PgBouncer PAUSE did not complete: %s", exc)
        agent.pgbouncer_paused_for = a.switchover_id
        agent.publish_now()


@handles(A.ResumePgBouncer)
def _bouncer_resume(ex: Executor, a: A.ResumePgBouncer, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    if agent.bouncer is None:
        agent.pgbouncer_paused_for = ""
        return
    try:
        try:
            target = ex.upstream(view, a.leader)
            if target is not None:
                agent.bouncer.repoint(target.host, target.port)
                agent.bouncer_target = a.leader
        finally:
            agent.bouncer.resume()
    except RoutingError as exc:
        raise ActionSkipped(str(exc)) from None  # still paused_for: resumed on a later loop
    agent.pgbouncer_paused_for = ""
    agent.publish_now()


@handles(A.RepointPgBouncer)
def _bouncer_repoint(ex: Executor, a: A.RepointPgBouncer, view: ClusterView, local: LocalState) -> None:
    agent = ex.agent
    if agent.bouncer is None or a.leader is None or agent.bouncer_target == a.leader:
        return
    target = ex.upstream(view, a.leader)
    assert target is not None
    try:
        agent.bouncer.repoint(target.host, target.port)
        if agent.bouncer_target is None:
            # Fix: an agent that died between PAUSE and RESUME left its PgBouncer paused, and its
            # successor (which starts with nothing paused) never resumed it: clients waited forever.
            # The core decides RepointPgBouncer only outside a switchover's pause, so the first one
            # since the agent started also RESUMEs (a no-op when PgBouncer is not paused).
            agent.bouncer.resume()
    except RoutingError as exc:
        raise ActionSkipped(str(exc)) from None  # bouncer_target unchanged: tried again next loop
    agent.bouncer_target = a.leader
    log.info("PgBouncer now points at %s (%s:%s)", a.leader, target.host, target.port)


@handles(A.SetVip)
def _vip(ex: Executor, a: A.SetVip, view: ClusterView, local: LocalState) -> None:
    ex.agent.set_vip(a.present)


@handles(A.ArmWatchdog)
def _arm(ex: Executor, a: A.ArmWatchdog, view: ClusterView, local: LocalState) -> None:
    ex.agent.arm_watchdog()


@handles(A.DisarmWatchdog)
def _disarm(ex: Executor, a: A.DisarmWatchdog, view: ClusterView, local: LocalState) -> None:
    if ex.agent.watchdog is not None:
        ex.agent.watchdog.disarm()


@handles(A.RequestFailsafe)
def _failsafe(ex: Executor, a: A.RequestFailsafe, view: ClusterView, local: LocalState) -> None:
    ex.agent.request_failsafe(view)


@handles(A.RunCallback)
def _callback(ex: Executor, a: A.RunCallback, view: ClusterView, local: LocalState) -> None:
    ex.agent.callbacks.fire(a.event, a.role)
    ex.agent.announced_role = a.role


@handles(A.PollPeers)
def _poll(ex: Executor, a: A.PollPeers, view: ClusterView, local: LocalState) -> None:
    ex.agent.poll_peers(view)
