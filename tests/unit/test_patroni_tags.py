"""Patroni's tags and settings pgha lacked: clonefrom, sync_priority, maximum_lag_on_syncnode,
check_timeline (each decided in the core; read from the configuration as Patroni spells them)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgha.api.patroni import patroni_tags
from pgha.cli.render import tags_text
from pgha.config import build
from pgha.core import actions as A
from pgha.core import election, syncrep
from pgha.core.decide import decide
from pgha.core.facts import Facts
from pgha.core.model import ClusterConfig, MemberInfo, Replication, Tags
from tests.unit.core_builders import NOW, config, local, pg_empty, pg_primary, pg_replica, primary, replica, view


def tagged(m: MemberInfo, **tags: object) -> MemberInfo:
    return replace(m, tags=Tags(**tags))  # type: ignore[arg-type]


# --- clonefrom ---------------------------------------------------------------------------------


def test_clone_from_a_streaming_member_tagged_clonefrom() -> None:
    v = view(primary("a"), tagged(replica("b", "a"), clonefrom=True), replica("c", "a"), leader="a")
    d = decide(v, local("d", pg_empty()), v.config, NOW)
    assert (d.rule_id, d.actions) == ("replica-clone", (A.Clone("b"),))
    assert "source b" in d.reason


@pytest.mark.parametrize("b", [
    tagged(replica("b", "a", state="running"), clonefrom=True),  # not streaming
    tagged(replica("b", "c"), clonefrom=True),  # cascading from someone else
    tagged(replica("b", "a", tl=0), clonefrom=True),  # not on the leader's timeline
    replica("b", "a"),  # not tagged
])
def test_clone_from_the_leader_otherwise(b: MemberInfo) -> None:
    v = view(primary("a"), b, leader="a")
    assert decide(v, local("d", pg_empty()), v.config, NOW).actions == (A.Clone("a"),)


# --- sync_priority and maximum_lag_on_syncnode ------------------------------------------------


def leader_facts(*members: MemberInfo, flushed: dict[str, int] | None = None, wal: int = 1000,
                 **cfg: object) -> Facts:
    c = config(synchronous_mode="on", **cfg)
    v = view(primary("a", wal), *members, leader="a", cfg=c)
    reps = tuple(Replication(n, "streaming", "async", lsn, lsn) for n, lsn in (flushed or {}).items())
    return Facts(v, local("a", pg_primary(wal, replication=reps)), c, NOW)


def test_sync_priority_orders_and_zero_excludes() -> None:
    f = leader_facts(tagged(replica("b", "a", 1000), sync_priority=1), tagged(replica("c", "a", 900), sync_priority=5),
                     tagged(replica("d", "a", 1000), sync_priority=0))
    assert syncrep.eligible_standbys(f) == ["c", "b"]


def test_maximum_lag_on_syncnode_leaves_out_a_lagging_standby() -> None:
    members = (replica("b", "a", 1000), replica("c", "a", 1000))
    lagging = {"b": 500, "c": 1000}
    assert syncrep.eligible_standbys(leader_facts(*members, flushed=lagging)) == ["b", "c"]  # off by default
    assert syncrep.eligible_standbys(leader_facts(*members, flushed=lagging, maximum_lag_on_syncnode=400)) == ["c"]
    assert syncrep.eligible_standbys(leader_facts(*members, flushed=lagging, maximum_lag_on_syncnode=600)) == [
        "b", "c"]
    # One standby: measured against the primary's own position.
    one = leader_facts(replica("b", "a", 1000), flushed={"b": 500}, wal=2000, maximum_lag_on_syncnode=1000)
    assert syncrep.eligible_standbys(one) == []


# --- check_timeline ---------------------------------------------------------------------------


def test_check_timeline_false_lets_a_member_on_an_older_timeline_be_promoted() -> None:
    members = (replica("b", None, 1000, tl=1, state="running"), replica("c", None, 1000, tl=2, state="running"))
    me = local("b", pg_replica(None, 1000, tl=1, streaming=False))
    checked = view(*members, leader=None)
    assert "behind the latest timeline" in (election.why_not_candidate(Facts(checked, me, checked.config, NOW))
                                            or "")
    off = config(check_timeline=False)
    unchecked = view(*members, leader=None, cfg=off)
    assert election.why_not_candidate(Facts(unchecked, me, off, NOW)) is None


# --- configuration and display ------------------------------------------------------------------


def test_patroni_spelling_is_accepted_and_shown() -> None:
    cfg = build(ClusterConfig, {"maximum_lag_on_syncnode": 1048576, "check_timeline": False})
    assert cfg.problem() is None and cfg.maximum_lag_on_syncnode == 1048576 and not cfg.check_timeline
    assert "maximum_lag_on_syncnode" in (build(ClusterConfig, {"maximum_lag_on_syncnode": -5}).problem() or "")
    tags = build(Tags, {"clonefrom": True, "sync_priority": 3, "nosync": False})
    assert tags_text(tags) == "clonefrom, sync_priority=3"
    assert patroni_tags(tags) == {"clonefrom": True, "sync_priority": 3}


# --- nostream ---------------------------------------------------------------------------------------


def test_nostream_member_gets_no_slot_on_the_leader_and_no_logical_copies() -> None:
    from pgha.core.model import SlotSpec
    from pgha.core.upkeep import slot_inputs, upkeep_leader

    v = view(primary("a"), replica("b", "a"), replace(replica("c", "a", state="running"), tags=Tags(nostream=True)),
             leader="a")
    acts = upkeep_leader(Facts(v, local("a", pg_primary()), v.config, NOW))
    assert [a for a in acts if isinstance(a, A.SyncSlots)] == [A.SyncSlots(("b",), ())]
    cfg = config(slots={"cdc": SlotSpec("logical", "pgoutput", "app"), "arch": SlotSpec()},
                 parameters={"wal_level": "logical"})
    me = local("c", pg_replica("a", streaming=False), tags=Tags(nostream=True))
    assert set(slot_inputs(Facts(replace(v, config=cfg), me, cfg, NOW), False).config.slots) == {"arch"}


def test_nostream_replica_configuration_has_no_primary_conninfo(tmp_path: object) -> None:
    from pathlib import Path

    from pgha.config import parse
    from pgha.postgres import conf
    from pgha.postgres.common import Upstream
    from pgha.postgres.layout import Layout

    def node(tags: dict[str, object]) -> str:
        cfg = parse({"cluster": "c", "name": "n1", "etcd": {"endpoints": ["http://127.0.0.1:2379"]},
                     "postgresql": {"data_dir": str(Path(str(tmp_path)) / "data"),
                                    "superuser": {"username": "postgres", "password": "x"},
                                    "replication": {"username": "rep", "password": "y"}},
                     "api": {"auth": "none"}, "tags": tags})
        up = Upstream("n2", "127.0.0.1", 5433)
        return conf.render_postgresql_conf(cfg, Layout.of(cfg), {}, up, "")

    assert "primary_conninfo" in node({}) and "primary_slot_name" in node({})
    text = node({"nostream": True})
    assert "primary_conninfo =" not in text and "primary_slot_name =" not in text
    assert conf.read_upstream(text)[0] == "n2"
