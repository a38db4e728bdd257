"""The random-fault simulation, over the REAL agent (``pgha.agent.Agent`` and its executor).

``tests/unit/sim/`` runs every simulated host's real agent loop on fake I/O adapters (PostgreSQL,
background tasks, peer polls, watchdog, VIP, hooks), the real ``ClusterStore`` over an in-memory
DCS, and a virtual clock; see ``tests/unit/sim/cluster.py`` for the model and the invariants it
checks at every tick.  No action handler is written here: the executor's are the ones that run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pgha.agent.executor import HANDLERS
from pgha.core import actions as A
from pgha.core.model import PROFILES, ClusterConfig, SyncMode, Tags
from tests.unit.sim.cluster import Cluster, traced, view_of
from tests.unit.sim.fakes import BYTES, SYSTEM_ID


@pytest.fixture(autouse=True)
def agent_logs() -> Iterator[None]:
    with traced():
        yield


# --- helpers for scenarios ---------------------------------------------------------------------------


def cluster(
    n: int = 3, mode: SyncMode = "off", seed: int = 0, tags: dict[str, Tags] | None = None, **cfg: Any
) -> Cluster:
    # The timings the scenarios were written for (ttl 10, a loop a second), unless a test sets its own.
    timing = {"ttl": 10.0, "loop_wait": 1.0, **cfg}
    c = Cluster(n, ClusterConfig(synchronous_mode=mode, **timing), seed=seed, tags=tags)
    c.start()
    return c


def primaries(c: Cluster) -> list[str]:
    return [n.name for n in c.nodes.values() if n.pg.writable]


def streaming_replicas(c: Cluster, leader: str) -> list[str]:
    return sorted(n.name for n in c.nodes.values() if n.pg.streaming_from == leader and n.pg.in_recovery)


def reaches(c: Cluster, name: str, leader: str, depth: int = 0) -> bool:
    """``name`` streams from ``leader``, or (tagged replicatefrom) from its upstream that reaches it."""
    pg, wanted = c.nodes[name].pg, c.nodes[name].tags.replicatefrom
    if not pg.in_recovery or pg.streaming_from is None:
        return False
    return pg.streaming_from == leader or (
        depth < len(c.nodes) and pg.streaming_from == wanted and reaches(c, wanted, leader, depth + 1))


def settle(c: Cluster, seconds: float = 30.0) -> str:
    """Run until there is one primary with every other live node streaming from it (or from the
    replica its replicatefrom tag names)."""
    end = c.now + seconds
    while c.now < end:
        c.run(1.0)
        p = primaries(c)
        others = [n.name for n in c.nodes.values() if n.alive and n.name not in p]
        if len(p) == 1 and c.leader() == p[0] and all(reaches(c, o, p[0]) for o in others):
            return p[0]
    raise AssertionError("cluster did not settle:\n" + "\n".join(c.trace[-80:]))


# --- scripted scenarios --------------------------------------------------------------------------------


def test_every_action_type_has_an_executor_handler() -> None:
    """On the real executor: every action the rules can emit can be carried out."""
    assert set(HANDLERS) == set(A.ALL_ACTIONS)


def test_the_simulation_runs_the_real_agent() -> None:
    c = cluster(3)
    settle(c)
    from pgha.agent.agent import Agent

    assert all(type(n.agent) is Agent for n in c.nodes.values())


def test_bootstrap_three_nodes() -> None:
    c = cluster(3)
    leader = settle(c, 30)
    c.run(3)
    assert len(streaming_replicas(c, leader)) == 2
    assert {
        "init-claim",
        "init-run-initdb",
        "init-publish",
        "replica-clone",
        "leader-steady",
        "replica-steady",
    } <= c.rules_seen
    view = view_of(c)
    assert view.system_id == SYSTEM_ID and view.leader is not None and view.leader.name == leader


def test_leader_killed_most_advanced_replica_wins() -> None:
    c = cluster(3)
    old = settle(c)
    c.run(5)
    rest = [n for n in c.nodes if n != old]
    c.nodes[rest[0]].stalled_until = c.now + 100  # keep rest[0] behind
    c.run(1)
    c.kill(old)
    new = settle(c, 40)
    assert new == rest[1], "the most advanced replica must win"
    assert "elect-win" in c.rules_seen
    c.restart(old)
    settle(c, 40)
    assert any(t > 0 for t, name, _ in c.promotions if name == new)


def test_dead_leader_revoked_before_its_lease_expires() -> None:
    c = cluster(3)
    old = settle(c)
    c.kill(old)
    start = c.now
    new = settle(c, 30)
    assert new != old
    assert "replica-leader-dead" in c.rules_seen
    elapsed = next(t for t, name, _ in c.promotions if name == new) - start
    assert elapsed < c.cfg.ttl, f"failover took {elapsed:.1f}s; the dead leader's key should be revoked early"


def test_restarted_leader_versus_a_probe_from_before_its_restart() -> None:
    c = cluster(3)
    old = settle(c)
    c.kill(old)
    while not any(n.agent is not None and (p := n.agent.memory.peers.get(old)) is not None
               and p.api == "refused" for n in c.nodes.values()):
        c.step()
    # A replica probed the dead leader; before it acts on the probe the leader's agent restarts,
    # adopts its lease and leader key (as Agent.run does) and must not start as primary until
    # that probe can no longer revoke the key (leader-restart-wait).
    c.restart(old)
    c.run(20)
    assert "leader-restart-wait" in c.rules_seen
    settle(c, 30)


def test_frozen_leader_is_fenced_by_the_watchdog_and_rejoins() -> None:
    c = cluster(3)
    old = settle(c)
    c.freeze(old, True)
    c.run(20)
    assert not c.nodes[old].pg.writable, "the watchdog must have fenced the frozen primary"
    assert any("WATCHDOG" in line for line in c.trace)
    new = primaries(c)
    assert len(new) == 1 and new[0] != old
    c.freeze(old, False)
    assert settle(c, 40) == new[0]


def test_leader_partitioned_from_the_dcs_fences_itself() -> None:
    c = cluster(3)
    old = settle(c)
    c.cut(old, True)
    c.run(20)
    assert not c.nodes[old].pg.writable
    assert "fence-lease-expiring" in c.rules_seen
    c.cut(old, False)
    new = settle(c, 40)
    assert new != old


def test_short_dcs_outage_changes_nothing() -> None:
    c = cluster(3)
    old = settle(c)
    c.dcs_down(True)
    c.run(c.cfg.ttl - c.cfg.fence_margin - 2)
    assert primaries(c) == [old]
    assert "dcs-down-primary-holds" in c.rules_seen
    c.dcs_down(False)
    c.run(5)
    assert settle(c) == old


def test_long_dcs_outage_fences_then_the_old_leader_resumes() -> None:
    c = cluster(3)
    settle(c)
    c.dcs_down(True)
    c.run(c.cfg.ttl + 5)
    assert primaries(c) == [], "without the DCS the primary must fence at the margin"
    c.dcs_down(False)
    settle(c, 40)


def test_switchover_to_a_named_candidate() -> None:
    c = cluster(3)
    old = settle(c)
    target = sorted(n for n in c.nodes if n != old)[1]
    assert c.request_switchover(target)
    new = settle(c, 40)
    assert new == target
    assert {"sw-begin", "sw-demote", "sw-handoff", "leader-promote"} <= c.rules_seen
    assert not any("aborted" in line for line in c.trace), "the switchover must complete, not time out"
    assert view_of(c).switchover is None


def test_switchover_to_any_replica_in_five_nodes() -> None:
    c = cluster(5)
    old = settle(c)
    assert c.request_switchover(None)
    new = settle(c, 40)
    assert new != old
    assert "sw-handoff" in c.rules_seen
    assert not any("aborted" in line for line in c.trace), "the switchover must complete, not time out"


def test_switchover_to_a_non_member_is_refused() -> None:
    c = cluster(3)
    old = settle(c)
    assert c.request_switchover("zz")
    c.run(3)
    assert "sw-refuse" in c.rules_seen
    assert primaries(c) == [old]


def test_primary_crash_restarts_in_place() -> None:
    c = cluster(3)
    old = settle(c)
    c.crash_pg(old)
    assert settle(c, 20) == old
    assert "leader-crash-restart" in c.rules_seen


@pytest.mark.parametrize("mode", ["on", "strict", "quorum"])
def test_synchronous_failover_keeps_acknowledged_writes(mode: SyncMode) -> None:
    c = cluster(3, mode=mode, synchronous_node_count=1)
    old = settle(c, 40)
    c.run(5)
    assert c.acked, "writes must be acknowledged once a synchronous standby is named"
    rest = [n for n in c.nodes if n != old]
    c.nodes[rest[0]].stalled_until = c.now + 200  # one standby falls behind
    c.run(3)
    c.kill(old)
    c.run(40)
    p = primaries(c)
    assert len(p) <= 1
    # check_promotion already verified every acknowledged write reached the new primary.


def test_pre_promote_veto_lets_another_candidate_win() -> None:
    """The most advanced replica's hook vetoes: it gives the key back and another one wins (before the
    fix the vetoed node kept winning the election and the others kept deferring to it)."""
    c = cluster(3)
    old = settle(c)
    c.run(5)
    best, other = [n for n in c.nodes if n != old]
    c.nodes[other].stalled_until = c.now + 100  # best is the most advanced
    c.set_vetoes(best)
    c.run(1)
    c.kill(old)
    new = settle(c, 60)
    assert new == other
    assert "leader-promote-vetoed" in c.rules_seen
    assert all(name != best for _, name, _ in c.promotions)


def test_nofailover_node_is_never_promoted() -> None:
    c = cluster(3, tags={"n3": Tags(nofailover=True)})
    for _ in range(3):
        old = settle(c, 40)
        c.kill(old)
        c.run(25)
        c.restart(old)
    assert all(name != "n3" for _, name, _ in c.promotions)


def test_cascading_member_falls_back_to_the_leader_and_returns() -> None:
    """replicatefrom in the simulation: n3 streams from n2 while n2 streams; n2 killed, n3 follows the
    leader; n2 back, n3 returns to it.  The same when n2 is promoted: n3 simply follows it."""
    c = cluster(3, tags={"n3": Tags(replicatefrom="n2")})

    def streams(name: str, source: str) -> Callable[[], bool]:
        return lambda: c.nodes[name].pg.streaming_from == source and c.nodes[name].pg.in_recovery

    def until(what: str, check: Callable[[], bool], seconds: float = 40.0) -> None:
        end = c.now + seconds
        while c.now < end:
            c.run(0.5)
            if check():
                return
        raise AssertionError(f"{what} within {seconds:.0f}s:\n" + "\n".join(c.trace[-80:]))

    until("a leader", lambda: c.leader() is not None and c.nodes[c.leader() or ""].pg.writable)
    assert c.leader() == "n1", "the scenario expects n1 to initialize (deterministic with seed 0)"
    until("n3 cascading from n2", streams("n3", "n2"))
    assert "replica-cascade" in c.rules_seen or "replica-start" in c.rules_seen
    c.kill("n2")
    until("n3 streaming from the leader after n2 died", streams("n3", "n1"))
    c.restart("n2")
    until("n3 back on n2", streams("n3", "n2"), 60)
    c.request_switchover("n2")
    until("n2 leading", lambda: c.leader() == "n2" and c.nodes["n2"].pg.writable, 60)
    until("n3 streaming from n2, the leader", streams("n3", "n2"))
    until("n1 streaming from n2", streams("n1", "n2"), 60)


# --- property: random fault schedules ------------------------------------------------------------------

FAULTS = ("kill", "freeze", "cut", "dcs", "crash", "stall", "switchover")


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, SyncMode, int, list[tuple[float, str, int, float]]]:
    n = draw(st.integers(3, 5))
    mode = draw(st.sampled_from(["off", "on", "strict", "quorum"]))
    lag = draw(st.sampled_from([3 * BYTES, 20 * BYTES, 1024 * 1024]))
    events = draw(
        st.lists(
            st.tuples(
                st.floats(0, 60).map(lambda t: round(t, 1)),
                st.sampled_from(FAULTS),
                st.integers(0, n - 1),
                st.floats(0.5, 15).map(lambda t: round(t, 1)),
            ),
            min_size=1,
            max_size=5,
        )
    )
    return n, mode, lag, sorted(events)


@pytest.mark.timeout(1200)  # about 30 CPU-seconds; more on a machine shared with other test runs
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
# The leader cut from etcd while its postmaster crashed, back 0.4 s before its lease ended: it
# restarted PostgreSQL as primary and was still writable when the next leader promoted.
@example(plan=(3, "off", 3000, [(1.8, "cut", 0, 7.6), (2.0, "crash", 0, 1.0)]))
# The leader killed while the DCS is down, back (with a new lease) before it is: its key, bound
# to the old lease, still named it, and it restarted as primary until that lease expired.
@example(plan=(3, "off", 3000, [(0.0, "dcs", 0, 2.0), (0.0, "kill", 0, 1.5)]))
# The leader's PostgreSQL crashed and its agent froze at once: its watchdog fired on a dead postmaster,
# and the simulated watchdog (unlike the real one) then left the VIP, which the next leader also took.
@example(plan=(3, "off", 3000, [(0.0, "crash", 0, 1.0), (0.0, "freeze", 0, 11.0)]))
def test_random_faults_keep_the_invariants(
    plan: tuple[int, SyncMode, int, list[tuple[float, str, int, float]]],
) -> None:
    run_plan(plan)


@pytest.mark.timeout(1200)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_random_faults_keep_the_invariants_with_cascading(
    plan: tuple[int, SyncMode, int, list[tuple[float, str, int, float]]],
) -> None:
    """The same faults with n3 cascading from n2 (replicatefrom): never two primaries, no acknowledged
    synchronous write lost, no promotion past the lag limit, and the cluster recovers."""
    run_plan(plan, tags={"n3": Tags(replicatefrom="n2")})


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("profile", sorted(PROFILES))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_random_faults_keep_the_invariants_in_each_profile(
    profile: str, plan: tuple[int, SyncMode, int, list[tuple[float, str, int, float]]],
) -> None:
    """The same faults at each shipped profile.  `fast` (ttl 2, fence_margin 0.5, a renewal every 0.2 s):
    the shortest lease pgha ships leaves the least room between a primary fencing and the next promoting.
    `default` (ttl 10, loop_wait 5, a renewal every ttl/3): a primary's loop sleeps up to 5 s, so only the
    lease deadline wakes it in time to fence."""
    run_plan(plan, **PROFILES[profile])


def run_plan(plan: tuple[int, SyncMode, int, list[tuple[float, str, int, float]]], tags: dict[str, Tags] | None = None,
             **timing: Any) -> None:
    n, mode, lag, events = plan
    c = cluster(n, mode=mode, maximum_lag_on_failover=lag, tags=tags, **timing)
    settle(c, 40)
    t0 = c.now
    undo: list[tuple[float, Callable[[], None]]] = []
    todo = list(events)

    def inject() -> None:
        while todo and c.now - t0 >= todo[0][0]:
            _, kind, idx, dur = todo.pop(0)
            names = sorted(c.nodes)
            target = c.leader() if idx == 0 and c.leader() else names[idx % len(names)]
            assert target is not None
            if kind == "kill":
                c.kill(target)
                undo.append((c.now + dur, lambda t=target: c.restart(t)))  # type: ignore[misc]
            elif kind == "freeze":
                c.freeze(target, True)
                undo.append((c.now + dur, lambda t=target: c.freeze(t, False)))  # type: ignore[misc]
            elif kind == "cut":
                c.cut(target, True)
                undo.append((c.now + dur, lambda t=target: c.cut(t, False)))  # type: ignore[misc]
            elif kind == "dcs":
                c.dcs_down(True)
                undo.append((c.now + dur, lambda: c.dcs_down(False)))
            elif kind == "crash":
                c.crash_pg(target)
            elif kind == "stall":
                c.stall(target, dur)
            elif kind == "switchover":
                c.request_switchover(None if idx % 2 else names[idx % len(names)])
        for item in sorted(undo, key=lambda u: u[0]):
            if c.now >= item[0]:
                undo.remove(item)
                item[1]()

    c.run(90, every=inject)
    for _, fn in undo:
        fn()
    # Faults are over: the invariants keep being checked while the cluster recovers.
    c.run(60)
    if mode == "off":
        assert len(primaries(c)) == 1, "asynchronous cluster did not recover a primary:\n" + "\n".join(c.trace[-60:])
