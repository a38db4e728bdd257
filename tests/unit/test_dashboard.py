"""Issue 12 without a browser: the recorder's events, lag samples and transition durations, /ui and
/ui/state from a fake agent, and the metrics (pgha's own, and Patroni's names when asked)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pgha.api import AgentMetrics
from pgha.api.handle import NodeSnapshot
from pgha.api.patroni import patroni_values
from pgha.api.recorder import ClusterRecorder
from pgha.config import MetricsConfig
from pgha.core.model import Leader, MemberInfo, Switchover
from pgha.demo import DemoNode, DemoState
from tests.unit.test_api_helpers import LEADER_LSN, MEMBERS, SECRETS, VIEW, make_handle, make_snapshot, serving

PATRONI_NAMES = {
    "patroni_primary", "patroni_replica", "patroni_xlog_location", "patroni_xlog_replayed_location",
    "patroni_xlog_received_location", "patroni_postgres_timeline", "patroni_cluster_unlocked",
    "patroni_dcs_last_seen", "patroni_postgres_running", "patroni_is_paused", "patroni_sync_standby",
    "patroni_pending_restart", "patroni_postmaster_start_time",
}


def _with_members(s: NodeSnapshot, **changes: MemberInfo | None) -> NodeSnapshot:
    assert s.view is not None
    members = dict(s.view.members)
    for name, m in changes.items():
        if m is None:
            members.pop(name, None)
        else:
            members[name] = m
    return replace(s, view=replace(s.view, members=members))


def test_events_are_derived_from_successive_views() -> None:
    rec = ClusterRecorder()
    s0 = make_snapshot("replica")
    assert s0.view is not None
    rec.observe(s0, 100.0)
    sw = Switchover("sw1", leader="n1", candidate="n2")
    s1 = replace(s0, view=replace(s0.view, switchover=sw))
    rec.observe(s1, 101.0)
    s2 = replace(s1, view=replace(s1.view, switchover=replace(sw, phase="demoting")))  # type: ignore[arg-type]
    rec.observe(s2, 102.0)
    s3 = _with_members(s2, n1=replace(MEMBERS["n1"], state="fenced", rule_id="fence-not-leader", reason="r"),
                       n4=None)
    s3 = replace(s3, view=replace(s3.view, leader=None, switchover=None))  # type: ignore[arg-type]
    rec.observe(s3, 103.0)
    s4 = replace(s3, view=replace(s3.view, leader=Leader("n2", 2, 9)))  # type: ignore[arg-type]
    rec.observe(s4, 104.0)
    s5 = replace(s4, view=replace(s4.view, dcs_error="etcd: connection refused"))  # type: ignore[arg-type]
    rec.observe(s5, 105.0)
    _, events, seen, gone = rec.state()
    texts = [(e.kind, e.text) for e in events]
    assert ("switchover", "switchover sw1 requested to n2") in texts
    assert ("switchover", "switchover sw1: phase demoting") in texts
    assert ("switchover", "switchover sw1 ended") in texts
    assert ("fence", "n1: running -> fenced") in texts
    assert ("fence", "n1 fenced [fence-not-leader] r") in texts
    assert ("member", "n4 is gone: its member key expired with its lease") in texts
    assert ("leader", "n2 is the leader") in texts
    assert ("dcs", "n2 cannot reach the DCS: etcd: connection refused") in texts
    assert "n4" in seen and gone["n4"] == 103.0


def test_lag_samples_are_kept_ten_minutes_at_most_every_two_seconds() -> None:
    rec = ClusterRecorder()
    s = make_snapshot("replica")
    for i in range(0, 2000):
        rec.observe(s, 1000.0 + i * 0.5)
    lag, _, _, _ = rec.state()
    samples = lag["n3"]
    assert 295 <= len(samples) <= 301
    assert samples[-1][0] - samples[0][0] <= 600
    assert samples[-1][1] == 50 * 1024 * 1024 and lag["n1"][-1][1] == 0


def test_lag_seconds_is_when_the_leader_passed_the_replica_position() -> None:
    rec = ClusterRecorder()
    s = make_snapshot("replica")
    for i, lsn in enumerate((LEADER_LSN - 3000, LEADER_LSN - 1500, LEADER_LSN)):
        rec.observe(_with_members(s, n1=replace(MEMBERS["n1"], wal_lsn=lsn)), 100.0 + 10 * i)
    assert rec.lag_seconds(LEADER_LSN, 130.0) == 0.0
    assert rec.lag_seconds(LEADER_LSN - 2000, 130.0) == 20.0   # passed between t=100 and t=110
    assert rec.lag_seconds(LEADER_LSN - 5000, 130.0) == 30.0


def _as_leader(s: NodeSnapshot) -> NodeSnapshot:
    leader = make_snapshot("leader")
    return replace(leader, view=replace(s.view, leader=Leader("n1", 1, 20)))  # type: ignore[arg-type]


def test_the_new_leader_times_a_switchover_and_a_failover() -> None:
    rec = ClusterRecorder()
    # n1 is a replica of n2 here, asked to take over at t=10 and leading at t=13.5.
    replica = replace(make_snapshot("replica"), local=replace(make_snapshot("leader").local, name="n1"),  # type: ignore[arg-type]
                      holds_lease=False)
    replica = replace(replica, view=replace(replica.view, leader=Leader("n2", 2, 3)))  # type: ignore[arg-type]
    assert rec.observe(replica, 9.0) == []
    sw = replace(replica, view=replace(replica.view, switchover=Switchover("a", candidate="n1")))  # type: ignore[arg-type]
    assert rec.observe(sw, 10.0) == []
    [t] = rec.observe(_as_leader(sw), 13.5)
    assert (t.kind, t.seconds) == ("switchover", 3.5)
    # Later: n1 is a replica again, the leader key vanishes at t=50, n1 leads at t=57.
    rec.observe(replica, 40.0)
    rec.observe(replace(replica, view=replace(replica.view, leader=None)), 50.0)  # type: ignore[arg-type]
    [t] = rec.observe(_as_leader(replica), 57.0)
    assert (t.kind, t.seconds) == ("failover", 7.0)
    # Staying leader is not another transition.
    assert rec.observe(_as_leader(replica), 58.0) == []


def test_ui_page_and_state() -> None:
    h = make_handle("replica")
    h.metrics.observe_loop(h.snap)
    h.snap = _with_members(h.snap, n4=None)
    h.metrics.observe_loop(h.snap)
    with serving(h) as c:
        r = c.get("/ui")
        assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
        assert b"ui/state" in r.data and "frame-ancestors 'none'" in r.headers["content-security-policy"]
        raw = c.get("/ui/state").data.decode()
    st = json.loads(raw)
    assert not any(s in raw for s in SECRETS)
    assert st["node"]["name"] == "n2" and st["cluster"]["leader"] == "n1"
    rows = {m["name"]: m for m in st["members"]}
    assert set(rows) == set(MEMBERS)
    assert rows["n1"]["lag"] == 0 and rows["n3"]["lag"] == 50 * 1024 * 1024
    assert rows["n2"]["sync_standby"] and not rows["n3"]["sync_standby"]
    assert rows["n4"]["gone"] and rows["n4"]["down"] and not rows["n2"]["down"]
    assert rows["n3"]["lag_samples"] and rows["n2"]["rule_id"] == ""
    assert any("n4 is gone" in e["text"] for e in st["events"])
    assert st["vip"] is None and st["pgbouncers"] == [] and st["auth_required"] is False


def test_metrics_without_and_with_patroni_names() -> None:
    h = make_handle("leader")
    h.config = replace(h.config, metrics=MetricsConfig(patroni_compat=False))
    with serving(h) as c:
        text = c.get("/metrics").data.decode()
    assert "patroni_" not in text
    for name in ("pgha_decisions_total", "pgha_lease_remaining_seconds", "pgha_failover_duration_seconds_bucket",
                 "pgha_switchover_duration_seconds_count", "pgha_dcs_last_seen_timestamp_seconds",
                 'pgha_member_info{cluster="main",member="n1"} 1.0', "pgha_maximum_lag_on_failover_bytes 1.048576e+06"):
        assert name in text, name
    h.config = replace(h.config, metrics=MetricsConfig())  # on by default
    with serving(h) as c:
        text = c.get("/metrics").data.decode()
    labels = '{scope="main",name="n1"}'
    for line in (f"patroni_primary{labels} 1", f"patroni_replica{labels} 0",
                 f"patroni_xlog_location{labels} {LEADER_LSN}", f"patroni_cluster_unlocked{labels} 0",
                 f"patroni_postgres_timeline{labels} 2", "# TYPE patroni_xlog_location counter"):
        assert line in text, line
    assert {n for n, *_ in patroni_values(h.snap, h.config, 0.0)} >= PATRONI_NAMES


def test_patroni_replica_values() -> None:
    h = make_handle("replica")
    values = {n: v for n, _, _, v in patroni_values(h.snap, h.config, 123.0)}
    assert values["patroni_replica"] == 1 and values["patroni_primary"] == 0
    assert values["patroni_xlog_location"] == 0 and values["patroni_xlog_received_location"] == LEADER_LSN - 1000
    assert values["patroni_xlog_replayed_location"] == LEADER_LSN - 2000 and values["patroni_sync_standby"] == 1
    assert values["patroni_dcs_last_seen"] == 123.0 and values["patroni_postmaster_start_time"] == 0
    no_leader = replace(h.snap, view=replace(VIEW, leader=None))
    assert {n: v for n, _, _, v in patroni_values(no_leader, h.config, 0)}["patroni_cluster_unlocked"] == 1


def test_role_change_moves_member_info_and_lag_seconds() -> None:
    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    s = make_snapshot("replica")
    m.observe_loop(s)
    m.observe_loop(replace(s, local=replace(s.local, pg=replace(s.local.pg, received_lsn=LEADER_LSN,  # type: ignore[union-attr]
                                                                 replayed_lsn=LEADER_LSN))))
    text = generate_latest(registry).decode()
    assert "pgha_replication_lag_seconds 0.0" in text and 'pgha_member_info{cluster="main",member="n2"}' in text
    assert registry.get_sample_value("pgha_lease_remaining_seconds") == 0.0


def test_demo_up_prints_each_members_dashboard_url(capsys: pytest.CaptureFixture[str]) -> None:
    from pgha.cli.commands_demo import _echo_dashboard

    nodes = [DemoNode(f"node{i}", 15410 + 10 * i, 15411 + 10 * i, f"/d/node{i}/pgha.yaml", f"/d/node{i}/data", "",
                      api_url=f"https://127.0.0.1:{15411 + 10 * i}") for i in (1, 2)]
    _echo_dashboard(DemoState("demo", "http://127.0.0.1:15400", 0, "/d", nodes, api_netrc="/d/api.netrc",
                              api_ca="/d/api-ca.crt"))
    out = capsys.readouterr().out
    assert "  node1: https://127.0.0.1:15421/ui\n" in out and "  node2: https://127.0.0.1:15431/ui\n" in out
    assert "/d/api.netrc" in out and "/d/api-ca.crt" in out


def test_state_shows_an_upgrade_under_way() -> None:
    from pgha.upgrade import keys
    from pgha.upgrade.record import Upgrade

    h = make_handle("replica")
    assert h.snap.view is not None
    up = Upgrade(id="u1", to_bin_dir="/usr/lib/postgresql/18/bin", leader="n1", phase="syncing",
                 message="the replicas take the new cluster by rsync (new primary not started)")
    keys.put(h.store, up)
    h.snap = replace(h.snap, view=replace(h.snap.view, upgrade_phase="syncing"))
    with serving(h) as c:
        st = json.loads(c.get("/ui/state").data)
    assert st["upgrade"] == {"phase": "syncing", "message": up.message, "to_bin_dir": up.to_bin_dir}
    # Finished: nothing shown (the history has the upgrade), and /upgrade is not read every second.
    h.snap = replace(h.snap, view=replace(h.snap.view, upgrade_phase="done"))
    with serving(h) as c:
        assert json.loads(c.get("/ui/state").data)["upgrade"] is None
