"""The agent's outside world, as narrow interfaces: each one has a real adapter and, in the
simulation (tests/unit/sim/), a fake driven by a virtual clock.

The agent and the executor only ever talk to these.  ``build_ports`` wires the real
adapters from a node configuration; tests build ``Ports`` themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pgha.config import NodeConfig
from pgha.core.actions import SlotOp
from pgha.core.model import LocalPostgres, MemberInfo, PeerStatus, TaskKind, TaskState
from pgha.dcs.base import KV
from pgha.postgres.common import Progress, Upstream


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


class Postgres(Protocol):
    """This node's PostgreSQL (``pgha.postgres.node.PostgresNode``)."""

    def observe(self) -> LocalPostgres: ...

    def live_lsn(self) -> int | None: ...

    def postmaster_pid(self) -> int | None: ...

    def initdb(self) -> str: ...

    def bootstrap_roles(self) -> None: ...

    def clone(self, source: Upstream, progress: Progress) -> None: ...

    def rewind(self, source: Upstream) -> None: ...

    def wipe(self) -> str: ...

    def configure(self, parameters: Mapping[str, str | int | float | bool], upstream: Upstream | None,
                  synchronous_standby_names: str = "", standby: bool | None = None) -> bool: ...

    def start(self, timeout: float) -> None: ...

    def stop(self, mode: str, timeout: float) -> None: ...

    def reload(self) -> None: ...

    def promote(self, timeout: float) -> None: ...

    def checkpoint(self) -> None: ...

    def sync_slots(self, members: tuple[str, ...], keep: tuple[str, ...] = ()) -> None: ...

    def manage_slots(self, ops: tuple[SlotOp, ...]) -> None: ...

    def read_slot_states(self, leader: Upstream, names: list[str]) -> dict[str, bytes]: ...

    def install_slot_states(self, states: dict[str, bytes]) -> None: ...

    def set_peers(self, peers: frozenset[tuple[str, int]]) -> None: ...


class Tasks(Protocol):
    """One long action at a time, in the background (``pgha.agent.tasks.TaskRunner``)."""

    @property
    def state(self) -> TaskState | None: ...

    def busy(self) -> bool: ...

    def start(self, kind: TaskKind, fn: Callable[[], str | None]) -> bool: ...

    def forget(self) -> None: ...


class Poller(Protocol):
    """Asks the other members how far they got and whether they live (``pgha.agent.peers``)."""

    def poll(self, members: list[MemberInfo]) -> dict[str, PeerStatus]: ...

    def close(self) -> None: ...


class Failsafe(Protocol):
    """During a DCS outage: ask every other member to confirm ``leader`` (POST /failsafe)."""

    def confirm_all(self, members: Sequence[MemberInfo], leader: str) -> bool: ...


class WatchdogPort(Protocol):
    @property
    def armed_pid(self) -> int | None: ...

    def start(self) -> None: ...

    def arm(self, postmaster_pid: int, deadline: float) -> None: ...

    def rearm(self, deadline: float) -> None:
        """Move the deadline of what is armed (the lease was renewed); nothing when disarmed."""

    def disarm(self) -> None: ...

    def stop(self) -> None: ...


class VipPort(Protocol):
    def ensure(self, present: bool) -> None: ...

    def close(self) -> None: ...


class Bouncer(Protocol):
    def pause(self, timeout: float = ...) -> object: ...

    def resume(self) -> object: ...

    def repoint(self, host: str, port: int) -> object: ...


class Exits(Protocol):
    """Wakes the agent when one of the given processes exits (``pgha.agent.exits``)."""

    def watch(self, pids: set[int]) -> None: ...

    def close(self) -> None: ...


class Callbacks(Protocol):
    def fire(self, event: str, role: str) -> None: ...

    def pre_promote(self, role: str = "primary") -> bool: ...

    def run(self, event: str, role: str) -> object: ...


class Archive(Protocol):
    """pgBackRest on this member (``pgha.backup.member.MemberArchive``), with backup: configured."""

    def prepare(self) -> None: ...

    def create_stanza(self) -> str: ...

    def restore_replica(self, say: Callable[[str], None]) -> None: ...

    def push_ready(self) -> int: ...

    def check(self) -> int: ...


@dataclass
class Ports:
    kv: KV
    pg: Postgres
    tasks: Tasks
    poller: Poller
    failsafe: Failsafe
    callbacks: Callbacks
    watchdog: WatchdogPort | None = None
    vip: VipPort | None = None
    bouncer: Bouncer | None = None
    exits: Exits | None = None
    archive: Archive | None = None
    clock: Clock = SystemClock()


def build_ports(config: NodeConfig, wake: Callable[[], None]) -> Ports:
    """The real adapters for one node (``wake`` runs the next loop early: a task ended)."""
    import logging

    from pgha.agent.exits import ExitWatcher
    from pgha.agent.failsafe import HttpFailsafe
    from pgha.agent.peers import PeerPoller
    from pgha.agent.tasks import TaskRunner
    from pgha.agent.watchdog import Watchdog
    from pgha.dcs.factory import open_kv
    from pgha.postgres.node import PostgresNode
    from pgha.routing.callbacks import CallbackRunner

    vip_cidr = (f"{config.vip.address}/{config.vip.prefix}", config.vip.interface) if config.vip else None
    ports = Ports(
        kv=open_kv(config.dcs),
        pg=PostgresNode(config),
        tasks=TaskRunner(wake),
        poller=PeerPoller(config.api),
        failsafe=HttpFailsafe(config.api),
        callbacks=CallbackRunner(config.callbacks, config.cluster, logging.getLogger("pgha.agent")),
        watchdog=Watchdog(vip_cidr) if config.watchdog.mode == "on" else None,
        exits=ExitWatcher(wake),
    )
    if config.vip is not None:
        from pgha.routing.vip import Vip

        ports.vip = Vip(config.vip)
    if config.pgbouncer is not None:
        from pgha.routing.pgbouncer import PgBouncer

        ports.bouncer = PgBouncer(config.pgbouncer)
    if config.backup is not None:
        from pgha.backup.member import MemberArchive

        ports.archive = MemberArchive(config)
    return ports
