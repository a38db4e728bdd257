"""The nemesis: the faults, each a start and a heal on a running `--netns --vip` demo.

Each fault kind picks its target at run time (the current leader, or a replica chosen by the
run's random generator), so a seed replays the same sequence of kinds and choices.  A fault
lasts ``hold`` seconds (ttl + 2 by default: longer than a lease) between start and heal.
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pgha.core.model import ClusterView, Switchover
from pgha.dcs.base import DCSError
from pgha.demo import DemoCluster, pid_alive
from pgha.faults import netfault
from pgha.faults.procs import freeze_host, host_pids, kill_host, postmaster_pid, restart_node, signal_all


@dataclass
class Target:
    """What one fault acts on, and how to undo it."""

    node: str | None
    heal: Callable[[], None]
    detail: str = ""


@dataclass
class Nemesis:
    demo: DemoCluster
    rng: random.Random
    hold: float

    # --- where things are -------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        assert self.demo.state is not None
        return [n.name for n in self.demo.state.nodes]

    def address(self, name: str) -> str:
        a = self.demo.node(name).address
        assert a is not None
        return a

    def netns(self, name: str) -> str:
        ns = self.demo.node(name).netns
        assert ns is not None
        return ns

    @property
    def etcd_addresses(self) -> list[str]:
        """etcd's addresses: the bridge's (one member in the root namespace), or every member's."""
        assert self.demo.lab is not None and self.demo.state is not None
        return [m.address for m in self.demo.state.etcd_members] or [self.demo.lab.gateway]

    @property
    def client_address(self) -> str:
        assert self.demo.lab is not None
        from pgha.demo.state import CLIENT_HOST

        return self.demo.lab.address(CLIENT_HOST)

    def leader(self) -> str:
        view = settled_view(self.demo)
        assert view.leader is not None, "no leader to aim at"
        return view.leader.name

    def replica(self) -> str:
        lead = self.leader()
        return self.rng.choice(sorted(n for n in self.nodes if n != lead))

    def peers(self, name: str) -> list[str]:
        return [self.address(n) for n in self.nodes if n != name]

    # --- network ----------------------------------------------------------------------
    def _cut(self, name: str, drop_from: list[str], drop_to: list[str], detail: str) -> Target:
        ns = self.netns(name)
        netfault.cut(ns, drop_from, drop_to)
        return Target(name, lambda: netfault.heal(ns), detail)

    def _everyone(self, name: str) -> list[str]:
        return [*self.etcd_addresses, self.client_address, *self.peers(name)]

    def part_leader_all(self) -> Target:
        n = self.leader()
        return self._cut(n, self._everyone(n), self._everyone(n), "etcd, peers and clients")

    def part_leader_etcd(self) -> Target:
        n = self.leader()
        return self._cut(n, self.etcd_addresses, self.etcd_addresses, "etcd")

    def part_leader_peers(self) -> Target:
        n = self.leader()
        return self._cut(n, self.peers(n), self.peers(n), "peers")

    def part_leader_clients(self) -> Target:
        n = self.leader()
        return self._cut(n, [self.client_address], [self.client_address], "clients")

    def part_replica(self) -> Target:
        n = self.replica()
        return self._cut(n, self._everyone(n), self._everyone(n), "etcd, peers and clients")

    def part_asymmetric(self) -> Target:
        """The leader hears nobody (etcd, peers, clients) but its packets still go out."""
        n = self.leader()
        return self._cut(n, self._everyone(n), [], "inbound only")

    def part_leader_etcd_and_one_peer(self) -> Target:
        """A bridge: the leader still reaches one replica, which still reaches etcd."""
        n = self.leader()
        cut_peer = self.rng.choice(sorted(p for p in self.nodes if p != n))
        dropped = [*self.etcd_addresses, self.address(cut_peer)]
        return self._cut(n, dropped, dropped, f"etcd and {cut_peer}")

    # --- processes --------------------------------------------------------------------
    def kill_agent(self) -> Target:
        n = self.leader()
        self.demo.reap(self.demo.node(n).agent_pid, signal.SIGKILL, timeout=5)
        return Target(n, lambda: restart_node(self.demo, n), "SIGKILL, restarted at heal")

    def stop_agent(self) -> Target:
        n = self.leader()
        pid = self.demo.node(n).agent_pid
        os.kill(pid, signal.SIGSTOP)
        return Target(n, lambda: os.kill(pid, signal.SIGCONT), "SIGSTOP, SIGCONT at heal")

    def kill_postmaster(self) -> Target:
        n = self.leader()
        pm = postmaster_pid(self.demo, n)
        if pm is not None and pid_alive(pm):
            os.kill(pm, signal.SIGKILL)
        return Target(n, lambda: None, f"SIGKILL of postmaster {pm}; the agent restarts it")

    def freeze_host(self) -> Target:
        n = self.leader()
        pids = freeze_host(self.demo, n)
        return Target(n, lambda: signal_all(pids, signal.SIGCONT), "every process SIGSTOP, SIGCONT at heal")

    def kill_host(self) -> Target:
        n = self.leader()
        kill_host(self.demo, n)
        return Target(n, lambda: restart_node(self.demo, n), "every process SIGKILL, agent restarted at heal")

    def freeze_replica_host(self) -> Target:
        n = self.replica()
        pids = host_pids(self.demo, n)
        signal_all(pids, signal.SIGSTOP)
        return Target(n, lambda: signal_all(pids, signal.SIGCONT), "every process SIGSTOP, SIGCONT at heal")

    def stop_etcd(self) -> Target:
        """All of etcd stops answering (every member, when there are several)."""
        assert self.demo.state is not None
        pids = [m.pid for m in self.demo.state.etcd_members] or [self.demo.state.etcd_pid]
        signal_all(pids, signal.SIGSTOP)
        return Target(None, lambda: signal_all(pids, signal.SIGCONT), "etcd SIGSTOP, SIGCONT at heal")

    # --- operator requests during faults ------------------------------------------------
    def _request(self, kind: str, candidate: str | None) -> str:
        lead = self.leader()
        sw = Switchover(id=uuid.uuid4().hex, kind="failover" if kind == "failover" else "switchover",
                        leader=lead, candidate=candidate)
        made = self.demo.store().set_switchover(sw)
        return f"{kind} {lead} -> {candidate or 'any'} {'requested' if made else 'refused (one pending)'}"

    def switchover_replica_cut(self) -> Target:
        """A replica is cut from everything, then a switchover (any candidate) is requested."""
        t = self.part_replica()
        time.sleep(0.5)
        t.detail = f"{t.node} cut; " + self._request("switchover", None)
        return t

    def failover_to_cut_replica(self) -> Target:
        """A failover to a replica that is cut from its peers and the clients (but not etcd)."""
        n = self.replica()
        dropped = [self.client_address, *self.peers(n)]
        t = self._cut(n, dropped, dropped, "")
        time.sleep(0.5)
        t.detail = f"{n} cut from peers and clients; " + self._request("failover", n)
        return t

    def switchover_leader_etcd_blip(self) -> Target:
        """A switchover requested, then the leader loses etcd for a while."""
        detail = self._request("switchover", None)
        time.sleep(self.rng.uniform(0.0, 1.5))
        t = self.part_leader_etcd()
        t.detail = detail + "; leader cut from etcd"
        return t

    # --- etcd members (the 3-member etcd lab) -------------------------------------------
    # --- etcd members (`--etcd-members 3`: one namespace per member) ---------------------
    def _member(self) -> tuple[str, str, int]:
        assert self.demo.state is not None
        m = self.rng.choice(self.demo.state.etcd_members)
        return m.name, m.netns, m.pid

    def stop_etcd_member(self) -> Target:
        name, _, pid = self._member()
        os.kill(pid, signal.SIGSTOP)
        return Target(None, lambda: os.kill(pid, signal.SIGCONT), f"{name} SIGSTOP, SIGCONT at heal")

    def part_etcd_member(self) -> Target:
        """One member cut from the other members and every node (packets dropped in its namespace)."""
        assert self.demo.state is not None
        name, netns, _ = self._member()
        others = [m.address for m in self.demo.state.etcd_members if m.name != name]
        everyone = [*others, *(self.address(n) for n in self.nodes)]
        netfault.cut(netns, everyone, everyone)
        return Target(None, lambda: netfault.heal(netns), f"{name} cut from its peers and the nodes")

    def kinds(self) -> dict[str, Callable[[], Target]]:
        """Every kind this cluster can have: the etcd member faults need `--etcd-members` > 1."""
        assert self.demo.state is not None
        table = KINDS | (ETCD_MEMBER_KINDS if len(self.demo.state.etcd_members) > 1 else {})
        found: dict[str, Callable[[], Target]] = {kind: getattr(self, method) for kind, method in table.items()}
        if self.demo.backup:
            from pgha.faults import backupfaults

            found |= backupfaults.kinds(self)
        return found


