"""Prometheus metrics of one agent, served at /metrics from the agent's registry.

The agent creates ``AgentMetrics(registry)`` once and calls ``observe_loop``
after every HA loop and ``count_action`` after every executed action.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge

from pgha.api import views
from pgha.api.handle import NodeSnapshot
from pgha.core.model import Role


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._rule = ""
        self.role = Gauge("pgha_role", "1 for the role PostgreSQL runs as on this node, else 0",
                          ["role"], registry=registry)
        for r in Role:
            self.role.labels(r.value).set(0)
        self.running = Gauge("pgha_postgres_running", "1 when PostgreSQL is running", registry=registry)
        self.lease = Gauge("pgha_lease_held", "1 when this node holds the leader lease", registry=registry)
        self.lag = Gauge("pgha_replication_lag_bytes",
                         "Bytes this replica is behind the leader's published WAL position (NaN: unknown)",
                         registry=registry)
        self.timeline = Gauge("pgha_timeline", "PostgreSQL timeline (0: unknown)", registry=registry)
        self.pending_restart = Gauge("pgha_pending_restart", "1 when a parameter change needs a restart",
                                     registry=registry)
        self.dcs_ok = Gauge("pgha_dcs_ok", "1 when the last read of the DCS succeeded", registry=registry)
        self.paused = Gauge("pgha_paused", "1 when the cluster is in maintenance mode", registry=registry)
        self.last_loop = Gauge("pgha_last_loop_monotonic_seconds", "Monotonic time of the last HA loop",
                               registry=registry)
        self.rule = Gauge("pgha_last_rule_info", "The rule the last HA loop followed (always 1)",
                          ["rule_id"], registry=registry)
        self.loops = Counter("pgha_loops", "HA loops run", registry=registry)
        self.actions = Counter("pgha_actions", "Actions executed", ["action"], registry=registry)
        self.errors = Counter("pgha_action_errors", "Actions that failed", ["action"], registry=registry)

    def observe_loop(self, s: NodeSnapshot) -> None:
        role = views.status_json(s)["role"]
        for r in Role:
            self.role.labels(r.value).set(1 if r.value == role else 0)
        self.running.set(1 if views.running(s) else 0)
        self.lease.set(1 if s.holds_lease else 0)
        lag = views.lag_bytes(s)
        self.lag.set(float("nan") if lag is None else lag)
        tl = s.local.pg.timeline if s.local is not None else None
        self.timeline.set(tl or 0)
        self.pending_restart.set(1 if s.local is not None and s.local.pg.pending_restart else 0)
        self.dcs_ok.set(1 if s.view is not None and s.view.dcs_error is None else 0)
        self.paused.set(1 if s.cluster_config.pause else 0)
        self.last_loop.set(s.at)
        self.loops.inc()
        rule = s.decision.rule_id if s.decision is not None else ""
        with self._lock:
            if rule != self._rule:
                if self._rule:
                    self.rule.remove(self._rule)
                self._rule = rule
            if rule:
                self.rule.labels(rule).set(1)

    def count_action(self, name: str, ok: bool) -> None:
        self.actions.labels(name).inc()
        if not ok:
            self.errors.labels(name).inc()
