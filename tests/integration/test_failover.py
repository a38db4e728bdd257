"""Issue 3 acceptance: automatic failover that never splits the brain and never loses a
synchronously acknowledged write.  Three real agents, PostgreSQL 15 and etcd."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import psycopg
import pytest
import urllib3

from pgha.demo import DemoCluster
from pgha.probe import Probe
from tests.support.cluster import connect, leader_name, replicas, running_cluster, wait_for
from tests.support.faults import (
    SplitBrainWatch,
    kill_agent,
    kill_host,
    multi_host_dsn,
    postmaster_pid,
    restart_node,
    wait_new_leader,
    walsender_pid,
    writable_nodes,
)

pytestmark = pytest.mark.integration

TTL = 6.0


@pytest.fixture(scope="module")
def sync_cluster() -> Iterator[DemoCluster]:
    with running_cluster(nodes=3, ttl=TTL, sync=True) as demo:
        yield demo


def heal(demo: DemoCluster, name: str) -> None:
    """Restart a node we broke and wait for the whole cluster to be healthy again."""
    restart_node(demo, name)
    demo.wait_healthy(timeout=90)


# --- primary host death -------------------------------------------------------------------


def test_host_death_sync_mode_fails_over_without_losing_acknowledged_writes(sync_cluster: DemoCluster) -> None:
    demo = sync_cluster
    wait_for("a synchronous standby", lambda: demo.view().sync is not None and demo.view().sync.standbys)
    old = leader_name(demo)
    probe = Probe(multi_host_dsn(demo), interval=0.01)
    probe.start()
    with SplitBrainWatch(demo) as watch:
        wait_for("probe writes", lambda: probe.acknowledged > 20, timeout=20)
        kill_host(demo, old)
        new = wait_new_leader(demo, old)
        before = probe.acknowledged
        wait_for("writes through the new leader", lambda: probe.acknowledged > before + 20, timeout=30)
    report = probe.stop()
    assert new != old
    assert report.missing == 0, report.to_text()
    assert watch.max_writable <= 1, f"two writable primaries: {watch.worst}"
    history = demo.store().history()
    assert history[-1].new_leader == new and history[-1].kind == "failover"
    # The old primary comes back as a replica of the new leader, on the new timeline.
    heal(demo, old)
    view = demo.view()
    assert view.leader is not None and view.leader.name == new
    assert view.members[old].following == new
    assert view.members[old].timeline == view.members[new].timeline


# --- the leader's agent dies or freezes, PostgreSQL left running ------------------------------


def test_leader_agent_killed_postgres_is_fenced(sync_cluster: DemoCluster) -> None:
    demo = sync_cluster
    old = leader_name(demo)
    probe = Probe(multi_host_dsn(demo), interval=0.01)
    probe.start()
    with SplitBrainWatch(demo) as watch:
        wait_for("probe writes", lambda: probe.acknowledged > 20, timeout=20)
        kill_agent(demo, old)
        # The watchdog saw its agent go: the old PostgreSQL stops accepting writes at once.
        wait_for("the old primary to be fenced", lambda: old not in writable_nodes(demo), timeout=10)
        new = wait_new_leader(demo, old)
        wait_for("writes on the new leader", lambda: writable_nodes(demo) == [new], timeout=30)
    report = probe.stop()
    assert watch.max_writable <= 1, f"two writable primaries: {watch.worst}"
    assert report.missing == 0, report.to_text()
    heal(demo, old)


def test_leader_agent_frozen_longer_than_ttl(sync_cluster: DemoCluster) -> None:
    demo = sync_cluster
    old = leader_name(demo)
    agent = demo.node(old).agent_pid
    probe = Probe(multi_host_dsn(demo), interval=0.01)
    probe.start()
    try:
        with SplitBrainWatch(demo) as watch:
            wait_for("probe writes", lambda: probe.acknowledged > 20, timeout=20)
            os.kill(agent, signal.SIGSTOP)
            new = wait_new_leader(demo, old, timeout=TTL * 4)
            assert writable_nodes(demo) == [new]
            time.sleep(1.0)
            # The frozen agent wakes up: it must not bring its old primary back.
            os.kill(agent, signal.SIGCONT)
            wait_for(f"{old} to rejoin as a replica", lambda: demo.view().members.get(old) is not None
                     and demo.view().members[old].state == "streaming"
                     and demo.view().members[old].following == new, timeout=90)
        report = probe.stop()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent, signal.SIGCONT)
    assert watch.max_writable <= 1, f"two writable primaries: {watch.worst}"
    assert report.missing == 0, report.to_text()


# --- PostgreSQL crashes under a live agent -----------------------------------------------------


def test_postmaster_killed_writes_resume_within_bound(sync_cluster: DemoCluster) -> None:
    demo = sync_cluster
    lead = leader_name(demo)
    probe = Probe(multi_host_dsn(demo), interval=0.01)
    probe.start()
    wait_for("probe writes", lambda: probe.acknowledged > 20, timeout=20)
    pm = postmaster_pid(demo, lead)
    assert pm is not None
    os.kill(pm, signal.SIGKILL)
    killed = time.monotonic()
    before = probe.acknowledged
    wait_for("writes to resume", lambda: probe.acknowledged > before + 10, timeout=60)
    resumed = time.monotonic() - killed
    report = probe.stop()
    config = demo.view().config
    # Documented bound: primary_start_timeout for the local restart, then a failover (ttl + loops).
    bound = config.primary_start_timeout + config.ttl + 5 * config.loop_wait + 5
    assert resumed < bound, f"writes resumed after {resumed:.1f}s, bound {bound:.1f}s"
    assert report.missing == 0, report.to_text()
    demo.wait_healthy(timeout=90)


# --- who may be promoted --------------------------------------------------------------------------


def test_most_advanced_replica_wins() -> None:
    with running_cluster(nodes=3, ttl=TTL) as demo:
        old = leader_name(demo)
        behind, ahead = replicas(demo)
        receiver = walsender_pid(demo, old, behind)
        os.kill(receiver, signal.SIGSTOP)
        try:
            with connect(demo, old) as conn:
                conn.execute("CREATE TABLE advance (x int)")
                conn.execute("INSERT INTO advance SELECT generate_series(1, 2000)")

            def ahead_has_it() -> bool:
                with connect(demo, ahead) as conn:
                    return conn.execute("SELECT count(*) FROM advance").fetchone() == (2000,)
            wait_for(f"{ahead} to receive the rows", ahead_has_it, timeout=20)
            kill_host(demo, old)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(receiver, signal.SIGCONT)
        assert wait_new_leader(demo, old) == ahead


def test_lagging_and_nofailover_replicas_are_never_promoted() -> None:
    extra = {"maximum_lag_on_failover": 1024}
    with running_cluster(nodes=3, ttl=TTL, extra_cluster_config=extra) as demo:
        old = leader_name(demo)
        lagging, tagged = replicas(demo)
        # Tag one replica nofailover (its YAML, then restart its agent).
        cfg = demo.node(tagged).config
        with open(cfg, "a") as fh:
            fh.write("tags: {nofailover: true}\n")
        restart_node(demo, tagged)
        demo.wait_healthy(timeout=60)
        receiver = walsender_pid(demo, old, lagging)
        os.kill(receiver, signal.SIGSTOP)
        try:
            with connect(demo, old) as conn:
                conn.execute("CREATE TABLE lagged AS SELECT repeat('x', 1000) FROM generate_series(1, 200)")
                conn.execute("SELECT pg_switch_wal()")
            time.sleep(TTL / 3 + 1)  # let the leader publish its new position
            kill_host(demo, old)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(receiver, signal.SIGCONT)
        # Long enough for the lease to expire and several elections to run.
        deadline = time.monotonic() + TTL * 3
        while time.monotonic() < deadline:
            view = demo.view()
            assert view.leader is None or view.leader.name == old, f"{view.leader} was promoted"
            time.sleep(0.3)
        assert writable_nodes(demo) == []
        rules = {n: m.rule_id for n, m in demo.view().members.items()}
        assert rules[lagging] == "elect-ineligible" and rules[tagged] == "elect-ineligible", rules


# --- etcd outage ------------------------------------------------------------------------------------


def _stop_etcd(demo: DemoCluster) -> None:
    assert demo.state is not None
    demo.reap(demo.state.etcd_pid, signal.SIGTERM, timeout=10)


def _start_etcd(demo: DemoCluster) -> None:
    assert demo.state is not None
    demo.state.etcd_pid = demo._start_dcs()


def test_etcd_outage_without_failsafe_fences_the_primary() -> None:
    with running_cluster(nodes=3, ttl=TTL) as demo:
        old = leader_name(demo)
        with SplitBrainWatch(demo) as watch:
            _stop_etcd(demo)
            # Documented: the primary serves until fence_margin before its lease could end, then stops.
            wait_for("the primary to fence itself", lambda: writable_nodes(demo) == [], timeout=TTL + 5)
            time.sleep(TTL)  # well past the lease: still nobody writable
            assert writable_nodes(demo) == []
            _start_etcd(demo)
            demo.wait_healthy(timeout=90)
            wait_for("one writable primary", lambda: len(writable_nodes(demo)) == 1, timeout=30)
        assert watch.max_writable <= 1, f"two writable primaries: {watch.worst}"
        assert demo.view().leader is not None
        assert old in demo.view().members


def test_etcd_outage_with_failsafe_keeps_the_primary_writable() -> None:
    """With client certificates required on every member's API (api.tls.verify_client): the leader's
    /failsafe calls present its own certificate, so the members can confirm it."""
    mtls = {"*": {"api": {"tls": {"verify_client": True}}}}
    with running_cluster(nodes=3, ttl=TTL, extra_cluster_config={"failsafe_mode": True},
                         extra_node_config=mtls) as demo:
        lead = leader_name(demo)
        # A client without a certificate is turned away: the confirmations below used one.
        with pytest.raises(urllib3.exceptions.HTTPError):
            demo.api_call(lead, "POST", "/failsafe", {"leader": lead}, timeout=2.0)
        with SplitBrainWatch(demo) as watch:
            _stop_etcd(demo)
            time.sleep(TTL * 2)
            # Every member confirmed it, so it kept its writes through the outage.
            assert writable_nodes(demo) == [lead]
            _start_etcd(demo)
            demo.wait_healthy(timeout=90)
        assert watch.max_writable <= 1, f"two writable primaries: {watch.worst}"
        assert leader_name(demo) == lead


def test_failsafe_primary_fences_when_a_member_cannot_confirm() -> None:
    with running_cluster(nodes=3, ttl=TTL, extra_cluster_config={"failsafe_mode": True}) as demo:
        lead = leader_name(demo)
        silent = replicas(demo)[0]
        os.kill(demo.node(silent).agent_pid, signal.SIGSTOP)
        try:
            _stop_etcd(demo)
            wait_for("the primary to fence itself", lambda: writable_nodes(demo) == [], timeout=TTL + 5)
        finally:
            os.kill(demo.node(silent).agent_pid, signal.SIGCONT)
        _start_etcd(demo)
        # Member keys from before the outage may look healthy for a moment: wait for writes.
        wait_for("one writable primary", lambda: len(writable_nodes(demo)) == 1, timeout=60)
        demo.wait_healthy(timeout=90)
        assert lead in demo.view().members


def test_probe_sees_read_only_replicas(sync_cluster: DemoCluster) -> None:
    for name in replicas(sync_cluster):
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), connect(sync_cluster, name) as conn:
            conn.execute("CREATE TABLE nope (x int)")
