"""Executor handlers for the PostgreSQL actions; the long ones run as background tasks."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from pgha.agent.executor import NONE, ActionFailed, ActionSkipped, Executor, Outcomes, handles, remote_upstream
from pgha.backup.command import BackupError
from pgha.core import actions as A
from pgha.core import memory as M
from pgha.core import standby
from pgha.core.model import ClusterView, LocalState, TaskKind
from pgha.core.syncrep import names_for_primary, render_names
from pgha.dcs.base import DCSError
from pgha.dcs.store import HistoryEntry
from pgha.postgres.common import Upstream
from pgha.postgres.layout import Layout
from pgha.postgres.node import PostgresError
from pgha.postgres.rewind import fork_point

if TYPE_CHECKING:
    from pgha.agent.agent import Agent

log = logging.getLogger("pgha.agent")


@handles(A.InitDB)
def _initdb(ex: Executor, a: A.InitDB, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    pg = agent.ports.pg

    def work() -> str:
        if agent.config.bootstrap.method == "pgbackrest":
            return _restore(agent)
        sid = pg.initdb()
        # No standby exists yet, so nothing can be acknowledged elsewhere: start asynchronous
        # (with '*' creating the replication role would wait forever); the sync plan takes over.
        pg.configure(agent.parameters(), None, "")
        agent.report(M.SyncNamesSet(""), M.ParamsApplied(agent.params_key()))
        pg.start(agent.start_timeout())
        pg.bootstrap_roles()
        if agent.ports.archive is not None:
            # The member that initializes the cluster creates the stanza; a failure is logged, not
            # fatal: the cluster serves, and archive_command keeps retrying until it exists.
            try:
                log.info("backup: %s", agent.ports.archive.create_stanza())
                agent.archived_timeline = 1
            except BackupError as exc:
                log.error("backup: %s; create it with 'pgha backup stanza-create'", exc)
        return f"system identifier {sid}"

    return ex.task(TaskKind.INITDB, work)


def _restore(agent: Agent) -> str:
    """bootstrap.method pgbackrest: the new cluster's first member restores from the repository."""
    from pgha.backup.restore import RestoreError, parse_target, restore_into

    src = agent.config.bootstrap.pgbackrest
    assert src is not None
    try:
        target = parse_target(src.target_time, src.target_lsn, src.target_name)
        sid = restore_into(agent.config, src.stanza, target, agent.parameters(),
                           lambda text: log.info("restore: %s", text))
    except RestoreError as exc:
        raise ActionFailed(str(exc)) from None
    agent.report(M.SyncNamesSet(""), M.ParamsApplied(agent.params_key()))
    return f"restored from stanza {src.stanza} (system identifier {sid})"


