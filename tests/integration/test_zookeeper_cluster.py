"""pgha on ZooKeeper: a real 3-node cluster whose agents keep their leases as ZooKeeper sessions.

The same safety checks as tests/integration/test_failover.py (host death: every process of the
leader frozen, a replica takes over after about ttl, writes resume through the multi-host DSN,
0 acknowledged writes lost in synchronous mode, never two writable primaries), a switchover
(the leader key handed to the candidate's session), `pgha list`, and the CLI sequence
`pgha demo up --dcs zookeeper`, `pgha switchover --force`, `pgha list`, `pgha demo down`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from pgha.cli.main import _register, cli
from pgha.demo import DemoCluster
from pgha.demo.procs import pid_alive
from pgha.probe import Probe
from tests.support.cluster import (
    connect,
    free_port_base,
    leader_name,
    postgres_readable_dir,
    replicas,
    running_cluster,
    wait_for,
)
from tests.support.faults import (
    SplitBrainWatch,
    freeze_host,
    kill_frozen,
    multi_host_dsn,
    restart_node,
    wait_new_leader,
    writable_nodes,
)

pytestmark = pytest.mark.integration

TTL = 6.0


@pytest.fixture(scope="module")
def zk_cluster() -> Iterator[DemoCluster]:
    # pg_tls: the members' PostgreSQL serve TLS and connect to each other with sslmode=verify-full.
    with running_cluster(nodes=3, ttl=TTL, sync=True, dcs="zookeeper", pg_tls=True) as demo:
        yield demo


def pgha(demo: DemoCluster, *args: str) -> Result:
    _register()
    assert demo.state is not None
    return CliRunner().invoke(cli, ["-c", demo.state.nodes[0].config, *args])


def test_the_agents_use_zookeeper(zk_cluster: DemoCluster) -> None:
    demo = zk_cluster
    assert demo.dcs_url.startswith("zks://127.0.0.1:")
    assert demo.state is not None and demo.state.dcs == "zookeeper"
    view = demo.view()
    assert view.leader is not None and len(view.members) == 3
    # Each member's key is bound to its agent's ZooKeeper session.
    assert all(m.lease_id for m in view.members.values())
    r = pgha(demo, "list")
    assert r.exit_code == 0, r.output
    for name in ("node1", "node2", "node3"):
        assert name in r.output
    assert "Leader" in r.output or "leader" in r.output


def test_replication_verifies_the_upstream_and_pgpass_names_the_members(zk_cluster: DemoCluster) -> None:
    demo = zk_cluster
    leader = leader_name(demo)
    with connect(demo, leader) as conn:
        rows = conn.execute("SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)").fetchall()
    assert len(rows) == 2 and all(r[0] for r in rows), rows
    ports = sorted(str(n.pg_port) for n in demo.state.nodes) if demo.state else []
    for name in replicas(demo):
        node_dir = Path(demo.node(name).data_dir).parent
        assert "sslmode=verify-full" in (node_dir / "data" / "postgresql.conf").read_text()
        hosts = [ln.split(":")[:2] for ln in (node_dir / "pgha.pgpass").read_text().splitlines()]
        assert ["*", "*"] not in hosts and {h for h, _ in hosts} == {"localhost", "127.0.0.1"}, hosts
        assert sorted({p for h, p in hosts if h != "localhost"}) == ports


def test_host_death_fails_over_after_the_session_expires(zk_cluster: DemoCluster) -> None:
    demo = zk_cluster
    wait_for("a synchronous standby", lambda: demo.view().sync is not None and demo.view().sync.standbys)
    old = leader_name(demo)
    probe = Probe(multi_host_dsn(demo), interval=0.01)
    probe.start()
    with SplitBrainWatch(demo) as watch:
        wait_for("probe writes", lambda: probe.acknowledged > 20, timeout=20)
        frozen = freeze_host(demo, old)
        frozen_at = time.monotonic()
        try:
            new = wait_new_leader(demo, old, timeout=TTL * 5)
            took = time.monotonic() - frozen_at
            before = probe.acknowledged
            wait_for("writes through the new leader", lambda: probe.acknowledged > before + 20, timeout=30)
        finally:
            kill_frozen(demo, old, frozen)
    report = probe.stop()
    print(f"ZooKeeper host death: new leader {new} after {took:.1f}s (ttl {TTL:g}s); {report.to_text()}")
    assert new != old
    # The frozen leader's session (its lease) had to expire first: not before about ttl.
    assert took > TTL / 2, f"a new leader after {took:.1f}s, before the old session could expire"
    assert report.missing == 0, report.to_text()
    assert watch.max_writable <= 1, f"two writable primaries: {watch.worst}"
    history = demo.store().history()
    assert history[-1].new_leader == new and history[-1].kind == "failover"
    restart_node(demo, old)
    demo.wait_healthy(timeout=90)
    view = demo.view()
    assert view.leader is not None and view.leader.name == new
    assert view.members[old].following == new


def test_switchover_hands_the_leader_key_to_the_candidates_session(zk_cluster: DemoCluster) -> None:
    demo = zk_cluster
    demo.wait_healthy(timeout=90)
    wait_for("a synchronous standby", lambda: demo.view().sync is not None and demo.view().sync.standbys)
    old = leader_name(demo)
    sync = demo.view().sync
    assert sync is not None
    target = sync.standbys[0]  # synchronous_mode: only a synchronous standby may take over
    assert target in replicas(demo)
    probe = Probe(multi_host_dsn(demo), interval=0.01)
    probe.start()
    try:
        with SplitBrainWatch(demo, interval=0.05) as watch:
            wait_for("probe writes", lambda: probe.acknowledged > 50, timeout=20)
            r = pgha(demo, "switchover", "--candidate", target, "--force")
            assert r.exit_code == 0, r.output
            assert f"{target} is the new leader." in r.output
            before = probe.acknowledged
            wait_for("writes through the new leader", lambda: probe.acknowledged > before + 50, timeout=30)
    finally:
        report = probe.stop()
    assert report.missing == 0, report.to_text()
    assert watch.max_writable <= 1, f"two writable primaries: {watch.worst}"
    view = demo.view()
    assert view.leader is not None and view.leader.name == target
    assert view.leader.lease_id == view.members[target].lease_id
    assert writable_nodes(demo) == [target]
    wait_for(f"{old} to follow {target}", lambda: demo.view().members[old].following == target, timeout=60)


def _pgha(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgha", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _leader(where: list[str]) -> str:
    """The leader's name, from `pgha list --json`."""
    listed = _pgha("list", "--json", *where)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 3, rows
    return next(str(r["member"]) for r in rows if r["role"] == "leader")


