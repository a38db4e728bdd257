"""A deterministic virtual-time simulation of a pgha cluster running the REAL agent.

Each simulated host runs ``pgha.agent.Agent`` and its real executor, over the fake adapters of
``fakes.py`` and the real ``ClusterStore`` over a shared ``MemoryKV`` (through a per-host link
that a partition can cut).  The cluster plays what the agent's threads and the outside world
do: it renews each lease on the lease keeper's schedule, runs each loop when the agent asked
for it (or at once when a watch would have woken it), finishes background tasks when their
virtual time is up, fires watchdogs, streams WAL and writes to the primary.

Invariants, checked at every tick:
* never two writable primaries, and a writable primary's lease is alive in the DCS (so the
  fence margin is respected); the VIP is never on two live hosts;
* a failover never promotes a node lagging more than maximum_lag_on_failover behind any
  running node;
* in synchronous modes, every acknowledged write is in the WAL of every node when it becomes
  primary.

A failing run prints the trace: every decision (virtual time, node, rule id, actions), every
warning the agents logged, and every fault.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from pgha.agent.agent import Agent
from pgha.agent.lease import next_renewal_in
from pgha.agent.ports import Ports
from pgha.config import ApiConfig, CallbacksConfig, NodeConfig, PostgresConfig
from pgha.core.model import ClusterConfig, ClusterView, DataDir, PeerStatus, Switchover, Tags
from pgha.dcs.base import KV, DCSError
from pgha.dcs.memory import MemoryKV
from pgha.dcs.store import ClusterStore
from tests.unit.sim.fakes import (
    PgState,
    SimCallbacks,
    SimFailsafe,
    SimPoller,
    SimPostgres,
    SimTasks,
    SimVip,
    SimWatchdog,
    VirtualClock,
    common_prefix,
    parse_ssn,
)

TICK = 0.1
CLUSTER = "sim"


class Invariant(AssertionError):
    pass


class NodeKV:
    """The shared MemoryKV through one host's network link: every call fails while cut off."""

    def __init__(self, kv: MemoryKV, node: SimNode) -> None:
        self._kv = kv
        self._node = node

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._kv, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            if self._node.dcs_cut:
                raise DCSError(f"{self._node.name} is cut off from the DCS (simulated partition)")
            return attr(*args, **kw)

        return call


@dataclass
class SimNode:
    name: str
    tags: Tags = field(default_factory=Tags)
    pg: PgState = field(default_factory=PgState)
    # The host is up (agent and PostgreSQL can run); False: a dead host.
    alive: bool = True
    # The agent process is stopped (SIGSTOP); PostgreSQL and the watchdog keep running.
    frozen: bool = False
    dcs_cut: bool = False
    # Its pre_promote hook vetoes every promotion.
    vetoes: bool = False
    vip: bool = False
    agent: Agent | None = None
    # The agent waits for the DCS before its first loop (as Agent.run's wait_for_dcs).
    begun: bool = False
    tasks: SimTasks | None = None
    watchdog: SimWatchdog | None = None
    next_loop: float = 0.0
    next_renew: float = 0.0
    seen_revision: int = 0
    last_rule: str = ""
    promotion_is_failover: bool = False
    # Replication throughput (writes per tick) and a stall until this time.
    rate: int = 3
    stalled_until: float = -1.0

    @property
    def agent_runs(self) -> bool:
        return self.alive and not self.frozen and self.agent is not None and self.begun


