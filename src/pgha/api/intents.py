"""Operator actions: each one validates the request against the snapshot and records an
intent in the DCS (switchover, member intents, cluster config).  The agent carries it out;
nothing here touches PostgreSQL.
"""

from __future__ import annotations

import uuid
from typing import Any

from pgha.api import views
from pgha.api.request import Reply, Request, error
from pgha.api.schema import BadRequest, merge_patch, parse_time
from pgha.config import ConfigError, build
from pgha.core.election import pick_switchover_target, why_not_switchover_target
from pgha.core.facts import Facts
from pgha.core.model import (
    ClusterConfig,
    ClusterView,
    LocalPostgres,
    LocalState,
    MemberIntent,
    PgRunState,
    Role,
    Switchover,
    Tags,
)
from pgha.dcs.codec import to_jsonable

NOT_READ = "the agent has not read the cluster state yet; retry in a moment"


def _new_id() -> str:
    return uuid.uuid4().hex


def _view(req: Request) -> ClusterView | None:
    return req.snapshot.view


def leader_facts(req: Request, view: ClusterView, leader: str) -> Facts:
    """Facts as the leader sees them: its own LocalState here, else its published member key."""
    s = req.snapshot
    if s.local is not None and s.local.name == leader:
        local = s.local
    else:
        m = view.members.get(leader)
        pg = LocalPostgres(run_state=PgRunState.RUNNING, in_recovery=False,
                           timeline=m.timeline if m else None, wal_lsn=m.lsn if m else None)
        local = LocalState(name=leader, pg=pg, tags=m.tags if m else Tags())
    return Facts(view=view, local=local, config=view.config, now=s.at)


# --- switchover and failover ------------------------------------------------------------------
def switchover(req: Request) -> Reply:
    view = _view(req)
    if view is None:
        return error(503, NOT_READ)
    leader = view.leader.name if view.leader is not None else None
    if leader is None:
        return error(412, "the cluster has no leader; use POST /failover with a candidate")
    wanted_leader = req.body.get("leader")
    if wanted_leader is not None and wanted_leader != leader:
        return error(412, f"leader: {wanted_leader} is not the current leader ({leader})")
    scheduled = req.body.get("scheduled_at")
    at = parse_time("scheduled_at", scheduled, req.wall_now) if scheduled is not None else None
    facts = leader_facts(req, view, leader)
    candidate = req.body.get("candidate")
    if candidate is not None:
        why = why_not_switchover_target(facts, candidate)
        if why is not None:
            return error(412, why)
    elif pick_switchover_target(facts) is None:
        reasons = "; ".join(r for n in sorted(view.members) if n != leader
                            if (r := why_not_switchover_target(facts, n)) is not None)
        return error(412, f"no member can take over: {reasons or 'the leader is the only member'}")
    if view.switchover is not None:
        return _pending(view.switchover)
    sw = Switchover(id=_new_id(), kind="switchover", leader=leader, candidate=candidate, scheduled_at=at)
    return _write_switchover(req, sw)


def failover(req: Request) -> Reply:
    view = _view(req)
    if view is None:
        return error(503, NOT_READ)
    candidate = str(req.body["candidate"])
    m = view.members.get(candidate)
    leader = view.leader.name if view.leader is not None else None
    if m is None:
        return error(412, f"candidate {candidate} is not a member of the cluster")
    if candidate == leader:
        return error(412, f"candidate {candidate} is already the leader")
    if m.tags.nofailover:
        return error(412, f"candidate {candidate} is tagged nofailover")
    if m.role != Role.REPLICA or m.state not in ("streaming", "running"):
        return error(412, f"candidate {candidate} is not a running replica (state: {m.state})")
    if view.switchover is not None:
        return _pending(view.switchover)
    sw = Switchover(id=_new_id(), kind="failover", leader=leader, candidate=candidate)
    return _write_switchover(req, sw)


def _pending(sw: Switchover) -> Reply:
    return error(409, f"a {sw.kind} is already pending (id {sw.id}); cancel it with DELETE /switchover first")


def _write_switchover(req: Request, sw: Switchover) -> Reply:
    if not req.handle.store.set_switchover(sw):
        return error(409, "a switchover is already pending; cancel it with DELETE /switchover first")
    req.handle.wake()
    target = sw.candidate or "the best replica"
    if sw.scheduled_at is not None:
        return Reply(202, {**to_jsonable(sw), "message": f"{sw.kind} from {sw.leader} to {target} scheduled"})
    return Reply(200, {**to_jsonable(sw), "message": f"{sw.kind} from {sw.leader or 'no leader'} to {target} "
                                                     "accepted"})


