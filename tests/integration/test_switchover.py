"""Issue 4 acceptance: planned switchover, maintenance mode and dynamic configuration, on
one shared 3-node cluster (real agents, PostgreSQL 15 and etcd), driven through the CLI
an operator uses.  Every test leaves the cluster healthy for the next one."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from pgha.cli.main import _register, cli
from pgha.core.model import Role, Switchover
from pgha.demo import DemoCluster
from tests.support.cluster import connect, leader_name, replicas, running_cluster, wait_for
from tests.support.faults import (
    client_writing,
    postmaster_pid,
    restart_node,
    wait_new_leader,
    walsender_pid,
    writable_nodes,
)

pytestmark = pytest.mark.integration

TTL = 6.0
DEFAULT_LAG = 1024 * 1024


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    with running_cluster(nodes=3, ttl=TTL) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def healthy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test of the shared cluster starts from, and leaves, it healthy with no pending request."""
    if "demo" not in request.fixturenames:
        yield  # a test with a cluster of its own
        return
    demo: DemoCluster = request.getfixturevalue("demo")
    demo.wait_healthy(timeout=90)
    yield
    demo.wait_healthy(timeout=90)
    wait_for("no pending switchover", lambda: demo.view().switchover is None, timeout=30)


def pgha(demo: DemoCluster, *args: str) -> Result:
    """`pgha ARGS --dcs ... --cluster ...` in-process, as an operator runs it."""
    _register()
    return CliRunner().invoke(cli, [*args, "--dcs", demo.etcd_url, "--cluster", demo.cluster])


def refusal(result: Result) -> str:
    """The one line a refused command prints (exit 1)."""
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("pgha: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def pg_pid(demo: DemoCluster, name: str) -> int:
    pid = postmaster_pid(demo, name)
    assert pid is not None, f"{name} has no postmaster.pid"
    return pid


def show(demo: DemoCluster, name: str, setting: str) -> str:
    with connect(demo, name) as conn:
        row = conn.execute(f"SHOW {setting}").fetchone()
    assert row is not None
    return str(row[0])


def set_tags(demo: DemoCluster, name: str, tags: str | None) -> None:
    """Rewrite the node's tags line in its YAML and restart its agent."""
    path = demo.node(name).config
    with open(path) as fh:
        lines = [line for line in fh if not line.startswith("tags:")]
    if tags is not None:
        lines.append(f"tags: {tags}\n")
    with open(path, "w") as fh:
        fh.writelines(lines)
    restart_node(demo, name)


def published_lag(demo: DemoCluster, leader: str, name: str) -> int:
    """Bytes ``name`` is behind ``leader`` by what both last published (refreshed every ttl/3)."""
    view = demo.view()
    return (view.members[leader].wal_lsn or 0) - view.members[name].lsn


def assert_switched(demo: DemoCluster, old: str, new: str) -> None:
    """The history records a switchover from ``old`` to ``new``; ``old`` follows ``new``."""
    entry = demo.store().history()[-1]
    assert (entry.kind, entry.old_leader, entry.new_leader) == ("switchover", old, new), entry
    assert entry.reason == f"switchover from {old}"
    view = demo.wait_healthy(timeout=90)
    assert view.members[old].following == new
    assert view.members[old].timeline == view.members[new].timeline


# --- switchovers that happen ---------------------------------------------------------------------


def test_switchover_to_named_candidate(demo: DemoCluster) -> None:
    old = leader_name(demo)
    target = replicas(demo)[-1]
    r = pgha(demo, "switchover", "--candidate", target, "--force")
    assert r.exit_code == 0, r.output
    assert f"{target} is the new leader." in r.output
    assert leader_name(demo) == target
    assert writable_nodes(demo) == [target]
    assert_switched(demo, old, target)


def test_switchover_to_any_healthy_node(demo: DemoCluster) -> None:
    old = leader_name(demo)
    r = pgha(demo, "switchover", "--force")
    assert r.exit_code == 0, r.output
    new = leader_name(demo)
    assert new != old
    assert f"{new} is the new leader." in r.output
    assert_switched(demo, old, new)


def test_switchover_loses_no_acknowledged_write(demo: DemoCluster) -> None:
    old = leader_name(demo)
    with client_writing(demo):
        r = pgha(demo, "switchover", "--force", "--no-wait")
        assert r.exit_code == 0, r.output
        new = wait_new_leader(demo, old)
    assert_switched(demo, old, new)


def test_switchover_in_synchronous_mode_loses_no_acknowledged_write() -> None:
    """synchronous_mode on: the candidate must be the synchronous standby, and the new primary
    blocks commits until its own synchronous standby is published."""
    with running_cluster(nodes=3, ttl=TTL, sync=True) as sync_demo:
        old = leader_name(sync_demo)
        view = sync_demo.view()
        assert view.sync is not None and view.sync.standbys
        standby = view.sync.standbys[0]
        other = next(n for n in replicas(sync_demo) if n not in view.sync.standbys)
        wait_for(f"{other}'s published position to catch up",
                 lambda: published_lag(sync_demo, old, other) < DEFAULT_LAG, timeout=30)
        line = refusal(pgha(sync_demo, "switchover", "--candidate", other, "--force"))
        assert line == f"pgha: candidate {other} is not synchronous, and synchronous_mode is on"
        with client_writing(sync_demo):
            r = pgha(sync_demo, "switchover", "--force")
            assert r.exit_code == 0, r.output
            new = leader_name(sync_demo)
        assert new == standby
        assert_switched(sync_demo, old, new)
        wait_for("a synchronous standby of the new leader",
                 lambda: (v := sync_demo.view()).sync is not None and v.sync.leader == new and v.sync.standbys,
                 timeout=30)


def test_scheduled_switchover_runs_at_its_time(demo: DemoCluster) -> None:
    old = leader_name(demo)
    target = replicas(demo)[0]
    at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=8)
    r = pgha(demo, "switchover", "--candidate", target, "--scheduled", at.isoformat(), "--force")
    assert r.exit_code == 0, r.output
    assert "scheduled at" in r.output
    assert "Pending switchover" in pgha(demo, "list").output
    # Nothing happens before its time.
    while datetime.datetime.now(datetime.UTC) < at - datetime.timedelta(seconds=1):
        view = demo.view()
        assert view.leader is not None and view.leader.name == old
        assert view.switchover is not None and view.switchover.phase == "requested"
        time.sleep(0.2)
    # Then it runs.
    assert wait_new_leader(demo, old, timeout=30) == target
    assert time.time() >= at.timestamp()
    wait_for("the request to be cleared", lambda: demo.view().switchover is None, timeout=10)
    assert_switched(demo, old, target)


