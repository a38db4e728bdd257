"""Fake I/O adapters for the simulation: one simulated host's PostgreSQL, task runner, peer
poller, failsafe client, watchdog, VIP and hooks, all on the cluster's virtual clock.

They implement the agent's ports (``pgha.agent.ports``): the real ``Agent`` and the real
executor run on top of them.  Nothing here decides anything: they only model what the
outside world does when the agent asks it to.

A simulated PostgreSQL keeps its WAL as a list of write ids (``BYTES`` each).  Ids are unique,
so two WALs holding the same id at the same position share the whole prefix up to it:
streaming, cloning and rewinding all copy prefixes.  Promote starts a new timeline;
pg_rewind truncates to the common prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pgha.core.actions import SlotOp
from pgha.core.model import (
    DataDir,
    LocalPostgres,
    MemberInfo,
    PeerStatus,
    PgRunState,
    Replication,
    TaskKind,
    TaskState,
)
from pgha.postgres.common import PostgresError, Progress, Upstream

if TYPE_CHECKING:
    from tests.unit.sim.cluster import Cluster, SimNode

BYTES = 1000  # bytes per write
SYSTEM_ID = "7300000000000000042"
# Virtual seconds each background action takes.
TASK_SECONDS = {
    TaskKind.INITDB: 1.0,
    TaskKind.CLONE: 1.5,
    TaskKind.REWIND: 0.5,
    TaskKind.START: 0.5,
    TaskKind.PROMOTE: 0.3,
    TaskKind.RESTART: 0.8,
    TaskKind.PRE_PROMOTE: 0.2,
}


class VirtualClock:
    """Monotonic and wall-clock time are the same virtual seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix (ids are unique: the prefix property is monotone)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[mid - 1] == b[mid - 1]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def parse_ssn(ssn: str) -> tuple[int, frozenset[str]]:
    head, _, rest = ssn.partition(" (")
    names = frozenset(s.strip().strip('"') for s in rest.rstrip(")").split(","))
    return int(head.split()[1]), names


@dataclass
class PgState:
    """The simulated server and its data directory (outlives the agent: a host restart keeps it)."""

    data: DataDir = DataDir.EMPTY
    system_id: str | None = None
    running: bool = False
    in_recovery: bool = False
    timeline: int = 1
    wal: list[int] = field(default_factory=list)
    upstream: str | None = None
    streaming_from: str | None = None
    control: str | None = None
    ssn: str = ""
    pid: int = 0
    # What the configuration files say (applied at start, and by a reload where PostgreSQL does).
    conf_standby: bool = False
    conf_upstream: str | None = None
    conf_ssn: str = ""

    @property
    def lsn(self) -> int:
        return len(self.wal) * BYTES

    @property
    def writable(self) -> bool:
        return self.running and not self.in_recovery

    def halt(self, clean: bool) -> None:
        if self.running:
            if self.writable:
                self.control = "shut down" if clean else "in production"
            else:
                self.control = "shut down in recovery"
        self.running = False
        self.streaming_from = None


