"""`pgha list` and `pgha topology`: the members as their agents publish them."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable

import click
import yaml

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


def render_list(view: ClusterView, tree: bool = False, extended: bool = False) -> str:
    """The header, the members table (as a tree with ``tree``) and the footer lines."""
    lines = [header_line(view)]
    if view.config.pause:
        lines.append("Maintenance mode: on")
    headers, rows = list_table(view, tree, extended)
    lines.append(table(headers, rows, LIST_ALIGN + ("<<" if extended else "")))
    lines += footer_lines(view)
    return "\n".join(lines)


def list_table(view: ClusterView, tree: bool = False, extended: bool = False) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of `list`; ``extended`` adds the scheduled restart and the last rule (``-e``)."""
    placed = topology(view) if tree else [(0, r) for r in member_rows(view)]
    headers = list(LIST_HEADERS) + (["Scheduled restart", "Rule"] if extended else [])
    rows = []
    for depth, r in placed:
        cells = list_cells(r, depth)
        if extended:
            intent = view.intents.get(r.member)
            scheduled = intent.scheduled_at if intent is not None and intent.action == "restart" else None
            cells += [iso(scheduled), r.rule_id]
        rows.append(cells)
    return headers, rows


def render_list_json(view: ClusterView) -> str:
    return json.dumps([r.to_json() for r in member_rows(view)], indent=2)


def render(view: ClusterView, fmt: str, tree: bool = False, extended: bool = False) -> str:
    """`list` in one of its formats: pretty (the table), tsv, json or yaml (one entry per member)."""
    if fmt == "json":
        return render_list_json(view)
    if fmt == "yaml":
        return yaml.safe_dump([r.to_json() for r in member_rows(view)], sort_keys=False).rstrip()
    if fmt == "tsv":
        headers, rows = list_table(view, tree, extended)
        return "\n".join("\t".join(cells) for cells in [headers, *rows])
    return render_list(view, tree, extended)


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


FORMATS = ("pretty", "tsv", "json", "yaml")


def _show(session: Session, fmt: str, tree: bool, extended: bool, stamp: bool, every: float | None) -> None:
    """Print once, or every ``every`` seconds until Ctrl-C (``-w``/``-W``, as patronictl)."""
    def once() -> tuple[ClusterView, str]:
        view = session.read()
        text = render(view, fmt, tree, extended)
        if fmt == "pretty":
            text = "\n".join([text, *backup_lines(session.store, view)])
        if stamp:
            text = datetime.datetime.now().astimezone().isoformat(sep=" ", timespec="seconds") + "\n" + text
        return view, text

    if every is None:
        view, text = once()
        click.echo(text)
        if not view.members and view.system_id is None and fmt == "pretty":
            known = ClusterStore.list_clusters(session.kv, session.prefix)
            names = ", ".join(known) if known else "none"
            click.echo(f"pgha: no member of cluster {view.name} is publishing under {session.prefix} "
                       f"(clusters there: {names})", err=True)
        return
    try:
        while True:
            _, text = once()
            click.clear()
            click.echo(f"{time.strftime('%Y-%m-%d %H:%M:%S')} (every {every:g}s, Ctrl-C to stop)\n{text}")
            context.SLEEP(every)
    except KeyboardInterrupt:
        return


def watch_options(fn: Callable[..., None]) -> Callable[..., None]:
    fn = click.option("-W", "watch_2s", is_flag=True, help="Redraw every 2 seconds until Ctrl-C.")(fn)
    return click.option("-w", "--watch", type=click.FloatRange(min=0.1), metavar="SECONDS",
                        help="Redraw every SECONDS until Ctrl-C.")(fn)


@cli.command("list")
@click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="pretty", show_default=True,
              help="Output format.")
@click.option("--json", "as_json", is_flag=True, help="Same as -f json.")
@click.option("-e", "--extended", is_flag=True, help="Also show scheduled restarts and each member's last rule.")
@click.option("-t", "--timestamp", "stamp", is_flag=True, help="Print the time first.")
@watch_options
@with_cluster
def list_cmd(session: Session, fmt: str, as_json: bool, extended: bool, stamp: bool, watch: float | None,
             watch_2s: bool) -> None:
    """Members: role, state, timeline, lag behind the leader, pending restart, tags."""
    _show(session, "json" if as_json else fmt, False, extended, stamp, watch or (2.0 if watch_2s else None))


@cli.command("topology")
@watch_options
@with_cluster
def topology_cmd(session: Session, watch: float | None, watch_2s: bool) -> None:
    """Members as a tree: each replica under the member it streams from."""
    _show(session, "pretty", True, False, False, watch or (2.0 if watch_2s else None))
