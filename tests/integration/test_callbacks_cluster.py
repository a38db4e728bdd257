"""Issue 5 acceptance: user hooks on a real 3-node cluster.

Every node's hooks are one small shell script that appends a timestamp and its arguments
(EVENT ROLE CLUSTER) to hooks-<node>.log, then behaves as told: on_role_change sleeps 30 s
(slow), on_start exits 1 (failing), pre_promote exits 1 on node3 (veto) and 0 elsewhere.
"""

from __future__ import annotations

import os
import pwd
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgha.core.model import Role, Switchover
from pgha.demo import DemoCluster
from tests.support.cluster import leader_name, postgres_readable_dir, running_cluster, wait_for
from tests.support.faults import restart_node, wait_new_leader

pytestmark = pytest.mark.integration

TTL = 6.0
CLUSTER = "demo"
VETOER = "node3"
HOOK = """#!/bin/sh
# hook.sh OUT BEHAVIOUR EVENT ROLE CLUSTER
out=$1; behaviour=$2; shift 2
echo "$(date +%s.%N) $*" >> "$out"
case "$behaviour" in
  slow) sleep 30 ;;
  fail) echo "hook told to fail" >&2; exit 1 ;;
esac
exit 0
"""


@pytest.fixture(scope="module")
def hooks_dir() -> Iterator[Path]:
    with postgres_readable_dir("pgha-hooks-") as d:
        pw = pwd.getpwnam("postgres")
        os.chown(d, pw.pw_uid, pw.pw_gid)
        (d / "hook.sh").write_text(HOOK)
        (d / "hook.sh").chmod(0o755)
        yield d


def node_hooks(d: Path, name: str) -> dict[str, object]:
    def cmd(behaviour: str) -> str:
        return f"/bin/sh {d / 'hook.sh'} {d / f'hooks-{name}.log'} {behaviour}"

    return {"callbacks": {
        "on_start": cmd("fail"),
        "on_stop": cmd("ok"),
        "on_role_change": cmd("slow"),
        "on_reload": cmd("ok"),
        "pre_promote": cmd("fail" if name == VETOER else "ok"),
        "timeout": 30.0,
    }}


@pytest.fixture(scope="module")
def demo(hooks_dir: Path) -> Iterator[DemoCluster]:
    extra = {f"node{i}": node_hooks(hooks_dir, f"node{i}") for i in (1, 2, 3)}
    with running_cluster(nodes=3, ttl=TTL, extra_node_config=extra) as d:
        yield d


def calls(d: Path, name: str) -> list[str]:
    """'EVENT ROLE CLUSTER' for every hook run on ``name``, in order."""
    try:
        lines = (d / f"hooks-{name}.log").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line.split(" ", 1)[1] for line in lines if " " in line]


def agent_log(demo: DemoCluster, name: str) -> str:
    return (demo.dir / name / "agent.log").read_text()


def switchover(demo: DemoCluster, old: str, candidate: str) -> float:
    asked = time.monotonic()
    assert demo.store().set_switchover(Switchover(id=uuid.uuid4().hex, kind="switchover", leader=old,
                                                  candidate=candidate))
    return asked


def test_on_start_once_per_node_with_its_role(demo: DemoCluster, hooks_dir: Path) -> None:
    lead = leader_name(demo)
    for name in ("node1", "node2", "node3"):
        role = "primary" if name == lead else "replica"
        wait_for(f"on_start on {name}", lambda n=name: calls(hooks_dir, n), timeout=20)
        assert calls(hooks_dir, name) == [f"on_start {role} {CLUSTER}"]
        # The failing hook is logged with its exit code and did not stop the node getting healthy.
        wait_for(f"the on_start run logged on {name}", lambda n=name, r=role: f"hook on_start {r}: exit code 1"
                 in agent_log(demo, n), timeout=10)


def test_switchover_fires_on_role_change_once_and_slow_hooks_do_not_hold_it_up(
        demo: DemoCluster, hooks_dir: Path) -> None:
    old = leader_name(demo)
    # Neither switchover may go to the vetoer (the first leader is whoever won the initialize race).
    new = "node1" if old != "node1" else "node2"
    back = old if old != VETOER else ({"node1", "node2"} - {new}).pop()
    bystander = ({"node1", "node2", "node3"} - {old, new}).pop()
    before = {n: len(calls(hooks_dir, n)) for n in ("node1", "node2", "node3")}
    asked = switchover(demo, old, new)
    assert wait_new_leader(demo, old, timeout=30) == new
    took = time.monotonic() - asked
    demo.wait_healthy(timeout=60)
    # on_role_change sleeps 30 s on every node; the loop went on regardless.
    print(f"\nswitchover {old} -> {new} with 30 s on_role_change hooks: new primary after {took:.2f}s")
    assert took < 10
    wait_for("on_role_change on both", lambda: len(calls(hooks_dir, old)) > before[old]
             and len(calls(hooks_dir, new)) > before[new], timeout=20)
    time.sleep(2)  # anything fired twice would show by now
    assert calls(hooks_dir, old)[before[old]:] == [f"on_role_change replica {CLUSTER}"]
    assert calls(hooks_dir, new)[before[new]:] == [f"pre_promote primary {CLUSTER}",
                                                   f"on_role_change primary {CLUSTER}"]
    assert len(calls(hooks_dir, bystander)) == before[bystander]
    # A second switchover while those hooks still sleep also completes quickly.
    asked = switchover(demo, new, back)
    assert wait_new_leader(demo, new, timeout=30) == back
    assert time.monotonic() - asked < 10
    demo.wait_healthy(timeout=60)


def test_pre_promote_veto_prevents_the_promotion(demo: DemoCluster, hooks_dir: Path) -> None:
    old = leader_name(demo)
    if old == VETOER:
        switchover(demo, old, "node1")
        wait_new_leader(demo, old, timeout=30)
        demo.wait_healthy(timeout=60)
        old = leader_name(demo)
    history = len(demo.store().history())
    before = len(calls(hooks_dir, VETOER))
    vetoes = agent_log(demo, VETOER).count("[leader-promote-vetoed]")
    switchover(demo, old, VETOER)
    # Count: an earlier test may have met the veto already.
    wait_for("the veto", lambda: agent_log(demo, VETOER).count("[leader-promote-vetoed]") > vetoes, timeout=30)
    # The cluster elects another member (the old leader resumes, or the third node wins).
    new = wait_for("a primary other than the vetoer", lambda: (lambda v: v.leader is not None
                   and v.leader.name != VETOER and v.members[v.leader.name].role == Role.PRIMARY
                   and v.members[v.leader.name].state == "running" and v.leader.name)(demo.view()), timeout=60)
    demo.wait_healthy(timeout=90)
    view = demo.view()
    assert view.leader is not None and view.leader.name == new != VETOER
    assert view.members[VETOER].role == Role.REPLICA
    assert f"pre_promote primary {CLUSTER}" in calls(hooks_dir, VETOER)[before:]
    assert "the pre_promote hook vetoed the promotion" in agent_log(demo, VETOER)
    # The vetoed promotion left no history entry behind (nor a fork that never happened).
    assert all(e.new_leader != VETOER for e in demo.store().history()[history:])


def test_on_stop_at_shutdown(demo: DemoCluster, hooks_dir: Path) -> None:
    name = next(n for n in ("node1", "node2", "node3") if n != leader_name(demo))
    demo.stop_agent(name)
    assert calls(hooks_dir, name)[-1] == f"on_stop replica {CLUSTER}"
    restart_node(demo, name)
    demo.wait_healthy(timeout=90)
