"""Cascading replicas (Patroni's replicatefrom tag): whom each member streams from, which slots the
leader and the upstream replica keep, and that a cascaded member is never a synchronous standby."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgha.config import ConfigError, parse
from pgha.core import actions as A
from pgha.core import syncrep
from pgha.core.facts import Facts
from pgha.core.model import ClusterView, MemberInfo, Tags
from pgha.core.upstream import downstream_of, streams_from_leader, upstream_of
from tests.unit.core_builders import NOW, local, pg_primary, pg_replica, primary, replica, run, view


def member(m: MemberInfo, replicatefrom: str = "", **kw: object) -> MemberInfo:
    """``m`` with an address (an upstream must have one) and its replicatefrom tag."""
    return replace(m, host=f"h-{m.name}", port=5432, tags=Tags(replicatefrom=replicatefrom), **kw)  # type: ignore[arg-type]


def cluster(*members: MemberInfo) -> ClusterView:
    """a leads; the others as given."""
    return view(member(primary("a")), *members, leader="a")


# (case, view, member, expected upstream, words of the reason)
UPSTREAM = [
    ("untagged: the leader", cluster(member(replica("b", "a")), member(replica("c", "a"))), "c", "a", ""),
    ("tagged, b streams: b", cluster(member(replica("b", "a")), member(replica("c", "a"), "b")), "c", "b",
     "replicatefrom b: a streaming replica"),
    ("b streams from another replica (a chain): b", cluster(member(replica("b", "d"), "d"), member(replica("d", "a")),
                                                            member(replica("c", "a"), "b")), "c", "b", "streaming"),
    ("b gone (its key expired): the leader", cluster(member(replica("c", "b"), "b")), "c", "a", "not in the cluster"),
    ("b stopped: the leader", cluster(member(replica("b", None, state="stopped")), member(replica("c", "b"), "b")),
     "c", "a", "not a streaming replica (replica, stopped)"),
    ("b runs but does not stream: the leader", cluster(member(replica("b", None, state="running")),
                                                      member(replica("c", "b"), "b")), "c", "a", "not a streaming"),
    ("b became the leader: b", view(member(primary("b")), member(replica("c", "b"), "b"), leader="b"), "c", "b",
     "is the leader"),
    ("b on an older timeline than the leader: the leader",
     view(member(primary("a", tl=2)), member(replica("b", "a", tl=1)), member(replica("c", "a", tl=2), "b"),
          leader="a"), "c", "a", "timeline 1"),
    ("b without an address: the leader",
     cluster(replace(replica("b", "a"), tags=Tags()), member(replica("c", "a"), "b")), "c", "a", "address"),
    ("loop c -> b -> c: the leader", cluster(member(replica("b", "a"), "c"), member(replica("c", "a"), "b")), "c", "a",
     "replicatefrom b is on a loop (c -> b -> c)"),
    ("loop c -> b -> d -> c: the leader", cluster(member(replica("b", "a"), "d"), member(replica("d", "a"), "c"),
                                                  member(replica("c", "a"), "b")), "c", "a", "loop (c -> b -> d -> c)"),
    ("a loop above us (b <-> d) that does not pass through us: b streams from the leader, so do we via b",
     cluster(member(replica("b", "a"), "d"), member(replica("d", "a"), "b"), member(replica("c", "a"), "b")),
     "c", "b", "streaming replica"),
    ("b streams from us (stale): the leader", cluster(member(replica("b", "c")), member(replica("c", "a"), "b")),
     "c", "a", "streams from us"),
    ("tagged with itself: the leader", cluster(member(replica("c", "a"), "c")), "c", "a", "itself"),
    ("the leader itself has no upstream", cluster(member(replica("b", "a"))), "a", None, ""),
]


@pytest.mark.parametrize(("v", "me", "want", "why"), [c[1:] for c in UPSTREAM], ids=[c[0] for c in UPSTREAM])
def test_upstream(v: ClusterView, me: str, want: str | None, why: str) -> None:
    got = upstream_of(v, me)
    assert got.name == want, got
    assert why in got.why
    assert got.cascades == (want not in (None, "a") and want != (v.leader.name if v.leader else None))


def test_our_own_tags_win_over_our_published_member_key() -> None:
    v = cluster(member(replica("b", "a")), member(replica("c", "a")))
    assert upstream_of(v, "c", Tags(replicatefrom="b")).name == "b"


def test_loop_both_members_stream_from_the_leader() -> None:
    v = cluster(member(replica("b", "a"), "c"), member(replica("c", "a"), "b"))
    assert (upstream_of(v, "b").name, upstream_of(v, "c").name) == ("a", "a")
    assert downstream_of(v, "b") == downstream_of(v, "c") == ()


# --- decisions ----------------------------------------------------------------------------------------


def test_cascaded_replica_points_at_its_upstream_then_stays() -> None:
    v = cluster(member(replica("b", "a")), member(replica("c", "a"), "b"))
    me = Tags(replicatefrom="b")
    d = run(v, local("c", pg_replica("a"), tags=me))
    assert (d.rule_id, d.actions[0]) == ("replica-cascade", A.Follow("b"))
    assert "replicatefrom b" in d.reason
    d = run(v, local("c", pg_replica("b"), tags=me))
    assert d.rule_id == "replica-steady" and not any(isinstance(a, A.Follow) for a in d.actions)
    assert "replicatefrom b" in d.reason


def test_fallback_then_return() -> None:
    me = Tags(replicatefrom="b")
    down = cluster(member(replica("b", None, state="stopped")), member(replica("c", "b"), "b"))
    d = run(down, local("c", pg_replica("b", streaming=False), tags=me))
    assert (d.rule_id, d.actions[0]) == ("replica-cascade-fallback", A.Follow("a"))
    assert "not a streaming replica" in d.reason
    # Streaming from the leader while b is down: steady, nothing repointed.
    d = run(down, local("c", pg_replica("a"), tags=me))
    assert d.rule_id == "replica-steady"
    back = cluster(member(replica("b", "a")), member(replica("c", "a"), "b"))
    d = run(back, local("c", pg_replica("a"), tags=me))
    assert (d.rule_id, d.actions[0]) == ("replica-cascade", A.Follow("b"))


def test_stopped_cascaded_replica_starts_from_its_upstream() -> None:
    from tests.unit.core_builders import pg_stopped
    v = cluster(member(replica("b", "a")), member(replica("c", None, state="stopped"), "b"))
    d = run(v, local("c", pg_stopped(), tags=Tags(replicatefrom="b")))
    assert d.rule_id == "replica-start"
    assert A.StartPostgres("replica", "b") in d.actions


def test_new_cascaded_replica_clones_from_its_upstream() -> None:
    from tests.unit.core_builders import pg_empty
    v = cluster(member(replica("b", "a")))
    d = run(v, local("c", pg_empty(), tags=Tags(replicatefrom="b")))
    assert d.actions == (A.Clone("b"),)


# --- slots ---------------------------------------------------------------------------------------------


def slot_members(actions: tuple[A.Action, ...]) -> tuple[str, ...] | None:
    found = [a for a in actions if isinstance(a, A.SyncSlots)]
    return found[0].members if found else None


def test_leader_keeps_no_slot_for_a_member_that_cascades_and_one_while_it_falls_back() -> None:
    cascading = cluster(member(replica("b", "a")), member(replica("c", "b"), "b"))
    d = run(cascading, local("a", pg_primary()))
    assert slot_members(d.actions) == ("b",)
    assert not streams_from_leader(cascading, "c")
    fallen_back = cluster(member(replica("b", None, state="stopped")), member(replica("c", "a"), "b"))
    assert slot_members(run(fallen_back, local("a", pg_primary())).actions) == ("b", "c")


def test_upstream_replica_keeps_a_slot_for_its_downstream_even_while_it_is_away() -> None:
    v = cluster(member(replica("b", "a")), member(replica("c", "b"), "b"))
    assert slot_members(run(v, local("b", pg_replica("a"))).actions) == ("c",)
    away = cluster(member(replica("b", "a")), member(replica("c", "a"), "b"))
    assert slot_members(run(away, local("b", pg_replica("a"))).actions) == ("c",)


def test_replica_drops_member_slots_nobody_needs_and_otherwise_leaves_slots_alone() -> None:
    from pgha.core.model import LocalSlot
    v = cluster(member(replica("b", "a")), member(replica("c", "a")))
    plain = run(v, local("b", pg_replica("a")))
    assert slot_members(plain.actions) is None
    stale = pg_replica("a", slots=(LocalSlot("c", "physical"),), owned_slots=frozenset({"c"}))
    assert slot_members(run(v, local("b", stale)).actions) == ()


def test_cascaded_member_is_never_a_synchronous_standby_of_the_primary() -> None:
    from tests.unit.core_builders import config
    c = config(synchronous_mode="on")
    v = replace(cluster(member(replica("b", "a")), member(replica("c", "b"), "b")), config=c)
    f = Facts(v, local("a", pg_primary()), c, NOW)
    assert syncrep.eligible_standbys(f) == ["b"]


# --- the node file ---------------------------------------------------------------------------------------


def node(tags: dict[str, object], name: str = "n1") -> dict[str, object]:
    return {"cluster": "c", "name": name, "postgresql": {"data_dir": "/tmp/x"}, "api": {"auth": "none"},
            "tags": tags}


def test_replicatefrom_tag_is_read_from_the_node_file() -> None:
    assert parse(node({"replicatefrom": "n2"})).tags.replicatefrom == "n2"


@pytest.mark.parametrize(("value", "words"), [("bad name!", "member name"), ("n1", "itself")])
def test_bad_replicatefrom_is_refused_with_one_line(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(node({"replicatefrom": value}))
    assert "tags.replicatefrom" in str(err.value) and words in str(err.value)
    assert "\n" not in str(err.value)


# --- what operators see -------------------------------------------------------------------------------


def test_topology_shows_the_cascaded_member_under_its_upstream_with_its_tag() -> None:
    from pgha.cli.commands_cluster_list import render_list
    v = cluster(member(replica("b", "a")), member(replica("c", "b"), "b"))
    lines = render_list(v, tree=True).splitlines()
    rows = [ln for ln in lines if ln.startswith("| ") and "Member" not in ln]
    assert [r.split("|")[1].rstrip() for r in rows] == [" a", " + b", "   + c"]
    assert "replicatefrom=b" in rows[2]


def test_replicatefrom_in_patroni_tags_and_health_tag_matching() -> None:
    from pgha.api.health import tags_match
    from pgha.api.patroni import patroni_tags
    t = Tags(replicatefrom="b")
    assert patroni_tags(t) == {"replicatefrom": "b"}
    assert patroni_tags(Tags()) == {}
    assert tags_match(t, {"replicatefrom": "b"}) and not tags_match(t, {"replicatefrom": "x"})
