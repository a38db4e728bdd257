"""The routing table: one row per (method, path).  The server dispatches from it, and the
OpenAPI document (/openapi.json) and the endpoint table in docs/api.md are generated from it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pgha import __version__
from pgha.api import dashboard, guard, health, intents, patroni, views
from pgha.api.request import Reply, Request
from pgha.api.schema import ANY_OTHER, Body, Field, Param, body_schema, dataclass_patch_schema
from pgha.core.model import ClusterConfig

Handler = Callable[[Request], Reply]

HEALTH_METHODS = ("GET", "HEAD", "OPTIONS")

# Responses every route may give, besides its own.
COMMON = {400: "Bad request: unknown query parameter, malformed body (JSON {error})"}
AUTH = {401: "Authentication required or wrong credentials (unless api.auth is none)"}
DCS = {503: "The DCS could not be reached (JSON {error})"}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: bool = False
    params: tuple[Param, ...] = ()
    body: Body | None = None
    responses: Mapping[int, str] = field(default_factory=dict)
    # Health checks: GET answers the node status, HEAD and OPTIONS only the status code.
    health: bool = False
    tag: str = "cluster"


# --- handlers of the read-only routes -------------------------------------------------------
def _health(check: health.HealthCheck) -> Handler:
    def handler(req: Request) -> Reply:
        ok = check.check(req.snapshot, req.query, req.mono_now)
        return Reply(200 if ok else 503, views.status_json(req.snapshot))
    return handler


def _status(req: Request) -> Reply:
    body = views.status_json(req.snapshot)
    live = req.handle.live_lsn()
    if live is not None and (body["lsn"] is None or live > body["lsn"]):
        body["lsn"] = live
    return Reply(200, body)


def _cluster(req: Request) -> Reply:
    return Reply(200, views.cluster_json(req.snapshot))


def _metrics(req: Request) -> Reply:
    text = generate_latest(req.handle.registry)
    if req.handle.config.metrics.patroni_compat:
        text += patroni.patroni_text(req.snapshot, req.handle.config, _dcs_last_seen(req))
    return Reply(200, raw=text, content_type=CONTENT_TYPE_LATEST)


def _dcs_last_seen(req: Request) -> float:
    return req.handle.registry.get_sample_value("pgha_dcs_last_seen_timestamp_seconds") or 0.0


def _patroni(req: Request) -> Reply:
    return Reply(200, patroni.document(req.snapshot, req.handle.config, _dcs_last_seen(req)))


def _openapi(req: Request) -> Reply:
    return Reply(200, openapi())


# --- bodies ------------------------------------------------------------------------------------
SWITCHOVER = Body((
    Field("leader", "string", "Refuse unless this member is the current leader"),
    Field("candidate", "string", "The member to promote; default: the most advanced healthy replica"),
    Field("scheduled_at", "time", "When to switch over: ISO-8601 with timezone, or epoch seconds"),
))
FAILOVER = Body((Field("candidate", "string", "The replica to promote", required=True),))
RESTART = Body((
    Field("pending_restart", "boolean", "Restart only if a changed parameter needs it"),
    Field("role", "string", "Restart only if PostgreSQL runs with this role", enum=("primary", "replica")),
    Field("schedule", "time", "When to restart: ISO-8601 with timezone, or epoch seconds"),
))
REINITIALIZE = Body((
    Field("force", "boolean", "Replace an intent already pending on this member"),
    Field("from_leader", "boolean", "Clone from the leader rather than the best replica"),
))
FAILSAFE = Body((Field("leader", "string", "The leader asking to be confirmed", required=True),))
CONFIG_PATCH = Body(description="JSON merge patch (RFC 7396) of the cluster configuration; null restores "
                    "a default", schema=dataclass_patch_schema(ClusterConfig),
                    media_type="application/merge-patch+json")
UPGRADE = Body((Field("to_bin_dir", "string", "The new major's bin directory, installed on every member",
                      required=True),))
EMPTY = Body(description="No body (an empty JSON object is accepted)")
DEMOTE_CLUSTER = Body((
    Field("host", "string", "The primary to follow: a host, or 'h1:p1,h2:p2'"),
    Field("port", "integer", "Its port (default 5432)"),
    Field("slot", "string", "The replication slot to stream through there"),
    Field("restore_command", "string", "Fetch WAL from the other site's archive"),
    Field("recovery_min_apply_delay", "string", "Replay this long behind, e.g. 5min"),
))
BACKUP = Body((Field("type", "string", "Backup type (default full)", enum=("full", "diff", "incr")),))

ACCEPTED = {202: "Intent recorded; the agent carries it out",
            409: "Another intent is already pending on this member"}
CONFIG_WRITE = {200: "The new cluster configuration",
                409: "The configuration changed concurrently; read it again and retry"}


def _rows() -> tuple[Route, ...]:
    rows: list[Route] = []
    for check in health.HEALTH_CHECKS:
        for path in check.paths:
            for method in HEALTH_METHODS:
                rows.append(Route(method, path, _health(check), check.summary, params=check.params,
                                  responses={200: "Healthy for this role", 503: "Not healthy for this role"},
                                  health=True, tag="health"))
    rows += [
        Route("GET", "/status", _status, "This node: role, state, lsn, timeline, leader, rule and reason",
              responses={200: "Node status"}, tag="status"),
        Route("GET", "/cluster", _cluster, "The whole cluster: members, leader, sync, switchover, config",
              responses={200: "Cluster state"}, tag="status"),
        Route("GET", "/patroni", _patroni, "This node as Patroni's GET /patroni shows it: state, role, xlog, "
              "timeline, replication, pause, tags, patroni{version, scope, name}…",
              params=(health.OTHERS,), responses={200: "Patroni's node status document"}, tag="status"),
        Route("GET", "/history", intents.history, "Leader changes, oldest first",
              responses={200: "History entries", **DCS}, tag="status"),
        Route("GET", "/config", intents.get_config, "The cluster configuration",
              responses={200: "Cluster configuration (ETag: its revision)", **DCS}, tag="config"),
        Route("GET", "/metrics", _metrics, "Prometheus metrics", responses={200: "Prometheus text"},
              tag="status"),
        Route("GET", "/ui", dashboard.ui, "The web dashboard (one HTML page; actions ask for api.auth)",
              responses={200: "HTML page"}, tag="dashboard"),
        Route("GET", "/ui/state", dashboard.ui_state, "What the dashboard shows: members, lag samples, "
              "events, history", responses={200: "Dashboard state"}, tag="dashboard"),
        Route("GET", "/openapi.json", _openapi, "This document", responses={200: "OpenAPI 3 document"},
              tag="status"),
        Route("POST", "/switchover", intents.switchover, "Move the primary to another member", auth=True,
              body=SWITCHOVER,
              responses={200: "Switchover accepted", 202: "Switchover scheduled",
                         409: "A switchover is already pending",
                         412: "Refused: leader mismatch or no suitable candidate (JSON {error})",
                         503: "The cluster state was not read yet, or the DCS is unreachable"}),
        Route("DELETE", "/switchover", intents.cancel_switchover, "Cancel the pending switchover or failover",
              auth=True, body=EMPTY, responses={200: "Cancelled", 404: "None is pending", **DCS}),
        Route("POST", "/failover", intents.failover, "Promote a replica (also without a healthy leader)",
              auth=True, body=FAILOVER,
              responses={200: "Failover accepted", 409: "A switchover is already pending",
                         412: "Refused: the candidate cannot be promoted (JSON {error})",
                         503: "The cluster state was not read yet, or the DCS is unreachable"}),
        Route("POST", "/upgrade", intents.upgrade, "Major-version upgrade of the cluster (pgha upgrade); "
              "its progress is GET /upgrade", auth=True, body=UPGRADE,
              responses={202: "Upgrade recorded; the leader's agent runs the pre-flight",
                         409: "An upgrade or a switchover is already under way",
                         412: "Refused: no leader, paused, or a bad path (JSON {error})", **DCS}),
        Route("GET", "/upgrade", intents.upgrade_status, "The last upgrade: phase, one line, each member's report",
              responses={200: "The upgrade (JSON)", 404: "No upgrade was requested"}, tag="status"),
        Route("POST", "/restart", intents.restart, "Restart PostgreSQL on this node", auth=True, body=RESTART,
              responses={**ACCEPTED, 412: "The scheduled time is in the past (JSON {error})", **DCS}, tag="node"),
        Route("DELETE", "/restart", intents.cancel_restart, "Cancel a pending restart of this node",
              auth=True, body=EMPTY, responses={200: "Cancelled", 404: "No restart is pending", **DCS},
              tag="node"),
        Route("POST", "/reload", intents.reload, "Reload PostgreSQL's configuration on this node", auth=True,
              body=EMPTY, responses={**ACCEPTED, **DCS}, tag="node"),
        Route("POST", "/reinitialize", intents.reinitialize, "Wipe this replica and clone it again",
              auth=True, body=REINITIALIZE,
              responses={**ACCEPTED, 409: "This node is the leader, or an intent is pending",
                         412: "The cluster has no leader to clone from",
                         503: "The cluster state was not read yet, or the DCS is unreachable"}, tag="node"),
        Route("PATCH", "/config", intents.patch_config, "Change the cluster configuration (merge patch)",
              auth=True, body=CONFIG_PATCH, responses={**CONFIG_WRITE, **DCS}, tag="config"),
        Route("POST", "/pause", intents.pause, "Maintenance mode: agents take no automatic action",
              auth=True, body=EMPTY, responses={**CONFIG_WRITE, **DCS}, tag="config"),
        Route("POST", "/resume", intents.resume, "Leave maintenance mode", auth=True, body=EMPTY,
              responses={**CONFIG_WRITE, **DCS}, tag="config"),
        Route("POST", "/promote-cluster", intents.promote_cluster, "Turn this standby cluster into a primary "
              "cluster (its standby leader promotes)", auth=True, body=EMPTY,
              responses={202: "Recorded; the standby leader promotes", 409: "The configuration changed concurrently",
                         412: "Refused: not a standby cluster, paused, or a switchover pending (JSON {error})",
                         **DCS}, tag="config"),
        Route("POST", "/demote-cluster", intents.demote_cluster, "Turn this primary cluster into a standby "
              "cluster of another one", auth=True, body=DEMOTE_CLUSTER,
              responses={202: "Recorded; the leader shuts down and follows the other site",
                         409: "Already a standby cluster, or the configuration changed concurrently",
                         412: "Refused: no host or restore_command, a bad value, paused (JSON {error})",
                         **DCS}, tag="config"),
        Route("GET", "/backups", intents.backups, "The backups in the pgBackRest repository and the restore "
              "window", responses={200: "Backups, restore window, last requested backup",
                                   404: "No backup information (no repository host running)", **DCS},
              tag="backup"),
        Route("POST", "/backup", intents.backup, "Take a backup (on the repository host, from a standby)",
              auth=True, body=BACKUP,
              responses={202: "Backup requested", 409: "A backup is already requested",
                         412: "Refused: no backup: section, or no primary running (JSON {error})",
                         503: "The cluster state was not read yet, or the DCS is unreachable"}, tag="backup"),
        Route("POST", "/failsafe", intents.failsafe, "A leader cut off from the DCS asks to be confirmed",
              auth=True, body=FAILSAFE,
              responses={200: "Confirmed", 409: "Not confirmed"}, tag="node"),
    ]
    return tuple(rows)


ROUTES: tuple[Route, ...] = _rows()
BY_PATH: Mapping[str, Mapping[str, Route]] = {
    path: {r.method: r for r in ROUTES if r.path == path} for path in dict.fromkeys(r.path for r in ROUTES)
}


def responses_of(route: Route, auth_configured: bool = True) -> dict[int, str]:
    """Every status this route may answer (the fuzz test holds the server to it)."""
    out = dict(route.responses)
    out.update(COMMON)
    if route.body is not None:
        out[413] = "The body is larger than 1 MiB"
        out[411] = "Chunked bodies are not accepted; send Content-Length"
    if route.method in guard.MUTATING:
        out.update(guard.REFUSALS)
    if route.auth and auth_configured:
        out.update(AUTH)
    return dict(sorted(out.items()))


# --- generated documents ---------------------------------------------------------------------
def openapi() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": r.method.lower() + re.sub(r"[^a-z]", "_", r.path),
            "tags": [r.tag],
            "responses": {str(code): {"description": text} for code, text in responses_of(r).items()},
        }
        if r.params:
            op["parameters"] = [_param(p) for p in r.params]
        if r.body is not None:
            op["requestBody"] = {"required": False, "description": r.body.description,
                                 "content": {r.body.media_type: {"schema": body_schema(r.body)}}}
        if r.auth:
            op["security"] = [{"basicAuth": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "pgha agent API", "version": __version__,
                 "description": "Health checks, cluster state and operator intents of one pgha agent."},
        "paths": paths,
        "components": {"securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}}},
    }


def _param(p: Param) -> dict[str, Any]:
    if p.name == ANY_OTHER:
        return {"name": "other", "in": "query", "required": False, "description": p.description,
                "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                "style": "form", "explode": True}
    if p.name.endswith("*"):
        prefix = p.name[:-1]
        return {"name": f"{prefix}KEY", "in": "query", "required": False, "description": p.description,
                "schema": {"type": "string"}, "x-pgha-prefix": prefix,
                **({"example": p.example} if p.example else {})}
    return {"name": p.name, "in": "query", "required": False, "description": p.description,
            "schema": {"type": "string"}, **({"example": p.example} if p.example else {})}


def markdown_table() -> str:
    """The endpoint table of docs/api.md."""
    lines = ["| Method | Path | Auth | Summary |", "| --- | --- | --- | --- |"]
    for check in health.HEALTH_CHECKS:
        paths = ", ".join(f"`{p}`" for p in check.paths)
        lines.append(f"| GET, HEAD, OPTIONS | {paths} | no | {check.summary} |")
    for methods in BY_PATH.values():
        if next(iter(methods.values())).health:
            continue
        for m, r in methods.items():
            lines.append(f"| {m} | `{r.path}` | {'yes' if r.auth else 'no'} | {r.summary} |")
    return "\n".join(lines) + "\n"
