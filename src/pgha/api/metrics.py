"""Prometheus metrics of one agent, served at /metrics from the agent's registry.

The agent creates ``AgentMetrics(registry)`` once and calls ``observe_loop``
after every HA loop and ``count_action`` after every executed action.  Each
loop's snapshot also feeds the dashboard's ClusterRecorder (lag samples, events,
and the failover/switchover durations the histograms count).

With ``metrics.patroni_compat`` (on by default), /metrics also carries Patroni's 23 names
(``pgha.api.patroni``), computed at scrape time from the same snapshot.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pgha.api import views
from pgha.api.handle import NodeSnapshot
from pgha.api.recorder import ClusterRecorder
from pgha.backup.metrics import BackupMetrics
from pgha.core.model import Role

# Seconds from a switchover request, or from the leader key's loss, to the new primary's first loop.
TRANSITION_BUCKETS = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0)


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
        for name in ("Fence", "Promote"):
            # Exported from 0, so that increase() sees the first one (alerts.yml: PghaFenced).
            self.actions.labels(name)
            self.errors.labels(name)
        self.decisions = Counter("pgha_decisions", "HA loops that followed each rule", ["rule_id"],
                                 registry=registry)
        self.dcs_last_seen = Gauge("pgha_dcs_last_seen_timestamp_seconds",
                                   "Epoch seconds of the last successful read of the DCS (0: never)",
                                   registry=registry)
        self.lease_remaining = Gauge("pgha_lease_remaining_seconds",
                                     "Seconds this agent's lease is certainly alive for (0: no lease)",
                                     registry=registry)
        self.lease_remaining.set_function(self._lease_remaining)
        # The agent points it at its lease keeper (set_function): 0 until then.
        self.lease_late = Gauge("pgha_lease_renewal_late_max_seconds",
                                "The latest a lease renewal started after it was due, since the agent "
                                "started (this process was not scheduled in time)", registry=registry)
        self.failover_seconds = Histogram(
            "pgha_failover_duration_seconds", "Seen by the new leader: from the old leader key's loss (or a "
            "manual failover request) to its first loop as the leading primary", buckets=TRANSITION_BUCKETS,
            registry=registry)
        self.switchover_seconds = Histogram(
            "pgha_switchover_duration_seconds", "Seen by the new leader: from the switchover request to its "
            "first loop as the leading primary", buckets=TRANSITION_BUCKETS, registry=registry)
        self.lag_seconds = Gauge("pgha_replication_lag_seconds",
                                 "Seconds since the leader's published WAL position passed this replica's "
                                 "(estimated from the positions members publish; NaN: unknown)", registry=registry)
        self.lag_limit = Gauge("pgha_maximum_lag_on_failover_bytes",
                               "The cluster's maximum_lag_on_failover: a replica further behind is not promoted",
                               registry=registry)
        self.sync = Gauge("pgha_sync_standby", "1 when this node is a synchronous standby", registry=registry)
        self.member_info = Gauge("pgha_member_info", "This agent's cluster and member name (always 1)",
                                 ["cluster", "member"], registry=registry)
        self._info: tuple[str, str] | None = None
        # RPO and RTO (pgha_backup_*), from the agent's backup thread (NaN without backup:).
        self.backup = BackupMetrics(registry)
        self.recorder = ClusterRecorder()
        self.last: NodeSnapshot | None = None

    def _lease_remaining(self) -> float:
        s = self.last
        if s is None or s.local is None or s.local.lease_deadline is None:
            return 0.0
        return max(0.0, s.local.lease_deadline - time.monotonic())

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
        dcs_ok = s.view is not None and s.view.dcs_error is None
        self.dcs_ok.set(1 if dcs_ok else 0)
        if dcs_ok:
            self.dcs_last_seen.set(time.time())
        self.paused.set(1 if s.cluster_config.pause else 0)
        self.lag_limit.set(s.cluster_config.maximum_lag_on_failover)
        self.sync.set(1 if views.is_sync(s) else 0)
        self.last_loop.set(s.at)
        self.loops.inc()
        rule = s.decision.rule_id if s.decision is not None else ""
        if rule:
            self.decisions.labels(rule).inc()
        self.last = s
        now = time.time()
        for t in self.recorder.observe(s, now):
            (self.switchover_seconds if t.kind == "switchover" else self.failover_seconds).observe(t.seconds)
        lsn = views.my_lsn(s)
        behind = None if not views.is_replica(s) or lsn is None else self.recorder.lag_seconds(lsn, now)
        self.lag_seconds.set(0.0 if views.is_leader_primary(s) else float("nan") if behind is None else behind)
        info = (s.view.name if s.view is not None else "", views.me(s))
        if info != self._info and all(info):
            if self._info is not None:
                self.member_info.remove(*self._info)
            self.member_info.labels(*info).set(1)
            self._info = info
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
