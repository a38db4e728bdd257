"""Requests the agents carry out: switchover, failover, restart, reload, reinit."""

from __future__ import annotations

import datetime

import pytest

from pgha.cli import context
from pgha.core.model import ClusterConfig, Role
from tests.unit.test_cli_world import MIB, World, refusal, world_fixture  # noqa: F401


def future(minutes: int = 60) -> str:
    return (datetime.datetime.now().astimezone() + datetime.timedelta(minutes=minutes)).isoformat()


# --- switchover: written, confirmed, waited for --------------------------------------------------
def test_switchover_to_a_candidate_writes_the_request(world: World) -> None:
    r = world.run("switchover", "--candidate", "node2", "--force", "--no-wait")
    assert r.exit_code == 0, r.output
    sw = world.store.read().switchover
    assert sw is not None
    assert (sw.kind, sw.leader, sw.candidate, sw.scheduled_at, sw.phase) == (
        "switchover", "node1", "node2", None, "requested")
    assert len(sw.id) == 32 and int(sw.id, 16) >= 0


def test_switchover_without_candidate_leaves_the_choice_to_the_leader(world: World) -> None:
    r = world.run("switchover", "--no-wait", input="y\n")
    assert r.exit_code == 0, r.output
    assert "Switch over from node1 to the best replica (now node2)? [y/N]" in r.output
    sw = world.store.read().switchover
    assert sw is not None and sw.candidate is None and sw.leader == "node1"


def test_switchover_confirmation_declined_writes_nothing(world: World) -> None:
    r = world.run("switchover", "--candidate", "node2", input="n\n")
    assert r.exit_code == 1
    assert "Switch over from node1 to node2? [y/N]" in r.output
    assert refusal(r) == "pgha: aborted; nothing was changed"
    assert world.store.read().switchover is None


def test_switchover_no_input_counts_as_no(world: World) -> None:
    r = world.run("switchover", "--candidate", "node2", input="")
    assert r.exit_code == 1
    assert world.store.read().switchover is None


def test_switchover_waits_for_the_new_leader_then_lists(world: World) -> None:
    steps = iter(["pausing", "demoting", "handoff", "promoted"])

    def agent() -> None:
        step = next(steps, "promoted")
        sw = world.store.read().switchover
        if step in ("pausing", "demoting") and sw is not None:
            world.store.update_switchover_phase(sw.id, step)
        elif step == "handoff":
            world.store.clear_switchover()
            world.change("node1", role=Role.REPLICA, state="stopped")
            assert world.store.handoff_leader("node1", "node2", world.lease)
        elif step == "promoted":
            world.change("node2", role=Role.PRIMARY, state="running", wal_lsn=81 * MIB)

    world.agent = agent
    r = world.run("switchover", "--candidate", "node2", "--force")
    assert r.exit_code == 0, r.output
    assert "switchover phase: pausing" in r.output and "switchover phase: demoting" in r.output
    assert "node2 holds the leader key, waiting for it to run as primary" in r.output
    assert "node2 is the new leader." in r.output
    assert "| node2  | 127.0.0.1:5433 | Leader" in r.output


def test_switchover_dropped_by_the_leader_is_reported(world: World) -> None:
    def agent() -> None:
        world.store.clear_switchover()
        world.change("node1", reason="refused: candidate node2 lags")

    world.agent = agent
    r = world.run("switchover", "--candidate", "node2", "--force")
    assert r.exit_code == 1
    assert refusal(r) == ("pgha: the switchover was dropped; node1 is still the leader "
                          "(refused: candidate node2 lags)")


def test_switchover_refused_by_the_leader_shows_its_verdict(world: World) -> None:
    """The leader publishes its verdict in its member key before it deletes the request."""
    def agent() -> None:
        sw = world.store.read().switchover
        assert sw is not None
        world.change("node1", last_switchover_id=sw.id,
                     last_switchover_outcome="refused: candidate node2 does not answer (its agent's API: timeout)")
        world.store.clear_switchover(sw.id)

    world.agent = agent
    r = world.run("switchover", "--candidate", "node2", "--force")
    assert refusal(r) == ("pgha: switchover refused: candidate node2 does not answer (its agent's API: timeout); "
                          "node1 is still the leader")


def test_switchover_wait_gives_up_after_the_timeout(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "WAIT_TIMEOUT", 0.0)
    r = world.run("switchover", "--candidate", "node2", "--force")
    assert r.exit_code == 1
    assert "switchover not done after 0 s" in refusal(r)


def test_switchover_scheduled(world: World) -> None:
    r = world.run("switchover", "--candidate", "node2", "--scheduled", future(), "--force")
    assert r.exit_code == 0, r.output
    assert "scheduled at" in r.output
    sw = world.store.read().switchover
    assert sw is not None and sw.scheduled_at is not None


