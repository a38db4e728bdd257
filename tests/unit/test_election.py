"""Election: who may be promoted, who should be, and which switchover targets are valid."""

from __future__ import annotations

import pytest

from pgha.core import election
from pgha.core.election import Contender, best
from pgha.core.facts import Facts
from pgha.core.model import ClusterView, LocalState, MemberInfo, Tags
from tests.unit.core_builders import (
    NOW,
    config,
    local,
    pg_primary,
    pg_replica,
    pg_stopped,
    poll,
    polls,
    primary,
    replica,
    run,
    sync,
    tags,
    view,
)


def facts(v: ClusterView, loc: LocalState) -> Facts:
    return Facts(view=v, local=loc, config=v.config, now=NOW)


def orphan(name: str, lsn: int, tl: int = 1, **kw: object) -> MemberInfo:
    """A replica whose leader is gone."""
    return replica(name, None, lsn, tl, state="running", **kw)  # type: ignore[arg-type]


# --- ranking ---------------------------------------------------------------------------------


def test_rank_by_lsn_first() -> None:
    cands = [Contender("a", 100, 9, True), Contender("b", 200, 1, False)]
    assert best(cands).name == "b"


def test_rank_by_priority_when_lsn_ties() -> None:
    cands = [Contender("a", 200, 1, True), Contender("b", 200, 5, False)]
    assert best(cands).name == "b"


def test_rank_by_last_leader_when_priority_ties() -> None:
    cands = [Contender("a", 200, 1, False), Contender("b", 200, 1, True)]
    assert best(cands).name == "b"


def test_rank_by_smallest_name_last() -> None:
    cands = [Contender("c", 200, 1, False), Contender("b", 200, 1, False), Contender("d", 200, 1, False)]
    assert best(cands).name == "b"
    assert best(list(reversed(cands))).name == "b", "the winner does not depend on the order seen"


@pytest.mark.parametrize(
    ("mine", "theirs", "my_prio", "their_prio", "last", "rule"),
    [
        (1000, 900, 1, 1, None, "elect-win"),
        (900, 1000, 1, 1, None, "elect-defer"),
        (1000, 1000, 2, 1, None, "elect-win"),
        (1000, 1000, 1, 2, None, "elect-defer"),
        (1000, 1000, 1, 1, "c", "elect-defer"),
        (1000, 1000, 1, 1, "b", "elect-win"),
        (1000, 1000, 1, 1, None, "elect-win"),  # b < c
    ],
)
def test_every_node_agrees_on_the_winner(
    mine: int, theirs: int, my_prio: int, their_prio: int, last: str | None, rule: str
) -> None:
    """b's decision, and c's decision in the mirrored situation, name the same winner."""
    v = view(
        orphan("b", mine, tags=Tags(failover_priority=my_prio)),
        orphan("c", theirs, tags=Tags(failover_priority=their_prio)),
        last_leader=last,
        cfg=config(maximum_lag_on_failover=10_000),
    )
    b = run(
        v,
        local(
            "b",
            pg_replica(None, mine, streaming=False),
            tags=tags(failover_priority=my_prio),
            peers=polls(poll("c", theirs)),
        ),
    )
    c = run(
        v,
        local(
            "c",
            pg_replica(None, theirs, streaming=False),
            tags=tags(failover_priority=their_prio),
            peers=polls(poll("b", mine)),
        ),
    )
    assert b.rule_id == rule
    assert {b.rule_id, c.rule_id} == {"elect-win", "elect-defer"}, "exactly one of the two wins"


def test_contenders_skip_unreachable_nofailover_primary_and_unsynced_peers() -> None:
    v = view(
        orphan("b", 1000),
        orphan("c", 5000, tags=Tags(nofailover=True)),
        orphan("d", 5000),
        orphan("e", 5000),
        orphan("f", 5000),
        orphan("g", 900),
        cfg=config(maximum_lag_on_failover=10**9),
    )
    loc = local(
        "b",
        pg_replica(None, 1000, streaming=False),
        peers=polls(
            poll("c", 5000),  # nofailover
            poll("d", 5000, api="timeout"),  # cannot answer
            poll("e", 5000, in_recovery=False),  # not a replica
            poll("f", None),  # unknown position
            poll("g", 900),
        ),
    )
    assert sorted(c.name for c in election.contenders(facts(v, loc))) == ["b", "g"]
    assert run(v, loc).rule_id == "elect-win"


