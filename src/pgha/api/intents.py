"""Operator actions: each one validates the request against the snapshot and records an
intent in the DCS (switchover, member intents, cluster config).  The agent carries it out;
nothing here touches PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import asdict
from typing import Any

from pgha import intents as validate
from pgha import redact
from pgha.api import views
from pgha.api.request import Reply, Request, error
from pgha.api.schema import BadRequest, merge_patch, parse_time
from pgha.config import ConfigError, build
from pgha.core.model import ClusterConfig, MemberIntent, Switchover
from pgha.core.standby import StandbyCluster
from pgha.dcs.codec import to_jsonable
from pgha.upgrade import keys as upgrade_keys


def _new_id() -> str:
    return uuid.uuid4().hex


def requester(req: Request) -> validate.Requester:
    s = req.snapshot
    return validate.Requester(wall_now=req.wall_now, mono_now=s.at, local=s.local, holds_lease=s.holds_lease)


def refused(r: validate.Refusal) -> Reply:
    return error(int(r.kind), r.message)


def _time(req: Request, name: str) -> float | None:
    value = req.body.get(name)
    return parse_time(name, value) if value is not None else None


def _me(req: Request) -> str:
    return views.me(req.snapshot) or req.handle.config.name


# --- switchover and failover ------------------------------------------------------------------
def switchover(req: Request) -> Reply:
    sw = validate.switchover(req.snapshot.view, requester(req), id=_new_id(), leader=req.body.get("leader"),
                             candidate=req.body.get("candidate"), scheduled_at=_time(req, "scheduled_at"))
    return _write_switchover(req, sw)


def failover(req: Request) -> Reply:
    sw = validate.failover(req.snapshot.view, requester(req), id=_new_id(), candidate=str(req.body["candidate"]))
    return _write_switchover(req, sw)


def _write_switchover(req: Request, sw: Switchover | validate.Refusal) -> Reply:
    if isinstance(sw, validate.Refusal):
        return refused(sw)
    if not req.handle.store.set_switchover(sw):
        return refused(validate.switchover_race())
    req.handle.wake()
    target = sw.candidate or "the best replica"
    if sw.scheduled_at is not None:
        return Reply(202, {**to_jsonable(sw), "message": f"{sw.kind} from {sw.leader} to {target} scheduled"})
    return Reply(200, {**to_jsonable(sw), "message": f"{sw.kind} from {sw.leader or 'no leader'} to {target} "
                                                     "accepted"})


def cancel_switchover(req: Request) -> Reply:
    sw = validate.cancel_switchover(req.handle.store.read())
    if isinstance(sw, validate.Refusal):
        return refused(sw)
    req.handle.store.clear_switchover(sw.id)
    req.handle.wake()
    return Reply(200, {"message": f"{sw.kind} {sw.id} cancelled"})


# --- member intents ---------------------------------------------------------------------------
def _set_intent(req: Request, name: str, intent: MemberIntent | validate.Refusal, what: str) -> Reply:
    if isinstance(intent, validate.Refusal):
        return refused(intent)
    if not req.handle.store.set_intent(name, intent):
        return refused(validate.intent_race(name))
    req.handle.wake()
    return Reply(202, {**to_jsonable(intent), "member": name, "message": f"{what} of {name} requested"})


def restart(req: Request) -> Reply:
    name = _me(req)
    intent = validate.restart(req.snapshot.view, requester(req), member=name, id=_new_id(),
                              scheduled_at=_time(req, "schedule"),
                              only_if_pending=bool(req.body.get("pending_restart", False)),
                              role=req.body.get("role"))
    return _set_intent(req, name, intent, "restart")


def cancel_restart(req: Request) -> Reply:
    name = _me(req)
    intent = validate.cancel_restart(req.handle.store.read(), name)
    if isinstance(intent, validate.Refusal):
        return refused(intent)
    req.handle.store.clear_intent(name, intent.id)
    req.handle.wake()
    return Reply(200, {"message": f"restart {intent.id} of {name} cancelled"})


def reload(req: Request) -> Reply:
    name = _me(req)
    return _set_intent(req, name, validate.reload(req.snapshot.view, requester(req), member=name, id=_new_id()),
                       "reload")


def reinitialize(req: Request) -> Reply:
    name, view = _me(req), req.snapshot.view
    force = bool(req.body.get("force"))
    intent = validate.reinitialize(view, requester(req), member=name, id=_new_id(),
                                   from_leader=bool(req.body.get("from_leader")), replace_pending=force)
    if force and view is not None and name in view.intents and not isinstance(intent, validate.Refusal):
        req.handle.store.clear_intent(name, view.intents[name].id)
    return _set_intent(req, name, intent, "reinitialization")


# --- cluster configuration ----------------------------------------------------------------------
def config_json(config: ClusterConfig) -> dict[str, Any]:
    return redact.scrub(to_jsonable(config))  # type: ignore[no-any-return]


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


# --- a second site -----------------------------------------------------------------------------------
def _write_cluster_role(req: Request, validator: Any) -> Reply:
    """Validate promote-cluster / demote-cluster against the stored config and write it in one step."""
    view = req.snapshot.view
    current, revision = current_config(req)
    new = validator(dataclasses.replace(view, config=current) if view is not None else None)
    if isinstance(new, validate.Refusal):
        return refused(new)
    if not req.handle.store.set_config(new, revision):
        return error(409, "the configuration changed concurrently; read it again and retry")
    req.handle.wake()
    return Reply(202, {"message": "recorded; the leader carries it out", "config": config_json(new)})


def promote_cluster(req: Request) -> Reply:
    return _write_cluster_role(req, validate.promote_cluster)


def demote_cluster(req: Request) -> Reply:
    b = req.body
    port = b.get("port", 5432)
    if not isinstance(port, int) or isinstance(port, bool):
        raise BadRequest("port: expected an integer, e.g. 5432")
    source = StandbyCluster(host=str(b.get("host") or ""), port=port, primary_slot_name=str(b.get("slot") or ""),
                            restore_command=str(b.get("restore_command") or ""),
                            recovery_min_apply_delay=str(b.get("recovery_min_apply_delay") or ""))
    return _write_cluster_role(req, lambda view: validate.demote_cluster(view, source))


# --- reads from the DCS, and failsafe --------------------------------------------------------------
def history(req: Request) -> Reply:
    return Reply(200, [to_jsonable(e) for e in req.handle.store.history()])


def failsafe(req: Request) -> Reply:
    leader = str(req.body["leader"])
    if req.handle.failsafe_confirm(leader):
        return Reply(200, {"leader": leader, "confirmed": True})
    return error(409, f"not confirming {leader} as leader")



# --- backups ---------------------------------------------------------------------------------------
def backup(req: Request) -> Reply:
    """Record a backup request; the repository host (`pgha repository run`) takes it."""
    from pgha.backup import keys

    kind = str(req.body.get("type") or "full")
    request = validate.backup(req.snapshot.view, requester(req), id=_new_id()[:12], type=kind,
                              pending=keys.read_request(req.handle.store))
    if isinstance(request, validate.Refusal):
        return refused(request)
    if not keys.put_request(req.handle.store, request):
        return error(409, "another backup was requested at the same moment; wait for it to finish")
    return Reply(202, {**to_jsonable(request), "message": f"{request.type} backup requested"})


def backups(req: Request) -> Reply:
    """The backups and the restore window, as the repository host last published them."""
    from pgha.backup import keys

    summary = keys.read_info(req.handle.store)
    if summary is None:
        return error(404, "no backup information in the DCS; is 'pgha repository run' running?")
    result = keys.read_result(req.handle.store)
    return Reply(200, {**summary.to_dict(), "last_request": to_jsonable(result) if result else None})


# --- major-version upgrade --------------------------------------------------------------------
def upgrade(req: Request) -> Reply:
    store = req.handle.store
    pending, _ = upgrade_keys.read(store)
    up = validate.upgrade(req.snapshot.view, requester(req), id=_new_id(), to_bin_dir=str(req.body["to_bin_dir"]),
                          pending=pending)
    if isinstance(up, validate.Refusal):
        return refused(up)
    if not upgrade_keys.request(store, up, pending):
        return error(409, "another upgrade was recorded meanwhile; nothing was written")
    req.handle.wake()
    return Reply(202, {**asdict(up), "message": f"upgrade to {up.to_bin_dir} recorded; {up.leader}'s agent runs "
                                                "the pre-flight (GET /upgrade shows the progress)"})


def upgrade_status(req: Request) -> Reply:
    up, reports = upgrade_keys.read(req.handle.store)
    if up is None:
        return error(404, "no upgrade was requested")
    return Reply(200, {**asdict(up), "reports": {n: asdict(r) for n, r in sorted(reports.items())}})