class SimPostgres:
    """The Postgres port over a PgState, as PostgresNode drives a real server."""

    def __init__(self, cluster: Cluster, node: SimNode) -> None:
        self.cluster = cluster
        self.node = node

    @property
    def st(self) -> PgState:
        return self.node.pg

    def observe(self) -> LocalPostgres:
        pg = self.st
        c = self.cluster
        streaming = pg.running and pg.in_recovery and pg.streaming_from is not None
        replication = tuple(
            Replication(n.name, "streaming", c.sync_state(self.node, n.name), n.pg.lsn, n.pg.lsn)
            for n in c.standbys_of(self.node)
        ) if pg.writable else ()
        valid = pg.data == DataDir.VALID
        return LocalPostgres(
            data_dir=pg.data,
            system_id=pg.system_id,
            run_state=PgRunState.RUNNING if pg.running else PgRunState.STOPPED,
            in_recovery=pg.in_recovery if pg.running else None,
            timeline=pg.timeline if valid else None,
            wal_lsn=pg.lsn if valid and not (pg.running and pg.in_recovery) else None,
            received_lsn=pg.lsn if pg.running and pg.in_recovery else None,
            replayed_lsn=pg.lsn if pg.running and pg.in_recovery else None,
            receiver_status="streaming" if streaming else None,
            following=pg.streaming_from if streaming else None,
            configured_upstream=pg.conf_upstream if pg.conf_standby else None,
            control_state=("in production" if not pg.in_recovery else "in archive recovery") if pg.running
            else pg.control,
            replication=replication,
            synchronous_standby_names=pg.ssn if pg.writable else "",
        )

    def live_lsn(self) -> int | None:
        return self.st.lsn if self.st.running else None

    def postmaster_pid(self) -> int | None:
        return self.st.pid if self.st.running else None

    def initdb(self) -> str:
        if self.st.data != DataDir.EMPTY:
            raise PostgresError("initdb: data directory is not empty")
        self.node.pg = PgState(data=DataDir.VALID, system_id=SYSTEM_ID, control="shut down")
        return SYSTEM_ID

    def bootstrap_roles(self) -> None:
        pass

    def clone(self, source: Upstream, progress: Progress) -> None:
        src = self.cluster.nodes.get(source.name)
        if src is None or not src.alive or not src.pg.running:
            raise PostgresError(f"pg_basebackup: could not connect to {source.name}")
        self.node.pg = PgState(data=DataDir.VALID, system_id=src.pg.system_id, timeline=src.pg.timeline,
                               wal=list(src.pg.wal), control="in archive recovery")

    def rewind(self, source: Upstream) -> None:
        src = self.cluster.nodes.get(source.name)
        pg = self.st
        if src is None or not src.alive or not src.pg.running or pg.running:
            raise PostgresError(f"pg_rewind: cannot rewind against {source.name}")
        pg.wal = pg.wal[: common_prefix(pg.wal, src.pg.wal)]
        pg.timeline = src.pg.timeline
        pg.control = "shut down in recovery"

    def wipe(self) -> str:
        self.node.pg = PgState()
        return f"/sim/{self.node.name}/data.failed"

    def configure(self, parameters: Mapping[str, str | int | float | bool], upstream: Upstream | None,
                  synchronous_standby_names: str = "", standby: bool | None = None) -> bool:
        pg = self.st
        pg.conf_standby = upstream is not None if standby is None else standby
        pg.conf_upstream = upstream.name if upstream is not None else None
        pg.conf_ssn = synchronous_standby_names
        return False

    def start(self, timeout: float) -> None:
        pg = self.st
        if pg.data != DataDir.VALID:
            raise PostgresError("pg_ctl start: no data directory")
        if pg.running:
            raise PostgresError("pg_ctl start: another server might be running")
        pg.running = True
        pg.pid = self.cluster.next_pid()
        pg.in_recovery = pg.conf_standby
        pg.upstream = pg.conf_upstream
        pg.ssn = pg.conf_ssn

    def stop(self, mode: str, timeout: float) -> None:
        pg = self.st
        if mode == "fast" and pg.writable:
            # A clean shutdown of a primary waits until connected standbys received all WAL.
            for standby in self.cluster.standbys_of(self.node):
                if self.cluster.clock.now >= standby.stalled_until:
                    standby.pg.wal = list(pg.wal)
        pg.halt(clean=mode == "fast")

    def reload(self) -> None:
        pg = self.st
        if pg.running:
            pg.ssn = pg.conf_ssn
            if pg.in_recovery:
                pg.upstream = pg.conf_upstream

    def promote(self, timeout: float) -> None:
        pg = self.st
        if not pg.running or not pg.in_recovery:
            raise PostgresError("promote: the server is not a running standby")
        pg.ssn = pg.conf_ssn
        pg.in_recovery = False
        pg.timeline += 1
        pg.upstream = None
        pg.streaming_from = None
        self.cluster.promoted(self.node)

    def checkpoint(self) -> None:
        if not self.st.running:
            raise PostgresError("checkpoint: the server is not running")

    def sync_slots(self, members: tuple[str, ...], keep: tuple[str, ...] = ()) -> None:
        pass  # slots only retain WAL; the simulation never recycles WAL

    def set_peers(self, peers: frozenset[tuple[str, int]]) -> None:
        pass  # no password file: the simulated members need none

    def manage_slots(self, ops: tuple[SlotOp, ...]) -> None:
        pass  # the simulation has no permanent slots

    def read_slot_states(self, leader: Upstream, names: list[str]) -> dict[str, bytes]:
        return {}

    def install_slot_states(self, states: dict[str, bytes]) -> None:
        pass