def test_in_synchronous_mode_only_synchronous_peers_contend() -> None:
    v = view(orphan("b", 1000), orphan("c", 2000), cfg=config(synchronous_mode="on"), sync=sync("a", "b"))
    loc = local("b", pg_replica(None, 1000, streaming=False), peers=polls(poll("c", 2000)))
    assert [c.name for c in election.contenders(facts(v, loc))] == ["b"]


# --- who may be promoted -------------------------------------------------------------------


def why(v: ClusterView, loc: LocalState) -> str | None:
    return election.why_not_candidate(facts(v, loc))


def test_healthy_replica_is_a_candidate() -> None:
    assert why(view(orphan("b", 1000)), local("b", pg_replica(None, 1000, streaming=False))) is None


def test_nofailover_is_never_a_candidate() -> None:
    loc = local("b", pg_replica(None, 1000), tags=tags(nofailover=True))
    assert why(view(orphan("b", 1000)), loc) == "tagged nofailover"


def test_stopped_node_is_not_a_candidate() -> None:
    assert why(view(), local("b", pg_stopped())) == "PostgreSQL is not running as a replica"


def test_old_timeline_is_not_a_candidate() -> None:
    v = view(orphan("b", 1000, tl=1), orphan("c", 500, tl=2))
    assert why(v, local("b", pg_replica(None, 1000, tl=1))) == "on timeline 1, behind the latest timeline 2"


def test_timeline_known_only_from_history_counts() -> None:
    v = view(orphan("b", 1000, tl=1), forks={1: 800})
    assert why(v, local("b", pg_replica(None, 1000, tl=1))) == "on timeline 1, behind the latest timeline 2"


@pytest.mark.parametrize(("lag", "ok"), [(0, True), (100, True), (101, False), (10_000, False)])
def test_lag_limit_is_inclusive(lag: int, ok: bool) -> None:
    v = view(orphan("b", 50_000 - lag), orphan("c", 50_000), cfg=config(maximum_lag_on_failover=100))
    reason = why(v, local("b", pg_replica(None, 50_000 - lag)))
    assert (reason is None) == ok
    if not ok:
        assert reason == f"lagging {lag} bytes, more than maximum_lag_on_failover (100)"


def test_lag_is_measured_against_the_old_leaders_last_position() -> None:
    """The old primary's member key is still there (its lease not yet gone) with a higher wal_lsn."""
    v = view(primary("a", 9000), orphan("b", 5000), last_leader="a", cfg=config(maximum_lag_on_failover=100))
    assert why(v, local("b", pg_replica(None, 5000))) == "lagging 4000 bytes, more than maximum_lag_on_failover (100)"


def test_lag_is_measured_against_probed_peers_too() -> None:
    v = view(orphan("b", 5000), cfg=config(maximum_lag_on_failover=100))
    loc = local("b", pg_replica(None, 5000), peers=polls(poll("c", 6000)))
    assert why(v, loc) == "lagging 1000 bytes, more than maximum_lag_on_failover (100)"


@pytest.mark.parametrize("mode", ["on", "strict"])
def test_synchronous_modes_require_membership_of_sync(mode: str) -> None:
    cfg = config(synchronous_mode=mode)
    loc = local("b", pg_replica(None, 1000))
    assert why(view(orphan("b", 1000), cfg=cfg), loc) == "not a synchronous standby, and synchronous_mode is on"
    assert why(view(orphan("b", 1000), cfg=cfg, sync=sync("a", "c")), loc) is not None
    assert why(view(orphan("b", 1000), cfg=cfg, sync=sync("a", "b")), loc) is None


@pytest.mark.parametrize(
    ("standbys", "quorum", "visible", "ok"),
    [
        # ANY 1 of {b, c}: a commit may be on b only or c only, so b must see c (2 - 1 + 1 = 2).
        (("b", "c"), 1, (), False),
        (("b", "c"), 1, ("c",), True),
        # ANY 2 of {b, c}: every commit is on both; b alone suffices (2 - 2 + 1 = 1).
        (("b", "c"), 2, (), True),
        # ANY 1 of {b, c, d}: need all three.
        (("b", "c", "d"), 1, ("c",), False),
        (("b", "c", "d"), 1, ("c", "d"), True),
        # ANY 2 of {b, c, d}: need two (b plus one).
        (("b", "c", "d"), 2, (), False),
        (("b", "c", "d"), 2, ("d",), True),
        # A visible member outside /sync does not count.
        (("b", "c"), 1, ("x",), False),
    ],
)
def test_quorum_candidate_must_see_enough_of_sync(
    standbys: tuple[str, ...], quorum: int, visible: tuple[str, ...], ok: bool
) -> None:
    v = view(orphan("b", 1000), cfg=config(synchronous_mode="quorum"), sync=sync("a", *standbys, quorum=quorum))
    loc = local("b", pg_replica(None, 1000), peers=polls(*(poll(n, 900) for n in visible)))
    reason = why(v, loc)
    assert (reason is None) == ok, reason
    if not ok:
        need = len(standbys) - quorum + 1
        assert reason is not None and reason.startswith("quorum: sees ") and f"of the {need} " in reason


