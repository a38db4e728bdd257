"""Issue 16 acceptance: pgBackRest on a repository host over TLS, on one shared 3-node synchronous
cluster (real agents, PostgreSQL 15, etcd and pgBackRest): a backup from a standby and the restore
window, a point-in-time restore into a new cluster, and an archive with no gap across a failover
after the primary's host froze and died, restored to the latest point with every acknowledged write."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from click.testing import CliRunner, Result

from pgha import config as node_config
from pgha.backup import keys
from pgha.backup.continuity import repository_missing
from pgha.backup.info import BackupSummary
from pgha.cli.main import _register, cli
from pgha.dcs.store import ClusterStore
from pgha.demo import DemoCluster
from pgha.demo.backups import RESTORE_CN
from pgha.faults.procs import freeze_host, host_pids, kill_frozen, restart_node, wait_new_leader
from pgha.postgres.node import PostgresNode
from pgha.probe import Probe
from tests.support.cluster import free_port_base, leader_name, postgres_readable_dir, replicas, wait_for
from tests.support.faults import multi_host_dsn

pytestmark = pytest.mark.integration

TTL = 6.0


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    with postgres_readable_dir() as tmp:
        # A cluster (and stanza) name of its own: pgBackRest's remote side locks /tmp/pgbackrest/STANZA-*.lock,
        # shared by every cluster of that name on this machine.
        # Replicas from the repository first (at start there is no backup yet: pg_basebackup), and every
        # BASE_BACKUP a walsender serves in the server logs.
        d = DemoCluster(tmp / "cluster", nodes=3, port_base=free_port_base(3), ttl=TTL, sync=True,
                        say=lambda s: None, cluster=f"bk{uuid.uuid4().hex[:8]}",
                        extra_cluster_config={"parameters": {"log_replication_commands": "on"}},
                        extra_node_config={"*": {"postgresql": {
                            "create_replica_methods": ["pgbackrest", "basebackup"]}}})
        d.backup = True
        try:
            d.up(timeout=150)
            yield d
        finally:
            if d.state is not None:
                d.down()


def pgha(demo: DemoCluster, *args: str) -> Result:
    _register()
    return CliRunner().invoke(cli, [*args, "--dcs", demo.etcd_url, "--cluster", demo.cluster])


def primary_dsn(demo: DemoCluster) -> str:
    return multi_host_dsn(demo)


def sql(demo: DemoCluster, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(primary_dsn(demo), autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def archived(demo: DemoCluster, segment: str) -> bool:
    root = demo.repository_path / "archive" / demo.cluster
    return any(f.name.startswith(segment) for d in root.glob("*/*") if d.is_dir() for f in d.iterdir())


def switch_and_wait_archived(demo: DemoCluster) -> str:
    """Close the current WAL segment on the primary and wait until it is in the repository."""
    segment = str(sql(demo, "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    wait_for(f"{segment} in the repository", lambda: archived(demo, segment), timeout=60)
    return segment


def full_backup(demo: DemoCluster) -> str:
    result = pgha(demo, "backup", "--type", "full")
    assert result.exit_code == 0, result.output
    return result.output


def a_backup(demo: DemoCluster) -> BackupSummary:
    """The published summary once it lists a backup (taking one when the repository has none)."""
    info = keys.read_info(demo.store())
    if info is None or not info.backups:
        full_backup(demo)
    return wait_for("a backup in /backup/info", lambda: (s := keys.read_info(demo.store())) is not None
                    and s.backups and s, timeout=60)


def restored_node(demo: DemoCluster, name: str) -> Path:
    """A node file for a NEW cluster restored from the demo's stanza (its own cluster name and stanza)."""
    base = demo.dir.parent / name
    base.mkdir()
    os.chmod(base, 0o755)
    os.chown(base, *pg_owner())
    port = demo.port_base + 90 + (5 if name.endswith("2") else 0)
    pki = demo.backup_pki
    cfg = {
        "cluster": name, "name": f"{name}-1", "dcs": {"type": "etcd", "etcd": {"endpoints": [demo.etcd_url]}},
        "postgresql": {"data_dir": str(base / "data"), "port": port, "listen": "127.0.0.1",
                       "superuser": {"username": "postgres"}, "replication": {"username": "replicator",
                                                                              "password": "restored"}},
        "api": {"listen": f"127.0.0.1:{port + 1}", "auth": "none"},
        "backup": {"repository": demo.repository_address, "port": demo.repository_port,
                   "path": str(demo.repository_path), "server_port": port + 3,
                   "tls": {"certfile": str(pki / f"{RESTORE_CN}.crt"), "keyfile": str(pki / f"{RESTORE_CN}.key"),
                           "cafile": str(pki / "ca.crt")}},
        "bootstrap": {"method": "pgbackrest", "pgbackrest": {"stanza": demo.cluster}},
    }
    path = base / "pgha.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def pg_owner() -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


