"""Issue 12: /metrics of live agents (node1 with metrics.patroni_compat, node2 without) covers every
expression of the Grafana dashboard and the alert rules, and a switchover is timed by the new leader."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from pgha.demo import DemoCluster
from tests.support.cluster import leader_name, running_cluster, wait_for
from tests.support.promql import exported_names, metric_names
from tests.unit.test_dashboard import PATRONI_NAMES
from tests.unit.test_grafana_alerts import alert_rules, dashboard_exprs

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    # The demo's defaults: generated API credentials, HTTPS with its own CA.
    with running_cluster(nodes=2, ttl=6.0, extra_node_config={"node1": {"metrics": {"patroni_compat": True}}}) \
            as cluster:
        yield cluster


def scrape(demo: DemoCluster, name: str) -> str:
    status, data = demo.api_call(name, "GET", "/metrics", auth=False)
    assert status == 200
    return bytes(data).decode()


def value(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert m, f"{sample} not in /metrics"
    return float(m.group(1))


def test_dashboard_and_alerts_name_only_live_metrics(demo: DemoCluster) -> None:
    wait_for("both agents to publish a rule", lambda: all("pgha_last_rule_info{" in scrape(demo, n)
                                                          for n in ("node1", "node2")), timeout=30)
    with_compat, without = scrape(demo, "node1"), scrape(demo, "node2")
    exported = exported_names(with_compat) | exported_names(without)
    for where, expr in dashboard_exprs() + [(r["alert"], r["expr"]) for r in alert_rules()]:
        assert metric_names(expr) <= exported, f"{where}: {sorted(metric_names(expr) - exported)}"
    # Patroni's names only where asked for, labelled as Patroni labels them.
    assert "patroni_" not in without
    lead = leader_name(demo)
    labels = f'{{scope="{demo.cluster}",name="node1"}}'
    for name in PATRONI_NAMES:
        assert f"\n{name}{labels} " in with_compat, name
    assert value(with_compat, f"patroni_primary{labels}") == (1.0 if lead == "node1" else 0.0)
    assert value(with_compat, f"patroni_replica{labels}") == (0.0 if lead == "node1" else 1.0)
    assert value(with_compat, f"patroni_postgres_timeline{labels}") >= 1
    assert value(with_compat, f"patroni_postmaster_start_time{labels}") > 1.6e9
    assert value(with_compat, f"patroni_cluster_unlocked{labels}") == 0.0
    for text in (with_compat, without):
        assert value(text, "pgha_lease_remaining_seconds") > 0
        assert value(text, "pgha_dcs_ok") == 1.0


def test_the_new_leader_times_the_switchover(demo: DemoCluster) -> None:
    old = leader_name(demo)
    new = "node2" if old == "node1" else "node1"
    assert value(scrape(demo, new), "pgha_switchover_duration_seconds_count") == 0
    status, body = demo.api_call(old, "POST", "/switchover", {"leader": old, "candidate": new})
    assert status == 200, body
    wait_for(f"{new} to lead", lambda: leader_name(demo) == new, timeout=60)
    text = wait_for("the duration to be counted", lambda: (
        t if value(t := scrape(demo, new), "pgha_switchover_duration_seconds_count") == 1 else None), timeout=20)
    took = value(text, "pgha_switchover_duration_seconds_sum")
    print(f"\nswitchover timed by {new}: {took:.2f}s")
    assert 0 < took < 60
    assert value(text, "pgha_failover_duration_seconds_count") == 0
    assert value(scrape(demo, old), "pgha_switchover_duration_seconds_count") == 0
