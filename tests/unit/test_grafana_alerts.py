"""packaging/grafana/pgha.json and packaging/prometheus/alerts.yml: valid documents whose expressions
name only metrics pgha exports (here from a fake agent's /metrics; tests/integration/test_metrics_cluster.py
scrapes live agents).  `promtool check rules` runs too when Debian's prometheus package is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgha.config import MetricsConfig
from tests.support.promql import exported_names, metric_names
from tests.unit.test_api_helpers import make_handle, serving

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "packaging" / "grafana" / "pgha.json"
ALERTS = ROOT / "packaging" / "prometheus" / "alerts.yml"
PANEL_TYPES = {"stat", "timeseries", "state-timeline", "table", "bargauge", "gauge"}
# A figure of the web page -> the metric a panel must show it with.
PAGE_FIGURES = {
    "leader": "pgha_lease_held", "role": "pgha_role", "state": "pgha_postgres_running",
    "timeline and history": "pgha_timeline", "lag bytes": "pgha_replication_lag_bytes",
    "lag seconds": "pgha_replication_lag_seconds", "sync standby": "pgha_sync_standby",
    "pending restart": "pgha_pending_restart", "pause": "pgha_paused", "etcd reachable": "pgha_dcs_ok",
    "last rule": "pgha_last_rule_info", "decisions": "pgha_decisions_total", "events": "pgha_actions_total",
    "failover duration": "pgha_failover_duration_seconds_bucket",
    "switchover duration": "pgha_switchover_duration_seconds_bucket",
    "rpo": "pgha_backup_wal_archive_age_seconds", "last backup": "pgha_backup_last_backup_age_seconds",
    "restore window": "pgha_backup_restore_window_start_timestamp_seconds",
    "last restore test": "pgha_backup_verify_duration_seconds",
}
REQUIRED_ALERTS = {"PghaNoLeader", "PghaReplicaLagOverFailoverLimit", "PghaFenced", "PghaDcsUnreachable",
                   "PghaWalArchivingFailing", "PghaNoRecentBackup", "PghaBackupVerifyFailed", "PghaArchiveGap"}


def fake_exported() -> set[str]:
    names: set[str] = set()
    for kind in ("leader", "replica"):
        h = make_handle(kind)
        h.config = replace(h.config, metrics=MetricsConfig(patroni_compat=True))
        with serving(h) as c:
            names |= exported_names(c.get("/metrics").data.decode())
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in doc["panels"] for t in p["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def balanced(expr: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for ch in re.sub(r'"(\\.|[^"\\])*"', "", expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in closing:
            depth[closing[ch]] -= 1
            if depth[closing[ch]] < 0:
                return False
    return not any(depth.values())


def test_dashboard_is_a_valid_grafana_dashboard() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] and doc["uid"] and isinstance(doc["schemaVersion"], int)
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "pgha_member_info" in variables["cluster"]["query"]["query"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= len(PAGE_FIGURES)
    for p in doc["panels"]:
        assert p["type"] in PANEL_TYPES and p["title"], p
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert balanced(t["expr"]), (p["title"], t["expr"])


def test_every_expression_names_only_exported_metrics() -> None:
    exported = fake_exported()
    used: set[str] = set()
    for where, expr in dashboard_exprs() + [(r["alert"], r["expr"]) for r in alert_rules()]:
        names = metric_names(expr)
        assert names, (where, expr)
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported by pgha"
        used |= names
    missing = {fig: m for fig, m in PAGE_FIGURES.items() if m not in used}
    assert not missing, f"no Grafana panel for: {missing}"


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le) (increase(a_bucket{x="y(z)"}[1h]) '
            '* on (instance, job) group_left (member) b_info{cluster="$cluster"})) > bool c or time() - d')
    assert metric_names(expr) == {"a_bucket", "b_info", "c", "d"}


def test_alert_rules_structure() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    assert [g["name"] for g in doc["groups"]] == ["pgha"]
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)) and set(names) >= REQUIRED_ALERTS
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, r["alert"]
        assert balanced(r["expr"]) and r["labels"]["severity"] in ("critical", "warning")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        if "for" in r:
            assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_promtool_check_rules(tmp_path: Path) -> None:
    # The dashboard's expressions too, as recording rules (Grafana's $cluster given a value).
    recorded = [{"record": f"pgha:panel{i}", "expr": expr.replace("$cluster", "demo")}
                for i, (_, expr) in enumerate(dashboard_exprs())]
    panels = tmp_path / "panels.yml"
    panels.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": recorded}]}))
    out = subprocess.run(["promtool", "check", "rules", str(ALERTS), str(panels)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
