"""Issue 17 items 3 and 5: two sites that share nothing but the network (tests/support/sites.py).

One two-site lab for the module: site A (a1-a3, its own etcd) and site B (b1-b2, its own etcd), each
on its own bridge and /24, joined by a router namespace; site B is a standby cluster of site A where
this pgha's agents run standby clusters (the ``standby-*`` rules), a cluster of its own otherwise
(then only the lab and the DCS-outage cases run, and the standby cases skip saying why).

The cases run in this order, each leaving both sites healthy for the next:
1. the lab: two subnets, two etcds, the router; a cut separates the sites and nothing else;
2. rows written on site A's primary are read on both site B members;
3. a DCS outage at site B (its etcd frozen) keeps site A writable; then the reverse: site A's etcd
   frozen, site B keeps serving reads and site A's primary follows the usual etcd-outage rules;
4. the standby leader's host frozen: the role moves and replication resumes;
5. a failover on site A (its leader's host killed): site B follows the new timeline, no re-clone;
6. planned site switchover (demote A, wait until B has replayed all A wrote, promote B), as
   docs/multi-host.md writes it: no acknowledged write lost, A follows B afterwards;
7. the primary site (now B) cut off entirely, `pgha promote-cluster` on A: writable, no acknowledged
   write that had reached it lost;
8. reconnected, the cut-off site is demoted (`pgha demote-cluster`, pg_rewind where the timelines
   diverged) and follows the other one: its replicas rewind against their standby leader, which is
   asked for restartpoints until its pg_control is on the new timeline (postgres/rewind.py).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgha.core.model import Role
from pgha.demo import netlab
from pgha.faults.procs import freeze_host, kill_frozen, restart_node
from tests.support.cluster import wait_for
from tests.support.sites import (
    SITE_SLOT,
    SiteCluster,
    SiteWriter,
    TwoSites,
    reaches,
    standby_active,
    standby_supported,
    two_sites,
)

pytestmark = pytest.mark.lab

TTL = 10.0
STANDBY = standby_supported()
needs_standby = pytest.mark.skipif(not STANDBY, reason="this pgha's agents do not run standby clusters yet "
                                   "(no standby-* rules): site B runs as a cluster of its own")
TABLE = "site_rows"
# Longer than a lease and its renewal retries: an outage any member would notice.
OUTAGE = TTL + 5.0
# A site's own slot on the other site, for the planned switchover back (docs/multi-host.md, step site-slot).
SLOT_A = "site_a"
# Which site case 7 promoted and which it cut off (case 8 brings the latter back).
AFTER_CUT: dict[str, SiteCluster] = {}


@pytest.fixture(scope="module")
def sites() -> Iterator[TwoSites]:
    with two_sites(TTL, standby=STANDBY) as s:
        with connect(s.a, leader(s.a)) as conn:
            conn.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        yield s


def connect(site: SiteCluster, name: str, timeout: int = 3) -> psycopg.Connection[Any]:
    return psycopg.connect(site.node(name).dsn, autocommit=True, connect_timeout=timeout,
                           options="-c statement_timeout=5000")


def leader(site: SiteCluster, timeout: float = 120.0) -> str:
    view = site.wait_healthy(timeout=timeout)
    assert view.leader is not None
    return view.leader.name


def members(site: SiteCluster) -> list[str]:
    assert site.state is not None
    return [n.name for n in site.state.nodes]


_next_id = iter(range(1, 10**9))


def write(site: SiteCluster, name: str, count: int = 1) -> list[int]:
    ids = [next(_next_id) for _ in range(count)]
    with connect(site, name) as conn:
        for i in ids:
            conn.execute(f"INSERT INTO {TABLE} (id) VALUES (%s)", (i,))
    return ids


def has_rows(site: SiteCluster, name: str, ids: list[int]) -> bool:
    with connect(site, name) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE id = ANY(%s)", (ids,)).fetchone()
    return row is not None and row[0] == len(ids)


def wait_rows(site: SiteCluster, ids: list[int], timeout: float = 60.0) -> None:
    for name in members(site):
        wait_for(f"{name} to have rows {ids[0]}..{ids[-1]}", partial(has_rows, site, name, ids), timeout=timeout)


def reads_rows(site: SiteCluster, name: str, ids: list[int]) -> bool:
    """A read on ``name`` answers (and, where site B follows site A, has ``ids``)."""
    if STANDBY:
        return has_rows(site, name, ids)
    with connect(site, name) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


def writable(site: SiteCluster, name: str) -> bool:
    try:
        with connect(site, name, timeout=2) as conn:
            row = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])


# --- 1. the lab ---------------------------------------------------------------------------------


def test_each_site_has_its_own_subnet_etcd_and_members(sites: TwoSites) -> None:
    a, b = sites.sites
    assert a.subnet != b.subnet and not a.subnet.overlaps(b.subnet)
    assert all(s.subnet.subnet_of(netlab.LAB_NET) for s in (a, b))  # type: ignore[arg-type]
    assert a.etcd_pid() != b.etcd_pid() and a.dcs_url != b.dcs_url
    assert set(a.view().members) == set(members(a)) == {"a1", "a2", "a3"}
    assert set(b.view().members) == set(members(b)) == {"b1", "b2"}
    for site in (a, b):
        assert site.state is not None
        for n in site.state.nodes:
            assert n.netns and n.address and netlab.has_address(n.netns, n.address)
            assert netlab.subnet_of(n.address) == site.subnet


def test_the_router_joins_the_sites_and_a_cut_separates_only_them(sites: TwoSites) -> None:
    a, b = sites.sites
    a1, a2, b1 = a.node("a1"), a.node("a2"), b.node("b1")
    port_a, port_b = a.lab_pg_port, b.lab_pg_port
    assert reaches(a1.netns, str(b1.address), port_b) and reaches(b1.netns, str(a1.address), port_a)
    sites.cut_off(a)
    try:
        assert not reaches(a1.netns, str(b1.address), port_b, timeout=1)
        assert not reaches(b1.netns, str(a1.address), port_a, timeout=1)
        # Inside each site, and from each site to its own etcd, nothing changed.
        assert reaches(a1.netns, str(a2.address), port_a)
        assert reaches(a1.netns, a.dcs_host, a.port_base) and reaches(b1.netns, b.dcs_host, b.port_base)
    finally:
        sites.reconnect(a)
    wait_for("the sites to reach each other again", lambda: reaches(b1.netns, str(a1.address), port_a))


# --- 2. rows written on site A are read on both site B members ----------------------------------------


@needs_standby
def test_rows_written_on_site_a_are_read_on_both_site_b_members(sites: TwoSites) -> None:
    a, b = sites.sites
    view = b.wait_healthy(timeout=120)
    assert standby_active(view) and view.leader is not None
    assert view.members[view.leader.name].role == Role.REPLICA
    ids = write(a, leader(a), 20)
    wait_rows(b, ids)
    for name in members(b):
        assert not writable(b, name)
    # docs/multi-host.md's check on a site B host, as written.
    out = b.run_step("pgha-check", members(b)[0])
    assert "Standby Leader" in out and all(name in out for name in members(b)), out


# --- 3. a DCS outage at one site ------------------------------------------------------------------


def write_through(sites: TwoSites, site: SiteCluster, name: str, seconds: float) -> tuple[list[int], list[str]]:
    """Write one row every 0.2 s on ``name`` for ``seconds`` (each with its own deadlines); the ids
    written and the errors met."""
    ids: list[int] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ids += write(site, name)
        except psycopg.Error as exc:
            errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        time.sleep(0.2)
    return ids, errors


def test_a_dcs_outage_at_site_b_keeps_site_a_writable(sites: TwoSites) -> None:
    a, b = sites.sites
    primary = leader(a)
    b.wait_healthy(timeout=120)
    sites.freeze_etcd(b)
    try:
        ids, errors = write_through(sites, a, primary, OUTAGE)
    finally:
        sites.thaw_etcd(b)
    assert not errors, f"site A refused writes while site B's etcd was down: {errors[:3]}"
    assert len(ids) > OUTAGE  # about five a second
    assert leader(a) == primary
    b.wait_healthy(timeout=120)
    if STANDBY:
        wait_rows(b, ids)


def test_a_dcs_outage_at_site_a_leaves_site_b_serving_reads(sites: TwoSites) -> None:
    a, b = sites.sites
    primary = leader(a)
    standby_leader = leader(b)
    before = write(a, primary, 5)
    if STANDBY:
        wait_rows(b, before)
    sites.freeze_etcd(a)
    try:
        deadline = time.monotonic() + OUTAGE
        reads = 0
        while time.monotonic() < deadline:
            for name in members(b):
                assert reads_rows(b, name, before), f"{name} did not serve a read while site A's etcd was down"
                reads += 1
            time.sleep(0.5)
        # Site A's primary follows its usual etcd-outage rules: it stops taking writes before its
        # lease could end (docs/architecture.md, "etcd outages"), and no other member of site A promotes.
        wait_for("site A's primary to stop taking writes", lambda: not writable(a, primary), timeout=TTL + 10)
        assert not any(writable(a, n) for n in members(a) if n != primary)
        view_b = b.view()
        assert view_b.leader is not None and view_b.leader.name == standby_leader
    finally:
        sites.thaw_etcd(a)
    assert reads > 0
    leader(a, timeout=180)
    b.wait_healthy(timeout=120)
    after = write(a, leader(a), 5)
    if STANDBY:
        # Site A may have a new leader (and timeline) now: site B's standby leader reconnects first.
        wait_rows(b, after, timeout=180)


# --- 4. the standby leader's host ----------------------------------------------------------------------


@needs_standby
def test_freezing_the_standby_leaders_host_moves_the_role(sites: TwoSites) -> None:
    a, b = sites.sites
    old = leader(b)
    pids = freeze_host(b, old)
    try:
        new = wait_for("another standby leader at site B", lambda: (lambda v: v.leader is not None and v.leader.name
                       != old and v.leader.name)(b.view()), timeout=TTL * 3 + 30)
        ids = write(a, leader(a), 10)
        wait_for(f"{new} to replay site A's new rows", lambda: has_rows(b, new, ids), timeout=60)
    finally:
        kill_frozen(b, old, pids)
        restart_node(b, old)
    b.wait_healthy(timeout=180)
    wait_rows(b, ids)


# --- 5. a failover on site A ------------------------------------------------------------------------


def marker(site: SiteCluster, name: str) -> Path:
    """A file in the member's data directory: a re-clone would remove it."""
    return Path(site.node(name).data_dir) / "pgha-test-no-reclone"