@handles(A.Clone)
def _clone(ex: Executor, a: A.Clone, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    pg = agent.ports.pg
    source = ex.upstream(view, a.source)
    assert source is not None
    # A clone from a member tagged clonefrom then streams from the leader; one from our replicatefrom
    # member (the core chose it because it streams) streams from it.
    cascade = agent.config.tags.replicatefrom == source.name
    upstream = source if cascade else ex.upstream(view, view.leader.name if view.leader else None) or source

    def work() -> str:
        how = f"cloned from {source.name}"
        try:
            if from_repository(agent):
                how = "restored from the repository (no base backup from the primary), following " + source.name
            else:
                pg.clone(source, agent.clone_progress)
        except PostgresError:
            agent.report(M.CloneFailed(ex.now))
            raise
        pg.configure(agent.parameters(), upstream)
        agent.report(M.ParamsApplied(agent.params_key()), M.CloneProgressed(""))
        pg.start(agent.start_timeout())
        return how

    return ex.task(TaskKind.CLONE, work)


def push_ready(agent: Agent, before: str) -> None:
    """A former primary's WAL that never reached the archive goes there before ``before`` replaces
    pg_wal; a repository that cannot take it is logged, not waited for (the member must rejoin)."""
    if agent.ports.archive is None:
        return
    try:
        pushed = agent.ports.archive.push_ready()
    except BackupError as exc:
        log.error("backup: could not push the unarchived WAL before %s: %s", before, exc)
        return
    if pushed:
        log.info("backup: pushed %d unarchived WAL file(s) to the repository before %s", pushed, before)


def confirm_archive(agent: Agent) -> None:
    """After a promotion, in its own thread (writes never wait for it): pgbackrest check switches
    WAL and waits until that segment is archived; the archiver sends the new timeline's .history
    first, so both are in the repository once it passes.  Published as archived_timeline."""
    archive = agent.ports.archive
    if archive is None:
        return

    def run() -> None:
        for attempt in range(10):
            try:
                timeline = archive.check()
            except BackupError as exc:
                log.warning("backup: archive check after the promotion failed (%s); retrying", exc)
                time.sleep(min(30.0, 2.0 * (attempt + 1)))
                continue
            agent.archived_timeline = max(agent.archived_timeline, timeline)
            log.info("backup: timeline %d's history and switch segment are in the repository", timeline)
            if agent.gap_thread is not None:
                agent.gap_thread.request()
            agent.wake()
            return
        log.error("backup: the new timeline never reached the repository; check archiving")

    threading.Thread(target=run, name="archive-check", daemon=True).start()


def from_repository(agent: Agent) -> bool:
    """postgresql.create_replica_methods in order: True once pgbackrest built the data directory;
    False to use pg_basebackup (next in the list, or pgbackrest failed and basebackup follows)."""
    methods = agent.config.postgresql.create_replica_methods
    if agent.ports.archive is None or "pgbackrest" not in methods or methods.index("pgbackrest") != 0:
        return False

    def say(text: str) -> None:
        pct = text.rsplit(" ", 1)[-1]
        if pct.endswith("%") and pct[:-1].isdigit():
            agent.clone_progress(int(pct[:-1]), 100, text)

    try:
        agent.ports.archive.restore_replica(say)
        return True
    except BackupError as exc:
        if "basebackup" not in methods:
            raise PostgresError(f"create replica from the repository: {exc}") from None
        log.warning("backup: %s; falling back to pg_basebackup", exc)
        where = agent.ports.pg.wipe()
        log.info("moved the partial restore aside to %s", where)
        return False


@handles(A.WipeDataDir)
def _wipe(ex: Executor, a: A.WipeDataDir, view: ClusterView, local: LocalState) -> Outcomes:
    ex.agent.ports.pg.stop("immediate", 10)
    push_ready(ex.agent, "the clone")
    where = ex.agent.ports.pg.wipe()
    log.warning("moved the data directory aside to %s: %s", where, a.reason)
    ex.agent.ports.tasks.forget()
    return NONE


@handles(A.Rewind)
def _rewind(ex: Executor, a: A.Rewind, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    pg = agent.ports.pg
    source = ex.upstream(view, a.source)
    assert source is not None

    def work() -> str:
        push_ready(agent, "pg_rewind")
        pg.rewind(source)
        pg.configure(agent.parameters(), source)
        if source.remote is not None:
            record_remote_fork(ex, local)
        return f"rewound against {source.name}"

    return ex.task(TaskKind.REWIND, work)


def record_remote_fork(ex: Executor, local: LocalState) -> None:
    """demote-cluster: the other site's timeline forked off ours where its history file says; record it
    in /history, so that our replicas that went past that point know they diverged and rewind."""
    old = local.pg.timeline
    fork = fork_point(Layout.of(ex.agent.config), old) if old else None
    if old is None or fork is None:
        return
    try:
        ex.agent.store.append_history(HistoryEntry(
            timeline=old, lsn=fork, at=ex.agent.ports.clock.time(), new_leader=local.name, kind="demote-cluster",
            reason=f"demote-cluster: the other site's timeline forked off timeline {old} here"))
    except DCSError as exc:
        log.warning("could not record where the other site's timeline forked off ours: %s", exc)


@handles(A.StartPostgres)
def _start(ex: Executor, a: A.StartPostgres, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    pg = agent.ports.pg
    upstream = ex.upstream(view, a.upstream) if a.role == "replica" else None
    sync = names_for_primary(view, agent.cluster_config, local.name) if a.role == "primary" else ""

    def work() -> str:
        pg.configure(agent.parameters(), upstream, sync, standby=a.role == "replica")
        agent.report(M.ParamsApplied(agent.params_key()))
        pg.start(agent.start_timeout())
        return f"started as {a.role}" + (f" following {upstream.name}" if upstream else "")

    outcomes = [M.SyncNamesSet(sync)] if a.role == "primary" else []
    ex.task(TaskKind.START, work)
    return outcomes


@handles(A.StopPostgres)
def _stop(ex: Executor, a: A.StopPostgres, view: ClusterView, local: LocalState) -> Outcomes:
    pg = ex.agent.ports.pg
    if a.checkpoint_first:
        pg.checkpoint()
    ex.agent.remember([ex.stopping()])
    pg.stop(a.mode, ex.agent.cluster_config.retry_timeout * 10)
    return NONE


@handles(A.Checkpoint)
def _checkpoint(ex: Executor, a: A.Checkpoint, view: ClusterView, local: LocalState) -> Outcomes:
    ex.agent.ports.pg.checkpoint()
    return NONE


@handles(A.RestartPostgres)
def _restart(ex: Executor, a: A.RestartPostgres, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    pg = agent.ports.pg
    # A replica restarts from where it streams now (the leader, or its replicatefrom member).
    now_from = local.pg.configured_upstream
    source = now_from if now_from in view.members and now_from != local.name else \
        (view.leader.name if view.leader else None)
    upstream = ex.upstream(view, source) if (local.pg.in_recovery and source and source != local.name) else None
    sync = agent.memory.sync_names if not local.pg.in_recovery else ""
    upstream = upstream or ex.standby_leader_source(view, local)

    def work() -> str:
        agent.report(ex.stopping())
        pg.stop("fast", agent.cluster_config.retry_timeout * 10)
        pg.configure(agent.parameters(), upstream, sync, standby=bool(local.pg.in_recovery))
        agent.report(M.ParamsApplied(agent.params_key()))
        pg.start(agent.start_timeout())
        return "restarted"

    return ex.task(TaskKind.RESTART, work)


@handles(A.ReloadPostgres)
def _reload(ex: Executor, a: A.ReloadPostgres, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    configured = local.pg.configured_upstream
    upstream = ex.upstream(view, configured) if local.pg.in_recovery and \
        (configured in view.members or configured == standby.REMOTE) else None
    agent.ports.pg.configure(agent.parameters(), upstream, agent.memory.sync_names,
                             standby=bool(local.pg.in_recovery))
    agent.ports.pg.reload()
    return [M.ParamsApplied(agent.params_key())]


@handles(A.Fence)
def _fence(ex: Executor, a: A.Fence, view: ClusterView, local: LocalState) -> Outcomes:
    log.warning("fencing: %s; stopping PostgreSQL immediately", a.reason)
    pg = ex.agent.ports.pg
    ex.agent.remember([ex.stopping()])
    try:
        pg.stop("immediate", 5)  # kills what still runs after the timeout
    except PostgresError as exc:
        log.error("fencing: %s", exc)
    return NONE


@handles(A.PrePromote)
def _pre_promote(ex: Executor, a: A.PrePromote, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent

    def work() -> str:
        if not agent.ports.callbacks.pre_promote("primary"):
            agent.report(M.PromoteVetoed(ex.now))
            raise ActionFailed("the pre_promote hook vetoed the promotion")
        return "the pre_promote hook allows the promotion"

    ex.task(TaskKind.PRE_PROMOTE, work)
    return [M.PrePromoteStarted()]


@handles(A.Promote)
def _promote(ex: Executor, a: A.Promote, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    pg = agent.ports.pg
    sync = agent.cluster_config.synchronous_mode != "off"

    def work() -> str:
        if sync:
            # Until /sync names our standbys, block commits rather than acknowledge them alone.
            pg.configure(agent.parameters(), None, "*", standby=True)
            pg.reload()
        pg.promote(agent.cluster_config.retry_timeout * 10)
        confirm_archive(agent)
        return "promoted"

    ex.task(TaskKind.PROMOTE, work)
    return [M.SyncNamesSet("*")] if sync else NONE


@handles(A.Follow)
def _follow(ex: Executor, a: A.Follow, view: ClusterView, local: LocalState) -> Outcomes:
    upstream = ex.upstream(view, a.upstream)
    log.info("now following %s", a.upstream)
    return _stream_from(ex, upstream, view, local)


def _stream_from(ex: Executor, upstream: Upstream | None, view: ClusterView, local: LocalState) -> Outcomes:
    """Rewrite primary_conninfo for ``upstream``; reload, or restart where a changed setting needs it."""
    agent = ex.agent
    if agent.ports.pg.configure(agent.parameters(), upstream, "", standby=True):
        return _restart(ex, A.RestartPostgres(), view, local)
    agent.ports.pg.reload()
    return [M.ParamsApplied(agent.params_key())]


@handles(A.NextSource)
def _next_source(ex: Executor, a: A.NextSource, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    turn = agent.memory.source_turn + 1
    sc = standby.rotated(agent.cluster_config.standby_cluster, turn)
    upstream = remote_upstream(sc)
    log.warning("not streaming from the other site for %.0f s: trying its hosts from %s:%d on",
                ex.now - (local.not_streaming_since or ex.now), upstream.host, upstream.port)
    return [M.SourceTurned(turn, ex.now), *_stream_from(ex, upstream, view, local)]


@handles(A.SyncSlots)
def _slots(ex: Executor, a: A.SyncSlots, view: ClusterView, local: LocalState) -> Outcomes:
    if ex.agent.memory.slots_applied == a.members:
        return NONE
    if not ex.agent.ports.pg.sync_slots(a.members, a.keep):
        return NONE  # a slot to drop is still in use: the next loop tries again
    return [M.SlotsApplied(a.members)]


@handles(A.ManageSlots)
def _manage_slots(ex: Executor, a: A.ManageSlots, view: ClusterView, local: LocalState) -> Outcomes:
    """Quick steps now; copies of logical slots from the primary in a task (they restart PostgreSQL).
    A failure here never holds up the rest of the loop's upkeep."""
    agent = ex.agent
    pg = agent.ports.pg
    quick = tuple(o for o in a.ops if o.kind != "copy")
    copies = [o.name for o in a.ops if o.kind == "copy"]
    try:
        if quick:
            pg.manage_slots(quick)
    except PostgresError as exc:
        raise ActionSkipped(str(exc)) from None
    leader = ex.upstream(view, view.leader.name if view.leader else None)
    if not copies or leader is None or agent.ports.tasks.busy():
        return NONE
    upstream = ex.upstream(view, local.pg.configured_upstream)

    def work() -> str:
        states = pg.read_slot_states(leader, copies)
        if not states:
            return "no logical slot to copy from the primary"
        agent.report(ex.stopping())
        pg.stop("fast", agent.cluster_config.retry_timeout * 10)
        try:
            pg.install_slot_states(states)
        finally:
            pg.configure(agent.parameters(), upstream, "", standby=True)
            agent.report(M.ParamsApplied(agent.params_key()))
            pg.start(agent.start_timeout())
        return f"copied logical slots {', '.join(sorted(states))} from {leader.name} (restarted to load them)"

    log.info("copying logical slots %s from %s; restarting to load them", ", ".join(copies), leader.name)
    return ex.task(TaskKind.RESTART, work)


@handles(A.SetSyncStandbys)
def _set_sync(ex: Executor, a: A.SetSyncStandbys, view: ClusterView, local: LocalState) -> Outcomes:
    agent = ex.agent
    value = "*" if a.standbys == ("*",) else render_names(a.standbys, a.quorum, a.mode)
    agent.remember([M.SyncNamesSet(value)])
    agent.ports.pg.configure(agent.parameters(), None, value)
    agent.ports.pg.reload()
    log.info("synchronous_standby_names = %r", value)
    return NONE


