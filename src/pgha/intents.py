"""Operator requests, validated once for every front end: the CLI, the REST API (and a dashboard).

Each validator takes the cluster as last read (``ClusterView``), who asks (``Requester``)
and the request, and returns either the record to write to the DCS (a ``Switchover`` or a
``MemberIntent``) or a ``Refusal``: one line of text and an HTTP-like kind.  The REST API
answers the refusal's status code with ``{"error": message}``; the CLI prints
``pgha: <message>`` and exits 1.  The same request on the same cluster gets the same
answer from both.

Pure: no I/O, no clock (the requester carries ``now``), no random ids (the caller passes
``id``).  The candidate checks are the agent's own (``pgha.core.election``), so a request
is refused here exactly when the leader would drop it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from pgha.backup.verify import VerifyRequest
from pgha.core import election, standby
from pgha.core.facts import Facts
from pgha.core.model import (
    BackupRequest,
    ClusterConfig,
    ClusterView,
    DataDir,
    LocalPostgres,
    LocalState,
    MemberIntent,
    PgRunState,
    Role,
    Switchover,
    Tags,
)
from pgha.core.standby import StandbyCluster

# A schedule up to this many seconds in the past is taken as "now" (clocks and typing differ).
SCHEDULE_SLACK = 60.0

FAILOVER_HINT = "fail over to a named candidate instead (pgha failover --candidate NAME, POST /failover)"
NOT_READ = "the agent has not read the cluster state yet; retry in a moment"


class Kind(IntEnum):
    """Why a request is refused, as the HTTP status the API answers."""

    NOT_FOUND = 404
    CONFLICT = 409
    PRECONDITION = 412
    NOT_READY = 503


@dataclass(frozen=True)
class Refusal:
    kind: Kind
    message: str


@dataclass(frozen=True)
class Requester:
    """Who asks, and when."""

    # Wall-clock epoch seconds (schedules) and monotonic seconds (the core's ``now``).
    wall_now: float
    mono_now: float
    # The asking agent's own state and whether it holds the leader lease (the REST API);
    # None for the CLI, which sees only what the members published.
    local: LocalState | None = None
    holds_lease: bool = False


def _refuse(kind: Kind, message: str) -> Refusal:
    return Refusal(kind, message)


# --- what every request checks ---------------------------------------------------------------
def _pending_switchover(view: ClusterView) -> Refusal | None:
    sw = view.switchover
    if sw is None:
        return None
    to = sw.candidate or "the best replica"
    when = f"scheduled at {_iso(sw.scheduled_at)}" if sw.scheduled_at else f"in phase {sw.phase}"
    return _refuse(Kind.CONFLICT, f"a {sw.kind} to {to} is already pending ({when}, id {sw.id}); wait for "
                                  "it to finish, or cancel it (DELETE /switchover)")


def _paused(view: ClusterView) -> Refusal | None:
    if view.config.pause:
        return _refuse(Kind.PRECONDITION, "the cluster is paused (maintenance mode) and the agents carry out "
                                          "no request; resume it first (pgha resume, POST /resume)")
    return None


def _past(scheduled_at: float | None, req: Requester) -> Refusal | None:
    if scheduled_at is not None and scheduled_at < req.wall_now - SCHEDULE_SLACK:
        return _refuse(Kind.PRECONDITION, "the scheduled time is in the past; give a future time, or none "
                                          "for now")
    return None


def _unknown_member(view: ClusterView, member: str) -> Refusal | None:
    if member in view.members:
        return None
    known = ", ".join(sorted(view.members)) or "none publishing"
    return _refuse(Kind.NOT_FOUND, f"{member} is not a member of cluster {view.name} (members: {known})")


def _intent_pending(view: ClusterView, member: str) -> Refusal | None:
    pending = view.intents.get(member)
    if pending is None:
        return None
    return intent_race(member, pending.action)


def intent_race(member: str, action: str = "request") -> Refusal:
    """An intent for ``member`` is already recorded (also: found so when writing)."""
    return _refuse(Kind.CONFLICT, f"a {action} of {member} is already pending; wait for it to finish")


def switchover_race() -> Refusal:
    """Another switchover or failover was recorded between the read and the write."""
    return _refuse(Kind.CONFLICT, "another switchover or failover is already pending; nothing was written")


def _iso(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


# --- switchover and failover -------------------------------------------------------------------
def leader_facts(view: ClusterView, req: Requester) -> Facts:
    """The facts as the leader sees them: its own state when it is the one asking (it then judges
    lag by its polls), else what its agent published."""
    assert view.leader is not None
    name = view.leader.name
    if req.local is not None and req.local.name == name:
        return Facts(view, req.local, view.config, now=req.mono_now)
    m = view.members.get(name)
    pg = LocalPostgres(data_dir=DataDir.VALID, system_id=view.system_id, run_state=PgRunState.RUNNING,
                       in_recovery=False, timeline=m.timeline if m else None, wal_lsn=m.wal_lsn if m else None)
    local = LocalState(name=name, pg=pg, tags=m.tags if m else Tags(), wall_now=req.wall_now)
    return Facts(view, local, view.config, now=req.mono_now)


def _leader_serves(view: ClusterView, req: Requester) -> bool:
    """Whether the leader runs PostgreSQL as primary (as it says itself, or as it published)."""
    assert view.leader is not None
    if req.local is not None and req.local.name == view.leader.name:
        return req.local.pg.run_state == PgRunState.RUNNING and req.local.pg.in_recovery is False
    m = view.members.get(view.leader.name)
    return m is not None and m.role == Role.PRIMARY


def _why_no_target(f: Facts) -> str:
    reasons = [election.why_not_switchover_target(f, n) for n in sorted(f.view.members) if n != f.me]
    return "; ".join(r for r in reasons if r) or "there are no other members"


def switchover(view: ClusterView | None, req: Requester, *, id: str, leader: str | None = None,
               candidate: str | None = None, scheduled_at: float | None = None) -> Switchover | Refusal:
    """Move the primary from the healthy leader to ``candidate`` (default: the best replica)."""
    if view is None:
        return _refuse(Kind.NOT_READY, NOT_READ)
    busy = _pending_switchover(view) or _paused(view)
    if busy is not None:
        return busy
    if view.leader is None:
        return _refuse(Kind.PRECONDITION, f"the cluster has no leader; {FAILOVER_HINT}")
    current = view.leader.name
    if leader is not None and leader != current:
        return _refuse(Kind.PRECONDITION, f"{leader} is not the leader; the leader is {current}")
    if not _leader_serves(view, req):
        lm = view.members.get(current)
        state = lm.state if lm else "publishes no status"
        return _refuse(Kind.PRECONDITION, f"the leader {current} is not running as primary ({state}); "
                                          f"{FAILOVER_HINT}")
    past = _past(scheduled_at, req)
    if past is not None:
        return past
    f = leader_facts(view, req)
    if candidate is not None:
        why = election.why_not_switchover_target(f, candidate)
        if why is not None:
            return _refuse(Kind.PRECONDITION, why)
    elif election.pick_switchover_target(f) is None:
        return _refuse(Kind.PRECONDITION, f"no member can take over: {_why_no_target(f)}")
    return Switchover(id=id, kind="switchover", leader=current, candidate=candidate, scheduled_at=scheduled_at)


def switchover_target(view: ClusterView, req: Requester) -> str | None:
    """The member a switchover without candidate would pick now (for a confirmation prompt)."""
    return election.pick_switchover_target(leader_facts(view, req)) if view.leader is not None else None


def failover(view: ClusterView | None, req: Requester, *, id: str, candidate: str) -> Switchover | Refusal:
    """Promote ``candidate``, also without a healthy leader.  With one, the switchover checks apply."""
    if view is None:
        return _refuse(Kind.NOT_READY, NOT_READ)
    busy = _pending_switchover(view) or _paused(view)
    if busy is not None:
        return busy
    m = view.members.get(candidate)
    if m is None:
        return _refuse(Kind.PRECONDITION, f"candidate {candidate} is not a member of the cluster")
    current = view.leader.name if view.leader is not None else None
    if view.leader is not None and _leader_serves(view, req):
        # A healthy leader hands over exactly as for a switchover: the same checks.
        why = election.why_not_switchover_target(leader_facts(view, req), candidate)
        if why is not None:
            return _refuse(Kind.PRECONDITION, why)
    elif candidate == current:
        return _refuse(Kind.PRECONDITION, f"candidate {candidate} is already the leader")
    elif m.tags.nofailover:
        return _refuse(Kind.PRECONDITION, f"candidate {candidate} is tagged nofailover")
    elif m.role != Role.REPLICA or m.state not in ("running", "streaming"):
        return _refuse(Kind.PRECONDITION, f"candidate {candidate} is not running as a replica (state: {m.state})")
    return Switchover(id=id, kind="failover", leader=current, candidate=candidate)


def cancel_switchover(view: ClusterView) -> Switchover | Refusal:
    """The pending switchover or failover to delete."""
    if view.switchover is None:
        return _refuse(Kind.NOT_FOUND, "no switchover or failover is pending")
    return view.switchover


# --- member intents ------------------------------------------------------------------------------
def _member_checks(view: ClusterView | None, member: str) -> Refusal | None:
    if view is None:
        return _refuse(Kind.NOT_READY, NOT_READ)
    return _unknown_member(view, member) or _paused(view)


def restart(view: ClusterView | None, req: Requester, *, member: str, id: str, scheduled_at: float | None = None,
            only_if_pending: bool = False, role: str | None = None) -> MemberIntent | Refusal:
    """Restart PostgreSQL on ``member`` (the agent skips it if ``role`` or ``only_if_pending`` do not hold)."""
    no = _member_checks(view, member) or _past(scheduled_at, req)
    if no is not None:
        return no
    assert view is not None
    return _intent_pending(view, member) or MemberIntent(
        "restart", id, scheduled_at=scheduled_at, only_if_pending=only_if_pending, role=role)


def reload(view: ClusterView | None, req: Requester, *, member: str, id: str) -> MemberIntent | Refusal:
    """Reload PostgreSQL's configuration on ``member``."""
    no = _member_checks(view, member)
    if no is not None:
        return no
    assert view is not None
    return _intent_pending(view, member) or MemberIntent("reload", id)


