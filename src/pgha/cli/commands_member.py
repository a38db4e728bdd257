"""Per-member requests: `pgha restart`, `pgha reload`, `pgha reinit` (intents the agents carry out),
and `pgha flush restart|switchover` (cancel pending ones).

Each member's request is checked by ``pgha.intents`` (the REST API's checks too) before any is written.
The member selection takes patronictl's options: several MEMBERS, ``--role``, ``--any``, ``--pending``,
``--pg-version``.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Sequence

import click

from pgha import intents as validate
from pgha.cli.context import Refused, ScheduleTime, Session, confirm, requester, valid, wait_for, with_cluster
from pgha.cli.main import cli
from pgha.cli.render import iso, role_of
from pgha.core.model import ClusterView, MemberIntent

Validator = Callable[[str], "MemberIntent | validate.Refusal"]

# patronictl's role names -> what `list` shows (leader / replica; a sync standby is a replica).
ROLES = {"leader": "leader", "primary": "leader", "standby-leader": "leader", "replica": "replica",
         "standby": "replica", "any": "any"}
ROLE_OPTION = click.option("-r", "--role", type=click.Choice(list(ROLES)), default="any", show_default=True,
                           help="Only members in this role (leader = primary; standby = replica).")


def select(view: ClusterView, members: Sequence[str], role: str) -> list[str]:
    """MEMBERS (default: every published member), unknown names refused, filtered by ``role``."""
    if not view.members:
        raise Refused(f"cluster {view.name} has no members publishing their status")
    unknown = [m for m in members if m not in view.members]
    if unknown:
        raise Refused(f"{unknown[0]} is not a member of cluster {view.name} "
                      f"(members: {', '.join(sorted(view.members))})")
    names = list(dict.fromkeys(members)) or sorted(view.members)
    want = ROLES[role]
    if want != "any":
        names = [n for n in names if role_of(view, n).endswith("leader") == (want == "leader")]
        if not names:
            raise Refused(f"no {'such ' if members else ''}member runs as {role}")
    return names


def pg_version_num(text: str) -> int:
    """``15.4`` -> 150004 and ``9.6.24`` -> 90624, as PostgreSQL's server_version_num."""
    m = re.fullmatch(r"\s*(\d{1,2})(?:\.(\d{1,2}))?(?:\.(\d{1,2}))?\s*", text)
    if m is None:
        raise click.BadParameter(f"{text!r} is not a PostgreSQL version; use e.g. 15.4 or 9.6.24",
                                 param_hint="--pg-version")
    major, a, b = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    return major * 10000 + a if major >= 10 else major * 10000 + a * 100 + b


def _record(session: Session, names: list[str], check: Validator) -> list[tuple[str, MemberIntent]]:
    """Validate one intent per member (each with its own id), then write them all."""
    planned = [(name, valid(check(name))) for name in names]
    for name, intent in planned:
        if not session.store.set_intent(name, intent):
            raise Refused(validate.intent_race(name).message)
    make = planned[0][1]
    when = f" at {iso(make.scheduled_at)}" if make.scheduled_at else ""
    click.echo(f"{make.action.capitalize()} of {', '.join(names)} requested{when}.")
    return planned


def _wait_done(session: Session, planned: list[tuple[str, MemberIntent]], timeout: float) -> None:
    """Until every member's agent has carried its request out (the intent is gone) and runs again."""
    def check() -> str | None:
        view = session.read()
        busy = [n for n, i in planned if n in view.intents and view.intents[n].id == i.id]
        if busy:
            return f"waiting for {', '.join(busy)} to carry out the request"
        down = [n for n, _ in planned if n in view.members and view.members[n].state not in ("running", "streaming")]
        if down:
            return f"waiting for {', '.join(down)} to run again ({', '.join(view.members[n].state for n in down)})"
        return None

    wait_for(check, timeout, planned[0][1].action)
    click.echo("Done.")


@cli.command("restart")
@click.argument("members", nargs=-1)
@ROLE_OPTION
@click.option("--any", "pick_any", is_flag=True, help="Restart one of the selected members, chosen at random.")
@click.option("--pending", is_flag=True, help="Only members whose PostgreSQL reports a pending restart.")
@click.option("--pg-version", metavar="VERSION",
              help="Only members whose PostgreSQL is older than VERSION (e.g. 15.4).")
