"""The agent: a thin loop of observe (I/O) -> advance (pure) -> decide (pure) -> execute (I/O).

* observe: one read of the DCS, one look at PostgreSQL, the background task and the lease;
* advance: ``pgha.core.memory.advance`` folds in what was reported since the last loop
  (action outcomes, finished tasks, API calls) and derives the LocalState;
* decide: ``pgha.core.decide`` picks the rule and its actions;
* execute: ``pgha.agent.executor`` carries them out and reports outcomes.

Everything the agent talks to is a port (``pgha.agent.ports``), so the simulation in
tests/unit/sim/ runs this very loop over fake PostgreSQL, tasks, routing and a virtual clock.

Threads (real ports): the HA loop (``run``), woken early by DCS watches and finished tasks;
the lease keeper (``lease.py``), which renews the lease every ``renew_interval`` (0.35 ttl by
default) whatever the loop does and re-arms the watchdog; the DCS watch; one background task at a time; the REST API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from pgha import __version__
from pgha.agent.executor import Executor
from pgha.agent.exits import walreceiver_pid
from pgha.agent.lease import LeaseKeeper
from pgha.agent.member import member_info
from pgha.agent.ports import Ports, build_ports
from pgha.agent.shutdown import leave
from pgha.api.handle import NodeSnapshot
from pgha.api.metrics import AgentMetrics
from pgha.backup.gapcheck import GapThread, start_gap_thread
from pgha.backup.scheduler import BackupStatus
from pgha.config import NodeConfig
from pgha.core import memory as M
from pgha.core.actions import Decision
from pgha.core.decide import LOOP_FAILED, decide
from pgha.core.model import (
    ClusterConfig,
    ClusterView,
    DataDir,
    LocalPostgres,
    LocalState,
    MemberInfo,
    PgRunState,
    TaskKind,
)
from pgha.core.publish import lsn_publish_due
from pgha.core.slots import slot_parameters
from pgha.core.standby import source_hosts
from pgha.dcs.base import DCSError
from pgha.dcs.store import NO_FORK, ClusterStore
from pgha.upgrade import worker as upgrade_worker
from pgha.upgrade.worker import UpgradeWorker

if TYPE_CHECKING:
    from pgha.api.server import ApiServer

log = logging.getLogger("pgha.agent")

# Seconds between two checks that the VIP is still where we left it (someone may remove it by hand).
VIP_RECHECK = 10.0
# Seconds a cached view may be used when the DCS cannot tell us its revision cheaply.
VIEW_MAX_AGE = 60.0
# How often the agent's DCS watch looks at the stop flag while nothing happens.  Nobody waits for
# that thread (a daemon; shutdown's own deletes wake it anyway), and waking it every second was a
# tenth of an idle agent's CPU.
WATCH_STOP_POLL = 30.0


class Agent:
    def __init__(self, config: NodeConfig, ports: Ports | None = None) -> None:
        self.config = config
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.ports = ports if ports is not None else build_ports(config, self.wake)
        clock = self.ports.clock
        self.store = ClusterStore(self.ports.kv, config.cluster, config.etcd.prefix)
        self.registry = CollectorRegistry()
        self.executor = Executor(self)
        self.cluster_config: ClusterConfig = config.cluster_config
        self.lease = LeaseKeeper(self.ports.kv, self.cluster_config.ttl, self._on_lease_renewed, clock.monotonic)
        self._snapshot = NodeSnapshot(None, None, None, None, self.cluster_config, False, clock.monotonic())
        self.metrics = AgentMetrics(self.registry)
        self.metrics.lease_late.set_function(lambda: self.lease.worst_late)
        self.api: ApiServer | None = None
        # Backups (RPO/RTO, the schedule's decisions): kept current by the backup thread.
        self.backup_status: BackupStatus | None = None

        # The memory between loops lives in the core; only advance/apply change it.
        self.memory = M.AgentMemory()
        # Outcomes reported by other threads (tasks, the API), folded in at the next loop.
        self._inbox: list[M.Outcome] = []
        self._inbox_lock = threading.Lock()
        # This loop's LocalState and decision, for publishing in the middle of executing it.
        self._current: tuple[LocalState, Decision] | None = None
        # The last clone progress reported (the clone task reports each change once).
        self._progress_sent = ""

        # Caches of the DCS adapter side (no decision depends on them).
        self.view: ClusterView | None = None
        # While the DCS watch runs, a view stays current until it reports a change: an idle
        # reconcile then costs the DCS no request.  Set by the watch, cleared by a full read.
        self.watching = False
        self._view_stale = threading.Event()
        self._view_stale.set()
        self._read_at = 0.0
        self._history_key: tuple[int, int, int] | None = None
        self._forks: dict[int, int] = {}
        self._last_leader: str | None = None
        self._last_logged: tuple[str, tuple[str, ...]] = ("", ())
        self.published: MemberInfo | None = None
        self.published_at = 0.0
        # Set by the archive check after a promotion (handlers_postgres.confirm_archive).
        self.archived_timeline = 0
        # The archive gap check (pgha.backup.gapcheck), with backup: configured.
        self.gap_thread: GapThread | None = None
        self.upgrade: UpgradeWorker | None = None  # pgha.upgrade.worker, started by run()

    # --- what the executor, tasks and the API call ---------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def current_rule(self) -> str:
        """The rule of the loop last run ("" before the first)."""
        return self._current[1].rule_id if self._current is not None else ""

    def take_wake(self) -> bool:
        """Whether something asked for the next loop early (and reset that)."""
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

    def report(self, *outcomes: M.Outcome) -> None:
        """From any thread: outcomes for the next loop's ``advance``."""
        with self._inbox_lock:
            self._inbox.extend(outcomes)

    def remember(self, outcomes: Iterable[M.Outcome]) -> None:
        """On the loop thread: fold outcomes into memory now (the core's pure ``apply``)."""
        self.memory = M.apply_all(self.memory, outcomes)

    def _drain(self) -> list[M.Outcome]:
        with self._inbox_lock:
            out, self._inbox = self._inbox, []
        return out

    def count_action(self, name: str, ok: bool) -> None:
        self.metrics.count_action(name, ok)

    def on_task_started(self, kind: TaskKind) -> None:
        self.publish_now()

    def parameters(self) -> dict[str, str | int | float | bool]:
        version = self._current[0].pg.server_version if self._current is not None else 0
        params: dict[str, str | int | float | bool] = slot_parameters(self.cluster_config, version)
        params.update(self.cluster_config.parameters)
        params.update(self.config.postgresql.parameters)
        if self.config.backup is not None:
            from pgha.backup.archive import settings

            params.update(settings(self.config))
        return params

    def params_key(self) -> str:  # a new standby_cluster source rewrites the files too
        return json.dumps(self.parameters(), sort_keys=True, default=str) + repr(self.cluster_config.standby_cluster)

    def start_timeout(self) -> float:
        return max(60.0, self.cluster_config.primary_start_timeout)

    def clone_progress(self, done: int, total: int | None, message: str) -> None:
        """From the clone task: progress for `pgha list` and the log."""
        pct = f"{100 * done // total}%" if total else f"{done // 1024} kB"
        text = f"creating replica ({pct})"
        if text != self._progress_sent:
            self._progress_sent = text
            log.info("cloning: %s of %s", pct, f"{total // 1024} kB" if total else "?")
            self.report(M.CloneProgressed(text))
            self.wake()

    def set_vip(self, present: bool) -> list[M.Outcome]:
        vip = self.ports.vip
        if vip is None:
            return []
        now = self.ports.clock.monotonic()
        m = self.memory
        if m.vip_held == present and m.vip_checked_at is not None and now - m.vip_checked_at < VIP_RECHECK:
            return []
        vip.ensure(present)
        if m.vip_held != present:
            log.info("virtual IP %s %s", self.config.vip.address if self.config.vip else "",
                     "added" if present else "removed")
        return [M.VipSet(present, now)]

    def arm_watchdog(self) -> None:
        if self.ports.watchdog is None:
            return
        pid = self.ports.pg.postmaster_pid()
        deadline = self._fence_deadline()
        if pid and deadline is not None:
            self.ports.watchdog.arm(pid, deadline)

    def _fence_deadline(self) -> float | None:
        """When the watchdog must fence: halfway into the fence margin before the lease can end."""
        deadline = self.lease.deadline
        failsafe = self.memory.failsafe_deadline
        if failsafe is not None and self.cluster_config.failsafe_mode:
            deadline = max(deadline or 0.0, failsafe)
        if deadline is None:
            return None
        return deadline - self.cluster_config.fence_margin / 2

    def _on_lease_renewed(self, deadline: float) -> None:
        wd = self.ports.watchdog
        fd = self._fence_deadline()
        if wd is not None and fd is not None:
            wd.rearm(fd)

    # --- what the REST API calls (AgentHandle) -------------------------------------------
    def live_lsn(self) -> int | None:
        return self.ports.pg.live_lsn()

    def failsafe_confirm(self, leader: str) -> bool:
        """A leader cut off from the DCS asks us to confirm it."""
        # The latest loop's view: it says whether *we* can reach the DCS right now.
        view = self.snapshot().view
        if view is None or view.dcs_error is None:
            # We can reach the DCS, so the lease decides; do not vouch for anyone.
            return False
        if view.leader is None or view.leader.name != leader:
            return False
        self.report(M.VouchedForLeader(leader, self.ports.clock.monotonic() + self.cluster_config.ttl))
        return True

    def snapshot(self) -> NodeSnapshot:
        with self._lock:
            return self._snapshot

    # --- observe ----------------------------------------------------------------------
    def on_dcs_change(self) -> None:
        """The DCS watch saw a change (or broke): the next loop reads the cluster again, now."""
        self._view_stale.set()
        self.wake()

    def _cached_view_current(self) -> bool:
        """Whether the last read still describes the cluster, without asking the DCS."""
        view = self.view
        if not self.watching or view is None or self._view_stale.is_set() or self.lease.last_error is not None:
            return False
        seen = getattr(self.ports.kv, "seen_revision", None)
        if isinstance(seen, int):
            # Every answer (a lease keepalive too) carries the store's revision: anything newer than
            # our read that the watch has not reported yet means we read again.
            return seen <= view.revision
        return self.ports.clock.monotonic() - self._read_at < VIEW_MAX_AGE

    def read_view(self) -> ClusterView:
        if self._cached_view_current():
            assert self.view is not None
            return self.view
        self._view_stale.clear()
        try:
            view = self.store.read()
            self._read_at = self.ports.clock.monotonic()
        except DCSError as exc:
            self._view_stale.set()
            last = self.view or ClusterView(name=self.config.cluster)
            return replace(last, dcs_error=str(exc))
        # /history changes with the leader key, or as a member reaches a newer timeline (demote-cluster).
        key = (view.leader.mod_revision if view.leader else 0, len(view.members),
               max((m.timeline or 0 for m in view.members.values()), default=0))
        if key != self._history_key:
            with contextlib.suppress(DCSError):
                entries = self.store.history()
                self._forks = {e.timeline: e.lsn for e in entries if e.kind not in NO_FORK}
                self._last_leader = entries[-1].new_leader if entries else None
                self._history_key = key
        view = replace(view, forks=self._forks, last_leader=self._last_leader)
        self.view = view
        return view

    def observe(self, view: ClusterView) -> M.Observation:
        # The task first: a task that ends between the two reads leaves PostgreSQL as it left it.
        task = self.ports.tasks.state
        # The password file names the members' addresses (and a standby cluster's source), kept current.
        peers = {(m.host, m.port) for m in view.members.values() if m.host and m.port}
        self.ports.pg.set_peers(frozenset(peers | source_hosts(self.cluster_config.standby_cluster)))
        pg = self.ports.pg.observe()
        if self.ports.exits is not None:
            self.ports.exits.watch(self._processes(pg))
        return M.Observation(
            name=self.config.name, view=view, pg=pg, task=task,
            lease_deadline=self.lease.deadline, lease_id=self.lease.lease_id, tags=self.config.tags,
            config=self.cluster_config, params_key=self.params_key(),
            pre_promote_hook=bool(self.config.callbacks.pre_promote), wall_now=self.ports.clock.time(),
            adopt=self.config.bootstrap.adopt or self._restored(pg),
        )

    def _restored(self, pg: LocalPostgres) -> bool:
        """bootstrap.method pgbackrest and `pgha restore` filled the data directory: take it over as
        an adopted primary (an empty one is restored by the InitDB action)."""
        return self.config.bootstrap.method == "pgbackrest" and pg.data_dir != DataDir.EMPTY

    def _processes(self, pg: LocalPostgres) -> set[int]:
        """The postmaster, and the WAL receiver of a replica: their exit wakes the loop at once."""
        if pg.run_state != PgRunState.RUNNING:
            return set()
        pid = self.ports.pg.postmaster_pid()
        if not pid:
            return set()
        receiver = walreceiver_pid(pid) if pg.in_recovery else None
        return {pid} | ({receiver} if receiver else set())

    # --- publish -------------------------------------------------------------------------
    def member_info(self, local: LocalState, decision: Decision | None) -> MemberInfo:
        return member_info(self.config, local, self.memory, decision,
                           self.view.config_revision if self.view is not None else 0,
                           self.ports.bouncer is not None, self.lease.lease_id, self.cluster_config,
                           self.archived_timeline)

    def publish(self, info: MemberInfo, force: bool = False) -> None:
        """Write members/<name> when something significant changed, and positions that moved as
        ``pgha.core.publish.lsn_publish_due`` says (at most every ttl/3).

        Every write wakes every other agent through its watch, so publishing each loop
        would make the agents wake each other in a cycle.
        """
        now = self.ports.clock.monotonic()
        last = self.published
        if not force and last is not None:
            lsn_only = replace(
                info, wal_lsn=last.wal_lsn, received_lsn=last.received_lsn, replayed_lsn=last.replayed_lsn,
                slots=last.slots, slot_restart=last.slot_restart) == last
            if info == last or (lsn_only and not lsn_publish_due(last, info, now - self.published_at,
                                                                 self.cluster_config)):
                return
        try:
            self.store.publish_member(info, self.lease.lease_id)
            self.published, self.published_at = info, now
        except DCSError as exc:
            log.warning("could not publish member state: %s", exc)

    def publish_now(self) -> None:
        """In the middle of a loop: publish with what the executor reported so far."""
        if self._current is None:
            return
        local, decision = self._current
        self.publish(self.member_info(replace(local, task=self.ports.tasks.state), decision), force=True)

    # --- the loop ------------------------------------------------------------------------
    def run_once(self) -> Decision:
        now = self.ports.clock.monotonic()
        view = self.read_view()
        if self.upgrade is not None:
            self.upgrade.notice(view)
        # Before the cluster is initialized its configuration is the one this node will seed.
        self.cluster_config = view.config if view.system_id else self.config.cluster_config
        self.lease.ttl = self.cluster_config.ttl
        self.memory, local = M.advance(self.memory, self._drain(), self.observe(view), now)
        decision = decide(view, local, self.cluster_config, now)
        logged = (decision.rule_id, tuple(a.name for a in decision.actions))
        if logged != self._last_logged:
            log.info("[%s] %s -> %s", decision.rule_id, decision.reason, ", ".join(logged[1]) or "nothing")
            self._last_logged = logged
        if local.task is not None and not local.task.running and not decision.keeps_task_result:
            self.ports.tasks.forget()
        self._current = (local, decision)
        self.executor.run(decision, view, local)
        holds = view.leader is not None and view.leader.name == self.config.name and \
            (local.lease_deadline or 0) > self.ports.clock.monotonic()
        info = self.member_info(local, decision)
        with self._lock:
            self._snapshot = NodeSnapshot(view, local, decision, info, self.cluster_config, holds,
                                          self.ports.clock.monotonic())
        if view.dcs_error is None:
            self.publish(info)
        self.metrics.observe_loop(self.snapshot())
        if self.lease.replaced.is_set():
            # A new lease: the member key bound to the old one is gone; publish again at once.
            self.lease.replaced.clear()
            self.published = None
            self.wake()
        return decision

    def next_wait(self, decision: Decision) -> float:
        """Seconds until the next loop unless something wakes the agent earlier."""
        return decision.wake_in if decision.wake_in is not None else self.cluster_config.loop_wait

    def begin(self, view: ClusterView) -> None:
        """Before the first loop: keep our lease if the leader key still names us, else a new one."""
        mine = view.leader.lease_id if view.leader and view.leader.name == self.config.name else 0
        if not mine and self.ports.vip is not None:
            # Not the leader: an address left from an earlier life (e.g. the watchdog was off when
            # the agent died) goes before any rule runs; not every early rule touches the VIP.
            try:
                self.remember(self.set_vip(False))
            except OSError as exc:
                log.warning("could not check the virtual IP: %s", exc)
        self.lease.adopt_or_grant(mine)

    def wait_for_dcs(self) -> ClusterView:
        delay = 1.0
        while not self._stop.is_set():
            try:
                return self.store.read()
            except DCSError as exc:
                log.error("%s; retrying in %.0fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        raise SystemExit(0)

    def _watch(self) -> None:
        revision = 0
        self.watching = True
        while not self._stop.is_set():
            try:
                if revision == 0:
                    revision = self.store.read().revision + 1
                revision = self.store.watch(revision, self.on_dcs_change, self._stop, poll=WATCH_STOP_POLL)
            except DCSError:
                revision = 0
                self.on_dcs_change()
                self._stop.wait(1.0)

    def run(self) -> None:
        """Run until SIGTERM/SIGINT; then stop PostgreSQL and leave the cluster cleanly."""
        from pgha.api.server import ApiServer

        log.info("pgha %s agent %s of cluster %s starting", __version__, self.config.name, self.config.cluster)
        # The API answers (503 on every check) even before etcd is reachable.
        self.api = ApiServer(self)
        self.api.start()
        if self.ports.archive is not None:
            try:
                self.ports.archive.prepare()
            except (OSError, ValueError) as exc:
                log.error("backup: cannot write pgbackrest.conf (%s); WAL archiving will fail until fixed", exc)
        if self.config.backup is not None:
            from pgha.backup.scheduler import BackupScheduler

            self.backup_status = self.metrics.backup.status = BackupStatus()
            BackupScheduler(self.store, self.config.name, self.config.postgresql.data_dir, lambda: self.cluster_config,
                            lambda: self.view, self.backup_status).start()
            self.gap_thread = start_gap_thread(self)
        while True:
            try:
                self.begin(self.wait_for_dcs())
                break
            except DCSError as exc:
                # Fix: the DCS stopped answering between the first read and the lease (or refused a
                # new session); the agent died with a traceback instead of waiting like wait_for_dcs.
                log.error("%s; retrying in 1s", exc)
                self._stop.wait(1.0)
        self.lease.start(lambda: self.cluster_config.renewal_period(),
                         lambda: self.cluster_config.keepalive_timeout(self.config.dcs.request_timeout))
        if self.ports.watchdog is not None:
            self.ports.watchdog.start()
        threading.Thread(target=self._watch, name="dcs-watch", daemon=True).start()
        self.upgrade = upgrade_worker.start(self)
        while not self._stop.is_set():
            try:
                decision = self.run_once()
            except Exception:
                log.exception("HA loop failed; retrying")
                decision = LOOP_FAILED
            self._wake.wait(self.next_wait(decision))
            self._wake.clear()
        self.shutdown()

    def request_stop(self, *_: object) -> None:
        self._stop.set()
        self._wake.set()

    def shutdown(self) -> None:
        """Fence before releasing (pgha.agent.shutdown)."""
        leave(self)


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