@dataclass
class SimTask:
    kind: TaskKind
    done_at: float
    fn: Callable[[], str | None]
    # Whether a promotion in this task is a failover (not a switchover).
    failover: bool


class SimTasks:
    """One background action at a time; it runs when its virtual time is up."""

    def __init__(self, cluster: Cluster, node: SimNode) -> None:
        self.cluster = cluster
        self.node = node
        self.task: SimTask | None = None
        self.result: TaskState | None = None

    @property
    def state(self) -> TaskState | None:
        return TaskState(self.task.kind, running=True) if self.task is not None else self.result

    def busy(self) -> bool:
        return self.task is not None

    def start(self, kind: TaskKind, fn: Callable[[], str | None]) -> bool:
        if self.task is not None:
            return False
        agent = self.node.agent
        view = agent.view if agent is not None else None
        failover = view is not None and view.switchover is None and view.system_id is not None
        self.task = SimTask(kind, self.cluster.clock.now + TASK_SECONDS[kind], fn, failover)
        self.result = None
        return True

    def forget(self) -> None:
        if self.task is None:
            self.result = None

    def finish_due(self) -> None:
        task = self.task
        if task is None or self.cluster.clock.now < task.done_at:
            return
        self.task = None
        self.node.promotion_is_failover = task.failover
        try:
            detail = task.fn() or ""
            self.result = TaskState(task.kind, running=False, ok=True, detail=detail)
        except Exception as exc:  # as TaskRunner: a failure is data for the next decision
            self.result = TaskState(task.kind, running=False, ok=False, detail=str(exc))
        self.cluster.log(f"{self.node.name}: {task.kind.value} {'done' if self.result.ok else 'FAILED'}"
                         + (f" ({self.result.detail})" if not self.result.ok else ""))
        if self.node.agent is not None:
            self.node.agent.wake()


class SimPoller:
    def __init__(self, cluster: Cluster, node: SimNode) -> None:
        self.cluster = cluster
        self.node = node

    def poll(self, members: list[MemberInfo]) -> dict[str, PeerStatus]:
        return {m.name: self.cluster.status_of(m.name) for m in members if m.name in self.cluster.nodes}

    def close(self) -> None:
        pass


class SimFailsafe:
    """POST /failsafe to each member: its real agent answers (as its REST API would)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def confirm_all(self, members: Sequence[MemberInfo], leader: str) -> bool:
        for m in members:
            other = self.cluster.nodes.get(m.name)
            if other is None or not other.agent_runs or other.agent is None:
                return False
            if not other.agent.failsafe_confirm(leader):
                return False
        return True


class SimWatchdog:
    """The watchdog process: fences PostgreSQL when its deadline passes (the cluster checks it)."""

    def __init__(self) -> None:
        self.armed_pid: int | None = None
        self.deadline: float | None = None

    def start(self) -> None:
        pass

    def arm(self, postmaster_pid: int, deadline: float) -> None:
        self.armed_pid, self.deadline = postmaster_pid, deadline

    def rearm(self, deadline: float) -> None:
        if self.armed_pid is not None:
            self.deadline = deadline

    def disarm(self) -> None:
        self.armed_pid, self.deadline = None, None

    def stop(self) -> None:
        self.disarm()


class SimVip:
    def __init__(self, node: SimNode) -> None:
        self.node = node

    def ensure(self, present: bool) -> None:
        self.node.vip = present

    def close(self) -> None:
        pass


class SimCallbacks:
    """Hooks do nothing, except a pre_promote that vetoes when the node is set to."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def fire(self, event: str, role: str) -> None:
        pass

    def pre_promote(self, role: str = "primary") -> bool:
        return not self.node.vetoes

    def run(self, event: str, role: str) -> object:
        return None
