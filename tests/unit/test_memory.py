"""advance(): what the agent remembers between loops, and the judgements it derives under a given clock."""

from __future__ import annotations

from dataclasses import replace

from pgha.core import memory as M
from pgha.core.model import (
    ClusterConfig,
    ClusterView,
    DataDir,
    Leader,
    LocalPostgres,
    PeerStatus,
    PgRunState,
    Tags,
    TaskKind,
    TaskState,
)

CFG = ClusterConfig(ttl=10.0, loop_wait=1.0)
PRIMARY = LocalPostgres(data_dir=DataDir.VALID, run_state=PgRunState.RUNNING, in_recovery=False, timeline=1)
REPLICA = replace(PRIMARY, in_recovery=True, receiver_status="streaming", following="b")
STOPPED = LocalPostgres(data_dir=DataDir.VALID, run_state=PgRunState.STOPPED, control_state="in production")


def obs(pg: LocalPostgres, leader: str | None = "a", task: TaskState | None = None) -> M.Observation:
    view = ClusterView("c", leader=Leader(leader, 1, 1) if leader else None)
    return M.Observation(name="a", view=view, pg=pg, task=task, lease_deadline=100.0, lease_id=1, tags=Tags(),
                         config=CFG, params_key="{}", pre_promote_hook=False, wall_now=0.0)


def test_a_primary_that_stops_by_itself_crashed() -> None:
    m = M.apply(M.AgentMemory(), M.Announced("primary"))
    m, local = M.advance(m, [], obs(STOPPED), now=10.0)
    assert local.pg.run_state == PgRunState.CRASHED and local.pg.down_since_mono == 10.0


def test_a_stop_the_agent_asked_for_is_no_crash() -> None:
    m = M.apply(M.AgentMemory(), M.Announced("primary"))
    m, local = M.advance(m, [M.StoppedOnPurpose(9.8)], obs(STOPPED), now=10.0)
    assert local.pg.run_state == PgRunState.STOPPED


def test_nobody_is_down_while_a_task_runs() -> None:
    m, local = M.advance(M.AgentMemory(), [], obs(STOPPED, task=TaskState(TaskKind.START, running=True)), 5.0)
    assert local.pg.down_since_mono is None and m.down_since is None


def test_a_veto_holds_one_ttl_or_until_another_member_leads() -> None:
    m, local = M.advance(M.AgentMemory(), [M.PromoteVetoed(0.0)], obs(REPLICA, leader="a"), now=5.0)
    assert local.promote_vetoed
    m2, local = M.advance(m, [], obs(REPLICA, leader="a"), now=CFG.ttl + 0.1)
    assert not local.promote_vetoed and m2.promote_vetoed_at is None
    _, local = M.advance(m, [], obs(REPLICA, leader="b"), now=6.0)
    assert not local.promote_vetoed


def test_polls_are_acted_on_only_while_fresh() -> None:
    polled = M.PeersPolled({"b": PeerStatus("b", api="ok", pg="ok")}, at=10.0, revision=7)
    m, local = M.advance(M.AgentMemory(), [polled], obs(REPLICA), now=10.5)
    assert set(local.peers) == {"b"} and local.peers_revision == 7
    _, local = M.advance(m, [], obs(REPLICA), now=10.0 + M.POLL_FRESH)
    assert dict(local.peers) == {} and local.peers_revision == 0


def test_clone_backoff() -> None:
    m, local = M.advance(M.AgentMemory(), [M.CloneFailed(1.0)], obs(STOPPED, leader="b"), now=2.0)
    assert local.clone_backoff
    _, local = M.advance(m, [], obs(STOPPED, leader="b"), now=1.0 + M.CLONE_BACKOFF)
    assert not local.clone_backoff


def test_not_streaming_since_the_first_loop_that_saw_it() -> None:
    lost = replace(REPLICA, receiver_status=None)
    m, local = M.advance(M.AgentMemory(), [], obs(lost, leader="b"), now=3.0)
    m, local = M.advance(m, [], obs(lost, leader="b"), now=8.0)
    assert local.not_streaming_since == 3.0
    _, local = M.advance(m, [], obs(REPLICA, leader="b"), now=9.0)
    assert local.not_streaming_since is None


def test_slots_are_made_again_after_the_node_was_a_replica() -> None:
    """Fault suite finding #3: slots applied as a leader are forgotten once the node runs as anything else."""
    m, _ = M.advance(M.AgentMemory(), [M.SlotsApplied(("b", "c"))], obs(PRIMARY), now=1.0)
    assert m.slots_applied == ("b", "c")
    m, _ = M.advance(m, [], obs(REPLICA, leader="b"), now=2.0)
    assert m.slots_applied is None
