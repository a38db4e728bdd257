"""`pgha list` and `pgha topology`: the members as their agents publish them."""

from __future__ import annotations

import json
import time

import click

from pgha.cli import context
from pgha.cli.context import Session, with_cluster
from pgha.cli.main import cli
from pgha.cli.render import (
    LIST_ALIGN,
    LIST_HEADERS,
    header_line,
    iso,
    list_cells,
    member_rows,
    table,
    topology,
)
from pgha.core.model import ClusterView
from pgha.dcs.store import ClusterStore


def footer_lines(view: ClusterView) -> list[str]:
    """Pending operator requests and oddities worth a line under the table."""
    lines = []
    if view.leader is None and view.members:
        lines.append("No leader: the cluster has no primary right now.")
    elif view.leader is not None and view.leader.name not in view.members:
        lines.append(f"Leader key names {view.leader.name}, which publishes no status.")
    sw = view.switchover
    if sw is not None:
        to = sw.candidate or "the best replica"
        when = f", scheduled at {iso(sw.scheduled_at)}" if sw.scheduled_at else ""
        lines.append(f"Pending {sw.kind}: {sw.leader or '(leader)'} -> {to} (phase: {sw.phase}{when})")
    lm = view.members.get(view.leader.name) if view.leader is not None else None
    if sw is None and lm is not None and lm.last_switchover_outcome \
            and not lm.last_switchover_outcome.startswith("done"):
        # A request the leader refused or aborted (e.g. a scheduled one whose candidate went bad).
        lines.append(f"Last switchover request ({lm.last_switchover_id[:8]}): {lm.last_switchover_outcome}")
    for name, intent in sorted(view.intents.items()):
        when = f" at {iso(intent.scheduled_at)}" if intent.scheduled_at else ""
        lines.append(f"Pending {intent.action} of {name}{when}")
    return lines


def render_list(view: ClusterView, tree: bool = False) -> str:
    """The header, the members table (as a tree with ``tree``) and the footer lines."""
    lines = [header_line(view)]
    if view.config.pause:
        lines.append("Maintenance mode: on")
    placed = topology(view) if tree else [(0, r) for r in member_rows(view)]
    rows = [list_cells(r, depth) for depth, r in placed]
    lines.append(table(LIST_HEADERS, rows, LIST_ALIGN))
    lines += footer_lines(view)
    return "\n".join(lines)


def render_list_json(view: ClusterView) -> str:
    return json.dumps([r.to_json() for r in member_rows(view)], indent=2)


def print_list(store: ClusterStore, as_json: bool = False) -> None:
    """Read the cluster once and print it (also used by `demo up` and after a switchover)."""
    view = store.read()
    click.echo(render_list_json(view) if as_json else render_list(view))


def backup_lines(store: ClusterStore, view: ClusterView) -> list[str]:
    """RPO, the restore window and the last restore test, when the cluster has backups configured."""
    if not any(m.backup is not None for m in view.members.values()):
        return []
    from pgha.backup import keys, verify
    from pgha.backup.status import list_lines

    return list_lines(keys.read_info(store), keys.read_result(store), verify.read_result(store), time.time())


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of members.")
@click.option("-w", "--watch", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Redraw every SECONDS until Ctrl-C.")
@with_cluster
def list_cmd(session: Session, as_json: bool, watch: float | None) -> None:
    """Members: role, state, timeline, lag behind the leader, pending restart, tags."""
    if watch is None:
        view = session.read()
        click.echo(render_list_json(view) if as_json else render_list(view))
        if not as_json:
            for line in backup_lines(session.store, view):
                click.echo(line)
        if not view.members and view.system_id is None and not as_json:
            known = ClusterStore.list_clusters(session.kv, session.prefix)
            names = ", ".join(known) if known else "none"
            click.echo(f"pgha: no member of cluster {view.name} is publishing under {session.prefix} "
                       f"(clusters there: {names})", err=True)
        return
    try:
        while True:
            view = session.read()
            text = render_list_json(view) if as_json else render_list(view)
            click.clear()
            click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} (every {watch:g}s, Ctrl-C to stop)\n{text}")
            context.SLEEP(watch)
    except KeyboardInterrupt:
        return


@cli.command("topology")
@with_cluster
def topology_cmd(session: Session) -> None:
    """Members as a tree: each replica under the member it streams from."""
    click.echo(render_list(session.read(), tree=True))