def test_demo_up_with_zookeeper_then_switchover_and_list() -> None:
    with postgres_readable_dir() as tmp:
        directory = str(tmp / "demo")
        port_base = free_port_base(3)
        up = _pgha("demo", "up", "--dcs", "zookeeper", "--dir", directory, "--port-base", str(port_base),
                   "--ttl", "6")
        state_file = Path(directory) / "demo.json"
        try:
            assert up.returncode == 0, up.stdout + up.stderr
            state = json.loads(state_file.read_text())
            assert state["dcs"] == "zookeeper" and state["etcd"] == f"zks://127.0.0.1:{port_base}"
            zk_pid = state["etcd_pid"]
            assert pid_alive(zk_pid)
            assert "java" in Path(f"/proc/{zk_pid}/cmdline").read_bytes().decode(errors="replace")
            node1 = state["nodes"][0]["config"]
            assert f"pgha -c {node1} list" in up.stdout
            # ZooKeeper serves TLS only, and the cluster's znodes answer only to its credential.
            zk = yaml.safe_load(Path(node1).read_text())["dcs"]["zookeeper"]
            assert zk["tls"] is True and zk["username"] == "pgha" and zk["password"] not in up.stdout
            assert "secureClientPort" in (Path(directory) / "zookeeper" / "zoo.cfg").read_text()
            bare = _pgha("list", "--dcs", state["etcd"], "--cluster", "demo")
            assert bare.returncode != 0 and "no credential" in bare.stderr, bare.stderr
            where = ["-c", node1]
            listed = _pgha("list", *where)
            assert listed.returncode == 0, listed.stderr
            assert all(f"node{i}" in listed.stdout for i in (1, 2, 3)), listed.stdout
            old = _leader(where)
            switched = _pgha("switchover", "--force", *where)
            assert switched.returncode == 0, switched.stdout + switched.stderr
            assert "is the new leader." in switched.stdout
            new = _leader(where)
            assert new != old
        finally:
            down = _pgha("demo", "down", "--dir", directory)
        assert down.returncode == 0, down.stderr
        assert not state_file.exists()
        deadline = time.monotonic() + 10
        while pid_alive(zk_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(zk_pid), "demo down left ZooKeeper running"
