"""Executor handlers for the DCS actions: initialization, leadership, /sync, switchover, history, intents."""

from __future__ import annotations

import logging

from pgha.agent.executor import NONE, ActionFailed, Executor, Outcomes, handles
from pgha.core import actions as A
from pgha.core import memory as M
from pgha.core.model import ClusterView, LocalState
from pgha.dcs.store import HistoryEntry

log = logging.getLogger("pgha.agent")


@handles(A.ClaimInitialize)
def _claim(ex: Executor, a: A.ClaimInitialize, view: ClusterView, local: LocalState) -> Outcomes:
    if not ex.agent.store.claim_initialize(local.name, ex.agent.lease.lease_id):
        raise ActionFailed("another member claimed /initialize first")
    log.info("won the race to initialize cluster %s", view.name)
    return NONE


@handles(A.PublishInitialized)
def _published(ex: Executor, a: A.PublishInitialized, view: ClusterView, local: LocalState) -> Outcomes:
    if not a.system_id:
        raise ActionFailed("no system identifier observed yet")
    ex.agent.store.publish_initialized(a.system_id, local.name)
    ex.agent.store.append_history(HistoryEntry(timeline=0, lsn=0, at=ex.agent.ports.clock.time(),
                                               reason="cluster initialized", new_leader=local.name,
                                               kind="bootstrap"))
    log.info("cluster %s initialized with system identifier %s", view.name, a.system_id)
    return NONE


@handles(A.SeedConfig)
def _seed(ex: Executor, a: A.SeedConfig, view: ClusterView, local: LocalState) -> Outcomes:
    ex.agent.store.seed_config(ex.agent.config.cluster_config)
    return NONE


@handles(A.AcquireLeader)
def _acquire(ex: Executor, a: A.AcquireLeader, view: ClusterView, local: LocalState) -> Outcomes:
    if view.leader is not None and view.leader.name == local.name:
        return NONE
    if not ex.agent.store.acquire_leader(local.name, ex.agent.lease.lease_id):
        raise ActionFailed("another member holds the leader key")
    log.info("acquired the leader key")
    return NONE


@handles(A.ReleaseLeader)
def _release(ex: Executor, a: A.ReleaseLeader, view: ClusterView, local: LocalState) -> Outcomes:
    ex.agent.store.release_leader(local.name)
    return NONE


@handles(A.HandoffLeader)
def _handoff(ex: Executor, a: A.HandoffLeader, view: ClusterView, local: LocalState) -> Outcomes:
    m = view.members.get(a.candidate)
    if m is None or not m.lease_id:
        raise ActionFailed(f"candidate {a.candidate} has no lease published")
    if not ex.agent.store.handoff_leader(local.name, a.candidate, m.lease_id):
        raise ActionFailed("the leader key changed under us")
    log.info("handed the leader key to %s", a.candidate)
    return NONE


@handles(A.RevokeDeadLeader)
def _revoke(ex: Executor, a: A.RevokeDeadLeader, view: ClusterView, local: LocalState) -> Outcomes:
    if ex.agent.store.delete_leader_if(a.leader, a.mod_revision):
        log.warning("leader %s is dead (agent and PostgreSQL refuse connections): revoked its leader key",
                    a.leader)
    return NONE


@handles(A.PublishSync)
def _pub_sync(ex: Executor, a: A.PublishSync, view: ClusterView, local: LocalState) -> Outcomes:
    if not ex.agent.store.publish_sync(local.name, a.standbys, a.quorum):
        raise ActionFailed("could not write /sync")
    return NONE


@handles(A.SetSwitchoverPhase)
def _sw_phase(ex: Executor, a: A.SetSwitchoverPhase, view: ClusterView, local: LocalState) -> Outcomes:
    if view.switchover is None or not ex.agent.store.update_switchover_phase(
            view.switchover.id, a.phase, local.name, at=ex.agent.ports.clock.time()):
        raise ActionFailed("the switchover request disappeared")
    log.info("switchover %s: %s", view.switchover.id, a.phase)
    return NONE


@handles(A.ClearSwitchover)
def _sw_clear(ex: Executor, a: A.ClearSwitchover, view: ClusterView, local: LocalState) -> Outcomes:
    if view.switchover is not None:
        # The verdict first, then the request goes: a reader never sees it gone without a reason.
        ex.agent.remember([M.SwitchoverEnded(view.switchover.id, a.outcome)])
        ex.agent.publish_now()
        ex.agent.store.clear_switchover(view.switchover.id)
        log.info("switchover %s %s", view.switchover.id, a.outcome)
    return NONE


@handles(A.AppendHistory)
def _history(ex: Executor, a: A.AppendHistory, view: ClusterView, local: LocalState) -> Outcomes:
    kind = "switchover" if a.reason.startswith("switchover") else "failover"
    lsn = max(x or 0 for x in (local.pg.received_lsn, local.pg.replayed_lsn))
    ex.agent.store.append_history(HistoryEntry(
        timeline=local.pg.timeline or 0, lsn=lsn, at=ex.agent.ports.clock.time(), reason=a.reason,
        new_leader=local.name, old_leader=view.last_leader, kind=kind))
    return NONE


@handles(A.RetractHistory)
def _retract(ex: Executor, a: A.RetractHistory, view: ClusterView, local: LocalState) -> Outcomes:
    if ex.agent.store.retract_history(a.timeline, local.name):
        log.warning("removed our history entry for a promotion from timeline %s that never happened "
                    "(still on timeline %s)", a.timeline, local.pg.timeline)
    return NONE


@handles(A.CompleteIntent)
def _intent_done(ex: Executor, a: A.CompleteIntent, view: ClusterView, local: LocalState) -> Outcomes:
    ex.agent.remember([M.IntentDone(a.intent_id)])
    ex.agent.store.clear_intent(local.name, a.intent_id)
    log.info("intent %s: %s", a.intent_id, a.outcome)
    return NONE


