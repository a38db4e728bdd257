"""What an agent publishes about itself at members/<name>: built from its loop, pure."""

from __future__ import annotations

from pathlib import Path

from pgha import __version__
from pgha.config import NodeConfig
from pgha.core.actions import Decision
from pgha.core.memory import AgentMemory
from pgha.core.model import BackupEndpoint, ClusterConfig, DataDir, LocalState, MemberInfo, PgRunState, Role, TaskKind
from pgha.core.slots import published_positions, published_restarts

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


def member_info(config: NodeConfig, local: LocalState, memory: AgentMemory, decision: Decision | None,
                config_revision: int, has_bouncer: bool, lease_id: int,
                cluster_config: ClusterConfig | None = None, archived_timeline: int = 0) -> MemberInfo:
    """``cluster_config``: the cluster's (for the permanent slots a primary publishes)."""
    cluster_config = cluster_config or config.cluster_config
    pg = local.pg
    task = local.task
    if task is not None and task.running:
        state = memory.clone_progress if task.kind == TaskKind.CLONE and memory.clone_progress \
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
    pgc = config.postgresql
    return MemberInfo(
        name=config.name, role=role, state=state, timeline=pg.timeline,
        wal_lsn=pg.wal_lsn if not pg.in_recovery else None,
        received_lsn=pg.received_lsn, replayed_lsn=pg.replayed_lsn,
        api_url=config.api.url, host=pgc.connect_host, port=pgc.connect_port, tags=config.tags,
        rule_id=decision.rule_id if decision else "", reason=decision.reason if decision else "",
        pending_restart=pg.pending_restart,
        following=pg.following if pg.in_recovery else None,
        lease_id=lease_id, pgbouncer_paused_for=memory.pgbouncer_paused_for,
        pgbouncer=has_bouncer, version=__version__, promote_vetoed=local.promote_vetoed,
        last_switchover_id=memory.last_switchover_id, last_switchover_outcome=memory.last_switchover_outcome,
        config_revision=config_revision, server_version=pg.server_version,
        slots=published_positions(cluster_config, pg.slots) if role == Role.PRIMARY else {},
        slot_restart=published_restarts(cluster_config, pg.slots) if role == Role.PRIMARY else {},
        backup=backup_endpoint(config), archived_timeline=archived_timeline,
    )


def backup_endpoint(config: NodeConfig) -> BackupEndpoint | None:
    """Where the repository host reaches this member's pgbackrest server (None without backup:)."""
    if config.backup is None:
        return None
    pgc = config.postgresql
    sock = pgc.socket_dir or str(Path(pgc.data_dir).parent / "pg_socket")
    return BackupEndpoint(host=pgc.connect_host, port=config.backup.server_port, data_dir=pgc.data_dir,
                          pg_port=pgc.port, socket_dir=sock, user=pgc.superuser.username)