def timeline(site: SiteCluster, name: str) -> int:
    with connect(site, name) as conn:
        row = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
        received = conn.execute("SELECT received_tli FROM pg_stat_wal_receiver").fetchone()
    return max(int(row[0]) if row else 0, int(received[0]) if received and received[0] else 0)


def newer_timeline(site: SiteCluster, name: str, than: int) -> bool:
    return timeline(site, name) > than


def streams_from(site: SiteCluster, name: str) -> str | None:
    """The address member ``name``'s WAL receiver streams from (None: not streaming)."""
    with connect(site, name) as conn:
        row = conn.execute("SELECT sender_host FROM pg_stat_wal_receiver WHERE status = 'streaming'").fetchone()
    return str(row[0]) if row and row[0] else None


def agent_log(site: SiteCluster, name: str) -> str:
    return (Path(site.node(name).config).parent / "agent.log").read_text(errors="replace")


@needs_standby
def test_a_failover_on_site_a_site_b_follows_the_new_timeline_without_a_reclone(sites: TwoSites) -> None:
    """Site A's leader's host freezes (every process stopped: its kernel still accepts connections, so
    nothing refuses): site A fails over, and site B follows the new timeline without a re-clone.  Where
    site B's standby leader streamed from that host, its WAL receiver waits on it (wal_receiver_timeout,
    then a reconnect that never ends: no connect timeout), and rule standby-leader-next-source tries the
    other site's next host."""
    a, b = sites.sites
    old = leader(a)
    b.wait_healthy(timeout=120)
    for name in members(b):
        marker(b, name).write_text("written before site A's failover\n")
        shutil.chown(marker(b, name), "postgres", "postgres")
    tli = timeline(a, old)
    b_leader = leader(b)
    source = streams_from(b, b_leader)
    from_old = source == str(a.node(old).address)
    print(f"site B's standby leader {b_leader} streams from {source}; site A's leader {old} is {a.node(old).address}")
    pids = freeze_host(a, old)
    try:
        new = wait_for("a new leader at site A", lambda: (lambda v: v.leader is not None and v.leader.name != old
                       and writable(a, v.leader.name) and v.leader.name)(a.view()), timeout=TTL * 3 + 30)
        ids = write(a, new, 10)
        # wal_receiver_timeout (60 s) ends the stream from the frozen host, SOURCE_STALL (20 s) the reconnect.
        wait_rows(b, ids, timeout=240)
        for name in members(b):
            wait_for(f"{name} on site A's new timeline", partial(newer_timeline, b, name, tli), timeout=60)
            assert marker(b, name).exists(), f"{name} was cloned again"
            marker(b, name).unlink()
        if from_old:
            assert "[standby-leader-next-source]" in agent_log(b, b_leader)
    finally:
        kill_frozen(a, old, pids)
        restart_node(a, old)
    leader(a, timeout=180)
    b.wait_healthy(timeout=120)