def test_switchover_scheduled_in_the_past_or_unparsable(world: World) -> None:
    r = world.run("switchover", "--candidate", "node2", "--scheduled", "2001-01-01T00:00", "--force")
    assert r.exit_code == 1 and "in the past" in refusal(r)
    r = world.run("switchover", "--candidate", "node2", "--scheduled", "tomorrow", "--force")
    assert r.exit_code == 2 and "not a time" in r.output
    assert world.store.read().switchover is None


# --- switchover: refusals (the agent's own rules) -------------------------------------------------
@pytest.mark.parametrize(("setup", "args", "message"), [
    (None, ["--candidate", "node9"], "candidate node9 is not a member of the cluster"),
    (None, ["--candidate", "node3"], "candidate node3 is tagged nofailover"),
    (None, ["--candidate", "node1"], "candidate node1 is already the leader"),
    ("unhealthy", ["--candidate", "node2"], "candidate node2 is not a streaming replica (state: starting)"),
    ("lagging", ["--candidate", "node2"],
     "candidate node2 lags 10485760 bytes, more than maximum_lag_on_failover"),
    (None, ["--leader", "node2", "--candidate", "node2"], "node2 is not the leader; the leader is node1"),
    ("no-leader", ["--candidate", "node2"],
     "the cluster has no leader; fail over to a named candidate instead (pgha failover --candidate NAME, "
     "POST /failover)"),
    ("pending", ["--candidate", "node2"], "a switchover to node3 is already pending (in phase requested, id x); "
                                          "wait for it to finish, or cancel it (DELETE /switchover)"),
    ("paused", ["--candidate", "node2"], "the cluster is paused (maintenance mode) and the agents carry out no "
                                         "request; resume it first (pgha resume, POST /resume)"),
    ("unhealthy", [],
     "no member can take over: candidate node2 is not a streaming replica (state: starting); "
     "candidate node3 is tagged nofailover"),
    ("leader-down", ["--candidate", "node2"], "the leader node1 is not running as primary (crashed); fail over "
                                              "to a named candidate instead (pgha failover --candidate NAME, "
                                              "POST /failover)"),
])
def test_switchover_refusals(world: World, setup: str | None, args: list[str], message: str) -> None:
    from pgha.core.model import Switchover

    if setup == "unhealthy":
        world.change("node2", state="starting")
    elif setup == "lagging":
        world.change("node2", received_lsn=70 * MIB, replayed_lsn=70 * MIB)
    elif setup == "no-leader":
        assert world.store.release_leader("node1")
    elif setup == "pending":
        world.store.set_switchover(Switchover(id="x", leader="node1", candidate="node3"))
    elif setup == "paused":
        world.store.set_config(ClusterConfig(pause=True))
    elif setup == "leader-down":
        world.change("node1", role=Role.UNINITIALIZED, state="crashed")
    before = world.store.read().switchover
    r = world.run("switchover", *args, "--force")
    assert r.exit_code == 1, r.output
    assert refusal(r) == f"pgha: {message}"
    assert world.store.read().switchover == before


# --- failover -------------------------------------------------------------------------------------
def test_failover_with_a_healthy_leader(world: World) -> None:
    r = world.run("failover", "--candidate", "node2", "--no-wait", input="y\n")
    assert r.exit_code == 0, r.output
    assert "Fail over from node1 to node2? [y/N]" in r.output
    sw = world.store.read().switchover
    assert sw is not None and (sw.kind, sw.leader, sw.candidate) == ("failover", "node1", "node2")


def test_failover_without_a_leader(world: World) -> None:
    assert world.store.release_leader("node1")
    world.change("node1", role=Role.UNINITIALIZED, state="stopped")
    world.change("node2", state="running")

    def agent() -> None:
        world.store.acquire_leader("node2", world.lease)
        world.change("node2", role=Role.PRIMARY)

    world.agent = agent
    r = world.run("failover", "--candidate", "node2", "--force")
    assert r.exit_code == 0, r.output
    assert "node2 is the new leader." in r.output
    sw = world.store.read().switchover
    assert sw is not None and sw.kind == "failover" and sw.leader is None


def test_failover_another_member_won(world: World) -> None:
    assert world.store.release_leader("node1")
    world.change("node1", role=Role.UNINITIALIZED, state="stopped")

    def agent() -> None:
        world.store.acquire_leader("node3", world.lease)

    world.agent = agent
    r = world.run("failover", "--candidate", "node2", "--force")
    assert r.exit_code == 1
    assert refusal(r) == "pgha: node3 became the leader instead of node2"