# --- switchovers that are refused ----------------------------------------------------------------


def test_refused_unknown_candidate(demo: DemoCluster) -> None:
    lead = leader_name(demo)
    line = refusal(pgha(demo, "switchover", "--candidate", "node9", "--force"))
    assert line == "pgha: candidate node9 is not a member of the cluster"
    line = refusal(pgha(demo, "switchover", "--candidate", lead, "--force"))
    assert line == f"pgha: candidate {lead} is already the leader"
    assert demo.view().switchover is None and leader_name(demo) == lead


def test_refused_nofailover_candidate(demo: DemoCluster) -> None:
    lead = leader_name(demo)
    tagged = replicas(demo)[0]
    set_tags(demo, tagged, "{nofailover: true}")
    try:
        demo.wait_healthy(timeout=90)
        wait_for("the tag to be published", lambda: demo.view().members[tagged].tags.nofailover, timeout=30)
        line = refusal(pgha(demo, "switchover", "--candidate", tagged, "--force"))
        assert line == f"pgha: candidate {tagged} is tagged nofailover"
        # The leader refuses it too when the request reaches it directly (e.g. written by hand).
        sw = Switchover(id=uuid.uuid4().hex, leader=lead, candidate=tagged)
        assert demo.store().set_switchover(sw)
        outcome = wait_for("the leader's verdict", lambda: last_outcome(demo, lead, sw.id), timeout=30)
        assert outcome == f"refused: candidate {tagged} is tagged nofailover"
        assert f"): refused: candidate {tagged} is tagged nofailover" in pgha(demo, "list").output
        assert demo.view().switchover is None and leader_name(demo) == lead
    finally:
        set_tags(demo, tagged, None)


def last_outcome(demo: DemoCluster, member: str, switchover_id: str) -> str:
    m = demo.view().members.get(member)
    return m.last_switchover_outcome if m is not None and m.last_switchover_id == switchover_id else ""


def test_refused_lagging_candidate(demo: DemoCluster) -> None:
    lead = leader_name(demo)
    lagging = replicas(demo)[0]
    assert pgha(demo, "edit-config", "-s", "maximum_lag_on_failover=1024", "--force").exit_code == 0
    sender = walsender_pid(demo, lead, lagging)
    os.kill(sender, signal.SIGSTOP)
    try:
        with connect(demo, lead) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS lagged AS SELECT repeat('x', 1000) FROM generate_series(1, 200)")
            conn.execute("SELECT pg_switch_wal()")
        wait_for("the leader to publish its new position", lambda: published_lag(demo, lead, lagging) > 100_000,
                 timeout=30)
        line = refusal(pgha(demo, "switchover", "--candidate", lagging, "--force"))
        assert line.startswith(f"pgha: candidate {lagging} lags "), line
        assert line.endswith(" bytes, more than maximum_lag_on_failover"), line
        # Written directly, the leader refuses it with the same reason.
        sw = Switchover(id=uuid.uuid4().hex, leader=lead, candidate=lagging)
        assert demo.store().set_switchover(sw)
        outcome = wait_for("the leader's verdict", lambda: last_outcome(demo, lead, sw.id), timeout=30)
        assert outcome.startswith(f"refused: candidate {lagging} lags "), outcome
        assert leader_name(demo) == lead
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sender, signal.SIGCONT)
        assert pgha(demo, "edit-config", "-s", f"maximum_lag_on_failover={DEFAULT_LAG}", "--force").exit_code == 0
    wait_for(f"{lagging} to publish that it caught up", lambda: published_lag(demo, lead, lagging) < DEFAULT_LAG,
             timeout=30)


