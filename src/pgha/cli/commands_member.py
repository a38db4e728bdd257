"""Per-member requests: `pgha restart`, `pgha reload`, `pgha reinit` (intents the agents carry out)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Literal

import click

from pgha.cli.context import Refused, ScheduleTime, Session, check_future, confirm, with_cluster
from pgha.cli.main import cli
from pgha.cli.render import iso
from pgha.core.model import ClusterView, MemberIntent, Role

Action = Literal["restart", "reinitialize", "reload"]


def _known(view: ClusterView, member: str) -> None:
    if member not in view.members:
        known = ", ".join(sorted(view.members)) or "none publishing"
        raise Refused(f"{member} is not a member of cluster {view.name} (members: {known})")


def _targets(view: ClusterView, member: str | None) -> list[str]:
    if member is not None:
        _known(view, member)
        return [member]
    if not view.members:
        raise Refused(f"cluster {view.name} has no members publishing their status")
    return sorted(view.members)


def _record(session: Session, view: ClusterView, names: list[str], make: MemberIntent) -> None:
    """Write one intent per member (each with its own id); refuse if one is already pending."""
    for name in names:
        pending = view.intents.get(name)
        if pending is not None:
            raise Refused(f"a {pending.action} of {name} is already pending; wait for it to finish")
    for name in names:
        intent = dataclasses.replace(make, id=uuid.uuid4().hex)
        if not session.store.set_intent(name, intent):
            raise Refused(f"a request for {name} is already pending; wait for it to finish")
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
    check_future(scheduled, time.time())
    names = _targets(view, member)
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
    _record(session, view, names,
            MemberIntent("restart", "", scheduled_at=scheduled, only_if_pending=pending, role=role))


@cli.command("reload")
@click.argument("member", required=False)
@with_cluster
def reload_cmd(session: Session, member: str | None) -> None:
    """Reload PostgreSQL's configuration on MEMBER (default: every member)."""
    view = session.read()
    _record(session, view, _targets(view, member), MemberIntent("reload", ""))


@cli.command("reinit")
@click.argument("member")
@click.option("--from-leader", is_flag=True, help="Clone from the leader, not from a replica.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@with_cluster
def reinit_cmd(session: Session, member: str, from_leader: bool, force: bool) -> None:
    """Wipe MEMBER's data directory and clone it again (never the leader)."""
    view = session.read()
    _known(view, member)
    if view.leader is None:
        raise Refused("the cluster has no leader to clone from; wait for one, or use 'pgha failover'")
    if view.leader.name == member:
        raise Refused(f"{member} is the leader; switch over first, then reinitialize it")
    source = "the leader" if from_leader else "a replica or the leader"
    confirm(f"Reinitialize {member}? Its data directory is wiped and cloned again from {source}.", force)
    _record(session, view, [member], MemberIntent("reinitialize", "", from_leader=from_leader))
