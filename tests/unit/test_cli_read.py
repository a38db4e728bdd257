"""Read-only commands and the shared options: list, topology, history, show-config, version, dsn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pgha.cli import context
from pgha.cli.main import _register, cli
from pgha.config import DcsConfig
from pgha.core.model import ClusterConfig
from pgha.dcs.memory import MemoryKV
from tests.support.procs import free_port
from tests.unit.test_cli_world import MIB, SYSTEM_ID, URL, World, refusal, world_fixture  # noqa: F401


def table_row(output: str, member: str) -> list[str]:
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0].lstrip("+ ").strip() == member:
            return cells
    raise AssertionError(f"no row for {member} in:\n{output}")


# --- list -----------------------------------------------------------------------------------
def test_list_table(world: World) -> None:
    r = world.run("list")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == f"Cluster: main (system identifier: {SYSTEM_ID})"
    assert "Maintenance mode" not in r.output
    assert "| Member | Host" in r.output and "Lag in MB | Pending restart | Tags" in r.output
    assert table_row(r.output, "node1") == ["node1", "127.0.0.1:5432", "Leader", "running", "2", "", "", ""]
    assert table_row(r.output, "node2") == ["node2", "127.0.0.1:5433", "Sync Standby", "streaming", "2",
                                            "1.0", "", ""]
    assert table_row(r.output, "node3") == ["node3", "127.0.0.2:5434", "Replica", "streaming", "2",
                                            "32.0", "*", "nofailover, dc=b"]


def test_cluster_options_before_the_command(world: World) -> None:
    """pgha --dcs URL --cluster NAME list works like pgha list --dcs URL --cluster NAME."""
    r = world.runner.invoke(cli, ["--dcs", URL, "--cluster", "main", "list", "--json"])
    assert r.exit_code == 0, r.output
    assert [row["member"] for row in json.loads(r.output)] == ["node1", "node2", "node3"]
    # After the command wins.
    r = world.runner.invoke(cli, ["--cluster", "other", "list", "--dcs", URL, "--cluster", "main"])
    assert r.exit_code == 0 and "Cluster: main" in r.output


def test_list_shows_maintenance_mode_and_pending_requests(world: World) -> None:
    assert world.run("restart", "node2", "--force").exit_code == 0
    assert world.run("pause").exit_code == 0
    r = world.run("list")
    assert r.output.splitlines()[1] == "Maintenance mode: on"
    assert "Pending restart of node2" in r.output


def test_list_shows_the_leaders_verdict_on_the_last_switchover(world: World) -> None:
    world.change("node1", last_switchover_id="0123456789abcdef",
                 last_switchover_outcome="refused: candidate node2 is tagged nofailover")
    assert "Last switchover request (01234567): refused: candidate node2 is tagged nofailover" in \
        world.run("list").output
    world.change("node1", last_switchover_outcome="done: node1 promoted")
    assert "Last switchover" not in world.run("list").output


def test_list_json_schema(world: World) -> None:
    r = world.run("list", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["member"] for row in rows] == ["node1", "node2", "node3"]
    required = {"member", "host", "port", "role", "state", "timeline", "lag", "pending_restart", "tags",
                "rule_id"}
    for row in rows:
        assert required <= set(row)
    by = {row["member"]: row for row in rows}
    assert [by[n]["role"] for n in ("node1", "node2", "node3")] == ["leader", "sync_standby", "replica"]
    assert by["node1"]["lag"] is None
    assert by["node2"]["lag"] == MIB
    assert by["node3"]["lag"] == 32 * MIB
    assert by["node1"]["port"] == 5432 and by["node1"]["timeline"] == 2
    assert by["node3"]["pending_restart"] is True
    assert by["node3"]["tags"]["nofailover"] is True and by["node3"]["tags"]["extra"] == {"dc": "b"}
    assert by["node2"]["rule_id"] == "replica-steady"


def test_list_unknown_lag_is_blank(world: World) -> None:
    world.change("node2", received_lsn=None, replayed_lsn=None)
    rows = {row["member"]: row for row in json.loads(world.run("list", "--json").output)}
    assert rows["node2"]["lag"] is None
    assert table_row(world.run("list").output, "node2")[5] == ""


def test_list_watch_redraws_until_ctrl_c(world: World) -> None:
    draws: list[int] = []

    def agent() -> None:
        draws.append(1)
        if len(draws) == 2:
            raise KeyboardInterrupt

    world.agent = agent
    r = world.run("list", "--watch", "1")
    assert r.exit_code == 0, r.output
    assert r.output.count("Cluster: main") == 2


def test_list_of_an_unknown_cluster_names_the_known_ones(world: World) -> None:
    r = world.runner.invoke(cli, ["list", "--dcs", URL, "--cluster", "mian"])
    assert r.exit_code == 0
    assert "no member of cluster mian is publishing under /pgha (clusters there: main)" in r.output


def test_topology_indents_replicas_under_their_upstream(world: World) -> None:
    r = world.run("topology")
    assert r.exit_code == 0, r.output
    names = [line.split("|")[1].rstrip() for line in r.output.splitlines() if line.startswith("| ")][1:]
    assert names == [" node1", " + node2", "   + node3"]


# --- history, show-config, version ------------------------------------------------------------
def test_history_table_and_json(world: World) -> None:
    r = world.run("history")
    assert r.exit_code == 0, r.output
    row = table_row(r.output, "1")
    assert row[1] == "0/3000060" and row[3] == "switchover to node1" and row[4] == "node1"
    entries = json.loads(world.run("history", "--json").output)
    assert entries[0]["timeline"] == 1 and entries[0]["lsn"] == "0/3000060"
    assert entries[0]["new_leader"] == "node1"
    assert entries[0]["at"].count("T") == 1


def test_show_config_is_the_stored_config_as_yaml(world: World) -> None:
    r = world.run("show-config")
    assert r.exit_code == 0, r.output
    data = yaml.safe_load(r.output)
    assert data["parameters"] == {"max_connections": 100}
    assert data["ttl"] == ClusterConfig().ttl and data["pause"] is False


def test_version_without_and_with_a_cluster(world: World) -> None:
    r = world.runner.invoke(cli, ["version"])
    assert r.exit_code == 0 and r.output.startswith("pgha ")
    r = world.run("version")
    assert "node1: pgha 0.1.0" in r.output and "node3: pgha unknown" in r.output


# --- the shared options -------------------------------------------------------------------------
def test_no_cluster_given_is_a_usage_error(world: World) -> None:
    r = world.runner.invoke(cli, ["list"], env={"PGHA_DCS": None, "PGHA_CLUSTER": None})
    assert r.exit_code == 2
    assert "-c FILE, or --dcs URL --cluster NAME" in r.output


def test_bad_dcs_url_is_a_usage_error(world: World) -> None:
    r = world.runner.invoke(cli, ["list", "--dcs", "127.0.0.1:2379", "--cluster", "main"])
    assert r.exit_code == 2
    assert "must start with http:// or https://" in r.output


def test_config_file_gives_cluster_and_endpoints(world: World, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, ...]] = []

    def factory(dcs: DcsConfig) -> MemoryKV:
        seen.append(dcs.etcd.endpoints)
        return world.kv

    monkeypatch.setattr(context, "KV_FACTORY", factory)
    cfg = tmp_path / "node.yaml"
    cfg.write_text(yaml.safe_dump({
        "cluster": "main", "name": "node1", "postgresql": {"data_dir": str(tmp_path / "data")},
        "etcd": {"endpoints": ["http://127.0.0.1:23790", "http://127.0.0.1:23791"]}, "api": {"auth": "none"}}))
    r = world.runner.invoke(cli, ["list", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "Cluster: main" in r.output
    assert seen == [("http://127.0.0.1:23790", "http://127.0.0.1:23791")]


def test_bad_config_file_is_one_line_exit_1(world: World, tmp_path: Path) -> None:
    r = world.runner.invoke(cli, ["list", "-c", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 1
    assert "file not found" in refusal(r)


def test_dcs_unreachable_exits_3(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.kv.set_unreachable(True)
    r = world.run("list")
    assert r.exit_code == 3
    line = refusal(r)
    assert line.startswith(f"pgha: etcd unreachable at {URL} (")
    assert line.endswith("; start etcd or fix --dcs")
    assert "Traceback" not in r.output


def test_real_etcd_client_on_a_closed_port_exits_3() -> None:
    _register()
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["list"], ["switchover", "--force"], ["edit-config", "-s", "ttl=20", "--force"]):
        r = CliRunner().invoke(cli, [*args, "--dcs", url, "--cluster", "main"])
        assert r.exit_code == 3, r.output
        assert refusal(r) == f"pgha: etcd unreachable at {url} (connection refused); start etcd or fix --dcs"


# --- dsn ---------------------------------------------------------------------------------------------
def test_dsn_primary_lists_every_member_leader_first(world: World) -> None:
    r = world.run("dsn")
    assert r.exit_code == 0, r.output
    keywords, uri = r.output.splitlines()
    assert keywords == ("host=127.0.0.1,127.0.0.1,127.0.0.2 port=5432,5433,5434 "
                        "target_session_attrs=read-write")
    assert uri == "postgresql://127.0.0.1:5432,127.0.0.1:5433,127.0.0.2:5434/?target_session_attrs=read-write"


def test_dsn_replica_with_database_and_user(world: World) -> None:
    r = world.run("dsn", "--role", "replica", "--dbname", "app", "--user", "bob")
    keywords, uri = r.output.splitlines()
    assert keywords == ("host=127.0.0.1,127.0.0.2,127.0.0.1 port=5433,5434,5432 dbname=app user=bob "
                        "target_session_attrs=standby")
    assert uri.endswith("/app?user=bob&target_session_attrs=standby")
    keywords, _ = world.run("dsn", "--role", "replica", "--fallback").output.splitlines()
    assert keywords.endswith("target_session_attrs=prefer-standby")


def test_dsn_without_addresses_is_refused(world: World) -> None:
    world.store.remove_cluster()
    r = world.run("dsn")
    assert r.exit_code == 1
    assert refusal(r) == "pgha: no member of cluster main has published its address yet"
