"""Issue 16 phase 2 on one 3-node cluster with a pgBackRest repository host:

- ``backup.schedule`` runs each slot once (not once per agent), from a standby, and survives
  killing the agent that submitted a slot;
- ``pgha backup verify`` passes on a good backup and fails, with the gap and verify metrics the
  alert rules read, once a WAL segment is deleted from the repository by hand.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pgha.backup import keys
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
    with running_cluster(nodes=3, backup=True, ttl=6.0, api_tls=False) as cluster:
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
    # request out anyway; only when that agent led the cluster can the backup fail (its PostgreSQL
    # leaves the repository's configuration with its member key, as in a failover).
    victim = claim.member
    was_leader = victim == leader_name(demo)
    demo.stop_agent(victim, signal.SIGKILL)
    rid = f"incr-{int(first)}"
    result = wait_for(f"{rid} to finish", lambda: (r := keys.read_result(store)) is not None and r.id == rid and r,
                      timeout=120, interval=0.5)
    assert result.ok or was_leader, result.message
    if result.ok:
        # From a standby by default.
        assert result.source and result.source != leader_name(demo)
    # The next slots are run by the remaining agents, once each.
    later = wait_for("two more slots submitted", lambda: (s := submitted_slot()) is not None
                     and s >= first + 2 * SLOT and s, timeout=4 * SLOT + 60, interval=0.5)
    claim, _ = read_claim(store, "incr")
    assert claim is not None and claim.member != victim
    last_rid = f"incr-{int(later)}"
    last = wait_for(f"{last_rid} to finish", lambda: (r := keys.read_result(store)) is not None
                    and r.id == last_rid and r, timeout=120, interval=0.5)
    assert last.ok, last.message
    set_schedule(demo, {})
    requested = re.findall(r"backup (incr-\d+) \(incr\) requested", repository_log(demo))
    assert requested, repository_log(demo)[-2000:]
    # Each slot once, never once per agent.
    assert len(requested) == len(set(requested)), requested
    slots = sorted(int(r.split("-")[1]) for r in requested)
    assert slots[0] == int(first) and slots[-1] == int(later) and len(slots) >= 3, slots
    demo.start_agent(victim)
    demo.wait_healthy(timeout=120)


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