# --- 6. planned site switchover ---------------------------------------------------------------------------


def roles(sites: TwoSites) -> tuple[SiteCluster, SiteCluster]:
    """(the primary site, the standby site), both healthy."""
    a, b = sites.sites
    view_a, view_b = a.wait_healthy(timeout=180), b.wait_healthy(timeout=180)
    assert standby_active(view_a) != standby_active(view_b), "exactly one site should be a standby cluster"
    return (b, a) if standby_active(view_a) else (a, b)


def slot_of(sites: TwoSites, site: SiteCluster) -> str:
    """The slot ``site`` streams through on the other site (site-slot made it there)."""
    return SITE_SLOT if site is sites.b else SLOT_A


@needs_standby
def test_planned_site_switchover_loses_nothing_and_the_old_site_follows(sites: TwoSites) -> None:
    """docs/multi-host.md's sequence, as written: demote-cluster on site A, site-caught-up, promote-cluster
    on site B, while a client writes through a DSN naming both sites."""
    primary, standby = roles(sites)
    # The slot the old primary site will stream through on the new one (made when it promotes).
    standby.run_step("site-slot", leader(standby), SLOT=slot_of(sites, primary))
    with SiteWriter(sites) as writer:
        writer.wait_acks(10)
        p_leader, s_leader = leader(primary), leader(standby)
        started = time.monotonic()
        primary.run_step("demote-cluster", p_leader, timeout=300, SOURCE_HOSTS=standby.hosts(),
                         SLOT=slot_of(sites, primary))
        standby.run_step("site-caught-up", s_leader, timeout=120, FROM_DSN=primary.node(p_leader).dsn,
                         TO_DSN=standby.node(s_leader).dsn)
        standby.run_step("promote-cluster", s_leader, timeout=300)
        writer.wait_acks(10, after=time.monotonic(), timeout=120)
    print(f"\nplanned site switchover: write gap {writer.max_gap(started):.2f}s, {writer.errors} failed attempts")
    lost = writer.lost(standby.node(leader(standby)).dsn)
    assert not lost, f"acknowledged writes lost in the site switchover: {lost[:10]}"
    new_primary, new_standby = roles(sites)
    assert (new_primary, new_standby) == (standby, primary)
    wait_rows(primary, writer.acked[-5:], timeout=120)