def cancel_switchover(req: Request) -> Reply:
    view = req.handle.store.read()
    if view.switchover is None:
        return error(404, "no switchover is pending")
    req.handle.store.clear_switchover(view.switchover.id)
    req.handle.wake()
    return Reply(200, {"message": f"{view.switchover.kind} {view.switchover.id} cancelled"})


# --- member intents ---------------------------------------------------------------------------
def _set_intent(req: Request, intent: MemberIntent, what: str) -> Reply:
    name = views.me(req.snapshot) or req.handle.config.name
    if not req.handle.store.set_intent(name, intent):
        return error(409, f"another intent is already pending on {name}; wait for it or cancel it")
    req.handle.wake()
    return Reply(202, {**to_jsonable(intent), "member": name, "message": f"{what} of {name} requested"})


def restart(req: Request) -> Reply:
    schedule = req.body.get("schedule")
    at = parse_time("schedule", schedule, req.wall_now) if schedule is not None else None
    intent = MemberIntent(action="restart", id=_new_id(), scheduled_at=at,
                          only_if_pending=bool(req.body.get("pending_restart", False)),
                          role=req.body.get("role"))
    return _set_intent(req, intent, "restart")


def cancel_restart(req: Request) -> Reply:
    name = views.me(req.snapshot) or req.handle.config.name
    intent = req.handle.store.read().intents.get(name)
    if intent is None or intent.action != "restart":
        return error(404, f"no restart is pending on {name}")
    req.handle.store.clear_intent(name, intent.id)
    req.handle.wake()
    return Reply(200, {"message": f"restart {intent.id} of {name} cancelled"})


def reload(req: Request) -> Reply:
    return _set_intent(req, MemberIntent(action="reload", id=_new_id()), "reload")


def reinitialize(req: Request) -> Reply:
    s = req.snapshot
    view = s.view
    if view is None:
        return error(503, NOT_READ)
    name = views.me(s)
    if s.holds_lease or views.leader_name(s) == name:
        return error(409, f"{name} is the leader; reinitialize a replica, or switch over first")
    if view.leader is None:
        return error(412, "the cluster has no leader to clone from")
    if req.body.get("force") and name in view.intents:
        req.handle.store.clear_intent(name, view.intents[name].id)
    intent = MemberIntent(action="reinitialize", id=_new_id(), from_leader=bool(req.body.get("from_leader")))
    return _set_intent(req, intent, "reinitialization")


# --- cluster configuration ----------------------------------------------------------------------
def config_json(config: ClusterConfig) -> dict[str, Any]:
    return views.scrub(to_jsonable(config))  # type: ignore[no-any-return]


def current_config(req: Request) -> tuple[ClusterConfig, int | None]:
    """The stored config and its revision; when it is invalid, its usable settings and None."""
    try:
        return req.handle.store.get_config()
    except ValueError:
        return req.handle.store.read().config, None


def get_config(req: Request) -> Reply:
    config, revision = current_config(req)
    return Reply(200, config_json(config), headers={"ETag": f'"{revision or 0}"'})


def patched_config(current: ClusterConfig, patch: dict[str, Any]) -> ClusterConfig:
    """Apply a merge patch and validate the result exactly as a node's cluster_config is."""
    merged = merge_patch(to_jsonable(current), patch)
    try:
        config = build(ClusterConfig, merged)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    except (OverflowError, ValueError, TypeError) as exc:
        raise BadRequest(f"invalid configuration ({exc})") from None
    problem = config.problem()
    if problem is not None:
        raise BadRequest(problem)
    return config


def _write_config(req: Request, change: dict[str, Any]) -> Reply:
    store = req.handle.store
    current, revision = current_config(req)
    new = patched_config(current, change)
    if new != current and not store.set_config(new, revision):
        return error(409, "the configuration changed concurrently; read it again and retry")
    req.handle.wake()
    return Reply(200, config_json(new))


def patch_config(req: Request) -> Reply:
    return _write_config(req, dict(req.body))


def pause(req: Request) -> Reply:
    return _write_config(req, {"pause": True})


def resume(req: Request) -> Reply:
    return _write_config(req, {"pause": False})


# --- reads from the DCS, and failsafe --------------------------------------------------------------
def history(req: Request) -> Reply:
    return Reply(200, [to_jsonable(e) for e in req.handle.store.history()])


def failsafe(req: Request) -> Reply:
    leader = str(req.body["leader"])
    if req.handle.failsafe_confirm(leader):
        return Reply(200, {"leader": leader, "confirmed": True})
    return error(409, f"not confirming {leader} as leader")

