"""`pgha switchover` and `pgha failover`: validate, confirm, record the request, wait for it.

The checks are the agent's own (``pgha.core.election``), run over the cluster
as the leader publishes it, so the CLI refuses what the leader would refuse.
"""

from __future__ import annotations

import time
import uuid

import click

from pgha.cli import context
from pgha.cli.commands_cluster_list import print_list
from pgha.cli.context import Refused, ScheduleTime, Session, check_future, confirm, wait_for, with_cluster
from pgha.cli.main import cli
from pgha.cli.render import iso
from pgha.core import election
from pgha.core.facts import Facts
from pgha.core.model import (
    ClusterView,
    DataDir,
    LocalPostgres,
    LocalState,
    PgRunState,
    Role,
    Switchover,
    Tags,
)


def leader_facts(view: ClusterView, wall_now: float) -> Facts:
    """The facts as the leader sees them, built from what its agent published."""
    assert view.leader is not None
    m = view.members.get(view.leader.name)
    pg = LocalPostgres(
        data_dir=DataDir.VALID, system_id=view.system_id, run_state=PgRunState.RUNNING, in_recovery=False,
        timeline=m.timeline if m else None, wal_lsn=m.wal_lsn if m else None,
    )
    local = LocalState(name=view.leader.name, pg=pg, tags=m.tags if m else Tags(), wall_now=wall_now)
    return Facts(view, local, view.config, now=time.monotonic())


def _refuse_if_busy(view: ClusterView) -> None:
    sw = view.switchover
    if sw is not None:
        to = sw.candidate or "the best replica"
        when = f" scheduled at {iso(sw.scheduled_at)}" if sw.scheduled_at else f" in phase {sw.phase}"
        raise Refused(f"a {sw.kind} to {to} is already pending ({when.strip()}); wait for it to finish")
    if view.config.pause:
        raise Refused("the cluster is paused (maintenance mode); run 'pgha resume' first")


def _why_no_target(f: Facts) -> str:
    reasons = [election.why_not_switchover_target(f, n) for n in sorted(f.view.members) if n != f.me]
    return "; ".join(r for r in reasons if r) or "there are no other members"


def _wait_for_leader(session: Session, old: str | None, candidate: str | None, request_id: str,
                     kind: str) -> None:
    """Wait until the leader key names the candidate (or anyone but ``old``) running as primary."""

    def check() -> str | None:
        view = session.read()
        leader = view.leader.name if view.leader else None
        m = view.members.get(leader or "")
        moved = leader is not None and leader != old and (candidate is None or leader == candidate)
        if moved and m is not None and m.role == Role.PRIMARY:
            return None
        if moved:
            return f"{leader} holds the leader key, waiting for it to run as primary"
        if leader is not None and leader != old:
            raise Refused(f"{leader} became the leader instead of {candidate}")
        sw = view.switchover
        if sw is not None and sw.id == request_id:
            return f"{kind} phase: {sw.phase}"
        if leader is not None:
            if m is not None and m.last_switchover_id == request_id and m.last_switchover_outcome:
                raise Refused(f"{kind} {m.last_switchover_outcome}; {leader} is still the leader")
            why = f" ({m.reason})" if m is not None and m.reason else ""
            raise Refused(f"the {kind} was dropped; {leader} is still the leader{why}")
        return "no leader right now, waiting for the election"

    wait_for(check, context.WAIT_TIMEOUT, kind)


def _request(session: Session, sw: Switchover, prompt: str, force: bool, wait: bool) -> None:
    confirm(prompt, force)
    if not session.store.set_switchover(sw):
        raise Refused("another switchover or failover is already pending; nothing was written")
    to = sw.candidate or "the best replica"
    if sw.scheduled_at is not None:
        click.echo(f"{sw.kind.capitalize()} from {sw.leader} to {to} scheduled at {iso(sw.scheduled_at)}.")
        return
    click.echo(f"{sw.kind.capitalize()} to {to} requested.")
    if not wait:
        return
    _wait_for_leader(session, sw.leader, sw.candidate, sw.id, sw.kind)
    view = session.read()
    click.echo(f"{view.leader.name if view.leader else '?'} is the new leader.")
    print_list(session.store)


@cli.command("switchover")
@click.option("--leader", metavar="NAME", help="The current leader (refuse if it is not).")
@click.option("--candidate", metavar="NAME", help="The member to take over (default: the best replica).")
@click.option("--scheduled", type=ScheduleTime(), help="When, ISO 8601 (default: now).")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the new leader runs as primary, then show the cluster.")
@with_cluster
def switchover_cmd(session: Session, leader: str | None, candidate: str | None, scheduled: float | None,
                   force: bool, wait: bool) -> None:
    """Move the primary to another healthy member, cleanly (the old primary becomes a replica)."""
    view = session.read()
    _refuse_if_busy(view)
    if view.leader is None:
        raise Refused("the cluster has no leader; use 'pgha failover --candidate NAME'")
    current = view.leader.name
    if leader is not None and leader != current:
        raise Refused(f"{leader} is not the leader; the leader is {current}")
    lm = view.members.get(current)
    if lm is None or lm.role != Role.PRIMARY:
        state = lm.state if lm else "publishes no status"
        raise Refused(f"the leader {current} is not running as primary ({state}); use 'pgha failover'")
    now = time.time()
    check_future(scheduled, now)
    f = leader_facts(view, now)
    if candidate is not None:
        reason = election.why_not_switchover_target(f, candidate)
        if reason:
            raise Refused(reason)
        target = candidate
    else:
        picked = election.pick_switchover_target(f)
        if picked is None:
            raise Refused(f"no member can take over: {_why_no_target(f)}")
        target = f"the best replica (now {picked})"
    when = f" at {iso(scheduled)}" if scheduled is not None else ""
    sw = Switchover(id=uuid.uuid4().hex, kind="switchover", leader=current, candidate=candidate,
                    scheduled_at=scheduled)
    _request(session, sw, f"Switch over from {current} to {target}{when}?", force, wait)


@cli.command("failover")
@click.option("--candidate", metavar="NAME", required=True, help="The member to promote.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the candidate runs as primary, then show the cluster.")
@with_cluster
def failover_cmd(session: Session, candidate: str, force: bool, wait: bool) -> None:
    """Promote CANDIDATE, also when the cluster has no healthy leader."""
    view = session.read()
    _refuse_if_busy(view)
    m = view.members.get(candidate)
    if m is None:
        raise Refused(f"candidate {candidate} is not a member of the cluster")
    current = view.leader.name if view.leader else None
    lm = view.members.get(current or "")
    if lm is not None and lm.role == Role.PRIMARY:
        # A healthy leader hands over exactly as for a switchover: same checks.
        reason = election.why_not_switchover_target(leader_facts(view, time.time()), candidate)
        if reason:
            raise Refused(reason)
    elif candidate == current:
        raise Refused(f"candidate {candidate} already holds the leader key")
    elif m.tags.nofailover:
        raise Refused(f"candidate {candidate} is tagged nofailover")
    elif m.role != Role.REPLICA or m.state not in ("running", "streaming"):
        raise Refused(f"candidate {candidate} is not running as a replica (state: {m.state})")
    sw = Switchover(id=uuid.uuid4().hex, kind="failover", leader=current, candidate=candidate)
    source = f"from {current} " if current else ""
    _request(session, sw, f"Fail over {source}to {candidate}?", force, wait)