# --- 7. promote-cluster after the primary site is cut off ---------------------------------------------------


@needs_standby
def test_promote_cluster_after_the_primary_site_is_cut_off(sites: TwoSites) -> None:
    primary, standby = roles(sites)
    p_leader, s_leader = leader(primary), leader(standby)
    # Writes acknowledged on the primary site, with the WAL position each one's commit ended before.
    acked: list[tuple[int, str]] = []
    with connect(primary, p_leader) as conn:
        for _ in range(50):
            i = next(_next_id)
            conn.execute(f"INSERT INTO {TABLE} (id) VALUES (%s)", (i,))
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            acked.append((i, row[0]))
    sites.cut_off(primary)
    try:
        # What had reached the standby site when it was cut off.
        with connect(standby, s_leader) as conn:
            got = conn.execute("SELECT pg_last_wal_receive_lsn()::text").fetchone()
            assert got is not None and got[0]
            reached = [i for i, lsn in acked if conn.execute("SELECT %s::pg_lsn <= %s::pg_lsn",
                                                             (lsn, got[0])).fetchone() == (True,)]
        standby.run_step("promote-cluster", s_leader, timeout=300)
        view = standby.wait_healthy(timeout=120)
        assert view.leader is not None and not standby_active(view)
        new_primary = view.leader.name
        assert writable(standby, new_primary)
        assert reached, "nothing had reached the standby site"
        assert has_rows(standby, new_primary, reached), "an acknowledged write that had reached the site was lost"
        write(standby, new_primary, 5)
        AFTER_CUT.update({"promoted": standby, "cut off": primary})
    finally:
        sites.reconnect(primary)


# --- 8. the lost site comes back --------------------------------------------------------------------------


@needs_standby
def test_demote_cluster_brings_the_cut_off_site_back_as_a_standby_cluster(sites: TwoSites) -> None:
    a, b = sites.sites
    # After case 7 both sites run as primary clusters: the one cut off still has its own leader.
    if "promoted" not in AFTER_CUT:
        pytest.skip("case 7 did not promote a site")
    new, lost_site = AFTER_CUT["promoted"], AFTER_CUT["cut off"]
    assert not any(standby_active(s.wait_healthy(timeout=180)) for s in (a, b))
    new.run_step("site-slot", leader(new), SLOT=slot_of(sites, lost_site))
    lost_site.run_step("demote-cluster", leader(lost_site), timeout=300, SOURCE_HOSTS=new.hosts(),
                       SLOT=slot_of(sites, lost_site))
    view = lost_site.wait_healthy(timeout=120)
    assert standby_active(view)
    ids = write(new, leader(new), 5)
    wait_rows(lost_site, ids, timeout=120)
