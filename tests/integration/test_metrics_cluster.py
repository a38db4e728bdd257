"""Issues 12 and 18, on one live 2-node cluster: /metrics covers every expression of the Grafana
dashboard and the alert rules and all 23 of Patroni's names; GET /patroni; a switchover is timed by the
new leader; and the seed-style HAProxy config of a Patroni setup (``option httpchk``, i.e. ``OPTIONS /``,
``http-check expect status 200``, ``check port <api>``) routes to the pgha primary unchanged, before and
after a switchover.

The cluster's API is plain HTTP, as Patroni's REST API is by default, so that the seed config is used
as it is; docs/api.md says what to add to it when api.tls is set."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from pgha.api.patroni import PATRONI_METRIC_NAMES
from pgha.cli.main import _register, cli
from pgha.demo import DemoCluster
from tests.support.cluster import connect, leader_name, running_cluster, wait_for
from tests.support.haproxy import running_haproxy, seed_config
from tests.support.procs import free_port
from tests.support.promql import exported_names, metric_names
from tests.unit.test_dashboard import PATRONI_NAMES
from tests.unit.test_grafana_alerts import alert_rules, dashboard_exprs

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    # Generated API credentials; Patroni's metric names are on by default.
    with running_cluster(nodes=2, ttl=6.0, api_tls=False) as cluster:
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
    with_compat, other = scrape(demo, "node1"), scrape(demo, "node2")
    exported = exported_names(with_compat) | exported_names(other)
    for where, expr in dashboard_exprs() + [(r["alert"], r["expr"]) for r in alert_rules()]:
        assert metric_names(expr) <= exported, f"{where}: {sorted(metric_names(expr) - exported)}"
    lead = leader_name(demo)
    labels = f'{{scope="{demo.cluster}",name="node1"}}'
    for name in PATRONI_NAMES:
        assert f"\n{name}{labels} " in with_compat, name
    assert value(with_compat, f"patroni_primary{labels}") == (1.0 if lead == "node1" else 0.0)
    assert value(with_compat, f"patroni_replica{labels}") == (0.0 if lead == "node1" else 1.0)
    assert value(with_compat, f"patroni_postgres_timeline{labels}") >= 1
    assert value(with_compat, f"patroni_postmaster_start_time{labels}") > 1.6e9
    assert value(with_compat, f"patroni_cluster_unlocked{labels}") == 0.0
    for text in (with_compat, other):
        assert value(text, "pgha_lease_remaining_seconds") > 0
        assert value(text, "pgha_dcs_ok") == 1.0


def test_cli_restart_waits_and_the_postmaster_start_time_moves(demo: DemoCluster) -> None:
    """patronictl's `restart --role replica --timeout`: the CLI returns once the agent restarted it."""
    lead = leader_name(demo)
    replica = "node2" if lead == "node1" else "node1"
    labels = f'{{scope="{demo.cluster}",name="{replica}"}}'
    before = value(scrape(demo, replica), f"patroni_postmaster_start_time{labels}")
    _register()
    r = CliRunner().invoke(cli, ["restart", "--role", "replica", "--timeout", "60", "--force",
                                 "--dcs", demo.etcd_url, "--cluster", demo.cluster])
    assert r.exit_code == 0, r.output
    assert f"Restart of {replica} requested." in r.output and r.output.rstrip().endswith("Done.")
    after = wait_for("the new start time to be published", lambda: (
        v if (v := value(scrape(demo, replica), f"patroni_postmaster_start_time{labels}")) != before else None),
        timeout=30)
    assert after > before
    r = CliRunner().invoke(cli, ["list", "-f", "yaml", "--dcs", demo.etcd_url, "--cluster", demo.cluster])
    assert r.exit_code == 0 and {m["member"] for m in yaml.safe_load(r.output)} == {"node1", "node2"}


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


def patroni_samples(text: str) -> dict[str, tuple[dict[str, str], float]]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("patroni_"):
                out[sample.name.removesuffix("_total")] = (sample.labels, sample.value)
    return out