@contextlib.contextmanager
def restored(demo: DemoCluster, name: str, *target: str) -> Iterator[psycopg.Connection[Any]]:
    """`pgha restore` into a new cluster, then its PostgreSQL started (no agent) and a connection to it."""
    path = restored_node(demo, name)
    _register()
    result = CliRunner().invoke(cli, ["restore", "-c", str(path), *target])
    assert result.exit_code == 0, result.output
    assert "promoted at" in result.output and "restoring files: 100%" in result.output, result.output
    cfg = node_config.load(path)
    pg = PostgresNode(cfg)
    try:
        pg.start(60)
        sock = Path(cfg.postgresql.data_dir).parent / "pg_socket"
        with psycopg.connect(host=str(sock), port=cfg.postgresql.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            yield conn
    finally:
        pg.stop("immediate", 30)
        demo.store().kv.delete_prefix(f"/pgha/{name}/")


def test_backup_from_a_standby_and_the_restore_window(demo: DemoCluster) -> None:
    out = full_backup(demo)
    standbys = replicas(demo)
    assert any(f"done from {s}" in out for s in standbys), out
    switch_and_wait_archived(demo)
    summary = wait_for("the window in /backup/info", lambda: (s := keys.read_info(demo.store())) is not None
                       and s.backups and s.window.end_at and s, timeout=60)
    assert summary.backups[-1].type == "full"
    assert summary.window.start_at == summary.backups[0].stopped_at
    assert summary.window.end_wal >= summary.backups[-1].wal_stop
    listed = pgha(demo, "backup", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [b["label"] for b in json.loads(listed.output)["backups"]] == [b.label for b in summary.backups]
    status, body = demo.api_call(leader_name(demo), "GET", "/backups")
    assert status == 200 and body["window"]["start_at"] == summary.window.start_at
    assert "restore window:" in pgha(demo, "backup", "list").output


def test_point_in_time_restore_holds_exactly_the_rows_committed_before_t(demo: DemoCluster) -> None:
    sql(demo, "CREATE TABLE pitr (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    a_backup(demo)
    target = None
    for i in range(1, 41):
        sql(demo, "INSERT INTO pitr (id) VALUES (%s)", i)
        if i == 20:
            time.sleep(0.3)
            target = sql(demo, "SELECT clock_timestamp()")[0][0]
            time.sleep(0.3)
        else:
            time.sleep(0.02)
    assert isinstance(target, datetime.datetime)
    before = [r[0] for r in sql(demo, "SELECT id FROM pitr WHERE at < %s ORDER BY id", target)]
    assert before == list(range(1, 21))
    switch_and_wait_archived(demo)
    with restored(demo, "pitr-restored", "--target-time", target.isoformat()) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM pitr ORDER BY id").fetchall()]
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    assert ids == before


def test_bootstrap_method_pgbackrest_agent_restores_to_a_restore_point(demo: DemoCluster) -> None:
    """An agent started on an empty data directory with bootstrap.method: pgbackrest builds the new
    cluster itself: here up to a named restore point, before a table was dropped."""
    a_backup(demo)
    sql(demo, "CREATE TABLE keepme AS SELECT generate_series(1, 100) AS n")
    sql(demo, "SELECT pg_create_restore_point('before-drop')")
    sql(demo, "DROP TABLE keepme")
    switch_and_wait_archived(demo)
    path = restored_node(demo, "agent-restored")
    data = yaml.safe_load(path.read_text())
    data["bootstrap"]["pgbackrest"]["target_name"] = "before-drop"
    data["watchdog"] = {"mode": "off"}
    path.write_text(yaml.safe_dump(data))
    log = open(path.parent / "agent.log", "ab")  # noqa: SIM115
    agent = subprocess.Popen(["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--",
                              sys.executable, "-m", "pgha", "agent", "-c", str(path)], stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
    store = ClusterStore(demo.store().kv, "agent-restored")
    try:
        wait_for("the restored cluster's primary", lambda: (v := store.read()).system_id is not None
                 and any(m.role.value == "primary" and m.state == "running" for m in v.members.values()),
                 timeout=120)
        cfg = node_config.load(path)
        sock = Path(cfg.postgresql.data_dir).parent / "pg_socket"
        with psycopg.connect(host=str(sock), port=cfg.postgresql.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM keepme").fetchone() == (100,)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(60)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(10)
        log.close()
        store.remove_cluster()


def base_backups_served(demo: DemoCluster) -> dict[str, int]:
    """How many BASE_BACKUP commands each member's server log shows."""
    assert demo.state is not None
    return {n.name: (Path(n.data_dir).parent / "postgresql.log").read_bytes().count(b"BASE_BACKUP")
            for n in demo.state.nodes}


def test_reinit_builds_the_replica_from_the_repository_without_a_base_backup(demo: DemoCluster) -> None:
    a_backup(demo)
    switch_and_wait_archived(demo)
    sync = demo.view().sync
    target = next(r for r in replicas(demo) if sync is None or r not in sync.standbys)
    agent_log = Path(demo.node(target).config).parent / "agent.log"
    before, offset = base_backups_served(demo), agent_log.stat().st_size
    assert sum(before.values()) > 0, "the first replicas were cloned with pg_basebackup (no backup existed)"
    result = pgha(demo, "reinit", target, "--force")
    assert result.exit_code == 0, result.output
    wait_for(f"{target} rebuilt", lambda: b"restored from the repository" in agent_log.read_bytes()[offset:],
             timeout=120)
    demo.wait_healthy(timeout=120)
    assert base_backups_served(demo) == before, "a base backup was streamed from a member"
    row = sql(demo, "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'",
              target)
    assert row == [(1,)]


def test_switchover_is_done_once_the_new_timeline_is_in_the_repository(demo: DemoCluster) -> None:
    a_backup(demo)
    old = leader_name(demo)
    candidate = demo.view().sync.standbys[0]  # type: ignore[union-attr]
    last = str(sql(demo, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])
    result = pgha(demo, "switchover", "--candidate", candidate, "--force")
    assert result.exit_code == 0, result.output
    # Reported done: the new timeline's .history and the segment the old primary ended in are there.
    timeline = demo.view().members[candidate].timeline
    assert timeline is not None and int(last[:8], 16) < timeline
    history = demo.repository_path / "archive" / demo.cluster / "15-1" / f"{timeline:08X}.history"
    assert history.exists(), result.output
    assert archived(demo, f"{timeline:08X}{last[8:]}") or archived(demo, last), last
    assert repository_missing(demo.repository_path, demo.cluster, a_backup(demo).backups[0].wal_start) == []
    demo.wait_healthy(timeout=90)
    assert demo.view().members[old].following == candidate


def test_host_death_mid_archive_leaves_no_gap_and_latest_restore_has_every_acknowledged_write(
        demo: DemoCluster) -> None:
    wait_for("a synchronous standby", lambda: demo.view().sync is not None and demo.view().sync.standbys)
    info = a_backup(demo)
    old = leader_name(demo)
    probe = Probe(multi_host_dsn(demo), interval=0.01)
    probe.start()
    node = demo.node(old)
    pids: list[int] = []
    try:
        wait_for("probe writes", lambda: probe.acknowledged > 50, timeout=30)
        # WAL switches keep archive-push busy, so the host freezes in the middle of archiving.
        for _ in range(3):
            sql(demo, "SELECT pg_switch_wal()")
        pids = [*freeze_host(demo, old), node.pgbackrest_pid]
        os.kill(node.pgbackrest_pid, signal.SIGSTOP)
        new = wait_new_leader(demo, old, timeout=TTL * 6)
        before = probe.acknowledged
        wait_for("writes through the new leader", lambda: probe.acknowledged > before + 50, timeout=60)
        # The frozen host dies for good: its unarchived WAL is gone with it.
        kill_frozen(demo, old, pids)
        wait_for(f"{new} to confirm its timeline in the repository",
                 lambda: (m := demo.view().members[new]).archived_timeline == m.timeline, timeout=90)
    finally:
        report = probe.stop()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert report.missing == 0, report.to_text()
    acked = set(probe._stats.acked) if probe._stats is not None else set()
    assert len(acked) > 100
    switch_and_wait_archived(demo)
    # The archive runs without a hole from the first backup, across the timeline switch.
    assert repository_missing(demo.repository_path, demo.cluster, info.backups[0].wal_start) == []
    verify = subprocess.run(["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--",
                             "pgbackrest", f"--config={demo.dir / 'repository' / 'pgbackrest.conf'}",
                             f"--stanza={demo.cluster}", "verify", "--output=text", "--verbose"],
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0 and "status: ok" in verify.stdout, verify.stdout + verify.stderr
    with restored(demo, "latest-restored", "--latest") as conn:
        rows = conn.execute("SELECT seq FROM pgha_probe WHERE run_id = %s", (probe.run_id,)).fetchall()
    present = {r[0] for r in rows}
    assert acked <= present, f"{len(acked - present)} acknowledged writes missing after the restore"
    # The old primary comes back, pushes what it never archived, and rejoins.
    demo.start_backup_server(node)
    restart_node(demo, old)
    demo.wait_healthy(timeout=120)
    assert host_pids(demo, old)
