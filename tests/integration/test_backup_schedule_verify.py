"""Issue 16 phase 2 on one 3-node cluster with a pgBackRest repository host:

- ``backup.schedule`` runs each slot once (not once per agent), from a standby, and survives
  killing the agent that submitted a slot;
- ``create_replica_methods: [pgbackrest, basebackup]``: a reinit and a member with an empty data
  directory are built from the repository, and no member served a base backup (BASE_BACKUP);
- ``pgha backup verify`` passes on a good backup and fails, with the gap and verify metrics the
  alert rules read, once a WAL segment is deleted from the repository by hand.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pgha.backup import verify as vkeys
from pgha.backup.scheduler import read_claim
from pgha.core.schedule import BackupPolicy
from pgha.demo import DemoCluster
from tests.support.cluster import connect, leader_name, running_cluster, wait_for
from tests.support.promql import metric_names
from tests.unit.test_grafana_alerts import alert_rules

pytestmark = pytest.mark.integration

SLOT = 20


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    # Every member builds replicas from the repository first.  At start there is no backup yet, so the
    # first replicas fall back to pg_basebackup (the primary's log shows BASE_BACKUP for them).
    methods = {"postgresql": {"create_replica_methods": ["pgbackrest", "basebackup"]}}
    with running_cluster(nodes=3, backup=True, ttl=6.0, api_tls=False,
                         extra_cluster_config={"parameters": {"log_replication_commands": "on"}},
                         extra_node_config={f"node{i}": methods for i in (1, 2, 3)}) as cluster:
        yield cluster


def pgha(demo: DemoCluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cfg = demo.node("node1").config
    return subprocess.run([sys.executable, "-m", "pgha", "-c", cfg, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def repository_log(demo: DemoCluster) -> str:
    return (demo.dir / "repository" / "repository.log").read_text(errors="replace")


def set_schedule(demo: DemoCluster, schedule: dict[str, str]) -> None:
    store = demo.store()
    config, rev = store.get_config()
    assert store.set_config(replace(config, backup=BackupPolicy(schedule)), rev)


def metric(demo: DemoCluster, name: str, sample: str) -> float:
    status, data = demo.api_call(name, "GET", "/metrics", auth=False)
    assert status == 200
    m = re.search(rf"^{re.escape(sample)} (\S+)$", bytes(data).decode(), re.MULTILINE)
    assert m, f"{sample} not in /metrics"
    return float(m.group(1))


def test_schedule_runs_each_slot_once_and_survives_killing_its_submitter(demo: DemoCluster) -> None:
    # The repository host lists every member (it reads their endpoints from the DCS) before a backup.
    conf = demo.dir / "repository" / "pgbackrest.conf"
    wait_for("the repository to know every member", lambda: "pg3-host=" in conf.read_text(), timeout=60)
    # Right after start the repository host's backup can still miss the primary ("unable to find
    # primary cluster", h16-backup's foundation): retry for a while.
    wait_for("a full backup", lambda: pgha(demo, "backup", "--type", "full").returncode == 0, timeout=120,
             interval=3)
    set_schedule(demo, {"incr": f"every {SLOT}s"})
    store = demo.store()

    def submitted_slot() -> float | None:
        claim, _ = read_claim(store, "incr")
        return claim.slot if claim is not None and claim.submitted and not claim.skipped else None

    first = wait_for("a scheduled slot submitted", submitted_slot, timeout=3 * SLOT + 30, interval=0.5)
    claim, _ = read_claim(store, "incr")
    assert claim is not None
    # Kill the agent that submitted it, at once (no clean shutdown).  The repository host carries the
    # request out anyway.  When that agent led the cluster, the failover can make the backup fail
    # (its member key goes with its lease): the slot is then submitted again by another agent.
    victim = claim.member
    demo.stop_agent(victim, signal.SIGKILL)
    rid = f"incr-{int(first)}"
    done = re.compile(rf"backup ({rid}(-\d)?): backup \S+ done")
    wait_for(f"{rid} done (retried after a failure if need be)", lambda: done.search(repository_log(demo)),
             timeout=180, interval=0.5)
    # The next slots are run by the remaining agents, once each.
    later = wait_for("two more slots submitted", lambda: (s := submitted_slot()) is not None
                     and s >= first + 2 * SLOT and s, timeout=4 * SLOT + 60, interval=0.5)
    claim, _ = read_claim(store, "incr")
    assert claim is not None and claim.member != victim
    last_rid = f"incr-{int(later)}"
    wait_for(f"{last_rid} done", lambda: re.search(rf"backup {last_rid}(-\d)?: backup \S+ done",
                                                   repository_log(demo)), timeout=180, interval=0.5)
    shown = pgha(demo, "backup", "schedule")
    assert shown.returncode == 0 and re.search(r"incr +every 20s .* submitted by ", shown.stdout), shown.stdout
    set_schedule(demo, {})
    log = repository_log(demo)
    requested = re.findall(r"backup (incr-\d+(?:-\d)?) \(incr\) requested; from (\S+)", log)
    assert requested, log[-2000:]
    # Each slot (and attempt) once, never once per agent.
    ids = [r[0] for r in requested]
    assert len(ids) == len(set(ids)), ids
    slots = sorted({int(r.split("-")[1]) for r in ids})
    assert slots[0] == int(first) and int(later) in slots and len(slots) >= 3, slots
    # From a standby by default: the last slot (the cluster settled) was read from a replica.
    sources = dict(requested)
    assert sources[last_rid] != leader_name(demo), requested
    demo.start_agent(victim)
    demo.wait_healthy(timeout=120)


def pg_log(demo: DemoCluster, name: str) -> Path:
    return Path(demo.node(name).data_dir).parent / "postgresql.log"


def agent_log(demo: DemoCluster, name: str) -> Path:
    return Path(demo.node(name).config).parent / "agent.log"


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def since(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def streaming(demo: DemoCluster, name: str) -> bool:
    m = demo.view().members.get(name)
    return m is not None and m.state == "streaming"


def test_replicas_are_built_from_the_repository_not_the_primary(demo: DemoCluster) -> None:
    names = [n.name for n in demo.state.nodes] if demo.state else []
    lead = leader_name(demo)
    # The first replicas were cloned before any backup existed: pg_basebackup, seen in the source's log.
    assert any("BASE_BACKUP" in pg_log(demo, n).read_text(errors="replace") for n in names)
    with connect(demo, lead) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS before_reinit (x int)")
        conn.execute("INSERT INTO before_reinit VALUES (42)")
    logs = {n: size(pg_log(demo, n)) for n in names}
    reinit, fresh = [n for n in names if n != lead][:2]
    offsets = {n: size(agent_log(demo, n)) for n in (reinit, fresh)}

    # 1. pgha reinit.
    out = pgha(demo, "reinit", reinit, "--force")
    assert out.returncode == 0, out.stderr
    wait_for(f"{reinit} restored from the repository", lambda: "restored from the repository" in
             since(agent_log(demo, reinit), offsets[reinit]), timeout=180, interval=0.5)
    wait_for(f"{reinit} streaming again", lambda: streaming(demo, reinit), timeout=120)

    # 2. A new member: an empty data directory joining the running cluster.
    node = demo.node(fresh)
    demo.stop_agent(fresh)
    demo._stop_leftovers(node)
    shutil.rmtree(node.data_dir)
    demo.start_agent(fresh)
    wait_for(f"{fresh} restored from the repository", lambda: "restored from the repository" in
             since(agent_log(demo, fresh), offsets[fresh]), timeout=180, interval=0.5)
    wait_for(f"{fresh} streaming", lambda: streaming(demo, fresh), timeout=120)

    for n in (reinit, fresh):
        text = since(agent_log(demo, n), offsets[n])
        assert "restored from the repository" in text and "falling back to pg_basebackup" not in text, n
        with connect(demo, n) as conn:
            assert conn.execute("SELECT x FROM before_reinit").fetchone() == (42,)
    # No member (the primary included) served a base backup meanwhile: only WAL was streamed.
    for n in names:
        assert "BASE_BACKUP" not in since(pg_log(demo, n), logs[n]), f"{n} served a base backup"


def test_verify_passes_then_fails_on_a_deleted_segment_and_raises_the_alert(demo: DemoCluster) -> None:
    store = demo.store()
    archive = demo.dir / "repository" / "repo" / "archive" / demo.cluster

    def archived(name: str) -> list[Path]:
        return list(archive.glob(f"*/*/{name}-*"))

    # Something to restore, archived.
    with connect(demo, leader_name(demo)) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS proof (x int)")
        conn.execute("INSERT INTO proof SELECT generate_series(1, 1000)")
        switched = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]  # type: ignore[index]
    wait_for("the table's WAL archived", lambda: archived(switched), timeout=60)
    ok = pgha(demo, "backup", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "restore test passed" in ok.stdout and "pg_amcheck passed" in ok.stdout
    good = vkeys.read_result(store)
    assert good is not None and good.ok and good.rto_seconds > 0 and good.tables >= 1 and not good.gap
    node = leader_name(demo)
    wait_for("the verify metrics", lambda: metric(demo, node, "pgha_backup_verify_ok") == 1.0, timeout=40)
    assert metric(demo, node, "pgha_backup_verify_duration_seconds") == pytest.approx(good.rto_seconds)
    assert metric(demo, node, "pgha_backup_archive_gap") == 0.0
    assert metric(demo, node, "pgha_backup_wal_archive_age_seconds") >= 0
    assert metric(demo, node, "pgha_backup_restore_window_start_timestamp_seconds") > 1.6e9
    assert metric(demo, node, "pgha_backup_last_backup_age_seconds") >= 0

    # Three more segments in the archive; delete the middle one by hand.
    with connect(demo, leader_name(demo)) as conn:
        names = []
        for i in range(3):
            conn.execute(f"INSERT INTO proof VALUES ({i})")
            names.append(conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])  # type: ignore[index]

    wait_for("the segments archived", lambda: all(archived(n) for n in names), timeout=60)
    for path in archived(names[1]):
        path.unlink()
    bad = pgha(demo, "backup", "verify")
    assert bad.returncode != 0
    assert f"{names[1]} is missing from the archive" in bad.stderr, bad.stderr
    failed = vkeys.read_result(store)
    assert failed is not None and not failed.ok and failed.gap
    # The metrics the alert rules read.
    wait_for("the failed verify in /metrics", lambda: metric(demo, node, "pgha_backup_verify_ok") == 0.0, timeout=40)
    assert metric(demo, node, "pgha_backup_archive_gap") == 1.0
    rules = {r["alert"]: r["expr"] for r in alert_rules()}
    assert "pgha_backup_verify_ok" in metric_names(rules["PghaBackupVerifyFailed"])
    assert "pgha_backup_archive_gap" in metric_names(rules["PghaArchiveGap"])
    assert not list((demo.dir / "repository").glob("verify*")), "the scratch directory was not removed"
    # Where operators look: the dashboard's document and pgha list.
    status, st = demo.api_call(node, "GET", "/ui/state")
    assert status == 200 and st["backup"]["verify"]["ok"] is False and st["backup"]["verify"]["gap"] is True
    assert st["backup"]["window"]["start"] > 1.6e9 and st["backup"]["rpo_seconds"] >= 0
    listed = pgha(demo, "list").stdout
    assert "Backups: last backup " in listed and "RPO " in listed and "restore window " in listed, listed
    assert "Restore test: FAILED" in listed and "(archive gap)" in listed, listed
