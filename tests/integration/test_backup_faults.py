"""Issue 16 phase 3 on one 2-node synchronous cluster with a pgBackRest repository host:

- the backup host partitioned 60 s (nftables drops its packets on loopback, nothing is refused):
  writes go on, the metric the archiving-failing alert reads grows, pg_wal grows; after the heal
  the archive catches up and the gap check (pgbackrest repo-ls over TLS) and ``pgbackrest verify``
  find no hole;
- a hole made by hand (a segment deleted from the repository and from the candidate's pg_wal) is
  found by the new primary's gap check after a switchover, shown as an event, and repaired by the
  old primary pushing the segment its pg_wal still holds (backup.gap_repair: push).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgha.backup import gapcheck
from pgha.backup.archive import client
from pgha.backup.command import PgBackRest
from pgha.backup.info import BackupSummary
from pgha.config import load
from pgha.demo import DemoCluster
from pgha.postgres.binaries import RunAs
from pgha.probe import Probe
from tests.support.cluster import connect, leader_name, running_cluster, wait_for
from tests.support.faults import multi_host_dsn
from tests.support.promql import metric_names
from tests.unit.test_grafana_alerts import alert_rules

pytestmark = pytest.mark.integration

PARTITION = 60.0


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    # Segments stay in pg_wal a while after they are archived (the repair pushes from there).
    # A cluster (and stanza) name of its own: pgBackRest locks /tmp/pgbackrest/STANZA-*.lock machine-wide.
    with running_cluster(nodes=2, backup=True, ttl=6.0, api_tls=False, sync=True, cluster=f"bf{uuid.uuid4().hex[:8]}",
                         extra_cluster_config={"parameters": {"wal_keep_size": "256MB"}}) as cluster:
        yield cluster


def metric(demo: DemoCluster, name: str, sample: str) -> float:
    status, data = demo.api_call(name, "GET", "/metrics", auth=False)
    assert status == 200
    m = re.search(rf"^{re.escape(sample)} (\S+)$", bytes(data).decode(), re.MULTILINE)
    assert m, f"{sample} not in /metrics"
    return float(m.group(1))


def member_pgbackrest(demo: DemoCluster, name: str) -> PgBackRest:
    cfg = load(demo.node(name).config)
    return client(cfg, RunAs.for_data_dir(Path(cfg.postgresql.data_dir)))


def switch_wal(demo: DemoCluster) -> str:
    """Write something (a switch after none is a no-op), then close the segment; its name."""
    with connect(demo, leader_name(demo)) as conn:
        conn.execute("SELECT txid_current()")
        return str(conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])  # type: ignore[index]


def archived(demo: DemoCluster, segment: str) -> list[Path]:
    root = demo.repository_path / "archive" / demo.cluster
    return [f for d in root.glob("*/*") if d.is_dir() for f in d.iterdir() if f.name.startswith(segment)]


def a_backup(demo: DemoCluster) -> BackupSummary:
    from pgha.backup import keys

    out = subprocess.run([sys.executable, "-m", "pgha", "-c", demo.node(leader_name(demo)).config, "backup", "--type",
                          "full"], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    summary: BackupSummary = wait_for("a backup in /backup/info", lambda: (s := keys.read_info(demo.store()))
                                      is not None and s.backups and s, timeout=60)
    return summary


@contextlib.contextmanager
def backup_host_cut_off(demo: DemoCluster) -> Iterator[None]:
    """Drop every packet to and from the repository's pgbackrest server and the members' own (on
    loopback, in the root namespace: the demo's addresses); TCP hangs, nothing is refused."""
    assert demo.state is not None
    ports = ", ".join(str(p) for p in sorted({demo.repository_port,
                                              *(demo.backup_server_port(i) for i in range(len(demo.state.nodes)))}))
    table = f"pghabk{demo.repository_port}"
    rules = (f"table inet {table} {{\n"
             f"  chain input {{ type filter hook input priority -10; policy accept;\n"
             f"    tcp dport {{ {ports} }} drop\n    tcp sport {{ {ports} }} drop\n  }}\n"
             f"  chain output {{ type filter hook output priority -10; policy accept;\n"
             f"    tcp dport {{ {ports} }} drop\n    tcp sport {{ {ports} }} drop\n  }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, timeout=10)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=False, timeout=10)


def pg_wal_segments(demo: DemoCluster, name: str) -> int:
    wal = Path(demo.node(name).data_dir) / "pg_wal"
    return sum(1 for f in wal.iterdir() if len(f.name) == 24)


def test_backup_host_partitioned_60s_writes_go_on_and_the_archive_catches_up_with_no_gap(demo: DemoCluster) -> None:
    a_backup(demo)
    primary = leader_name(demo)
    pgbr = member_pgbackrest(demo, primary)
    assert gapcheck.find_missing(pgbr) == []
    rule = next(r for r in alert_rules() if r["alert"] == "PghaWalArchivingStalled")
    assert "pgha_backup_wal_oldest_ready_age_seconds" in metric_names(rule["expr"])
    threshold = float(re.findall(r">\s*([0-9.]+)", rule["expr"])[-1])
    hold = float(str(rule["for"]).removesuffix("s"))
    wal_before = pg_wal_segments(demo, primary)
    probe = Probe(multi_host_dsn(demo), interval=0.02)
    probe.start()
    try:
        wait_for("probe writes", lambda: probe.acknowledged > 20, timeout=30)
        with backup_host_cut_off(demo):
            cut_at = time.monotonic()
            acked_at_cut = probe.acknowledged
            while time.monotonic() - cut_at < PARTITION:
                switch_wal(demo)  # segments to archive keep coming
                time.sleep(5)
            ready = metric(demo, primary, "pgha_backup_wal_ready_segments")
            age = metric(demo, primary, "pgha_backup_wal_oldest_ready_age_seconds")
            wal_during = pg_wal_segments(demo, primary)
            acked_in_partition = probe.acknowledged - acked_at_cut
        healed_at = time.monotonic()
        # The archiver retries at its next wake: a new segment wakes it.
        switch_wal(demo)
        wait_for("the archive to catch up", lambda: metric(demo, primary, "pgha_backup_wal_ready_segments") == 0,
                 timeout=150)
        last = switch_wal(demo)
        wait_for(f"{last} archived", lambda: archived(demo, last), timeout=120)
        caught_up = time.monotonic() - healed_at
    finally:
        report = probe.stop()
    print(f"partition {PARTITION:.0f} s: {acked_in_partition} writes acknowledged, {ready:.0f} segments waiting, "
          f"oldest {age:.0f} s (alert threshold {threshold:.0f} s), pg_wal {wal_before} -> {wal_during} segments; "
          f"caught up {caught_up:.0f} s after the heal")
    assert report.missing == 0, report.to_text()
    assert acked_in_partition > 100, "writes stopped while the backup host was cut off"
    assert ready >= 5 and wal_during > wal_before
    # The alert fires: the age it reads is past its threshold, and has been for longer than its `for:`
    # (the oldest waiting segment's age grows one second a second from the cut).
    assert age - threshold >= hold, (age, threshold, hold)
    # No hole: pgha's gap check (repo-ls over TLS, across timelines) and pgBackRest's own verify.
    assert gapcheck.find_missing(pgbr) == []
    verify = subprocess.run(["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups", "--",
                             "pgbackrest", f"--config={demo.dir / 'repository' / 'pgbackrest.conf'}",
                             f"--stanza={demo.cluster}", "verify", "--output=text", "--verbose"],
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0 and "status: ok" in verify.stdout, verify.stdout + verify.stderr


def test_gap_after_a_switchover_is_found_reported_and_pushed_back_from_pg_wal(demo: DemoCluster) -> None:
    a_backup(demo)
    old = leader_name(demo)
    new = next(n for n in demo.view().members if n != old)
    lost = switch_wal(demo)
    wait_for(f"{lost} archived", lambda: archived(demo, lost), timeout=60)
    after = switch_wal(demo)
    wait_for(f"{after} archived", lambda: archived(demo, after), timeout=60)
    for f in archived(demo, lost):
        f.unlink()
    assert gapcheck.find_missing(member_pgbackrest(demo, old)) == [lost]
    # The candidate must not hold it either (a new primary pushes the earlier timeline's segments it
    # holds itself): past its restartpoint, its copy is not needed any more.  The old primary keeps it.
    with connect(demo, new) as conn:
        conn.execute("CHECKPOINT")
    (Path(demo.node(new).data_dir) / "pg_wal" / lost).unlink()
    agent_log = Path(demo.node(new).config).parent / "agent.log"
    offset = agent_log.stat().st_size
    out = subprocess.run([sys.executable, "-m", "pgha", "-c", demo.node(old).config, "switchover", "--candidate", new,
                          "--force"], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr

    def logged() -> str:
        return agent_log.read_bytes()[offset:].decode(errors="replace")

    wait_for("the new primary's gap check to find the hole", lambda: "[gap-push-from-members]" in logged(),
             timeout=120)
    assert lost in logged()
    wait_for("the segment pushed back and a clean check", lambda: "[gap-none]" in logged(), timeout=120)
    assert archived(demo, lost)
    assert gapcheck.find_missing(member_pgbackrest(demo, new)) == []
    assert metric(demo, new, "pgha_backup_archive_gap") == 0.0
    status, state = demo.api_call(new, "GET", "/ui/state", auth=False)
    assert status == 200
    texts = [e["text"] for e in state["events"] if e["kind"] == "backup"]
    assert any("archive gap [gap-push-from-members]" in t for t in texts), texts
    assert any("pushed 1 segment(s)" in t for t in texts) or "pushed 1 segment" in \
        (Path(demo.node(old).config).parent / "agent.log").read_text(errors="replace")
    with psycopg.connect(multi_host_dsn(demo), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
