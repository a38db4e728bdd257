"""`pgha switchover` and `pgha failover`: validate, confirm, record the request, wait for it.

The checks are ``pgha.intents``, the REST API's too (over the cluster as the
leader publishes it), so the CLI refuses what the API and the leader refuse.
"""

from __future__ import annotations

import uuid

import click

from pgha import intents as validate
from pgha.cli import context
from pgha.cli.commands_cluster_list import print_list
from pgha.cli.context import Refused, ScheduleTime, Session, confirm, requester, valid, wait_for, with_cluster
from pgha.cli.main import cli
from pgha.cli.render import iso
from pgha.core.model import Role, Switchover


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


def _wait_for_archive(session: Session) -> None:
    """With backups configured, the new timeline's .history and the switch segment must be in the
    repository before the switchover is reported done (the new primary publishes archived_timeline)."""

    def check() -> str | None:
        view = session.read()
        m = view.members.get(view.leader.name) if view.leader else None
        if m is None or m.backup is None or (m.timeline or 0) <= m.archived_timeline:
            return None
        return f"waiting for timeline {m.timeline}'s history and switch segment to reach the repository"

    wait_for(check, context.WAIT_TIMEOUT, "archiving the new timeline")


def _request(session: Session, sw: Switchover, prompt: str, force: bool, wait: bool) -> None:
    confirm(prompt, force)
    if not session.store.set_switchover(sw):
        raise Refused(validate.switchover_race().message)
    to = sw.candidate or "the best replica"
    if sw.scheduled_at is not None:
        click.echo(f"{sw.kind.capitalize()} from {sw.leader} to {to} scheduled at {iso(sw.scheduled_at)}.")
        return
    click.echo(f"{sw.kind.capitalize()} to {to} requested.")
    if not wait:
        return
    _wait_for_leader(session, sw.leader, sw.candidate, sw.id, sw.kind)
    _wait_for_archive(session)
    view = session.read()
    click.echo(f"{view.leader.name if view.leader else '?'} is the new leader.")
    print_list(session.store)


@cli.command("switchover")
@click.option("--leader", "--primary", "leader", metavar="NAME", help="The current leader (refuse if it is not).")
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
    who = requester()
    sw = valid(validate.switchover(view, who, id=uuid.uuid4().hex, leader=leader, candidate=candidate,
                                   scheduled_at=scheduled))
    target = candidate or f"the best replica (now {validate.switchover_target(view, who)})"
    when = f" at {iso(scheduled)}" if scheduled is not None else ""
    _request(session, sw, f"Switch over from {sw.leader} to {target}{when}?", force, wait)


@cli.command("failover")
@click.option("--candidate", metavar="NAME", required=True, help="The member to promote.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the candidate runs as primary, then show the cluster.")
@with_cluster
def failover_cmd(session: Session, candidate: str, force: bool, wait: bool) -> None:
    """Promote CANDIDATE, also when the cluster has no healthy leader."""
    sw = valid(validate.failover(session.read(), requester(), id=uuid.uuid4().hex, candidate=candidate))
    source = f"from {sw.leader} " if sw.leader else ""
    _request(session, sw, f"Fail over {source}to {candidate}?", force, wait)
