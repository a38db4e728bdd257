"""Concise builders for the decision core's frozen inputs.

Everything here is a plain constructor call with defaults chosen so that a
test only spells out what matters to it.  Times are virtual: ``NOW`` is the
monotonic "now" passed to ``decide()``; lease deadlines are given relative to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from pgha.core.actions import Action, Decision
from pgha.core.decide import decide
from pgha.core.model import (
    ClusterConfig,
    ClusterView,
    DataDir,
    Leader,
    LocalPostgres,
    LocalState,
    MemberInfo,
    PeerStatus,
    PgRunState,
    Replication,
    Role,
    SyncState,
    Tags,
)

NOW = 1000.0
SYSTEM_ID = "7300000000000000001"


# The timings the table cases were written for, unless a case sets its own.
TIMING: dict[str, Any] = {"ttl": 10.0, "loop_wait": 1.0}


def config(**kw: Any) -> ClusterConfig:
    return ClusterConfig(**{**TIMING, **kw})


# --- members (what other agents published) -------------------------------------------


def primary(name: str, lsn: int = 1000, tl: int = 1, **kw: Any) -> MemberInfo:
    return MemberInfo(name=name, role=Role.PRIMARY, state="running", timeline=tl, wal_lsn=lsn, **kw)


def replica(
    name: str, following: str | None, lsn: int = 1000, tl: int = 1, state: str = "streaming", **kw: Any
) -> MemberInfo:
    return MemberInfo(
        name=name,
        role=Role.REPLICA,
        state=state,
        timeline=tl,
        received_lsn=lsn,
        replayed_lsn=lsn,
        following=following,
        **kw,
    )


def stopped(name: str, **kw: Any) -> MemberInfo:
    return MemberInfo(name=name, role=Role.REPLICA, state="stopped", **kw)


# --- the cluster view ------------------------------------------------------------------


def view(
    *members: MemberInfo,
    leader: str | None = None,
    system_id: str | None = SYSTEM_ID,
    cfg: ClusterConfig | None = None,
    **kw: Any,
) -> ClusterView:
    """A view of cluster "c" with these members; ``leader`` names the leader key's holder."""
    return ClusterView(
        name="c",
        system_id=system_id,
        # The same lease id as local()'s: a leader key names us only when bound to our lease.
        leader=Leader(leader, lease_id=1, mod_revision=42) if leader else None,
        members={m.name: m for m in members},
        config=cfg or config(),
        **kw,
    )


def sync(leader: str, *standbys: str, quorum: int | None = None) -> SyncState:
    return SyncState(leader=leader, standbys=tuple(standbys), quorum=len(standbys) if quorum is None else quorum)


# --- this node's PostgreSQL -------------------------------------------------------------


def _pg(**fields: Any) -> LocalPostgres:
    """LocalPostgres of a valid data directory of this cluster; later keywords override earlier ones."""
    base: dict[str, Any] = {"data_dir": DataDir.VALID, "system_id": SYSTEM_ID}
    base.update(fields)
    return LocalPostgres(**base)


def pg_primary(lsn: int = 1000, tl: int = 1, **kw: Any) -> LocalPostgres:
    return _pg(
        run_state=PgRunState.RUNNING,
        in_recovery=False,
        timeline=tl,
        wal_lsn=lsn,
        control_state="in production",
        **kw,
    )


def pg_replica(following: str | None, lsn: int = 1000, tl: int = 1, streaming: bool = True, **kw: Any) -> LocalPostgres:
    kw.setdefault("configured_upstream", following)
    return _pg(
        run_state=PgRunState.RUNNING,
        in_recovery=True,
        timeline=tl,
        received_lsn=lsn,
        replayed_lsn=lsn,
        receiver_status="streaming" if streaming else None,
        following=following if streaming else None,
        control_state="in archive recovery",
        **kw,
    )


def pg_stopped(
    lsn: int = 1000, tl: int = 1, was_primary: bool = False, crashed: bool = False, **kw: Any
) -> LocalPostgres:
    return _pg(
        run_state=PgRunState.CRASHED if crashed else PgRunState.STOPPED,
        timeline=tl,
        wal_lsn=lsn,
        **{"control_state": "shut down" if was_primary else "shut down in recovery", **kw},
    )


def pg_empty() -> LocalPostgres:
    return LocalPostgres()


def replication(*names: str, sync_state: str = "sync", lsn: int = 1000) -> tuple[Replication, ...]:
    return tuple(Replication(n, "streaming", sync_state, lsn, lsn) for n in names)


# --- this node ----------------------------------------------------------------------------


def local(name: str, pg: LocalPostgres | None = None, lease_left: float | None = 9.0, **kw: Any) -> LocalState:
    """This node; ``lease_left`` seconds of certain lease from NOW (None: no lease)."""
    return LocalState(
        name=name,
        pg=pg or pg_empty(),
        lease_deadline=None if lease_left is None else NOW + lease_left,
        lease_id=1,
        **kw,
    )


def poll(
    name: str,
    lsn: int | None = 1000,
    api: str = "ok",
    pg: str = "ok",
    tl: int = 1,
    in_recovery: bool | None = True,
    **kw: Any,
) -> PeerStatus:
    return PeerStatus(name=name, api=api, pg=pg, lsn=lsn, timeline=tl, in_recovery=in_recovery, **kw)


def polls(*ps: PeerStatus) -> Mapping[str, PeerStatus]:
    return {p.name: p for p in ps}


def tags(**kw: Any) -> Tags:
    return Tags(**kw)


def run(v: ClusterView, loc: LocalState, now: float = NOW) -> Decision:
    """decide() with the view's own configuration (as the agent passes it)."""
    return decide(v, loc, v.config, now)


def kinds(actions: Iterable[Action]) -> list[str]:
    return [a.name for a in actions]


def with_config(v: ClusterView, **kw: Any) -> ClusterView:
    return replace(v, config=replace(v.config, **kw))
