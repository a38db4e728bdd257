"""The rows of a standby cluster (core/standby_rules.py), one table case each at least, plus the
replica rows that now also serve from a standby leader.  test_rules_table's meta-test counts these."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgha.core import actions as A
from pgha.core.model import ClusterView, DataDir, LocalPostgres, PgRunState, TaskKind, TaskState
from pgha.core.standby import REMOTE, StandbyCluster
from tests.unit import core_builders as cb
from tests.unit.test_rules_table import Case, contract_violations, matches

SB = cb.config(standby_cluster=StandbyCluster(host="site-a1:5432,site-a2:5432", primary_slot_name="site_b"))


def sb_view(leader: str | None = "a") -> ClusterView:
    """A standby cluster: a is the standby leader (a replica of the other site), b and c stream from a."""
    members = [cb.replica("a", REMOTE), cb.replica("b", "a"), cb.replica("c", "a")]
    return cb.view(*members, leader=leader, cfg=SB)


def booting() -> ClusterView:
    return cb.view(system_id=None, initializing="a", cfg=SB)


REWIND_FAILED = TaskState(TaskKind.REWIND, running=False, ok=False, detail="pg_rewind: could not connect")
REWIND_OK = TaskState(TaskKind.REWIND, running=False, ok=True)

STANDBY_CASES: list[Case] = [
    Case("first member of a standby cluster clones the other site, no initdb", booting(), cb.local("a", cb.pg_empty()),
         "standby-init-clone", [A.AcquireLeader(), A.Clone(REMOTE)]),
    Case("a half-done clone of the other site is moved aside", booting(),
         cb.local("a", LocalPostgres(data_dir=DataDir.INVALID)), "standby-init-wipe", ["WipeDataDir"]),
    Case("the clone is done: start it as a replica of the other site", booting(), cb.local("a", cb.pg_stopped()),
         "standby-init-start", [A.AcquireLeader(), A.StartPostgres("replica", REMOTE)]),
    Case("the standby leader runs: publish the other site's system identifier", booting(),
         cb.local("a", cb.pg_replica(REMOTE)), "standby-init-publish",
         [A.AcquireLeader(), A.PublishInitialized(cb.SYSTEM_ID), A.SeedConfig()]),
    Case("a clone of the other site just failed: wait and retry, never initdb", cb.view(system_id=None,
         initializing="a", cfg=SB), cb.local("a", cb.pg_empty(), clone_backoff=True), "standby-init-wait", []),
    Case("demote-cluster: the leader runs as primary, it shuts down cleanly",
         cb.view(cb.primary("a"), cb.replica("b", "a"), leader="a", cfg=SB), cb.local("a", cb.pg_primary()),
         "standby-leader-demote", [A.SetVip(False), A.DisarmWatchdog(), A.StopPostgres("fast")]),
    Case("stopped former primary of a demoted cluster rewinds against the other site", sb_view(),
         cb.local("a", cb.pg_stopped(was_primary=True)), "standby-leader-rewind", [A.Rewind(REMOTE)]),
    Case("the rewind against the other site failed: move the data aside to clone", sb_view(),
         cb.local("a", cb.pg_stopped(was_primary=True), task=REWIND_FAILED), "standby-leader-rewind-failed",
         ["WipeDataDir"]),
    Case("the rewind failed and clone_on_rewind_failure is off: stay stopped",
         cb.view(cb.replica("a", REMOTE), leader="a", cfg=replace(SB, clone_on_rewind_failure=False)),
         cb.local("a", cb.pg_stopped(was_primary=True), task=REWIND_FAILED), "standby-leader-rewind-failed", []),
    Case("rewound: start as a replica of the other site", sb_view(),
         cb.local("a", cb.pg_stopped(was_primary=True), task=REWIND_OK), "standby-leader-start-rewound",
         [A.StartPostgres("replica", REMOTE)]),
    Case("the standby leader's data was moved aside: clone the other site", sb_view(), cb.local("a", cb.pg_empty()),
         "standby-leader-clone", [A.Clone(REMOTE)]),
    Case("the standby leader is stopped (crash, agent restart): start it following the other site", sb_view(),
         cb.local("a", cb.pg_stopped()), "standby-leader-start",
         [A.DisarmWatchdog(), A.StartPostgres("replica", REMOTE)]),
    Case("a replica that won the key in a standby cluster follows the other site instead of promoting",
         sb_view(), cb.local("a", cb.pg_replica("b")), "standby-leader-follow", [A.Follow(REMOTE), A.SetVip(True)]),
    Case("steady standby leader: slots for b and c, the VIP, PgBouncer, hooks with role standby_leader",
         sb_view(), cb.local("a", cb.pg_replica(REMOTE)), "standby-leader-steady",
         [A.DisarmWatchdog(), A.SetVip(True), A.SyncSlots(("b", "c")), "RepointPgBouncer",
          A.RunCallback("on_start", "standby_leader")]),
    Case("the standby leader has not streamed from the other site for 25 s: try its hosts from the next one",
         sb_view(), cb.local("a", cb.pg_replica(REMOTE, streaming=False), not_streaming_since=cb.NOW - 25),
         "standby-leader-next-source",
         [A.NextSource(), A.DisarmWatchdog(), A.SetVip(True), A.SyncSlots(("b", "c")), "RepointPgBouncer",
          A.RunCallback("on_start", "standby_leader")]),
    Case("not streaming for 10 s only: the WAL receiver may still be reconnecting", sb_view(),
         cb.local("a", cb.pg_replica(REMOTE, streaming=False), not_streaming_since=cb.NOW - 10),
         "standby-leader-steady", [A.DisarmWatchdog(), A.SetVip(True), A.SyncSlots(("b", "c")), "RepointPgBouncer",
                                   A.RunCallback("on_start", "standby_leader")]),
    Case("one host only: nothing to try next", cb.view(cb.replica("a", REMOTE), cb.replica("b", "a"), leader="a",
         cfg=replace(SB, standby_cluster=StandbyCluster(host="site-a1"))),
         cb.local("a", cb.pg_replica(REMOTE, streaming=False), not_streaming_since=cb.NOW - 25),
         "standby-leader-steady", [A.DisarmWatchdog(), A.SetVip(True), A.SyncSlots(("b",)), "RepointPgBouncer",
                                   A.RunCallback("on_start", "standby_leader")]),
    Case("the standby leader's PostgreSQL is starting: wait", sb_view(),
         cb.local("a", replace(cb.pg_stopped(), run_state=PgRunState.STARTING)), "standby-leader-wait", []),
    Case("demote-cluster: a replica replayed past the other site's fork, its leader cannot send more: stop",
         replace(sb_view(), forks={2: 900}), cb.local("b", replace(cb.pg_replica("a", tl=2), received_lsn=900)),
         "standby-replica-diverged", [A.StopPostgres("fast")]),
    Case("no standby leader: the most advanced replica takes the key, and promotes nothing",
         cb.view(cb.replica("b", None), cb.replica("c", None, lsn=900), leader=None, last_leader="a", cfg=SB),
         cb.local("b", cb.pg_replica(None), peers=cb.polls(cb.poll("c", 900))), "standby-elect-win",
         [A.AcquireLeader()]),
]

MORE_CASES: list[Case] = [
    Case("a lagging replica still wins in a standby cluster: the other site has every transaction",
         cb.view(cb.replica("b", None, lsn=100), leader=None, last_leader="a", cfg=SB),
         cb.local("b", cb.pg_replica(None, lsn=100),
                  peers=cb.polls(cb.poll("c", api="timeout", pg="timeout", lsn=None))),
         "standby-elect-win", [A.AcquireLeader()]),
    Case("an empty member of a standby cluster clones from the standby leader", sb_view(), cb.local("b", cb.pg_empty()),
         "replica-clone", [A.Clone("a")]),
    Case("a replica past the recorded fork that receives beyond it is fine", replace(sb_view(), forks={2: 900}),
         cb.local("b", cb.pg_replica("a")), "replica-steady", ["DisarmWatchdog", "SetVip", "RepointPgBouncer",
                                                               "RunCallback"]),
    Case("a member of a standby cluster streams from the standby leader", sb_view(), cb.local("b", cb.pg_replica("a")),
         "replica-steady", ["DisarmWatchdog", "SetVip", "RepointPgBouncer", "RunCallback"]),
    Case("promote-cluster: standby_cluster removed, the standby leader promotes",
         cb.view(cb.replica("a", REMOTE), cb.replica("b", "a"), leader="a"), cb.local("a", cb.pg_replica(REMOTE)),
         "leader-promote", ["AppendHistory", "Promote"]),
    Case("a primary cluster's leader that is a replica promotes (unchanged)",
         cb.view(cb.replica("a", None), leader="a"), cb.local("a", cb.pg_replica(None)), "leader-promote",
         ["AppendHistory", "Promote"]),
]


@pytest.mark.parametrize("case", STANDBY_CASES + MORE_CASES, ids=[c.name for c in STANDBY_CASES + MORE_CASES])
def test_standby_rule_table(case: Case) -> None:
    d = cb.run(case.view, case.local, case.now)
    assert d.rule_id == case.rule, f"{case.name}: rule {d.rule_id} ({d.reason}) instead of {case.rule}"
    assert matches(case.actions, d.actions), f"{case.name}: {list(d.actions)}"
    assert contract_violations(case.view, case.local, d.actions) == []


def test_a_standby_leader_never_promotes() -> None:
    """Whatever state a standby leader is in, no decision carries Promote or InitDB."""
    for pg in (cb.pg_replica(REMOTE), cb.pg_replica(None), cb.pg_replica("b"), cb.pg_stopped(),
               cb.pg_stopped(was_primary=True), cb.pg_empty()):
        for v in (sb_view(), sb_view(leader=None), booting()):
            d = cb.run(v, cb.local("a", pg))
            assert not any(isinstance(a, A.Promote | A.InitDB) for a in d.actions), (d.rule_id, pg)


def test_the_other_sites_hosts_are_tried_from_the_next_one_on() -> None:
    from pgha.core import standby

    sc = StandbyCluster(host="a1:5432,a2,[::1]:5433", port=6432)
    assert standby.rotated(sc, 0) == sc
    assert standby.rotated(sc, 1).hosts() == (("a2", 6432), ("::1", 5433), ("a1", 5432))  # type: ignore[union-attr]
    assert standby.rotated(sc, 2).hosts()[0] == ("::1", 5433)  # type: ignore[union-attr]
    assert standby.rotated(sc, 3) == sc
    assert standby.rotated(sc, 4).problem() is None  # type: ignore[union-attr]
    assert standby.rotated(StandbyCluster(restore_command="x"), 1) == StandbyCluster(restore_command="x")


def test_a_new_order_counts_not_streaming_from_then() -> None:
    from pgha.core import memory as M

    m = M.apply(M.AgentMemory(not_streaming_since=100.0), M.SourceTurned(1, 130.0))
    assert (m.source_turn, m.not_streaming_since) == (1, 130.0)


def test_operations_doc_names_the_code_s_source_timeouts() -> None:
    from pathlib import Path

    from pgha.core.facts import SOURCE_STALL
    from pgha.postgres.conf import TCP_USER_TIMEOUT_MS

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert f"after {SOURCE_STALL:g} s without streaming (`SOURCE_STALL`)" in text
    assert f"`tcp_user_timeout` ({TCP_USER_TIMEOUT_MS // 1000} s)" in text
