"""Issue 17 items 1-2: a standby cluster following a primary cluster, each with its own etcd (real agents,
PostgreSQL 15), and promote-cluster / demote-cluster through the CLI an operator uses.

One pair of 2-member clusters is shared by the tests of this file, which run in order and each leave
both clusters healthy: site A (primary cluster, permanent slot ``site_b`` for the other site) and site
B (standby cluster of A's two hosts).  The last two tests turn B into the primary cluster and A into
its standby cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from click.testing import CliRunner, Result

from pgha.cli.main import _register, cli
from pgha.core.model import Role
from pgha.demo import DemoCluster
from tests.support.cluster import leader_name, running_cluster, wait_for
from tests.support.faults import kill_host, restart_node

pytestmark = pytest.mark.integration

TTL = 6.0


@dataclass
class Sites:
    a: DemoCluster
    b: DemoCluster
    # Both sites use the same PostgreSQL passwords (the standby leader logs in to the other site).
    password: str


def hosts_of(demo: DemoCluster) -> str:
    """``standby_cluster.host`` naming every member of ``demo``: '127.0.0.1:P1,127.0.0.1:P2'."""
    assert demo.state is not None
    return ",".join(f"127.0.0.1:{n.pg_port}" for n in demo.state.nodes)


@pytest.fixture(scope="module")
def sites() -> Iterator[Sites]:
    with ExitStack() as stack:
        a = stack.enter_context(running_cluster(nodes=2, ttl=TTL, cluster="site-a",
                                                extra_cluster_config={"slots": {"site_b": {"type": "physical"}}}))
        assert a.state is not None
        pg = yaml.safe_load(Path(a.state.nodes[0].config).read_text())["postgresql"]
        shared = {"superuser": {"password": pg["superuser"]["password"]},
                  "replication": {"password": pg["replication"]["password"]}}
        b = stack.enter_context(running_cluster(
            nodes=2, ttl=TTL, cluster="site-b", extra_node_config={"*": {"postgresql": shared}},
            extra_cluster_config={"standby_cluster": {"host": hosts_of(a), "primary_slot_name": "site_b"}}))
        yield Sites(a, b, pg["superuser"]["password"])


def pgha(demo: DemoCluster, *args: str) -> Result:
    """`pgha ARGS --dcs ... --cluster ...` in-process, as an operator runs it."""
    _register()
    return CliRunner().invoke(cli, [*args, "--dcs", demo.etcd_url, "--cluster", demo.cluster])


def sql(s: Sites, demo: DemoCluster, name: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(demo.node(name).dsn, password=s.password, autocommit=True, connect_timeout=3) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


def names(demo: DemoCluster) -> list[str]:
    assert demo.state is not None
    return [n.name for n in demo.state.nodes]


def status(demo: DemoCluster, name: str, path: str) -> int:
    return int(demo.api_call(name, "GET", path, auth=False)[0])


def rows_everywhere(s: Sites, demo: DemoCluster, value: str, timeout: float = 60) -> None:
    for n in names(demo):
        wait_for(f"row {value!r} on {demo.cluster}'s {n}",
                 lambda n=n: sql(s, demo, n, "SELECT 1 FROM site WHERE v = %s", value), timeout=timeout)


def write(s: Sites, demo: DemoCluster, value: str) -> None:
    sql(s, demo, leader_name(demo), "INSERT INTO site VALUES (%s)", value)


def system_id(s: Sites, demo: DemoCluster, name: str) -> str:
    return str(sql(s, demo, name, "SELECT system_identifier FROM pg_control_system()")[0][0])


def timeline(s: Sites, demo: DemoCluster, name: str) -> int:
    """The timeline a primary writes on (its current WAL file's first 8 hex digits)."""
    return int(str(sql(s, demo, name, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0])[:8], 16)


def received_timeline(s: Sites, demo: DemoCluster, name: str) -> int:
    rows = sql(s, demo, name, "SELECT received_tli FROM pg_stat_wal_receiver WHERE status = 'streaming'")
    return int(rows[0][0]) if rows and rows[0][0] else 0


def standby_leader(demo: DemoCluster) -> str:
    """The leader of a standby cluster, once it runs as a replica of the other site."""
    view = demo.view()
    assert view.leader is not None
    m = view.members.get(view.leader.name)
    assert m is not None and m.role == Role.REPLICA, f"{view.leader.name} is not running as standby leader"
    return view.leader.name


def test_rows_written_on_the_primary_site_are_read_on_both_standby_members(sites: Sites) -> None:
    s = sites
    lead = leader_name(s.a)
    sql(s, s.a, lead, "CREATE TABLE site (v text)")
    write(s, s.a, "first")
    rows_everywhere(s, s.b, "first")
    b_lead = standby_leader(s.b)
    assert {system_id(s, s.b, n) for n in names(s.b)} == {system_id(s, s.a, lead)}
    # Patroni 4's answers: the standby leader is a leader, not a primary; read-only endpoints answer.
    assert status(s.b, b_lead, "/standby-leader") == 200 and status(s.b, b_lead, "/leader") == 200
    assert status(s.b, b_lead, "/primary") == 503 and status(s.b, b_lead, "/read-only") == 200
    other = next(n for n in names(s.b) if n != b_lead)
    assert status(s.b, other, "/replica") == 200 and status(s.b, other, "/standby-leader") == 503
    assert status(s.a, lead, "/standby-leader") == 503 and status(s.a, lead, "/leader") == 200
    view = s.b.view()
    assert view.members[other].following == b_lead, "the other standby member streams from the standby leader"
    listing = pgha(s.b, "list").output
    assert "Standby Leader" in listing, listing
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        sql(s, s.b, b_lead, "INSERT INTO site VALUES ('nope')")
    # The standby leader streams through the slot site A keeps for it (on its primary, and a copy on
    # its replica: target_session_attrs=any takes whichever of A's hosts answers first).
    active = "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'site_b' AND active"
    wait_for("site_b slot active at site A", lambda: any(sql(s, s.a, n, active) for n in names(s.a)))


def test_killing_the_standby_leader_moves_the_role_and_replication_resumes(sites: Sites) -> None:
    s = sites
    old = standby_leader(s.b)
    kill_host(s.b, old)
    new = wait_for("a new standby leader", lambda: (v := s.b.view()).leader is not None
                   and v.leader.name != old and v.members.get(v.leader.name) is not None
                   and v.members[v.leader.name].role == Role.REPLICA
                   and v.members[v.leader.name].state == "streaming" and v.leader.name, timeout=90)
    write(s, s.a, "after-kill")
    wait_for(f"row on the new standby leader {new}",
             lambda: sql(s, s.b, new, "SELECT 1 FROM site WHERE v = 'after-kill'"), timeout=60)
    restart_node(s.b, old)
    s.b.wait_healthy(timeout=120)
    assert standby_leader(s.b) == new
    rows_everywhere(s, s.b, "after-kill")


def test_a_switchover_at_the_primary_site_is_followed_on_the_new_timeline_without_a_reclone(sites: Sites) -> None:
    s = sites
    ids = {n: os.stat(s.b.node(n).data_dir).st_ino for n in names(s.b)}
    old_tl = timeline(s, s.a, leader_name(s.a))
    r = pgha(s.a, "switchover", "--force")
    assert r.exit_code == 0, r.output
    s.a.wait_healthy(timeout=90)
    new_tl = timeline(s, s.a, leader_name(s.a))
    assert new_tl > old_tl
    write(s, s.a, "after-switchover")
    rows_everywhere(s, s.b, "after-switchover")
    for n in names(s.b):
        wait_for(f"{n} streaming on timeline {new_tl}", lambda n=n: received_timeline(s, s.b, n) >= new_tl,
                 timeout=60)
    assert {n: os.stat(s.b.node(n).data_dir).st_ino for n in names(s.b)} == ids, "a standby member was re-cloned"
    assert {system_id(s, s.b, n) for n in names(s.b)} == {system_id(s, s.a, leader_name(s.a))}
    s.b.wait_healthy(timeout=60)


def test_promote_cluster_makes_the_standby_site_writable(sites: Sites) -> None:
    s = sites
    r = pgha(s.b, "promote-cluster", "--force")
    assert r.exit_code == 0, r.output
    assert s.b.view().config.standby_cluster is None
    s.b.wait_healthy(timeout=90)
    write(s, s.b, "written-on-b")
    rows_everywhere(s, s.b, "written-on-b")
    assert status(s.b, leader_name(s.b), "/primary") == 200
    refused = pgha(s.b, "promote-cluster", "--force")
    assert refused.exit_code == 1 and "is not a standby cluster" in refused.output


def test_demote_cluster_makes_the_old_primary_site_follow_the_new_one(sites: Sites) -> None:
    s = sites
    # Site A is still writable (nothing fenced it: the sites share no DCS): a write there after B's
    # promotion makes its timeline diverge, which the demotion rewinds away.
    write(s, s.a, "lost-on-a")
    r = pgha(s.a, "demote-cluster", "--host", hosts_of(s.b), "--force")
    assert r.exit_code == 0, r.output
    try:
        s.a.wait_healthy(timeout=180)
    except Exception:
        view = s.a.view()
        print(view.forks, {n: (m.timeline, m.received_lsn, m.replayed_lsn, m.state, m.rule_id)
                           for n, m in view.members.items()})
        raise
    lead = standby_leader(s.a)
    assert status(s.a, lead, "/standby-leader") == 200 and status(s.a, lead, "/primary") == 503
    write(s, s.b, "after-demote")
    rows_everywhere(s, s.a, "after-demote", timeout=120)
    for n in names(s.a):
        assert not sql(s, s.a, n, "SELECT 1 FROM site WHERE v = 'lost-on-a'"), f"{n} kept the diverged write"
    assert {system_id(s, s.a, n) for n in names(s.a)} == {system_id(s, s.b, leader_name(s.b))}
    again = pgha(s.a, "demote-cluster", "--host", hosts_of(s.b), "--force")
    assert again.exit_code == 1 and "already a standby cluster" in again.output