def reinitialize(view: ClusterView | None, req: Requester, *, member: str, id: str, from_leader: bool = False,
                 replace_pending: bool = False) -> MemberIntent | Refusal:
    """Wipe ``member``'s data directory and clone it again; never the leader.

    ``replace_pending``: an intent already pending on the member is replaced (the caller deletes it)."""
    no = _member_checks(view, member)
    if no is not None:
        return no
    assert view is not None
    asker_leads = req.local is not None and req.local.name == member and req.holds_lease
    if asker_leads or (view.leader is not None and view.leader.name == member):
        return _refuse(Kind.CONFLICT, f"{member} is the leader; switch over first, then reinitialize it")
    if view.leader is None:
        return _refuse(Kind.PRECONDITION, "the cluster has no leader to clone from; wait for one, or fail over")
    if not replace_pending:
        pending = _intent_pending(view, member)
        if pending is not None:
            return pending
    return MemberIntent("reinitialize", id, from_leader=from_leader)


def cancel_restart(view: ClusterView | None, member: str) -> MemberIntent | Refusal:
    """The pending restart of ``member`` to delete."""
    if view is None:
        return _refuse(Kind.NOT_READY, NOT_READ)
    intent = view.intents.get(member)
    if intent is None or intent.action != "restart":
        return _refuse(Kind.NOT_FOUND, f"no restart is pending on {member}")
    return intent