def test_every_patroni_metric_is_exported_live(demo: DemoCluster) -> None:
    lead = leader_name(demo)
    replica = "node2" if lead == "node1" else "node1"
    with connect(demo, lead) as conn:
        conn.execute("SELECT txid_current()")  # a commit for the replica to replay
    wait_for("the replica to replay a commit", lambda: patroni_samples(scrape(demo, replica))
             ["patroni_xlog_replayed_timestamp"][1] > 0, timeout=30)
    for name in (lead, replica):
        samples = patroni_samples(scrape(demo, name))
        assert set(samples) == set(PATRONI_METRIC_NAMES), name
        assert all(labels == {"scope": demo.cluster, "name": name} for labels, _ in samples.values())
        v = {k: value for k, (_, value) in samples.items()}
        primary = name == lead
        assert v["patroni_primary"] == primary and v["patroni_replica"] == (not primary)
        assert v["patroni_postgres_server_version"] >= 150000 and v["patroni_postgres_state"] == 5
        assert v["patroni_postmaster_start_time"] > 1.6e9 and v["patroni_version"] > 0
        assert v["patroni_dcs_last_seen"] > 1.6e9 and v["patroni_postgres_timeline"] >= 1
        assert v["patroni_xlog_paused"] == 0 and v["patroni_postgres_in_archive_recovery"] == 0
        assert v["patroni_standby_leader"] == 0 and v["patroni_quorum_standby"] == 0
        if primary:
            assert v["patroni_xlog_location"] > 0 and v["patroni_postgres_streaming"] == 0
        else:
            assert v["patroni_xlog_replayed_location"] > 0 and v["patroni_postgres_streaming"] == 1
            assert v["patroni_xlog_replayed_timestamp"] > 1.6e9


def test_patroni_document_live(demo: DemoCluster) -> None:
    lead = leader_name(demo)
    replica = "node2" if lead == "node1" else "node1"
    status, doc = demo.api_call(lead, "GET", "/patroni", auth=False)
    assert status == 200
    assert doc["state"] == "running" and doc["role"] == "primary" and doc["xlog"]["location"] > 0
    assert doc["server_version"] >= 150000 and doc["timeline"] >= 1
    assert doc["patroni"]["scope"] == demo.cluster and doc["patroni"]["name"] == lead
    assert [r["application_name"] for r in doc["replication"]] == [replica]
    assert len(doc["database_system_identifier"]) >= 16 and "cluster_unlocked" not in doc
    status, doc = demo.api_call(replica, "GET", "/patroni", auth=False)
    assert status == 200
    assert doc["role"] == "replica" and doc["replication_state"] == "streaming"
    assert set(doc["xlog"]) == {"received_location", "replayed_location", "replayed_timestamp", "paused"}


def port_behind(port: int, password: str) -> int | None:
    """The PostgreSQL port HAProxy's frontend leads to, if it is a primary (None otherwise)."""
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", password=password,
                             connect_timeout=2, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('port')::int, pg_is_in_recovery()").fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row is not None and not row[1] else None


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (Debian package haproxy)")
def test_seed_haproxy_config_routes_to_the_primary(demo: DemoCluster, tmp_path: Path) -> None:
    assert demo.state is not None
    port = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(seed_config(port, [f"postgresql_127.0.0.1_{n.pg_port} 127.0.0.1:{n.pg_port} maxconn 100 "
                                      f"check port {n.api_port}" for n in demo.state.nodes]))
    password = (demo.dir / "pgpass").read_text().splitlines()[0].rsplit(":", 1)[1]
    with running_haproxy(cfg):
        old = leader_name(demo)
        new = "node2" if old == "node1" else "node1"
        wait_for("HAProxy to route to the primary", lambda: port_behind(port, password) == demo.node(old).pg_port,
                 timeout=30)
        status, body = demo.api_call(old, "POST", "/switchover", {"leader": old, "candidate": new})
        assert status == 200, body
        wait_for("HAProxy to route to the new primary",
                 lambda: port_behind(port, password) == demo.node(new).pg_port, timeout=60)


def test_each_agent_calls_the_systems_libpq_when_that_gives_up_nothing(demo: DemoCluster) -> None:
    """No second OpenSSL, Kerberos and LDAP (psycopg-binary's) in an agent whose system libpq is as new
    as its PostgreSQL programs' (pgha.postgres.driver; 4 MB of RSS, docs/architecture.md)."""
    from pgha.config import load
    from pgha.postgres import driver, libpq

    assert demo.state is not None
    for node in demo.state.nodes:
        bin_dir = load(node.config).postgresql.bin_dir
        want = driver.choice(driver.system_version(), libpq.tools_version(bin_dir), None, False)
        maps = Path(f"/proc/{node.agent_pid}/maps").read_text()
        assert ("psycopg_binary" not in maps) == (want == "python"), (node.name, want)
