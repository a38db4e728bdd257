"""The web dashboard: GET /ui (one static page shipped in pgha/api/ui/) and GET /ui/state (what it shows).

The page polls /ui/state every second.  That document is built from the agent's latest
loop snapshot and its ClusterRecorder (lag samples, events), with no DCS read except the
history, which is read again only when the leader key changed.  Actions on the page call
the ordinary authenticated endpoints (POST /switchover, /restart, /reinitialize, /pause,
/resume, /promote-cluster, /demote-cluster) with the credentials typed into its sign-in form,
so they get the same validation.
"""

from __future__ import annotations

import threading
import time
import weakref
from functools import cache
from importlib import resources
from typing import Any

from pgha.api import views
from pgha.api.handle import AgentHandle, NodeSnapshot
from pgha.api.recorder import DOWN_STATES, ClusterRecorder
from pgha.api.request import Reply, Request
from pgha.dcs.base import DCSError
from pgha.dcs.codec import to_jsonable

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src data:; frame-ancestors 'none'",
}


@cache
def page() -> bytes:
    return resources.files("pgha.api").joinpath("ui/dashboard.html").read_bytes()


def ui(req: Request) -> Reply:
    return Reply(200, raw=page(), content_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


class _HistoryCache:
    """/history, read again only when the leader key or the known forks changed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.key: tuple[Any, ...] | None = None
        self.entries: list[dict[str, Any]] = []

    def get(self, handle: AgentHandle, s: NodeSnapshot) -> tuple[list[dict[str, Any]], bool]:
        view = s.view
        if view is None:
            return self.entries, False
        key = (view.leader.mod_revision if view.leader else 0, len(view.forks), view.last_leader)
        with self._lock:
            if key != self.key and view.dcs_error is None:
                try:
                    self.entries = [to_jsonable(e) for e in handle.store.history()]
                    self.key = key
                except DCSError:
                    return self.entries, False
            return self.entries, self.key == key


# One cache per agent (keyed by its metrics object, which lives as long as the agent).
_HISTORY: weakref.WeakKeyDictionary[object, _HistoryCache] = weakref.WeakKeyDictionary()
_HISTORY_LOCK = threading.Lock()


def _history(handle: AgentHandle, s: NodeSnapshot) -> tuple[list[dict[str, Any]], bool]:
    with _HISTORY_LOCK:
        cache_ = _HISTORY.setdefault(handle.metrics, _HistoryCache())
    return cache_.get(handle, s)


def _member_rows(s: NodeSnapshot, rec: ClusterRecorder, now: float) -> list[dict[str, Any]]:
    lag, _, seen, gone = rec.state()
    view = s.view
    members = dict(seen)
    if view is not None:
        members.update(view.members)
    leader = views.leader_name(s)
    sync = set(view.sync.standbys) if view is not None and view.sync is not None else set()
    rows = []
    for name in sorted(members):
        m = members[name]
        row = views.member_json(s, m)
        is_gone = view is not None and name not in view.members
        lag_bytes = None if is_gone else row["lag"]
        if name == leader:
            lag_bytes = 0
        row.update({
            "gone": is_gone,
            "gone_for": round(now - gone[name], 1) if name in gone else None,
            "sync_standby": name in sync and name != leader,
            "lag": lag_bytes,
            "lag_seconds": None if is_gone or m.lsn == 0 else (0.0 if name == leader
                                                                 else rec.lag_seconds(m.lsn, now)),
            "down": is_gone or m.state in DOWN_STATES or (m.rule_id.startswith("fence")),
            "pgbouncer": m.pgbouncer,
            "pgbouncer_paused_for": m.pgbouncer_paused_for,
            "lag_samples": [[round(t, 1), v] for t, v in lag.get(name, [])],
        })
        rows.append(row)
    return rows


def state_json(handle: AgentHandle, s: NodeSnapshot, now: float) -> dict[str, Any]:
    rec = handle.metrics.recorder
    _, events, _, _ = rec.state()
    history, history_fresh = _history(handle, s)
    cluster = views.cluster_json(s)
    leader = cluster["leader"]
    vip = handle.config.vip
    members = _member_rows(s, rec, now)
    return {
        "now": now,
        "node": views.status_json(s),
        "cluster": {k: v for k, v in cluster.items() if k != "members"},
        "standby_of": _standby_of(s),
        "members": members,
        "vip": {"address": vip.address, "holder": leader} if vip is not None else None,
        "pgbouncers": [{"member": m["name"], "target": None if m["pgbouncer_paused_for"] else leader,
                        "paused_for": m["pgbouncer_paused_for"]} for m in members if m["pgbouncer"]],
        "history": history,
        "history_fresh": history_fresh,
        "events": [to_jsonable(e) for e in events[-100:]],
        "ttl": s.cluster_config.ttl,
        "auth_required": handle.config.api.credentials is not None,
        "backup": _backup(handle, now),
    }


def _standby_of(s: NodeSnapshot) -> str | None:
    """What a standby cluster follows, for its banner (never the restore_command itself)."""
    sc = s.cluster_config.standby_cluster
    if sc is None or not sc.active:
        return None
    return sc.host or "the other site's archive (restore_command)"


def _backup(handle: AgentHandle, now: float) -> dict[str, Any] | None:
    """RPO, the restore window and the last restore test, as the agent's backup thread last read them."""
    from pgha.backup.status import summary_json

    b = handle.metrics.backup.status
    return summary_json(b.info, b.result, b.verify, now) if b is not None else None


def ui_state(req: Request) -> Reply:
    return Reply(200, state_json(req.handle, req.snapshot, time.time()), headers={"Cache-Control": "no-store"})