# --- backups ------------------------------------------------------------------------------------
BACKUP_TYPES = ("full", "diff", "incr")


def backup(view: ClusterView | None, req: Requester, *, id: str, type: str,
           pending: BackupRequest | None) -> BackupRequest | Refusal:
    """A backup request for the repository host (``pending``: the one already at /backup/request)."""
    if view is None:
        return _refuse(Kind.NOT_READY, NOT_READ)
    if type not in BACKUP_TYPES:
        return _refuse(Kind.PRECONDITION, f"backup type {type!r} is unknown; use full, diff or incr")
    if not any(m.backup is not None for m in view.members.values()):
        return _refuse(Kind.PRECONDITION, "no member has a backup: section; configure pgBackRest first "
                       "(docs/operations.md, 'Backups and point-in-time recovery')")
    if not any(m.role == Role.PRIMARY and m.state == "running" for m in view.members.values()):
        return _refuse(Kind.PRECONDITION, "no primary is running; a backup needs one (wait for the cluster to heal)")
    if pending is not None:
        return _refuse(Kind.CONFLICT, f"a {pending.type} backup is already requested (id {pending.id}); wait for "
                       "it to finish")
    kinds: dict[str, Literal["full", "diff", "incr"]] = {"full": "full", "diff": "diff", "incr": "incr"}
    return BackupRequest(id=id, type=kinds[type], requested_at=req.wall_now)


