"""What Patroni 4.1.5 tools read, from one NodeSnapshot: the GET /patroni document and Patroni's
23 metric names (pure functions, no I/O).

The document carries the keys of Patroni's ``get_postgresql_status`` and
``_write_status_response``; each metric is one row of ``PATRONI_METRICS`` with Patroni's name,
type and help text, and its value is read from that same document, as Patroni's
``do_GET_metrics`` reads it.  docs/api.md's metric table is generated from the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgha import __version__
from pgha.api import health, views
from pgha.api.handle import NodeSnapshot
from pgha.config import NodeConfig
from pgha.core.model import BOOL_TAGS, INT_TAGS, PgRunState, Tags, TaskKind

# Patroni's PostgresqlState names and their fixed numbers (patroni_postgres_state).
PATRONI_STATES: Mapping[str, int] = {
    "initializing new cluster": 0, "initdb failed": 1, "running custom bootstrap script": 2,
    "custom bootstrap failed": 3, "creating replica": 4, "running": 5, "starting": 6,
    "starting after custom bootstrap": 7, "start failed": 8, "restarting": 9, "restart failed": 10,
    "stopping": 11, "stopped": 12, "stop failed": 13, "crashed": 14,
}
# Patroni's comment line under patroni_postgres_state (its enum's names).
STATE_VALUES = ("# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, "
                "4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, 9=restarting, "
                "10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, 14=crashed")
_TASK_STATES = {TaskKind.INITDB: "initializing new cluster", TaskKind.CLONE: "creating replica",
                TaskKind.RESTART: "restarting", TaskKind.START: "starting", TaskKind.STOP: "stopping"}


def patroni_state(s: NodeSnapshot) -> str:
    """PostgreSQL's state in Patroni's words."""
    if s.local is None:
        return "unknown"
    task = s.local.task
    if task is not None and task.running and task.kind in _TASK_STATES and not views.running(s):
        return _TASK_STATES[task.kind]
    if task is not None and not task.running and task.ok is False and not views.running(s):
        failed = {TaskKind.INITDB: "initdb failed", TaskKind.START: "start failed",
                  TaskKind.RESTART: "restart failed", TaskKind.STOP: "stop failed"}
        if task.kind in failed:
            return failed[task.kind]
    return {PgRunState.RUNNING: "running", PgRunState.STARTING: "starting", PgRunState.STOPPED: "stopped",
            PgRunState.CRASHED: "crashed"}[s.local.pg.run_state]


def _time(epoch: float | None) -> str | None:
    # Patroni serialises psycopg's datetimes with str(): "2026-01-02 03:04:05.678901+00:00".
    return str(datetime.fromtimestamp(epoch, UTC)) if epoch is not None else None


def patroni_tags(tags: Tags) -> dict[str, Any]:
    """Tags as Patroni shows them: the built-in booleans only when set, then the node's own."""
    out: dict[str, Any] = {k: True for k in sorted(BOOL_TAGS) if getattr(tags, k)}
    out.update({k: getattr(tags, k) for k in INT_TAGS if getattr(tags, k) != getattr(Tags(), k)})
    out.update(tags.extra)
    return out