def test_quorum_peer_that_does_not_answer_is_not_seen() -> None:
    v = view(orphan("b", 1000), cfg=config(synchronous_mode="quorum"), sync=sync("a", "b", "c", quorum=1))
    loc = local("b", pg_replica(None, 1000), peers=polls(poll("c", 900, api="timeout")))
    assert why(v, loc) is not None


# --- switchover targets ----------------------------------------------------------------------


def leader_facts(*members: MemberInfo, lsn: int = 1000, **kw: object) -> Facts:
    v = view(primary("a", lsn), *members, leader="a", **kw)  # type: ignore[arg-type]
    return facts(v, local("a", pg_primary(lsn)))


@pytest.mark.parametrize(
    ("members", "candidate", "message"),
    [
        ((), "zz", "candidate zz is not a member of the cluster"),
        ((), "a", "candidate a is already the leader"),
        ((replica("b", "a", tags=Tags(nofailover=True)),), "b", "candidate b is tagged nofailover"),
        (
            (replica("b", "a", state="running"),),
            "b",
            "candidate b is not a streaming replica (state: running)",
        ),
        (
            (replica("b", "a", lsn=1000),),
            "b",
            f"candidate b lags {2 * 1024 * 1024} bytes, more than maximum_lag_on_failover",
        ),
    ],
)
def test_switchover_target_refusals(members: tuple[MemberInfo, ...], candidate: str, message: str) -> None:
    f = leader_facts(*members, lsn=1000 + 2 * 1024 * 1024)
    assert election.why_not_switchover_target(f, candidate) == message


def test_switchover_target_must_be_synchronous_in_sync_mode() -> None:
    f = leader_facts(replica("b", "a"), replica("c", "a"), cfg=config(synchronous_mode="on"), sync=sync("a", "b"))
    assert election.why_not_switchover_target(f, "c") == "candidate c is not synchronous, and synchronous_mode is on"
    assert election.why_not_switchover_target(f, "b") is None


def test_pick_switchover_target_prefers_most_advanced_then_priority() -> None:
    f = leader_facts(
        replica("b", "a", 900),
        replica("c", "a", 1000),
        replica("d", "a", 1000, tags=Tags(failover_priority=3)),
    )
    assert election.pick_switchover_target(f) == "d"
    f = leader_facts(replica("b", "a", 900), replica("c", "a", 1000))
    assert election.pick_switchover_target(f) == "c"


def test_pick_switchover_target_none_when_nobody_is_healthy() -> None:
    f = leader_facts(replica("b", "a", state="running"), replica("c", "a", tags=Tags(nofailover=True)))
    assert election.pick_switchover_target(f) is None


@pytest.mark.parametrize(("lease_left", "lease_id", "rule"), [
    (9.0, 1, "elect-win"),
    (None, 1, "elect-no-lease"),  # the lease expired: the lease thread is granting a new one
    (9.0, 0, "elect-no-lease"),  # a new lease is being granted: there is none to bind a key to
    (0.5, 1, "elect-no-lease"),  # it would end within fence_margin: we would fence right after
])
def test_the_leader_key_is_only_taken_with_a_live_lease(lease_left: float | None, lease_id: int,
                                                         rule: str) -> None:
    """A leader key bound to no lease never expires: nobody could take over from its dead holder."""
    v = view(orphan("b", 2000), orphan("c", 1000), cfg=config(fence_margin=2))
    loc = local("b", pg_replica(None, 2000, streaming=False), lease_left=lease_left,
                peers=polls(poll("c", 1000)))
    loc = LocalState(**{**loc.__dict__, "lease_id": lease_id})
    assert run(v, loc).rule_id == rule
