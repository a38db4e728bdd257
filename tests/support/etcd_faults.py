"""Faults of one etcd member under a `--netns --etcd-members 3` demo, and what a client saw meanwhile.

* ``kill_leader_member``: SIGKILL of the member that leads etcd (a new etcd leader is elected);
* ``partition_member``: nftables drop rules inside the namespace of the member the PostgreSQL
  leader's agent is connected to (every packet on its eth0 dropped, so TCP connections to it hang
  instead of being refused);
* ``restart_member``: SIGTERM of that member, then it starts again from its data directory.

``etcd_fault`` runs one of them under a ``VipWriter`` (a client in the client namespace writing
through the VIP every 20 ms) and returns an ``EtcdFaultReport``: the PostgreSQL leader and its
postmaster PID before and after, the decision-log lines naming a fence rule, and the longest gap
between acknowledged writes.  Used by tests/lab/test_etcd_members.py and bench/etcd_members.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pgha.demo import DemoCluster, netlab
from tests.support.cluster import wait_for
from tests.support.faults import postmaster_pid
from tests.support.vip import VipWriter

PARTITION_TABLE = "pgha_partition"
# Drop everything on eth0 both ways; lo keeps working (the member talks to itself).
PARTITION_RULES = f"""table inet {PARTITION_TABLE} {{
  chain input {{ type filter hook input priority 0; iifname "eth0" drop; }}
  chain output {{ type filter hook output priority 0; oifname "eth0" drop; }}
}}
"""


def nft(netns: str, *args: str, stdin: str | None = None) -> None:
    res = subprocess.run([*netlab.in_netns(netns), "nft", *args], input=stdin, capture_output=True, text=True,
                         timeout=10, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)} in {netns}: {res.stderr.strip()}")


def partition(demo: DemoCluster, member: str) -> None:
    nft(demo.etcd_member(member).netns, "-f", "-", stdin=PARTITION_RULES)


def heal(demo: DemoCluster, member: str) -> None:
    nft(demo.etcd_member(member).netns, "delete", "table", "inet", PARTITION_TABLE)


def wait_members_healthy(demo: DemoCluster, timeout: float = 60.0) -> None:
    assert demo.state is not None
    names = [m.name for m in demo.state.etcd_members]
    wait_for("every etcd member healthy", lambda: all(demo.member_health(n) for n in names), timeout=timeout)


def etcd_leader(demo: DemoCluster) -> str:
    leader: str = wait_for("an etcd leader", demo.etcd_leader, timeout=30)
    return leader


@dataclass
class EtcdFaultReport:
    fault: str
    member: str
    leader_before: str
    leader_after: str | None
    postmaster_before: int | None
    postmaster_after: int | None
    fence_lines: list[str] = field(default_factory=list)
    longest_gap: float = 0.0
    writes: int = 0
    # The leader's agent was connected to the member when the fault began.
    member_in_use: bool = False
    # The agents' warnings meanwhile (e.g. a lease renewal that failed on every endpoint).
    warnings: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if self.leader_after != self.leader_before:
            out.append(f"the PostgreSQL leader changed: {self.leader_before} -> {self.leader_after}")
        if self.postmaster_after != self.postmaster_before:
            out.append(f"PostgreSQL on {self.leader_before} restarted: postmaster "
                       f"{self.postmaster_before} -> {self.postmaster_after}")
        if self.fence_lines:
            out.append(f"fencing: {self.fence_lines[:3]}")
        if self.longest_gap >= 1.0:
            out.append(f"a write gap of {self.longest_gap:.2f}s through the VIP")
        return out

    def line(self) -> str:
        used = "used by the leader's agent" if self.member_in_use else "not in use by the leader's agent"
        return (f"{self.fault} ({self.member}, {used}): leader {self.leader_before} -> {self.leader_after}, "
                f"{self.writes} writes, longest gap {self.longest_gap * 1000:.0f} ms, "
                f"fence lines {len(self.fence_lines)}, agent warnings {len(self.warnings)}")


class AgentLogs:
    """The agents' logs from now on (for decision lines naming a fence rule)."""

    def __init__(self, demo: DemoCluster) -> None:
        assert demo.state is not None
        self.paths = [Path(n.config).parent / "agent.log" for n in demo.state.nodes]
        self.offsets = {p: p.stat().st_size if p.exists() else 0 for p in self.paths}

    def new_lines(self) -> list[str]:
        out = []
        for p in self.paths:
            with open(p, errors="replace") as fh:
                fh.seek(self.offsets[p])
                out += [f"{p.parent.name}: {line.rstrip()}" for line in fh]
        return out

    def fence_lines(self) -> list[str]:
        return [line for line in self.new_lines() if "[fence-" in line]

    def warnings(self) -> list[str]:
        return [line for line in self.new_lines() if " WARNING " in line or " ERROR " in line]