def document(s: NodeSnapshot, config: NodeConfig, dcs_last_seen: float) -> dict[str, Any]:
    """GET /patroni: Patroni's keys, with pgha's values."""
    pg = s.local.pg if s.local is not None else None
    out: dict[str, Any] = {"state": patroni_state(s)}
    if pg is not None and views.running(s):
        primary = pg.in_recovery is False
        out["postmaster_start_time"] = _time(pg.postmaster_start)
        out["role"] = "primary" if primary else "standby_leader" if views.is_standby_leader(s) else "replica"
        out["server_version"] = pg.server_version
        out["xlog"] = {"location": pg.wal_lsn or 0} if primary else {
            "received_location": pg.received_lsn or pg.replayed_lsn or 0,
            "replayed_location": pg.replayed_lsn or 0,
            "replayed_timestamp": _time(pg.replay_timestamp),
            "paused": pg.replay_paused,
        }
        if health.quorum_standby(s):
            out["quorum_standby"] = True
        elif health.sync_standby(s):
            out["sync_standby"] = True
        out["timeline"] = pg.timeline
        if not primary and pg.receiver_status == "streaming":
            out["replication_state"] = "streaming"
        elif not primary and pg.restore_command:
            out["replication_state"] = "in archive recovery"
        if primary and pg.replication:
            # Patroni also has usename, client_addr and sync_priority; pgha does not read them.
            out["replication"] = [{"application_name": r.application_name, "state": r.state,
                                   "sync_state": r.sync_state} for r in pg.replication]
    else:
        member = s.member
        out["role"] = "primary" if member is not None and member.role.value == "primary" else "replica"
    if s.cluster_config.pause:
        out["pause"] = True
    if s.view is None or s.view.leader is None:
        out["cluster_unlocked"] = True
    if failsafe_active(s):
        out["failsafe_mode_is_active"] = True
    out["dcs_last_seen"] = int(dcs_last_seen)
    tags = patroni_tags(s.local.tags if s.local is not None else Tags())
    if tags:
        out["tags"] = tags
    system_id = pg.system_id if pg is not None and pg.system_id else (s.view.system_id if s.view else None)
    if system_id:
        out["database_system_identifier"] = system_id
    if pg is not None and pg.pending_restart:
        out["pending_restart"] = True
        # pgha does not read which parameters need it (pg_settings.pending_restart per name).
        out["pending_restart_reason"] = {}
    out["patroni"] = {"version": __version__, "scope": config.cluster, "name": config.name}
    intent = s.view.intents.get(config.name) if s.view is not None else None
    if intent is not None and intent.action == "restart" and intent.scheduled_at is not None:
        out["scheduled_restart"] = {"schedule": datetime.fromtimestamp(intent.scheduled_at, UTC).isoformat()}
    return out


def failsafe_active(s: NodeSnapshot) -> bool:
    return (s.local is not None and s.local.failsafe_deadline is not None and s.view is not None
            and s.view.dcs_error is not None)


# --- Patroni's metrics --------------------------------------------------------------------------
def _epoch(text: str | None) -> float:
    return datetime.fromisoformat(text).timestamp() if text else 0.0


def _xlog(key: str) -> Callable[[dict[str, Any]], float]:
    return lambda d: float(d.get("xlog", {}).get(key, 0) or 0)


@dataclass(frozen=True)
class PatroniMetric:
    name: str
    type: str
    help: str
    value: Callable[[dict[str, Any]], float]