def verify(view: ClusterView | None, req: Requester, *, id: str, pending_id: str | None) -> VerifyRequest | Refusal:
    """A restore test for the repository host (``pending_id``: the one already requested)."""
    if view is None:
        return _refuse(Kind.NOT_READY, NOT_READ)
    if not any(m.backup is not None for m in view.members.values()):
        return _refuse(Kind.PRECONDITION, "no member has a backup: section; configure pgBackRest first "
                       "(docs/operations.md, 'Backups and point-in-time recovery')")
    if pending_id is not None:
        return _refuse(Kind.CONFLICT, f"a restore test is already requested (id {pending_id}); wait for it to finish")
    return VerifyRequest(id=id, requested_at=req.wall_now, by="cli")


# --- a second site: promote-cluster and demote-cluster ------------------------------------------
def _cluster_role_checks(view: ClusterView | None) -> Refusal | None:
    if view is None:
        return _refuse(Kind.NOT_READY, NOT_READ)
    return _pending_switchover(view) or _paused(view)


def promote_cluster(view: ClusterView | None) -> ClusterConfig | Refusal:
    """The cluster config without ``standby_cluster``: the standby leader then promotes."""
    no = _cluster_role_checks(view)
    if no is not None:
        return no
    assert view is not None
    if not standby.active(view.config.standby_cluster):
        return _refuse(Kind.PRECONDITION, f"cluster {view.name} is not a standby cluster; it is already a primary "
                                          "cluster")
    return dataclasses.replace(view.config, standby_cluster=None)


def demote_cluster(view: ClusterView | None, source: StandbyCluster) -> ClusterConfig | Refusal:
    """The cluster config with ``standby_cluster: source``: the leader shuts down, rewinds against the
    source where the timelines diverged, and runs on as the standby leader."""
    no = _cluster_role_checks(view)
    if no is not None:
        return no
    assert view is not None
    if not source.active:
        return _refuse(Kind.PRECONDITION, "give the cluster to follow: --host HOST (and --port, --slot) or "
                                          "--restore-command CMD")
    if (why := source.problem()) is not None:
        return _refuse(Kind.PRECONDITION, why)
    current = view.config.standby_cluster
    if current is not None and current.active:
        return _refuse(Kind.CONFLICT, f"cluster {view.name} is already a standby cluster (of "
                                      f"{current.host or 'its restore_command'}); change standby_cluster with "
                                      "pgha edit-config, or promote-cluster first")
    return dataclasses.replace(view.config, standby_cluster=source)