# Fault kind -> the Nemesis method that starts it.
KINDS = {
    "part-leader-all": "part_leader_all",
    "part-leader-etcd": "part_leader_etcd",
    "part-leader-peers": "part_leader_peers",
    "part-leader-clients": "part_leader_clients",
    "part-leader-etcd+peer": "part_leader_etcd_and_one_peer",
    "part-replica": "part_replica",
    "part-asymmetric": "part_asymmetric",
    "kill-agent": "kill_agent",
    "stop-agent": "stop_agent",
    "kill-postmaster": "kill_postmaster",
    "freeze-host": "freeze_host",
    "kill-host": "kill_host",
    "freeze-replica-host": "freeze_replica_host",
    "stop-etcd": "stop_etcd",
    "switchover+replica-cut": "switchover_replica_cut",
    "failover-to-cut-replica": "failover_to_cut_replica",
    "switchover+etcd-blip": "switchover_leader_etcd_blip",
}

# Only on a cluster with several etcd members (`pgha-faults ... --etcd-members 3`).
ETCD_MEMBER_KINDS = {
    "stop-etcd-member": "stop_etcd_member",
    "part-etcd-member": "part_etcd_member",
}


def heal_network(demo: DemoCluster) -> None:
    """Remove every drop table (after a crash of the runner, or before a rebuild)."""
    if demo.state is not None:
        for ns in [n.netns for n in demo.state.nodes] + [m.netns for m in demo.state.etcd_members]:
            if ns:
                netfault.heal(ns)


def settled_view(demo: DemoCluster, timeout: float = 30.0) -> ClusterView:
    """The cluster as the DCS holds it, read again while the DCS does not answer: an etcd member
    fault just healed can leave etcd electing its leader for a moment ("leader changed")."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return demo.view()
        except DCSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