def members_in_use(demo: DemoCluster, node: str) -> list[str]:
    """The etcd members ``node``'s agent has connections to right now (from `ss` in its namespace)."""
    assert demo.state is not None
    netns = demo.node(node).netns
    res = subprocess.run([*netlab.in_netns(netns), "ss", "-Htn", "state", "established", "( dport = :2379 )"],
                         capture_output=True, text=True, timeout=10, check=False)
    peers = [line.split()[-1].rsplit(":", 1)[0] for line in res.stdout.splitlines() if line.strip()]
    return [m.name for m in demo.state.etcd_members if m.address in peers]


def member_the_leader_uses(demo: DemoCluster) -> str:
    """The member the PostgreSQL leader's agent talks to (so the fault hits its requests), or etcd1."""
    leader = demo.wait_vip(timeout=60)
    in_use = members_in_use(demo, leader)
    return in_use[0] if in_use else "etcd1"


def kill_leader_member(demo: DemoCluster) -> tuple[str, Callable[[], None]]:
    member = etcd_leader(demo)
    demo.stop_etcd_member(member, signal.SIGKILL)
    return member, lambda: demo.start_etcd_member(member)


def partition_member(demo: DemoCluster) -> tuple[str, Callable[[], None]]:
    member = member_the_leader_uses(demo)
    partition(demo, member)
    return member, lambda: heal(demo, member)


def restart_member(demo: DemoCluster) -> tuple[str, Callable[[], None]]:
    member = member_the_leader_uses(demo)
    demo.stop_etcd_member(member)
    demo.start_etcd_member(member)
    return member, lambda: None


def no_fault(demo: DemoCluster) -> tuple[str, Callable[[], None]]:
    """The baseline: the same window with nothing broken (what the client's gaps are anyway)."""
    return "none", lambda: None


FAULTS: dict[str, Callable[[DemoCluster], tuple[str, Callable[[], None]]]] = {
    "kill the etcd leader": kill_leader_member,
    "partition a member": partition_member,
    "restart a member": restart_member,
}
BASELINE = "no fault (baseline)"
WITH_BASELINE = {BASELINE: no_fault, **FAULTS}


def etcd_fault(demo: DemoCluster, fault: str, hold: float, settle: float = 3.0,
               persistent: bool = False) -> EtcdFaultReport:
    """Apply ``fault``, keep it ``hold`` seconds, undo it, wait ``settle`` more; the client writes
    through the VIP all along (a fresh connection per write, or one ``persistent`` connection).
    Returns what happened to PostgreSQL and to the writes."""
    leader = demo.wait_vip(timeout=60)
    pm_before = postmaster_pid(demo, leader)
    logs = AgentLogs(demo)
    in_use = members_in_use(demo, leader)
    with VipWriter(demo, interval=0.02, persistent=persistent) as writer:
        writer.first(after=time.monotonic(), by=leader, timeout=20)
        start = time.monotonic()
        member, undo = WITH_BASELINE[fault](demo)
        time.sleep(hold)
        undo()
        wait_members_healthy(demo)
        time.sleep(settle)
        end = time.monotonic()
        acks = [t for t, _ in writer.acks if start <= t <= end]
    view = demo.view()
    times = [start, *acks, end]
    return EtcdFaultReport(
        fault=fault, member=member, leader_before=leader,
        leader_after=view.leader.name if view.leader else None,
        postmaster_before=pm_before, postmaster_after=postmaster_pid(demo, leader),
        fence_lines=logs.fence_lines(), longest_gap=max(b - a for a, b in itertools.pairwise(times)),
        writes=len(acks), member_in_use=member in in_use, warnings=logs.warnings())
