"""What the API reports, computed from one NodeSnapshot: pure functions, no I/O.

The health checks built from these facts are in ``health.py``.
"""

from __future__ import annotations

from typing import Any

from pgha.api.handle import NodeSnapshot
from pgha.core import standby
from pgha.core.model import MemberInfo, PgRunState, Role, Tags
from pgha.dcs.codec import to_jsonable


# --- facts about this node ---------------------------------------------------------------
def me(s: NodeSnapshot) -> str:
    if s.local is not None:
        return s.local.name
    return s.member.name if s.member is not None else ""


def running(s: NodeSnapshot) -> bool:
    return s.local is not None and s.local.pg.run_state == PgRunState.RUNNING


def in_recovery(s: NodeSnapshot) -> bool | None:
    return s.local.pg.in_recovery if s.local is not None else None


def leader_name(s: NodeSnapshot) -> str | None:
    return s.view.leader.name if s.view is not None and s.view.leader is not None else None


def is_leader_primary(s: NodeSnapshot) -> bool:
    return s.holds_lease and running(s) and in_recovery(s) is False


def is_standby_leader(s: NodeSnapshot) -> bool:
    """The leader of a standby cluster: it holds the lease and runs as a replica of the other site."""
    return (s.holds_lease and running(s) and in_recovery(s) is True
            and standby.active(s.cluster_config.standby_cluster))


def is_replica(s: NodeSnapshot) -> bool:
    return running(s) and in_recovery(s) is True and not s.holds_lease and leader_name(s) != me(s)


def is_streaming(s: NodeSnapshot) -> bool:
    return is_replica(s) and s.local is not None and s.local.pg.receiver_status == "streaming"


def is_sync(s: NodeSnapshot) -> bool:
    return is_replica(s) and s.view is not None and s.view.sync is not None and me(s) in s.view.sync.standbys


def my_lsn(s: NodeSnapshot) -> int | None:
    if s.local is None:
        return None
    pg = s.local.pg
    known = [x for x in (pg.wal_lsn, pg.received_lsn, pg.replayed_lsn) if x is not None]
    return max(known) if known else None


def lag_bytes(s: NodeSnapshot) -> int | None:
    """Leader's published WAL position minus what this replica received or replayed."""
    if s.local is None or s.view is None:
        return None
    if is_leader_primary(s):
        return 0
    leader = s.view.members.get(leader_name(s) or "")
    pg = s.local.pg
    mine = [x for x in (pg.received_lsn, pg.replayed_lsn) if x is not None]
    if leader is None or leader.wal_lsn is None or not mine:
        return None
    return max(0, leader.wal_lsn - max(mine))


def member_lag(s: NodeSnapshot, m: MemberInfo) -> int | None:
    if s.view is None or m.role != Role.REPLICA:
        return None
    leader = s.view.members.get(leader_name(s) or "")
    if leader is None or leader.wal_lsn is None:
        return None
    return max(0, leader.wal_lsn - m.lsn)


# --- JSON documents -------------------------------------------------------------------------
def _role(s: NodeSnapshot) -> str:
    if running(s) and in_recovery(s) is not None:
        return Role.REPLICA.value if in_recovery(s) else Role.PRIMARY.value
    if s.member is not None:
        return s.member.role.value
    return Role.UNINITIALIZED.value


def status_json(s: NodeSnapshot) -> dict[str, Any]:
    """This node; peers read name, role, state, lsn, timeline, in_recovery and leader."""
    local, member, view = s.local, s.member, s.view
    pg = local.pg if local is not None else None
    tags = local.tags if local is not None else (member.tags if member is not None else Tags())
    return {
        "name": me(s),
        "role": _role(s),
        "state": member.state if member is not None else (pg.run_state.value if pg else "unknown"),
        "lsn": my_lsn(s),
        "timeline": pg.timeline if pg is not None else None,
        "in_recovery": in_recovery(s),
        "leader": leader_name(s),
        "lease_held": s.holds_lease,
        "rule_id": s.decision.rule_id if s.decision is not None else "",
        "reason": s.decision.reason if s.decision is not None else "",
        "pending_restart": pg.pending_restart if pg is not None else False,
        "tags": to_jsonable(tags),
        "running": running(s),
        "receiver_status": pg.receiver_status if pg is not None else None,
        "following": pg.following if pg is not None else None,
        "lag": lag_bytes(s),
        "sync_standby": is_sync(s),
        "paused": s.cluster_config.pause,
        "task": to_jsonable(local.task) if local is not None and local.task is not None else None,
        "dcs_error": view.dcs_error if view is not None else "the cluster state was not read yet",
        "api_url": member.api_url if member is not None else "",
        "version": member.version if member is not None else "",
    }


def member_json(s: NodeSnapshot, m: MemberInfo) -> dict[str, Any]:
    return {
        "name": m.name,
        "role": m.role.value,
        "state": m.state,
        "leader": leader_name(s) == m.name,
        "host": m.host,
        "port": m.port,
        "api_url": m.api_url,
        "timeline": m.timeline,
        "lsn": m.lsn if any(x is not None for x in (m.wal_lsn, m.received_lsn, m.replayed_lsn)) else None,
        "lag": member_lag(s, m),
        "following": m.following,
        "pending_restart": m.pending_restart,
        "tags": to_jsonable(m.tags),
        "rule_id": m.rule_id,
        "reason": m.reason,
        "version": m.version,
    }


def cluster_json(s: NodeSnapshot) -> dict[str, Any]:
    view = s.view
    if view is None:
        return {"members": [], "leader": None, "sync": None, "switchover": None,
                "config": to_jsonable(s.cluster_config), "paused": s.cluster_config.pause,
                "system_id": None, "intents": {}, "dcs_error": "the cluster state was not read yet"}
    return {
        "name": view.name,
        "members": [member_json(s, view.members[n]) for n in sorted(view.members)],
        "leader": leader_name(s),
        "sync": to_jsonable(view.sync) if view.sync is not None else None,
        "switchover": to_jsonable(view.switchover) if view.switchover is not None else None,
        "config": to_jsonable(view.config),
        "paused": view.config.pause,
        "system_id": view.system_id,
        "intents": to_jsonable(view.intents),
        "dcs_error": view.dcs_error,
    }
