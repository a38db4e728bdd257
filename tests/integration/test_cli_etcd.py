"""The operator CLI against a real etcd (the session's shared server; one cluster name per test)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from pgha.cli.main import _register, cli
from pgha.core.model import ClusterConfig, MemberInfo, Role
from pgha.dcs.etcd import EtcdKV
from pgha.dcs.store import ClusterStore
from tests.support.etcd import EtcdServer
from tests.support.pg import PgSandbox

pytestmark = pytest.mark.integration


class Cluster:
    """Two published members (node1 leads) in a cluster of its own on the shared etcd."""

    def __init__(self, etcd: EtcdServer) -> None:
        _register()
        self.url = etcd.url
        self.name = f"cli-{uuid.uuid4().hex[:8]}"
        self.kv = EtcdKV((etcd.url,), 2.0)
        self.store = ClusterStore(self.kv, self.name)
        self.lease = self.kv.grant(60)
        self.store.claim_initialize("node1", self.lease)
        self.store.publish_initialized("7000000000000000001", "node1")
        self.store.seed_config(ClusterConfig())
        assert self.store.acquire_leader("node1", self.lease)
        self.publish(MemberInfo("node1", Role.PRIMARY, "running", 1, wal_lsn=5_000_000, host="127.0.0.1",
                                port=5432, rule_id="leader-steady"))
        self.publish(MemberInfo("node2", Role.REPLICA, "streaming", 1, received_lsn=4_000_000,
                                host="127.0.0.1", port=5433, following="node1", rule_id="replica-steady"))

    def publish(self, m: MemberInfo) -> None:
        self.store.publish_member(m, self.lease)

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, [*args, "--dcs", self.url, "--cluster", self.name], input=input)

    def close(self) -> None:
        self.kv.revoke(self.lease)
        self.store.remove_cluster()
        self.kv.close()


@pytest.fixture
def cluster(etcd: EtcdServer) -> Iterator[Cluster]:
    c = Cluster(etcd)
    try:
        yield c
    finally:
        c.close()


def test_list_json(cluster: Cluster) -> None:
    r = cluster.run("list", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["member"]: row for row in json.loads(r.output)}
    assert rows["node1"]["role"] == "leader" and rows["node1"]["lag"] is None
    assert rows["node2"]["role"] == "replica" and rows["node2"]["lag"] == 1_000_000
    assert rows["node2"]["host"] == "127.0.0.1" and rows["node2"]["port"] == 5433


def test_edit_config_round_trip(cluster: Cluster) -> None:
    r = cluster.run("edit-config", "-s", "ttl=20", "-s", "synchronous_mode=on", "-p", "work_mem=64MB",
                    "--force")
    assert r.exit_code == 0, r.output
    shown = yaml.safe_load(cluster.run("show-config").output)
    assert shown["ttl"] == 20 and shown["synchronous_mode"] == "on"
    assert shown["parameters"] == {"work_mem": "64MB"}
    assert cluster.run("edit-config", "-s", "ttl=20").output.strip() == "No changes."
    assert cluster.store.get_config()[0].ttl == 20


def test_pause_and_resume(cluster: Cluster) -> None:
    assert cluster.run("pause").exit_code == 0
    assert cluster.store.get_config()[0].pause is True
    assert "Maintenance mode: on" in cluster.run("list").output
    assert cluster.run("pause").exit_code == 1
    assert cluster.run("resume").exit_code == 0
    assert cluster.store.get_config()[0].pause is False


def test_switchover_intent_written(cluster: Cluster) -> None:
    r = cluster.run("switchover", "--candidate", "node2", "--force", "--no-wait")
    assert r.exit_code == 0, r.output
    sw = cluster.store.read().switchover
    assert sw is not None and (sw.leader, sw.candidate, sw.kind) == ("node1", "node2", "switchover")
    r = cluster.run("switchover", "--candidate", "node2", "--force", "--no-wait")
    assert r.exit_code == 1 and "already pending" in r.output


def test_remove(cluster: Cluster, etcd: EtcdServer) -> None:
    other = ClusterStore(cluster.kv, cluster.name + "-other")
    other.seed_config(ClusterConfig())
    try:
        assert cluster.run("remove", cluster.name).exit_code == 1  # members still publishing
        cluster.kv.revoke(cluster.lease)
        r = cluster.run("remove", cluster.name, input=cluster.name + "\n")
        assert r.exit_code == 0, r.output
        assert cluster.kv.get_prefix(cluster.store.root)[1] == []
        assert other.get_config()[1] != 0
    finally:
        other.remove_cluster()


def test_query_a_real_postgres(cluster: Cluster, pg_sandbox: PgSandbox, tmp_path: Path) -> None:
    node = pg_sandbox.primary("node1")
    pg = node.config.postgresql
    cluster.publish(MemberInfo("node1", Role.PRIMARY, "running", 1, wal_lsn=5_000_000, host="127.0.0.1",
                               port=pg.port, rule_id="leader-steady"))
    cfg = tmp_path / "node1.yaml"
    cfg.write_text(yaml.safe_dump({
        "cluster": cluster.name, "name": "node1",
        "postgresql": {"data_dir": pg.data_dir, "port": pg.port,
                       "superuser": {"username": pg.superuser.username, "password": pg.superuser.password}},
        "etcd": {"endpoints": [cluster.url]}, "api": {"auth": "none"}}))
    def query(*args: str) -> Result:
        return CliRunner().invoke(cli, ["query", *args, "-c", str(cfg)], env={"PGPASSWORD": None})

    r = query("select 42 as answer, 'x' as t", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == [{"answer": 42, "t": "x"}]
    assert pg.superuser.password not in r.output
    r = query("select nosuchcolumn")
    assert r.exit_code == 1
    assert r.output.startswith("pgha: query failed on node1: column \"nosuchcolumn\" does not exist")
    r = query("create table t1 (id int)")
    assert r.exit_code == 0 and r.output.strip() == "CREATE TABLE"