def test_failover_refusals(world: World) -> None:
    r = world.run("failover", "--force")
    assert r.exit_code == 2 and "--candidate" in r.output
    assert refusal(world.run("failover", "--candidate", "node9", "--force")) == \
        "pgha: candidate node9 is not a member of the cluster"
    assert refusal(world.run("failover", "--candidate", "node3", "--force")) == \
        "pgha: candidate node3 is tagged nofailover"
    assert world.store.release_leader("node1")
    world.change("node2", role=Role.UNINITIALIZED, state="stopped")
    r = world.run("failover", "--candidate", "node2", "--force")
    assert r.exit_code == 1
    assert refusal(r) == "pgha: candidate node2 is not running as a replica (state: stopped)"
    assert world.store.read().switchover is None


# --- restart, reload, reinit ----------------------------------------------------------------------
def test_restart_every_member(world: World) -> None:
    r = world.run("restart", input="y\n")
    assert r.exit_code == 0, r.output
    assert "Restart PostgreSQL on node1, node2, node3? [y/N]" in r.output
    intents = world.store.read().intents
    assert sorted(intents) == ["node1", "node2", "node3"]
    assert {i.action for i in intents.values()} == {"restart"}
    assert len({i.id for i in intents.values()}) == 3


def test_restart_filters(world: World) -> None:
    r = world.run("restart", "--role", "replica", "--pending", "--scheduled", future(), "--force")
    assert r.exit_code == 0, r.output
    intents = world.store.read().intents
    assert list(intents) == ["node3"]
    i = intents["node3"]
    assert i.only_if_pending and i.role == "replica" and i.scheduled_at is not None


def test_restart_one_member_and_refusals(world: World) -> None:
    assert world.run("restart", "node2", "--force").exit_code == 0
    assert list(world.store.read().intents) == ["node2"]
    r = world.run("restart", "node2", "--force")
    assert r.exit_code == 1
    assert refusal(r) == "pgha: a restart of node2 is already pending; wait for it to finish"
    r = world.run("restart", "node9", "--force")
    assert refusal(r) == "pgha: node9 is not a member of cluster main (members: node1, node2, node3)"
    r = world.run("restart", "node1", "--role", "replica", "--force")
    assert refusal(r) == "pgha: no such member runs as replica"
    r = world.run("restart", "node1", "--pending", "--force")
    assert r.exit_code == 0 and "No member has a pending restart." in r.output
    r = world.run("restart", "node1", input="n\n")
    assert r.exit_code == 1 and refusal(r) == "pgha: aborted; nothing was changed"
    assert list(world.store.read().intents) == ["node2"]


def test_reload(world: World) -> None:
    r = world.run("reload", "node3")
    assert r.exit_code == 0, r.output
    assert world.store.read().intents["node3"].action == "reload"
    assert world.run("reload").exit_code == 1  # node3 already has one pending
    world.store.clear_intent("node3", world.store.read().intents["node3"].id)
    assert world.run("reload").exit_code == 0
    assert sorted(world.store.read().intents) == ["node1", "node2", "node3"]


def test_reinit(world: World) -> None:
    r = world.run("reinit", "node2", "--from-leader", input="y\n")
    assert r.exit_code == 0, r.output
    assert "Reinitialize node2? Its data directory is wiped and cloned again from the leader." in r.output
    intent = world.store.read().intents["node2"]
    assert intent.action == "reinitialize" and intent.from_leader


def test_reinit_refusals(world: World) -> None:
    assert refusal(world.run("reinit", "node1", "--force")) == \
        "pgha: node1 is the leader; switch over first, then reinitialize it"
    assert refusal(world.run("reinit", "node7", "--force")).startswith("pgha: node7 is not a member")
    r = world.run("reinit", "node3", input="n\n")
    assert r.exit_code == 1 and refusal(r) == "pgha: aborted; nothing was changed"
    assert world.store.release_leader("node1")
    assert refusal(world.run("reinit", "node3", "--force")).startswith("pgha: the cluster has no leader")
    assert world.store.read().intents == {}


def test_switchover_to_a_lagging_synchronous_standby_is_not_judged_by_lag(world: World) -> None:
    """In synchronous mode a synchronous standby holds every acknowledged commit: the positions
    published up to ttl/3 ago may show it behind a busy leader, but only an asynchronous
    candidate is refused for that."""
    world.store.set_config(ClusterConfig(synchronous_mode="on"))
    assert world.store.publish_sync("node1", ("node2",), 1)
    world.change("node2", received_lsn=70 * MIB, replayed_lsn=70 * MIB)
    r = world.run("switchover", "--candidate", "node2", "--force", "--no-wait")
    assert r.exit_code == 0, r.output
    sw = world.store.read().switchover
    assert sw is not None and sw.candidate == "node2"