@click.option("--scheduled", type=ScheduleTime(), help="When, ISO 8601 (default: now).")
@click.option("--timeout", type=click.FloatRange(min=1), metavar="SECONDS",
              help="Wait up to SECONDS for the restarts to finish; exit 1 if they have not.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@with_cluster
def restart_cmd(session: Session, members: tuple[str, ...], role: str, pick_any: bool, pending: bool,
                pg_version: str | None, scheduled: float | None, timeout: float | None, force: bool) -> None:
    """Restart PostgreSQL on MEMBERS (default: every member)."""
    if timeout is not None and scheduled is not None:
        raise click.UsageError("--timeout waits for a restart now; it cannot wait for a --scheduled one")
    older_than = pg_version_num(pg_version) if pg_version is not None else None
    view = session.read()
    who = requester()
    intent_role = {"leader": "primary", "replica": "replica"}.get(ROLES[role])

    def check(name: str) -> MemberIntent | validate.Refusal:
        return validate.restart(view, who, member=name, id=uuid.uuid4().hex, scheduled_at=scheduled,
                                only_if_pending=pending, role=intent_role)

    names = select(view, members, role)
    for name in members:
        valid(check(name))
    if pending:
        names = [n for n in names if view.members[n].pending_restart]
        if not names:
            click.echo("No member has a pending restart.")
            return
    if older_than is not None:
        names = [n for n in names if 0 < view.members[n].server_version < older_than]
        if not names:
            click.echo(f"No running member has a PostgreSQL older than {pg_version}.")
            return
    if pick_any:
        names = [random.choice(names)]
    when = f" at {iso(scheduled)}" if scheduled is not None else ""
    confirm(f"Restart PostgreSQL on {', '.join(names)}{when}?", force)
    planned = _record(session, names, check)
    if timeout is not None:
        _wait_done(session, planned, timeout)


@cli.command("reload")
@click.argument("members", nargs=-1)
@ROLE_OPTION
@click.option("--force", is_flag=True, help="Accepted for patronictl's sake: reload never asks.")
@with_cluster
def reload_cmd(session: Session, members: tuple[str, ...], role: str, force: bool) -> None:
    """Reload PostgreSQL's configuration on MEMBERS (default: every member)."""
    view = session.read()
    who = requester()
    _record(session, select(view, members, role),
            lambda name: validate.reload(view, who, member=name, id=uuid.uuid4().hex))


@cli.command("reinit")
@click.argument("members", nargs=-1, required=True)
@click.option("--from-leader", is_flag=True, help="Clone from the leader, not from a replica.")
@click.option("--wait", is_flag=True, help="Wait (up to 1 hour) until the members run again.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@with_cluster
def reinit_cmd(session: Session, members: tuple[str, ...], from_leader: bool, wait: bool, force: bool) -> None:
    """Wipe each MEMBER's data directory and clone it again (never the leader)."""
    view = session.read()
    who = requester()

    def check(name: str) -> MemberIntent | validate.Refusal:
        return validate.reinitialize(view, who, member=name, id=uuid.uuid4().hex, from_leader=from_leader)

    names = select(view, members, "any")
    for name in names:
        valid(check(name))
    source = "the leader" if from_leader else "a replica or the leader"
    what = "Its data directory is" if len(names) == 1 else "Their data directories are"
    confirm(f"Reinitialize {', '.join(names)}? {what} wiped and cloned again from {source}.", force)
    planned = _record(session, names, check)
    if wait:
        _wait_done(session, planned, 3600.0)


@cli.command("flush")
@click.argument("members", nargs=-1)
@click.argument("target", type=click.Choice(["restart", "switchover"]))
@ROLE_OPTION
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@with_cluster
def flush_cmd(session: Session, members: tuple[str, ...], target: str, role: str, force: bool) -> None:
    """Cancel pending restarts of MEMBERS (default: every member), or the pending switchover."""
    view = session.read()
    if target == "switchover":
        if members or role != "any":
            raise click.UsageError("flush switchover takes no MEMBERS and no --role")
        sw = validate.cancel_switchover(view)
        if isinstance(sw, validate.Refusal):
            click.echo("No pending switchover or failover.")
            return
        confirm(f"Cancel the pending {sw.kind} to {sw.candidate or 'the best replica'}?", force)
        session.store.clear_switchover(sw.id)
        click.echo(f"Cancelled {sw.kind} {sw.id[:8]}.")
        return
    found = [(n, i) for n in select(view, members, role)
             if not isinstance(i := validate.cancel_restart(view, n), validate.Refusal)]
    if not found:
        click.echo("No pending restart on " + (", ".join(members) if members else "any member") + ".")
        return
    confirm(f"Cancel the pending restart of {', '.join(n for n, _ in found)}?", force)
    for name, intent in found:
        session.store.clear_intent(name, intent.id)
    click.echo(f"Cancelled the restart of {', '.join(n for n, _ in found)}.")