class TraceHandler(logging.Handler):
    """The agents' log lines go into the newest cluster's trace, tagged with the host whose loop runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        if ACTIVE:
            c = ACTIVE[-1]
            c.log(f"{c.current}   {record.getMessage()}")


# The cluster being simulated (its trace receives the agents' log lines).
ACTIVE: list[Cluster] = []


class Cluster:
    def __init__(self, n: int, cfg: ClusterConfig, seed: int = 0, tags: dict[str, Tags] | None = None) -> None:
        self.clock = VirtualClock()
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.kv = MemoryKV(clock=self.clock.monotonic)
        self.nodes: dict[str, SimNode] = {}
        for i in range(n):
            name = f"n{i + 1}"
            self.nodes[name] = SimNode(name, tags=(tags or {}).get(name, Tags()), next_loop=i * TICK, rate=2 + i % 3)
        self.trace: list[str] = []
        self.current = "-"
        self.write_id = 0
        self._pid = 1000
        # Writes waiting for synchronous acknowledgement: (primary, position, id).
        self.pending: list[tuple[str, int, int]] = []
        self.acked: set[int] = set()
        self.promotions: list[tuple[float, str, int]] = []
        self.rules_seen: set[str] = set()
        self.actions_seen: set[str] = set()
        self.sw_count = 0
        self.dcs_is_down = False
        ACTIVE[:] = [self]

    @property
    def now(self) -> float:
        return self.clock.now

    # --- helpers ---------------------------------------------------------------------------
    def log(self, text: str) -> None:
        self.trace.append(f"{self.now:7.1f} {text}")

    def fail(self, text: str) -> None:
        tail = "\n".join(self.trace[-150:])
        raise Invariant(f"t={self.now:.1f}: {text}\n--- last events ---\n{tail}")

    def next_pid(self) -> int:
        self._pid += 1
        return self._pid

    def node_config(self, node: SimNode) -> NodeConfig:
        return NodeConfig(
            cluster=CLUSTER, name=node.name,
            postgresql=PostgresConfig(data_dir=f"/sim/{node.name}/data", connect_address=f"{node.name}:5432"),
            api=ApiConfig(connect_url=f"http://{node.name}:8008"),
            cluster_config=self.cfg, tags=node.tags,
            callbacks=CallbacksConfig(pre_promote="sim-veto" if node.vetoes else ""),
        )

    def boot(self, node: SimNode) -> None:
        """Start the host's agent (it waits for the DCS before its first loop)."""
        node.tasks = SimTasks(self, node)
        node.watchdog = SimWatchdog()
        ports = Ports(
            kv=cast(KV, NodeKV(self.kv, node)), pg=SimPostgres(self, node), tasks=node.tasks,
            poller=SimPoller(self, node), failsafe=SimFailsafe(self), callbacks=SimCallbacks(node),
            watchdog=node.watchdog, vip=SimVip(node), clock=self.clock,
        )
        node.agent = Agent(self.node_config(node), ports)
        # The cluster plays the agent's DCS watch (see step), so the agent may use a cached view.
        node.agent.watching = True
        node.begun = False
        self.try_begin(node)

    def try_begin(self, node: SimNode) -> None:
        assert node.agent is not None
        try:
            with self.running(node):
                node.agent.begin(node.agent.store.read())
        except DCSError:
            return  # wait_for_dcs: try again next tick
        node.begun = True
        node.next_renew = self.now + self.cfg.renewal_period()
        node.next_loop = max(node.next_loop, self.now)

    @contextmanager
    def running(self, node: SimNode) -> Iterator[None]:
        self.current = node.name
        try:
            yield
        finally:
            self.current = "-"

    # --- faults ------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """Host death: the agent, its watchdog and PostgreSQL are gone at once."""
        node = self.nodes[name]
        if not node.alive:
            return
        self.log(f"FAULT kill {name} (agent and PostgreSQL)")
        node.alive = False
        node.pg.halt(clean=False)
        node.agent = node.tasks = node.watchdog = None
        node.vip = False

    def restart(self, name: str) -> None:
        node = self.nodes[name]
        if node.alive:
            return
        self.log(f"FAULT restart {name}")
        node.alive, node.frozen = True, False
        node.next_loop = self.now + TICK
        self.boot(node)

    def freeze(self, name: str, frozen: bool) -> None:
        node = self.nodes[name]
        if node.alive and node.frozen != frozen:
            self.log(f"FAULT {'freeze' if frozen else 'thaw'} agent {name} (PostgreSQL keeps running)")
            node.frozen = frozen
            if not frozen:
                node.next_renew = min(node.next_renew, self.now)
                node.next_loop = min(node.next_loop, self.now + TICK)

    def cut(self, name: str, cut: bool) -> None:
        node = self.nodes[name]
        if node.dcs_cut != cut:
            self.log(f"FAULT {'cut' if cut else 'reconnect'} {name} {'from' if cut else 'to'} the DCS")
            node.dcs_cut = cut

    def dcs_down(self, down: bool) -> None:
        self.log(f"FAULT DCS {'unreachable' if down else 'back'}")
        self.kv.set_unreachable(down)
        self.dcs_is_down = down

    def crash_pg(self, name: str) -> None:
        node = self.nodes[name]
        if node.alive and node.pg.running:
            self.log(f"FAULT PostgreSQL of {name} crashes")
            node.pg.halt(clean=False)

    def set_vetoes(self, name: str) -> None:
        """From now on the host's pre_promote hook vetoes every promotion."""
        node = self.nodes[name]
        node.vetoes = True
        if node.agent is not None:
            node.agent.config = self.node_config(node)

    def stall(self, name: str, seconds: float) -> None:
        self.log(f"FAULT replication to {name} stalls for {seconds:.1f}s")
        self.nodes[name].stalled_until = self.now + seconds

    def request_switchover(self, candidate: str | None = None) -> bool:
        self.sw_count += 1
        try:
            ok = ClusterStore(self.kv, CLUSTER).set_switchover(Switchover(f"sw{self.sw_count}", candidate=candidate))
        except DCSError:
            ok = False
        self.log(f"OPERATOR switchover to {candidate or 'any'}: {'requested' if ok else 'not accepted'}")
        return ok

    def leader(self) -> str | None:
        kvp = self.kv.get(f"/pgha/{CLUSTER}/leader") if not self.dcs_is_down else None
        return kvp.value.decode() if kvp is not None else None

    # --- what the agents' threads and the outside world do -------------------------------------
    def renew(self, node: SimNode) -> None:
        """One round of the lease keeper thread (renew_once, then its wait)."""
        assert node.agent is not None
        with self.running(node):
            node.agent.lease.renew_once()
        failing = node.agent.lease.last_error is not None
        node.next_renew = self.now + next_renewal_in(self.cfg.renewal_period(), failing)

    def status_of(self, name: str) -> PeerStatus:
        """What a poll of ``name`` gets: refused from a dead host, a timeout from a frozen agent."""
        target = self.nodes[name]
        if not target.alive:
            return PeerStatus(name, api="refused", pg="refused")
        pg = "ok" if target.pg.running else "refused"
        if target.frozen or not target.begun:
            return PeerStatus(name, api="timeout" if target.frozen else "ok", pg=pg)
        view = target.agent.view if target.agent is not None else None
        return PeerStatus(
            name, api="ok", pg=pg,
            lsn=target.pg.lsn if target.pg.data == DataDir.VALID else None,
            timeline=target.pg.timeline,
            in_recovery=target.pg.in_recovery if target.pg.running else None,
            sees_leader=view.leader.name if view is not None and view.leader is not None else None,
        )

    def replicate(self) -> None:
        for node in self.nodes.values():
            pg = node.pg
            if not pg.running or not pg.in_recovery:
                pg.streaming_from = None
                continue
            up = self.nodes.get(pg.upstream or "")
            if up is None or not up.alive or not up.pg.running or up is node:
                pg.streaming_from = None
                continue
            src = up.pg
            if common_prefix(pg.wal, src.wal) != len(pg.wal) or src.timeline < pg.timeline:
                pg.streaming_from = None  # diverged: the walreceiver errors out
                continue
            pg.streaming_from = up.name
            pg.timeline = src.timeline
            if self.now >= node.stalled_until:
                pg.wal.extend(src.wal[len(pg.wal): len(pg.wal) + node.rate])

    def write(self) -> None:
        for node in self.nodes.values():
            if node.pg.writable:  # commits reach the local WAL; acknowledgement may wait
                self.write_id += 1
                node.pg.wal.append(self.write_id)
                self.pending.append((node.name, len(node.pg.wal), self.write_id))
        still: list[tuple[str, int, int]] = []
        for name, pos, wid in self.pending:
            node = self.nodes[name]
            if not node.pg.writable or len(node.pg.wal) < pos or node.pg.wal[pos - 1] != wid:
                continue  # the primary went away: never acknowledged
            if self.acknowledged(node, pos):
                self.acked.add(wid)
            else:
                still.append((name, pos, wid))
        self.pending = still

    def standbys_of(self, node: SimNode) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.pg.streaming_from == node.name]

    def acknowledged(self, node: SimNode, pos: int) -> bool:
        ssn = node.pg.ssn
        if not ssn:
            return True
        have = {n.name for n in self.standbys_of(node) if len(n.pg.wal) >= pos}
        if ssn == "*":
            return bool(have)
        count, names = parse_ssn(ssn)
        return len(have & names) >= count

    def sync_state(self, primary: SimNode, name: str) -> str:
        ssn = primary.pg.ssn
        if ssn == "*":
            return "sync"
        _count, names = parse_ssn(ssn) if ssn else (0, frozenset())
        if name not in names:
            return "async"
        return "quorum" if ssn.startswith("ANY") else "sync"

    def watchdogs(self) -> None:
        """As the watchdog process: once its deadline passes while armed it kills the postmaster it was
        armed with (whether or not it still runs) and drops the VIP."""
        for node in self.nodes.values():
            wd = node.watchdog
            if node.alive and wd is not None and wd.deadline is not None and self.now >= wd.deadline:
                self.log(f"WATCHDOG fences {node.name}")
                if node.pg.running and node.pg.pid == wd.armed_pid:
                    node.pg.halt(clean=False)
                wd.disarm()
                node.vip = False

    # --- invariants ---------------------------------------------------------------------------------
    def check(self) -> None:
        writable = [n for n in self.nodes.values() if n.pg.writable]
        if len(writable) > 1:
            self.fail(f"two writable primaries: {[n.name for n in writable]}")
        # A killed node is a dead host: its addresses went with it.
        holders = [n.name for n in self.nodes.values() if n.vip and n.alive]
        if len(holders) > 1:
            self.fail(f"the VIP is on two nodes: {holders}")
        for n in writable:
            # No network latency here, so the local deadline is etcd's own expiry.
            agent = n.agent
            deadline = agent.lease.deadline if agent is not None else None
            failsafe = agent.memory.failsafe_deadline if agent is not None else None
            alive = deadline is not None and self.now < deadline
            covered = self.cfg.failsafe_mode and failsafe is not None and self.now < failsafe
            if not alive and not covered:
                self.fail(f"{n.name} is writable without a live lease (deadline {deadline})")

    def promoted(self, node: SimNode) -> None:
        """Called by the simulated PostgreSQL at the moment ``node`` becomes primary."""
        self.log(f"{node.name} PROMOTED to timeline {node.pg.timeline} at {node.pg.lsn}")
        self.promotions.append((self.now, node.name, node.pg.lsn))
        if node.promotion_is_failover:
            ahead = [
                (n.name, n.pg.lsn) for n in self.nodes.values()
                if n is not node and n.alive and n.pg.running
                and n.pg.lsn - node.pg.lsn > self.cfg.maximum_lag_on_failover
            ]
            if ahead:
                self.fail(f"{node.name} promoted at {node.pg.lsn} lagging behind {ahead} by more than "
                          f"maximum_lag_on_failover ({self.cfg.maximum_lag_on_failover})")
        if self.cfg.synchronous_mode != "off":
            lost = self.acked - set(node.pg.wal)
            if lost:
                self.fail(f"{node.name} promoted without {len(lost)} acknowledged writes (e.g. {sorted(lost)[:5]})")

    # --- the loop --------------------------------------------------------------------------------------
    def step(self) -> None:
        self.clock.now = round(self.now + TICK, 6)
        if not self.dcs_is_down:
            self.kv.expire_leases()
        self.watchdogs()
        for node in self.nodes.values():
            if node.alive and not node.frozen and node.agent is not None and not node.begun:
                self.try_begin(node)
        for node in self.nodes.values():
            if node.agent_runs and self.now >= node.next_renew:
                self.renew(node)
        for node in self.nodes.values():
            if node.agent_runs and node.tasks is not None:
                with self.running(node):
                    node.tasks.finish_due()
        self.replicate()
        self.write()
        self.check()
        revision = self.kv.revision
        for node in list(self.nodes.values()):
            if node.agent_runs and revision > node.seen_revision and not node.dcs_cut:
                # The agent's DCS watch fires: it reads the cluster again and runs its next loop now.
                assert node.agent is not None
                node.agent.on_dcs_change()
                node.next_loop = min(node.next_loop, self.now)
            if node.agent_runs and self.now >= node.next_loop - 1e-9:
                self.loop(node)
        self.check()

    def loop(self, node: SimNode) -> None:
        agent = node.agent
        assert agent is not None
        node.seen_revision = self.kv.revision
        with self.running(node):
            d = agent.run_once()
        self.rules_seen.add(d.rule_id)
        self.actions_seen.update(a.name for a in d.actions)
        if d.actions or d.rule_id != node.last_rule:
            self.log(f"{node.name} [{d.rule_id}] {', '.join(str(a) for a in d.actions) or '-'}")
            node.last_rule = d.rule_id
        wait = TICK if agent.take_wake() else agent.next_wait(d)
        node.next_loop = self.now + max(wait, TICK)

    def run(self, seconds: float, every: Callable[[], None] | None = None) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.step()
            if every is not None:
                every()

    def start(self) -> None:
        for node in self.nodes.values():
            self.boot(node)


@contextmanager
def traced() -> Iterator[None]:
    """Send the agents' log lines (INFO and up) into the trace of the newest cluster."""
    logger = logging.getLogger("pgha")
    handler = TraceHandler()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def view_of(c: Cluster) -> ClusterView:
    return ClusterStore(c.kv, CLUSTER).read()
