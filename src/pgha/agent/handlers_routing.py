"""Executor handlers for routing and the agent's helpers: PgBouncer, VIP, watchdog, failsafe, hooks, polls."""

from __future__ import annotations

import logging

from pgha.agent.executor import NONE, ActionSkipped, Executor, Outcomes, handles
from pgha.core import actions as A
from pgha.core import memory as M
from pgha.core.model import ClusterView, LocalState
from pgha.routing.errors import RoutingError

log = logging.getLogger("pgha.agent")


@handles(A.PausePgBouncer)
def _bouncer_pause(ex: Executor, a: A.PausePgBouncer, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    bouncer = agent.ports.bouncer
    if bouncer is None or agent.memory.pgbouncer_paused_for == a.switchover_id:
        return NONE
    try:
        bouncer.pause(timeout=2.0)
    except Exception as exc:  # a stuck PAUSE must not stop the switchover
        log.warning("PgBouncer PAUSE did not complete: %s", exc)
    agent.remember([M.BouncerPaused(a.switchover_id)])
    agent.publish_now()
    return NONE


@handles(A.ResumePgBouncer)
def _bouncer_resume(ex: Executor, a: A.ResumePgBouncer, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    bouncer = agent.ports.bouncer
    if bouncer is None:
        return [M.BouncerResumed(None)]
    target_name: str | None = None
    try:
        try:
            if a.leader is not None:
                target = ex.address(view, a.leader)
                bouncer.repoint(target.host, target.port)
                target_name = a.leader
        finally:
            bouncer.resume()
    except RoutingError as exc:
        raise ActionSkipped(str(exc)) from None  # still paused_for: resumed on a later loop
    agent.remember([M.BouncerResumed(target_name)])
    agent.publish_now()
    return NONE


@handles(A.RepointPgBouncer)
def _bouncer_repoint(ex: Executor, a: A.RepointPgBouncer, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    bouncer = agent.ports.bouncer
    if bouncer is None or a.leader is None or agent.memory.pgbouncer_target == a.leader:
        return NONE
    # Not ex.upstream: on the leader PgBouncer points at this very member (a regression the standby
    # cluster's "the leader's own name is no upstream" brought in: the new primary's HA loop failed on it).
    target = ex.address(view, a.leader)
    try:
        bouncer.repoint(target.host, target.port)
        if agent.memory.pgbouncer_target is None:
            # Fix: an agent that died between PAUSE and RESUME left its PgBouncer paused, and its
            # successor (which starts with nothing paused) never resumed it: clients waited forever.
            # The core decides RepointPgBouncer only outside a switchover's pause, so the first one
            # since the agent started also RESUMEs (a no-op when PgBouncer is not paused).
            bouncer.resume()
    except RoutingError as exc:
        raise ActionSkipped(str(exc)) from None  # target unchanged: tried again next loop
    log.info("PgBouncer now points at %s (%s:%s)", a.leader, target.host, target.port)
    return [M.BouncerPointed(a.leader)]


@handles(A.SetVip)
def _vip(ex: Executor, a: A.SetVip, view: ClusterView, local: LocalState) -> Outcomes:
    return ex.agent.set_vip(a.present)


@handles(A.ArmWatchdog)
def _arm(ex: Executor, a: A.ArmWatchdog, view: ClusterView, local: LocalState) -> Outcomes:
    ex.agent.arm_watchdog()
    return NONE


@handles(A.DisarmWatchdog)
def _disarm(ex: Executor, a: A.DisarmWatchdog, view: ClusterView, local: LocalState) -> Outcomes:
    if ex.agent.ports.watchdog is not None:
        ex.agent.ports.watchdog.disarm()
    return NONE


@handles(A.RequestFailsafe)
def _failsafe(ex: Executor, a: A.RequestFailsafe, view: ClusterView, local: LocalState) -> Outcomes:
    sent = ex.now
    others = [m for m in view.members.values() if m.name != local.name]
    if not ex.agent.ports.failsafe.confirm_all(others, local.name):
        return NONE
    ex.agent.remember([M.FailsafeConfirmed(sent + ex.agent.cluster_config.ttl)])
    ex.agent.arm_watchdog()
    return NONE


@handles(A.RunCallback)
def _callback(ex: Executor, a: A.RunCallback, view: ClusterView, local: LocalState) -> Outcomes:
    ex.agent.ports.callbacks.fire(a.event, a.role)
    return [M.Announced(a.role)]


@handles(A.PollPeers)
def _poll(ex: Executor, a: A.PollPeers, view: ClusterView, local: LocalState) -> Outcomes:
    others = [m for m in view.members.values() if m.name != local.name]
    peers = ex.agent.ports.poller.poll(others)
    ex.agent.wake()  # the answers are for the next loop, at once
    return [M.PeersPolled(peers, ex.now, view.revision)]
