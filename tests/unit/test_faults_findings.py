"""Findings of the fault suite in the decision core, as table cases (docs/faults-findings.md).

Each case is the wrong decision a run found, now fixed in the core (leader-promote-settling, and
advance() forgetting slots_applied), kept as a regression.
"""

from __future__ import annotations

from pgha.core.memory import AgentMemory, Observation, advance
from pgha.core.model import ClusterConfig, Tags, TaskKind, TaskState
from tests.unit.core_builders import NOW, local, pg_replica, primary, replica, run, view


def test_no_second_promotion_on_an_observation_older_than_the_promotion() -> None:
    """Soak seed 30654185, fault #19 (and suite seed 311628564, #24): the promote task had ended, but the
    loop decided on an observation taken during the promotion (still in recovery, yet already on the new
    timeline's first WAL segment).  leader-promote ran again and its AppendHistory recorded a fork at the
    new timeline, which made every member "behind the latest timeline" for good."""
    v = view(replica("n1", None, tl=13), replica("n2", "n1", tl=12), replica("n3", "n1", tl=12), leader="n1")
    stale = pg_replica(None, tl=13, streaming=False)
    decision = run(v, local("n1", pg=stale, task=TaskState(TaskKind.PROMOTE, running=False, ok=True)))
    assert not any(a.name in ("AppendHistory", "Promote") for a in decision.actions), decision


def test_slots_are_made_again_after_the_node_was_a_replica() -> None:
    """Soak seed 30654185, fault #76 (switchover while a replica is cut off): node1 led before, lost
    its slots while it was a replica, led again with the same members, and SyncSlots did nothing
    because memory said they were applied: its replicas were refused ("replication slot "node2" does
    not exist") until the agent restarted, and in synchronous mode no commit could complete."""
    m = AgentMemory(slots_applied=("n1", "n2", "n3"), slots_primary=True)
    obs = Observation(name="n1", view=view(replica("n1", "n2"), primary("n2"), leader="n2"),
                      pg=pg_replica("n2"), task=None, lease_deadline=None, lease_id=1, tags=Tags(),
                      config=ClusterConfig(), params_key="", pre_promote_hook=False, wall_now=0.0)
    memory, _ = advance(m, (), obs, NOW)
    assert memory.slots_applied is None
