"""The agent: one HA loop of observe -> decide -> execute, plus its helper threads.

Threads:
* the HA loop (this module's ``run``), woken early by DCS watches and finished tasks;
* the lease keeper (``lease.py``), which renews the member lease every ttl/3
  whatever the loop is doing, and re-arms the watchdog after each renewal;
* the DCS watch, which only wakes the loop (the loop always re-reads everything);
* one background task at a time (``tasks.py``): initdb, clone, rewind, start, promote;
* the REST API server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from dataclasses import replace
from typing import Any

import urllib3
from prometheus_client import CollectorRegistry

from pgha import __version__
from pgha.agent.executor import Executor
from pgha.agent.lease import LeaseKeeper
from pgha.agent.peers import PeerPoller
from pgha.agent.tasks import TaskRunner
from pgha.agent.watchdog import Watchdog
from pgha.api.handle import NodeSnapshot
from pgha.api.metrics import AgentMetrics
from pgha.api.server import ApiServer
from pgha.config import NodeConfig
from pgha.core.actions import Decision
from pgha.core.decide import decide
from pgha.core.model import (
    ClusterConfig,
    ClusterView,
    DataDir,
    LocalState,
    MemberInfo,
    PeerStatus,
    PgRunState,
    Role,
    TaskKind,
)
from pgha.core.syncrep import render_names
from pgha.dcs.base import DCSError
from pgha.dcs.etcd import EtcdKV
from pgha.dcs.store import ClusterStore
from pgha.postgres.node import PostgresNode
from pgha.routing.callbacks import CallbackRunner

log = logging.getLogger("pgha.agent")

TASK_STATES = {
    TaskKind.INITDB: "initializing",
    TaskKind.CLONE: "creating replica",
    TaskKind.REWIND: "rewinding",
    TaskKind.START: "starting",
    TaskKind.STOP: "stopping",
    TaskKind.PROMOTE: "promoting",
    TaskKind.RESTART: "restarting",
    TaskKind.PRE_PROMOTE: "running pre_promote",
}


class Agent:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.kv = EtcdKV(config.etcd.endpoints, config.etcd.request_timeout)
        self.store = ClusterStore(self.kv, config.cluster, config.etcd.prefix)
        self.pg = PostgresNode(config)
        self.registry = CollectorRegistry()
        self.tasks = TaskRunner(self.wake)
        self.poller = PeerPoller()
        self.executor = Executor(self)
        self.callbacks = CallbackRunner(config.callbacks, config.cluster, log)
        vip = (f"{config.vip.address}/{config.vip.prefix}", config.vip.interface) if config.vip else None
        self.watchdog = Watchdog(vip) if config.watchdog.mode == "on" else None
        self.vip: Any = None
        self.bouncer: Any = None
        if config.vip is not None:
            from pgha.routing.vip import Vip

            self.vip = Vip(config.vip)
        if config.pgbouncer is not None:
            from pgha.routing.pgbouncer import PgBouncer

            self.bouncer = PgBouncer(config.pgbouncer)
        self.cluster_config: ClusterConfig = config.cluster_config
        self.lease = LeaseKeeper(self.kv, self.cluster_config.ttl, self._on_lease_renewed)

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._snapshot = NodeSnapshot(None, None, None, None, self.cluster_config, False, time.monotonic())
        self.metrics = AgentMetrics(self.registry)
        self.api: ApiServer | None = None

        # State the agent remembers between loops (fed back into LocalState).
        self.view: ClusterView | None = None
        self.peers: dict[str, PeerStatus] = {}
        self.peers_at = 0.0
        # The DCS revision of the view the last poll was made against.
        self.peers_revision = 0
        self.down_since: float | None = None
        self.not_streaming_since: float | None = None
        self.expected_stop_at = 0.0
        self.announced_role: str | None = None
        self.pgbouncer_paused_for = ""
        self.bouncer_target: str | None = None
        self.done_intents: set[str] = set()
        self.params_applied: str = ""
        self.slots_applied: tuple[str, ...] | None = None
        self.sync_names = ""
        self.promote_vetoed = False
        self.promote_vetoed_at = 0.0
        self.clone_failed_at = 0.0
        self.clone_progress_text = ""
        self.failsafe_deadline: float | None = None
        self.failsafe_leader: tuple[str, float] | None = None
        self.vip_held: bool | None = None
        self.vip_checked_at = 0.0
        # (id, outcome) of the last switchover this agent ended, published in its member key.
        self.last_switchover: tuple[str, str] = ("", "")
        self.history_key: tuple[int, int] | None = None
        self.forks: dict[int, int] = {}
        self.last_leader: str | None = None
        self.last_rule = ""
        self.last_logged: tuple[str, tuple[str, ...]] = ("", ())
        self.published: MemberInfo | None = None
        self.published_at = 0.0
        self.http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=0.5, read=1.0),
                                        ca_certs=(self.config.api.tls.cafile or None) if self.config.api.tls else None)

    # --- small helpers used by the executor ------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def count_action(self, name: str, ok: bool) -> None:
        self.metrics.count_action(name, ok)

    def on_task_started(self, kind: TaskKind) -> None:
        self.publish_now()

    def expect_stop(self) -> None:
        """The agent itself is stopping PostgreSQL: this is not a crash."""
        self.expected_stop_at = time.monotonic()

    def parameters(self) -> dict[str, str | int | float | bool]:
        params: dict[str, str | int | float | bool] = dict(self.cluster_config.parameters)
        params.update(self.config.postgresql.parameters)
        return params

    def params_key(self) -> str:
        return json.dumps(self.parameters(), sort_keys=True, default=str)

    def start_timeout(self) -> float:
        return max(60.0, self.cluster_config.primary_start_timeout)

    def sync_names_for_primary(self, view: ClusterView) -> str:
        """What a primary starts with: the published synchronous set, or '*' to block until one is."""
        mode = self.cluster_config.synchronous_mode
        if mode == "off":
            self.sync_names = ""
        elif view.sync is not None and view.sync.leader == self.config.name and view.sync.standbys:
            kind = "any" if mode == "quorum" else "first"
            self.sync_names = render_names(view.sync.standbys, view.sync.quorum, kind)
        else:
            self.sync_names = "*"
        return self.sync_names

    def clone_progress(self, done: int, total: int | None, message: str) -> None:
        pct = f"{100 * done // total}%" if total else f"{done // 1024} kB"
        text = f"creating replica ({pct})"
        if text != self.clone_progress_text:
            self.clone_progress_text = text
            log.info("cloning: %s of %s", pct, f"{total // 1024} kB" if total else "?")
            self.publish_now()

    def set_vip(self, present: bool) -> None:
        if self.vip is None:
            return
        now = time.monotonic()
        # Re-check the interface every 10 s in case someone removed the address by hand.
        if self.vip_held == present and now - self.vip_checked_at < 10:
            return
        self.vip.ensure(present)
        if self.vip_held != present:
            log.info("virtual IP %s %s", self.config.vip.address if self.config.vip else "",
                     "added" if present else "removed")
        self.vip_held = present
        self.vip_checked_at = now

    def arm_watchdog(self) -> None:
        if self.watchdog is None:
            return
        pid = self.pg.postmaster_pid()
        deadline = self._fence_deadline()
        if pid and deadline is not None:
            self.watchdog.arm(pid, deadline)

    def _fence_deadline(self) -> float | None:
        """When the watchdog must fence: halfway into the fence margin before the lease can end."""
        deadline = self.lease.deadline
        if self.failsafe_deadline is not None and self.cluster_config.failsafe_mode:
            deadline = max(deadline or 0.0, self.failsafe_deadline)
        if deadline is None:
            return None
        return deadline - self.cluster_config.fence_margin / 2

    def _on_lease_renewed(self, deadline: float) -> None:
        if self.watchdog is not None and self.watchdog.armed_pid is not None:
            fd = self._fence_deadline()
            if fd is not None:
                self.watchdog.arm(self.watchdog.armed_pid, fd)

    def poll_peers(self, view: ClusterView) -> None:
        others = [m for m in view.members.values() if m.name != self.config.name]
        self.peers = self.poller.poll(others)
        self.peers_at = time.monotonic()
        self.peers_revision = view.revision
        self.wake()

    def request_failsafe(self, view: ClusterView) -> None:
        """DCS down: every member must confirm us; then we may outlive our lease by one ttl."""
        sent = time.monotonic()
        others = [m for m in view.members.values() if m.name != self.config.name]
        body = json.dumps({"leader": self.config.name}).encode()
        headers = {"Content-Type": "application/json"}
        auth = self.config.api.credentials
        if auth is not None:
            headers.update(urllib3.make_headers(basic_auth=f"{auth.username}:{auth.password}"))
        for m in others:
            try:
                r = self.http.request("POST", m.api_url + "/failsafe", body=body, headers=headers)
            except urllib3.exceptions.HTTPError as exc:
                log.warning("failsafe: %s did not answer (%s)", m.name, type(exc).__name__)
                return
            if r.status != 200:
                log.warning("failsafe: %s refused to confirm us (HTTP %s)", m.name, r.status)
                return
        self.failsafe_deadline = sent + self.cluster_config.ttl
        self.arm_watchdog()

    def live_lsn(self) -> int | None:
        return self.pg.live_lsn()

    def failsafe_confirm(self, leader: str) -> bool:
        """A leader cut off from the DCS asks us to confirm it (AgentHandle)."""
        # The latest loop's view: it says whether *we* can reach the DCS right now.
        view = self.snapshot().view
        if view is None or view.dcs_error is None:
            # We can reach the DCS, so the lease decides; do not vouch for anyone.
            return False
        if view.leader is None or view.leader.name != leader:
            return False
        self.failsafe_leader = (leader, time.monotonic() + self.cluster_config.ttl)
        return True

    # --- observe ----------------------------------------------------------------------
    def read_view(self) -> ClusterView:
        try:
            view = self.store.read()
        except DCSError as exc:
            last = self.view or ClusterView(name=self.config.cluster)
            return replace(last, dcs_error=str(exc))
        key = (view.leader.mod_revision if view.leader else 0, len(view.members))
        if key != self.history_key:
            with contextlib.suppress(DCSError):
                entries = self.store.history()
                self.forks = {e.timeline: e.lsn for e in entries if e.kind != "bootstrap"}
                self.last_leader = entries[-1].new_leader if entries else None
                self.history_key = key
        view = replace(view, forks=self.forks, last_leader=self.last_leader)
        self.view = view
        return view

    def observe(self, view: ClusterView, now: float) -> LocalState:
        pg = self.pg.observe()
        running = pg.run_state == PgRunState.RUNNING
        if running or self.tasks.busy():
            self.down_since = None
        elif self.down_since is None:
            self.down_since = now
        pg = replace(pg, down_since_mono=self.down_since)
        if pg.run_state == PgRunState.STOPPED and self.down_since is not None \
                and self.expected_stop_at < self.down_since - 1 and self.announced_role == "primary":
            pg = replace(pg, run_state=PgRunState.CRASHED)
        streaming = running and pg.in_recovery and pg.receiver_status == "streaming"
        if running and pg.in_recovery and not streaming:
            self.not_streaming_since = self.not_streaming_since or now
        else:
            self.not_streaming_since = None
        if self.promote_vetoed and ((view.leader is not None and view.leader.name != self.config.name)
                                    or now - self.promote_vetoed_at > self.cluster_config.ttl):
            # A veto holds for this election: until another member leads, or for one ttl (then
            # the hook is asked again, should nobody else have been able to take over).
            self.promote_vetoed = False
        peers = self.peers if now - self.peers_at < max(1.0, self.cluster_config.loop_wait) else {}
        fl = self.failsafe_leader
        return LocalState(
            name=self.config.name,
            pg=pg,
            tags=self.config.tags,
            lease_deadline=self.lease.deadline,
            lease_id=self.lease.lease_id,
            task=self.tasks.state,
            peers=peers,
            peers_revision=self.peers_revision if peers else 0,
            failsafe_deadline=self.failsafe_deadline,
            failsafe_leader=fl[0] if fl else None,
            failsafe_leader_until=fl[1] if fl else None,
            promote_vetoed=self.promote_vetoed,
            pre_promote_hook=bool(self.config.callbacks.pre_promote),
            done_intents=frozenset(self.done_intents),
            clone_backoff=now - self.clone_failed_at < 10 if self.clone_failed_at else False,
            wall_now=time.time(),
            pgbouncer_paused_for=self.pgbouncer_paused_for,
            announced_role=self.announced_role,
            config_applied=not self.params_applied or self.params_applied == self.params_key(),
            not_streaming_since=self.not_streaming_since,
        )

    # --- publish -------------------------------------------------------------------------
    def member_info(self, local: LocalState, decision: Decision | None) -> MemberInfo:
        pg = local.pg
        task = local.task
        if task is not None and task.running:
            state = self.clone_progress_text if task.kind == TaskKind.CLONE and self.clone_progress_text \
                else TASK_STATES.get(task.kind, task.kind.value)
        elif pg.run_state == PgRunState.RUNNING:
            state = "streaming" if pg.in_recovery and pg.receiver_status == "streaming" else "running"
        else:
            state = pg.run_state.value
        if pg.run_state == PgRunState.RUNNING:
            role = Role.REPLICA if pg.in_recovery else Role.PRIMARY
        elif pg.data_dir == DataDir.VALID:
            role = Role.REPLICA
        else:
            role = Role.UNINITIALIZED
        api = self.config.api
        pgc = self.config.postgresql
        return MemberInfo(
            name=self.config.name, role=role, state=state, timeline=pg.timeline,
            wal_lsn=pg.wal_lsn if not pg.in_recovery else None,
            received_lsn=pg.received_lsn, replayed_lsn=pg.replayed_lsn,
            api_url=api.url, host=pgc.connect_host, port=pgc.connect_port, tags=self.config.tags,
            rule_id=decision.rule_id if decision else "", reason=decision.reason if decision else "",
            pending_restart=pg.pending_restart,
            following=pg.following if pg.in_recovery else None,
            lease_id=self.lease.lease_id, pgbouncer_paused_for=self.pgbouncer_paused_for,
            pgbouncer=self.bouncer is not None, version=__version__, promote_vetoed=self.promote_vetoed,
            last_switchover_id=self.last_switchover[0], last_switchover_outcome=self.last_switchover[1],
            config_revision=self.view.config_revision if self.view is not None else 0,
        )

    def publish(self, info: MemberInfo, force: bool = False) -> None:
        """Write members/<name> when something significant changed, and LSNs every ttl/3.

        Every write wakes every other agent through its watch, so publishing each loop
        would make the agents wake each other in a cycle.
        """
        now = time.monotonic()
        last = self.published
        lsn_only = last is not None and replace(
            info, wal_lsn=last.wal_lsn, received_lsn=last.received_lsn, replayed_lsn=last.replayed_lsn) == last
        if not force and last is not None and (info == last or (lsn_only
                                                and now - self.published_at < self.cluster_config.ttl / 3)):
            return
        try:
            self.store.publish_member(info, self.lease.lease_id)
            self.published, self.published_at = info, now
        except DCSError as exc:
            log.warning("could not publish member state: %s", exc)

    def publish_now(self) -> None:
        snap = self.snapshot()
        if snap.local is None:
            return
        self.publish(self.member_info(snap.local, snap.decision), force=True)

    def snapshot(self) -> NodeSnapshot:
        with self._lock:
            return self._snapshot

    # --- the loop ------------------------------------------------------------------------
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

    def run_once(self) -> Decision:
        now = time.monotonic()
        view = self.read_view()
        # Before the cluster is initialized its configuration is the one this node will seed.
        self.cluster_config = view.config if view.system_id else self.config.cluster_config
        self.lease.ttl = self.cluster_config.ttl
        local = self.observe(view, now)
        decision = decide(view, local, self.cluster_config, now)
        logged = (decision.rule_id, tuple(a.name for a in decision.actions))
        if logged != self.last_logged:
            log.info("[%s] %s -> %s", decision.rule_id, decision.reason, ", ".join(logged[1]) or "nothing")
            self.last_logged = logged
        self.last_rule = decision.rule_id
        if local.task is not None and not local.task.running and decision.rule_id not in (
                "replica-start-rewound", "replica-rewind-failed-clone", "replica-rewind-failed-stay"):
            self.tasks.forget()
        self.executor.run(decision, view, local)
        holds = view.leader is not None and view.leader.name == self.config.name and \
            (local.lease_deadline or 0) > time.monotonic()
        with self._lock:
            self._snapshot = NodeSnapshot(view, local, decision, self.member_info(local, decision),
                                          self.cluster_config, holds, time.monotonic())
        if view.dcs_error is None:
            self.publish(self.member_info(local, decision))
        self.metrics.observe_loop(self.snapshot())
        return decision

    def _watch(self) -> None:
        revision = 0
        while not self._stop.is_set():
            try:
                if revision == 0:
                    revision = self.store.read().revision + 1
                revision = self.store.watch(revision, self.wake, self._stop)
            except DCSError:
                revision = 0
                self._stop.wait(1.0)

    def run(self) -> None:
        """Run until SIGTERM/SIGINT; then stop PostgreSQL and leave the cluster cleanly."""
        log.info("pgha %s agent %s of cluster %s starting", __version__, self.config.name, self.config.cluster)
        # The API answers (503 on every check) even before etcd is reachable.
        self.api = ApiServer(self)
        self.api.start()
        view = self.wait_for_dcs()
        mine = view.leader.lease_id if view.leader and view.leader.name == self.config.name else 0
        if not mine and self.vip is not None:
            # Not the leader: an address left from an earlier life (e.g. the watchdog was off when
            # the agent died) goes before any rule runs; not every early rule touches the VIP.
            try:
                self.set_vip(False)
            except OSError as exc:
                log.warning("could not check the virtual IP: %s", exc)
        self.lease.adopt_or_grant(mine)
        self.lease.start(lambda: max(0.2, min(self.cluster_config.ttl / 3, self.cluster_config.loop_wait * 2)))
        if self.watchdog is not None:
            self.watchdog.start()
        threading.Thread(target=self._watch, name="dcs-watch", daemon=True).start()
        while not self._stop.is_set():
            try:
                decision = self.run_once()
            except Exception:
                log.exception("HA loop failed; retrying")
                decision = Decision((), "error", "loop failed", None)
            if self.lease.replaced.is_set():
                # A new lease: the member key bound to the old one is gone; publish again.
                self.lease.replaced.clear()
                self.published = None
                continue
            self._wake.wait(decision.wake_in if decision.wake_in is not None else self.cluster_config.loop_wait)
            self._wake.clear()
        self.shutdown()

    def request_stop(self, *_: object) -> None:
        self._stop.set()
        self._wake.set()

    def shutdown(self) -> None:
        """Fence before releasing: stop PostgreSQL, drop the VIP, then the leader key and lease."""
        log.info("shutting down: stopping PostgreSQL")
        leading = self.view is not None and self.view.leader is not None and \
            self.view.leader.name == self.config.name
        self.expect_stop()
        try:
            self.pg.stop("fast", 60)
        except Exception as exc:
            log.error("could not stop PostgreSQL cleanly (%s); stopping immediately", exc)
            with contextlib.suppress(Exception):
                self.pg.stop("immediate", 10)
        with contextlib.suppress(Exception):
            self.set_vip(False)
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.vip is not None:
            with contextlib.suppress(Exception):
                self.vip.close()
        if leading:
            with contextlib.suppress(DCSError):
                self.store.release_leader(self.config.name)
        self.lease.stop(revoke=True)
        if self.announced_role is not None and self.config.callbacks.on_stop:
            # Run now rather than queued behind a slow hook; after the key is released, so the hook
            # (bounded by callbacks.timeout) does not delay the next leader.
            self.callbacks.run("on_stop", self.announced_role)
        self.poller.close()
        if self.api is not None:
            self.api.stop()
        log.info("stopped")


def install_signal_handlers(agent: Agent) -> None:
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
