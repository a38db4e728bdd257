"""Issue 2 acceptance: a cluster forms itself, survives agent restarts, shares etcd safely."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgha.dcs.etcd import EtcdKV
from pgha.dcs.store import ClusterStore
from pgha.demo import DemoCluster, DemoState, stop_pid
from tests.support.cluster import (
    connect,
    free_port_base,
    leader_name,
    postgres_readable_dir,
    replicas,
    running_cluster,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[DemoCluster]:
    with running_cluster(nodes=3, ttl=6) as demo:
        yield demo


def test_row_written_on_leader_is_read_on_both_replicas(cluster: DemoCluster) -> None:
    lead = leader_name(cluster)
    with connect(cluster, lead) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS forms (id int primary key, note text)")
        conn.execute("INSERT INTO forms VALUES (1, 'hello from the leader') ON CONFLICT DO NOTHING")
    for name in replicas(cluster):
        def read(name: str = name) -> object:
            with connect(cluster, name) as conn:
                row = conn.execute("SELECT note FROM forms WHERE id = 1").fetchone()
                return row is not None and row[0] == "hello from the leader"
        wait_for(f"row replicated to {name}", read, timeout=30)
        with connect(cluster, name) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)


def test_members_publish_slots_and_streaming(cluster: DemoCluster) -> None:
    view = cluster.view()
    lead = leader_name(cluster)
    assert view.system_id
    with connect(cluster, lead) as conn:
        slots = {r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()}
    for name in replicas(cluster):
        m = view.members[name]
        assert m.state == "streaming" and m.following == lead
        assert any(name in s for s in slots), f"no slot for {name} in {slots}"


def test_replica_agent_restart_rejoins_without_reclone(cluster: DemoCluster) -> None:
    name = replicas(cluster)[0]
    marker = Path(cluster.node(name).data_dir) / "pgha-test-marker"
    marker.write_text("a re-clone would remove this file\n")
    cluster.stop_agent(name)
    wait_for(f"{name} to leave the member list", lambda: name not in cluster.view().members, timeout=30)
    cluster.start_agent(name)
    wait_for(f"{name} streaming again", lambda: cluster.view().members.get(name) is not None
             and cluster.view().members[name].state == "streaming", timeout=60)
    assert marker.exists(), "the replica was cloned again instead of resuming"


def test_restarting_every_agent_keeps_leader_and_system_id(cluster: DemoCluster) -> None:
    before = cluster.view()
    assert before.leader is not None
    lead = before.leader.name
    others = replicas(cluster)
    for name in [*others, lead]:
        cluster.stop_agent(name)
    # The last leader comes back first, as an operator restarts a cluster.  (Started all at once,
    # whichever agent is up first elects itself: the others have the same data and nobody knows
    # whether the last leader will come back.)
    cluster.start_agent(lead)
    wait_for(f"{lead} to lead again", lambda: (v := cluster.view()).leader is not None
             and v.leader.name == lead, timeout=60)
    for name in others:
        cluster.start_agent(name)
    after = cluster.wait_healthy(timeout=90)
    assert after.leader is not None and after.leader.name == lead
    assert after.system_id == before.system_id


def test_two_clusters_share_one_etcd(cluster: DemoCluster) -> None:
    with running_cluster(nodes=1, cluster="other", external_etcd=cluster.etcd_url,
                         ttl=6) as other:
        mine, theirs = cluster.view(), other.view()
        assert set(theirs.members) == {"node1"}
        assert set(mine.members) == {"node1", "node2", "node3"}
        assert theirs.system_id != mine.system_id
        assert theirs.leader is not None and mine.leader is not None
        assert leader_name(cluster) == mine.leader.name
        kv = EtcdKV((cluster.etcd_url,), 2.0)
        assert {"demo", "other"} <= set(ClusterStore.list_clusters(kv))
    # The first cluster did not notice.
    assert cluster.wait_healthy(timeout=30).system_id == mine.system_id


def test_agent_waits_for_unreachable_etcd_and_never_initdbs_early() -> None:
    """With etcd down at start the agent logs a clear line and retries; once etcd is up it forms."""
    with postgres_readable_dir() as tmp:
        _unreachable_etcd_scenario(tmp)


def _unreachable_etcd_scenario(tmp: Path) -> None:
    demo = DemoCluster(tmp / "late", nodes=1, port_base=free_port_base(1), say=lambda s: None)
    demo.dir.mkdir(parents=True)
    demo.dir.chmod(0o755)
    demo.state = DemoState(cluster=demo.cluster, etcd=demo.etcd_url, etcd_pid=0, dir=str(demo.dir))
    node = demo._write_node(1, "pw-unused-here", "repl-pw-unused")
    demo.state.nodes.append(node)
    log = Path(node.config).parent / "agent.log"
    try:
        demo.start_agent("node1")
        wait_for("the etcd-unreachable log line", lambda: "etcd unreachable" in log.read_text()
                 and "retrying" in log.read_text(), timeout=20)
        time.sleep(1.0)
        assert not Path(node.data_dir).exists(), "the agent created a data directory without etcd"
        demo.state.etcd_pid = demo._start_dcs()
        demo.wait_healthy(timeout=90)
        assert demo.view().system_id is not None
    finally:
        demo.down()


def test_validate_and_agent_refuse_bad_config_cleanly(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("cluster: x\nname: n1\npostgresql: {data_dir: relative}\n")
    result = subprocess.run([sys.executable, "-m", "pgha", "agent", "-c", str(cfg)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "postgresql.data_dir" in result.stderr


def test_stop_pid_helper_is_safe_on_dead_pids() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    stop_pid(proc.pid, signal.SIGTERM, timeout=5)
    proc.wait(timeout=5)
    stop_pid(proc.pid)  # already gone: no error