PATRONI_METRICS: tuple[PatroniMetric, ...] = (
    PatroniMetric("patroni_version", "gauge", "Patroni semver without periods.",
                  lambda d: float("".join(x.zfill(2) for x in d["patroni"]["version"].split(".")[:3]
                                          if x.isdigit()) or 0)),
    PatroniMetric("patroni_postgres_running", "gauge", "Value is 1 if Postgres is running, 0 otherwise.",
                  lambda d: float(d["state"] == "running")),
    PatroniMetric("patroni_postmaster_start_time", "gauge", "Epoch seconds since Postgres started.",
                  lambda d: _epoch(d.get("postmaster_start_time"))),
    PatroniMetric("patroni_primary", "gauge", "Value is 1 if this node is the leader, 0 otherwise.",
                  lambda d: float(d["state"] == "running" and d.get("role") == "primary")),
    PatroniMetric("patroni_xlog_location", "counter", "Current location of the Postgres transaction log, 0 if "
                  "this node is not the leader.", _xlog("location")),
    PatroniMetric("patroni_standby_leader", "gauge", "Value is 1 if this node is the standby_leader, 0 "
                  "otherwise.", lambda d: float(d.get("role") == "standby_leader")),
    PatroniMetric("patroni_replica", "gauge", "Value is 1 if this node is a replica, 0 otherwise.",
                  lambda d: float(d["state"] == "running" and d.get("role") == "replica")),
    PatroniMetric("patroni_sync_standby", "gauge", "Value is 1 if this node is a sync standby, 0 otherwise.",
                  lambda d: float(bool(d.get("sync_standby")))),
    PatroniMetric("patroni_quorum_standby", "gauge", "Value is 1 if this node is a quorum standby, 0 "
                  "otherwise.", lambda d: float(bool(d.get("quorum_standby")))),
    PatroniMetric("patroni_xlog_received_location", "counter", "Current location of the received Postgres "
                  "transaction log, 0 if this node is not a replica.", _xlog("received_location")),
    PatroniMetric("patroni_xlog_replayed_location", "counter", "Current location of the replayed Postgres "
                  "transaction log, 0 if this node is not a replica.", _xlog("replayed_location")),
    PatroniMetric("patroni_xlog_replayed_timestamp", "gauge", "Current timestamp of the replayed Postgres "
                  "transaction log, 0 if null.", lambda d: _epoch(d.get("xlog", {}).get("replayed_timestamp"))),
    PatroniMetric("patroni_xlog_paused", "gauge", "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
                  lambda d: float(d.get("xlog", {}).get("paused", False) is True)),
    PatroniMetric("patroni_postgres_streaming", "gauge", "Value is 1 if Postgres is streaming, 0 otherwise.",
                  lambda d: float(d.get("replication_state") == "streaming")),
    PatroniMetric("patroni_postgres_in_archive_recovery", "gauge", "Value is 1 if Postgres is replicating "
                  "from archive, 0 otherwise.", lambda d: float(d.get("replication_state") == "in archive recovery")),
    PatroniMetric("patroni_postgres_server_version", "gauge", "Version of Postgres (if running), 0 otherwise.",
                  lambda d: float(d.get("server_version", 0))),
    PatroniMetric("patroni_cluster_unlocked", "gauge", "Value is 1 if the cluster is unlocked, 0 if locked.",
                  lambda d: float(bool(d.get("cluster_unlocked")))),
    PatroniMetric("patroni_failsafe_mode_is_active", "gauge", "Value is 1 if failsafe mode is active, 0 if "
                  "inactive.", lambda d: float(bool(d.get("failsafe_mode_is_active")))),
    PatroniMetric("patroni_postgres_timeline", "gauge", "Postgres timeline of this node (if running), 0 "
                  "otherwise.", lambda d: float(d.get("timeline") or 0)),
    PatroniMetric("patroni_dcs_last_seen", "gauge", "Epoch timestamp when DCS was last contacted successfully "
                  "by Patroni.", lambda d: float(d.get("dcs_last_seen", 0))),
    PatroniMetric("patroni_pending_restart", "gauge", "Value is 1 if the node needs a restart, 0 otherwise.",
                  lambda d: float(bool(d.get("pending_restart")))),
    PatroniMetric("patroni_is_paused", "gauge", "Value is 1 if auto failover is disabled, 0 otherwise.",
                  lambda d: float(bool(d.get("pause")))),
    PatroniMetric("patroni_postgres_state", "gauge", "Numeric representation of Postgres state.",
                  lambda d: float(PATRONI_STATES.get(d["state"], -1))),
)
PATRONI_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in PATRONI_METRICS)


def patroni_values(s: NodeSnapshot, config: NodeConfig, dcs_last_seen: float) -> list[tuple[str, str, str, float]]:
    """(name, type, help, value) of each Patroni metric, with Patroni's meaning."""
    doc = document(s, config, dcs_last_seen)
    return [(m.name, m.type, m.help, m.value(doc)) for m in PATRONI_METRICS]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def patroni_text(s: NodeSnapshot, config: NodeConfig, dcs_last_seen: float) -> bytes:
    """Prometheus text of Patroni's metrics, labelled {scope, name} as Patroni labels them."""
    labels = f'{{scope="{_label(config.cluster)}",name="{_label(config.name)}"}}'
    lines: list[str] = []
    for name, kind, help_text, value in patroni_values(s, config, dcs_last_seen):
        lines += [f"# HELP {name} {help_text}"]
        if name == "patroni_postgres_state":
            lines.append(STATE_VALUES)
        lines += [f"# TYPE {name} {kind}", f"{name}{labels} {_number(value)}"]
    return ("\n".join(lines) + "\n").encode()


def markdown_table() -> str:
    """docs/api.md's table of Patroni's metric names."""
    rows = ["| Name | Type | Meaning |", "| --- | --- | --- |"]
    rows += [f"| `{m.name}` | {m.type} | {m.help} |" for m in PATRONI_METRICS]
    return "\n".join(rows) + "\n"
