"""Per-member requests: `pgha restart`, `pgha reload`, `pgha reinit` (intents the agents carry out).

Each member's request is checked by ``pgha.intents`` (the REST API's checks too) before any is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import click

from pgha import intents as validate
from pgha.cli.context import Refused, ScheduleTime, Session, confirm, requester, valid, with_cluster
from pgha.cli.main import cli
from pgha.cli.render import iso
from pgha.core.model import ClusterView, MemberIntent, Role

Validator = Callable[[str], "MemberIntent | validate.Refusal"]


def _targets(view: ClusterView, member: str | None) -> list[str]:
    if member is not None:
        return [member]
    if not view.members:
        raise Refused(f"cluster {view.name} has no members publishing their status")
    return sorted(view.members)


def _record(session: Session, names: list[str], check: Validator) -> None:
    """Validate one intent per member (each with its own id), then write them all."""
    planned = [(name, valid(check(name))) for name in names]
    for name, intent in planned:
        if not session.store.set_intent(name, intent):
            raise Refused(validate.intent_race(name).message)
    make = planned[0][1]
    when = f" at {iso(make.scheduled_at)}" if make.scheduled_at else ""
    click.echo(f"{make.action.capitalize()} of {', '.join(names)} requested{when}.")


@cli.command("restart")
@click.argument("member", required=False)
@click.option("--pending", is_flag=True, help="Only members whose PostgreSQL reports a pending restart.")
@click.option("--role", type=click.Choice(["primary", "replica"]), help="Only members running in this role.")
@click.option("--scheduled", type=ScheduleTime(), help="When, ISO 8601 (default: now).")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@with_cluster
def restart_cmd(session: Session, member: str | None, pending: bool, role: str | None,
                scheduled: float | None, force: bool) -> None:
    """Restart PostgreSQL on MEMBER (default: every member)."""
    view = session.read()
    who = requester()

    def check(name: str) -> MemberIntent | validate.Refusal:
        return validate.restart(view, who, member=name, id=uuid.uuid4().hex, scheduled_at=scheduled,
                                only_if_pending=pending, role=role)

    names = _targets(view, member)
    if member is not None:
        valid(check(member))
    if role is not None:
        names = [n for n in names if view.members[n].role == Role(role)]
        if not names:
            raise Refused(f"no {'such ' if member else ''}member runs as {role}")
    if pending:
        names = [n for n in names if view.members[n].pending_restart]
        if not names:
            click.echo("No member has a pending restart.")
            return
    when = f" at {iso(scheduled)}" if scheduled is not None else ""
    confirm(f"Restart PostgreSQL on {', '.join(names)}{when}?", force)
    _record(session, names, check)


@cli.command("reload")
@click.argument("member", required=False)
@with_cluster
def reload_cmd(session: Session, member: str | None) -> None:
    """Reload PostgreSQL's configuration on MEMBER (default: every member)."""
    view = session.read()
    who = requester()
    _record(session, _targets(view, member),
            lambda name: validate.reload(view, who, member=name, id=uuid.uuid4().hex))


@cli.command("reinit")
@click.argument("member")
@click.option("--from-leader", is_flag=True, help="Clone from the leader, not from a replica.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@with_cluster
def reinit_cmd(session: Session, member: str, from_leader: bool, force: bool) -> None:
    """Wipe MEMBER's data directory and clone it again (never the leader)."""
    view = session.read()
    who = requester()

    def check(name: str) -> MemberIntent | validate.Refusal:
        return validate.reinitialize(view, who, member=name, id=uuid.uuid4().hex, from_leader=from_leader)

    valid(check(member))
    source = "the leader" if from_leader else "a replica or the leader"
    confirm(f"Reinitialize {member}? Its data directory is wiped and cloned again from {source}.", force)
    _record(session, [member], check)
