"""`pgha adopt`: whether this node's existing PostgreSQL can be taken over, in one line.

The agent adopts by its rules (bootstrap.adopt); this module only answers, before the agent
starts, the questions an operator should not learn from a log: is there a cluster here, is it
the one the DCS knows, and is this the node to start with.  ``problem`` is pure.
"""

from __future__ import annotations

from pgha.config import NodeConfig
from pgha.core.model import ClusterView, DataDir, LocalPostgres, PgRunState
from pgha.postgres.layout import Layout
from pgha.postgres.observe import read_postmaster

PRIMARY_STATES = frozenset({"in production", "shut down", "shutting down"})


def running_port(cfg: NodeConfig) -> int | None:
    """The port in postmaster.pid of this data directory's live server (None: not running)."""
    layout = Layout.of(cfg)
    if read_postmaster(layout) is None:
        return None
    try:
        line = layout.pid_file.read_text().splitlines()[3].strip()
    except (OSError, IndexError):
        return None
    return int(line) if line.isdigit() else None


def is_primary(pg: LocalPostgres) -> bool:
    if pg.run_state == PgRunState.RUNNING:
        return pg.in_recovery is False
    return pg.run_state != PgRunState.STARTING and pg.control_state in PRIMARY_STATES


def problem(cfg: NodeConfig, pg: LocalPostgres, view: ClusterView, port: int | None) -> str | None:
    """Why adopting here is refused (one line naming the fix), or None."""
    data = cfg.postgresql.data_dir
    if pg.data_dir != DataDir.VALID:
        return (f"postgresql.data_dir: {data} holds no PostgreSQL cluster to adopt; point it at the "
                "existing server's data directory")
    if port is not None and port != cfg.postgresql.port:
        return (f"postgresql.port: the running server listens on {port}, the node file says "
                f"{cfg.postgresql.port}; set postgresql.port: {port}")
    if pg.run_state == PgRunState.RUNNING and pg.in_recovery is None:
        return f"cannot query the server running in {data}; let {cfg.postgresql.superuser.username} connect locally"
    if pg.system_id is None:
        return f"pg_controldata cannot read {data}; check postgresql.bin_dir and the data directory"
    if view.system_id is not None and view.system_id != pg.system_id:
        return (f"cluster {view.name} has system identifier {view.system_id} but {data} holds "
                f"{pg.system_id}: this is another cluster's data; check cluster: and postgresql.data_dir")
    if view.system_id is None and not is_primary(pg) and view.initializing is None:
        return (f"this server is a replica and cluster {view.name} has no leader yet; run pgha adopt on "
                "the primary first")
    return None


def plan(cfg: NodeConfig, pg: LocalPostgres, view: ClusterView) -> str:
    """What the agent is about to do, for the operator."""
    role = "primary" if is_primary(pg) else "replica"
    state = "running" if pg.run_state == PgRunState.RUNNING else "stopped"
    if view.system_id is None:
        return (f"adopting the {state} {role} in {cfg.postgresql.data_dir} (system identifier {pg.system_id}) "
                f"as the leader of new cluster {view.name}")
    return (f"adopting the {state} {role} in {cfg.postgresql.data_dir} into cluster {view.name} "
            f"(system identifier {pg.system_id}), following its leader")