def test_refused_when_candidate_agent_does_not_answer(demo: DemoCluster) -> None:
    """The candidate's agent froze: its member key still says "streaming" until its lease
    ends, so the CLI accepts; the leader probes the candidate before shutting down and refuses."""
    lead = leader_name(demo)
    frozen = replicas(demo)[0]
    primary_pid = pg_pid(demo, lead)
    agent = demo.node(frozen).agent_pid
    os.kill(agent, signal.SIGSTOP)
    try:
        r = pgha(demo, "switchover", "--candidate", frozen, "--force")
    finally:
        os.kill(agent, signal.SIGCONT)
    line = refusal(r)
    assert line == (f"pgha: switchover refused: candidate {frozen} does not answer (its agent's API: timeout); "
                    f"{lead} is still the leader"), line
    # The primary never shut down.
    assert leader_name(demo) == lead and pg_pid(demo, lead) == primary_pid
    assert writable_nodes(demo) == [lead]


def test_refused_while_paused(demo: DemoCluster) -> None:
    assert pgha(demo, "pause").exit_code == 0
    try:
        line = refusal(pgha(demo, "switchover", "--force"))
        assert line == ("pgha: the cluster is paused (maintenance mode) and the agents carry out no request; "
                        "resume it first (pgha resume, POST /resume)")
    finally:
        # No --wait: the next test's 'pause --wait' must not take this pause for its own.
        assert pgha(demo, "resume").exit_code == 0


# --- maintenance mode ------------------------------------------------------------------------------


def test_maintenance_mode_takes_no_automatic_action(demo: DemoCluster) -> None:
    lead = leader_name(demo)
    assert pgha(demo, "pause", "--wait").exit_code == 0
    try:
        assert "Maintenance mode: on" in pgha(demo, "list").output
        rules = {n: m.rule_id for n, m in demo.view().members.items()}
        assert set(rules.values()) == {"paused"}, rules
        os.kill(pg_pid(demo, lead), signal.SIGKILL)
        # The agents keep publishing (the leader reports its PostgreSQL down) ...
        wait_for(f"{lead} to publish that PostgreSQL is down",
                 lambda: demo.view().members[lead].state in ("stopped", "crashed"), timeout=30)
        # ... but nobody restarts it, fails over or takes the key, for well past the lease.
        deadline = time.monotonic() + 2 * TTL
        while time.monotonic() < deadline:
            view = demo.view()
            assert view.leader is not None and view.leader.name == lead, view.leader
            assert sorted(view.members) == ["node1", "node2", "node3"]
            assert view.members[lead].state in ("stopped", "crashed"), view.members[lead]
            time.sleep(0.5)
        assert writable_nodes(demo) == []
        assert "Maintenance mode: on" in pgha(demo, "list").output
    finally:
        assert pgha(demo, "resume").exit_code == 0
    demo.wait_healthy(timeout=90)
    wait_for("one writable primary", lambda: len(writable_nodes(demo)) == 1, timeout=30)
    assert "Maintenance mode" not in pgha(demo, "list").output


# --- dynamic configuration ---------------------------------------------------------------------------


def members(demo: DemoCluster) -> list[str]:
    assert demo.state is not None
    return [n.name for n in demo.state.nodes]


def test_reload_parameter_reaches_every_node(demo: DemoCluster) -> None:
    assert pgha(demo, "edit-config", "-p", "work_mem=7MB", "--force").exit_code == 0
    wait_for("work_mem everywhere", lambda: all(show(demo, n, "work_mem") == "7MB" for n in members(demo)),
             timeout=30)
    rows = json.loads(pgha(demo, "list", "--json").output)
    assert not any(row["pending_restart"] for row in rows), rows


def test_restart_parameter_pending_until_restarted(demo: DemoCluster) -> None:
    assert pgha(demo, "edit-config", "-p", "track_activity_query_size=2048", "--force").exit_code == 0

    def pending() -> dict[str, bool]:
        return {row["member"]: row["pending_restart"] for row in json.loads(pgha(demo, "list", "--json").output)}
    wait_for("every member to report a pending restart", lambda: all(pending().values()), timeout=30)
    assert all(show(demo, n, "track_activity_query_size") == "1kB" for n in members(demo))
    assert "*" in pgha(demo, "list").output  # the table marks a pending restart
    r = pgha(demo, "restart", "--pending", "--force")
    assert r.exit_code == 0, r.output
    wait_for("the restarts", lambda: not any(pending().values()) and not demo.view().intents, timeout=60)
    demo.wait_healthy(timeout=90)
    assert all(show(demo, n, "track_activity_query_size") == "2kB" for n in members(demo))
    assert all(m.role in (Role.PRIMARY, Role.REPLICA) for m in demo.view().members.values())
