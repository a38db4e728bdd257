"""Cluster-wide commands: history, show-config, edit-config, pause, resume, version, remove."""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from collections.abc import Callable
from typing import IO, Any

import click
import yaml

from pgha import __version__, yamlsafe

# The other operator command modules register their commands when imported.
from pgha.cli import (  # noqa: F401
    commands_cluster_list,
    commands_connect,
    commands_member,
    commands_site,
    commands_switchover,
    context,
)
from pgha.cli.context import Refused, Session, confirm, wait_for, with_cluster, with_optional_cluster
from pgha.cli.main import cli
from pgha.cli.render import config_yaml, format_lsn, iso, table
from pgha.config import ConfigError, build
from pgha.core.model import ClusterConfig, ClusterView, MemberInfo
from pgha.core.rules import RULES_BY_ID
from pgha.dcs.codec import to_jsonable

CHANGED_MEANWHILE = "the configuration was changed by someone else meanwhile; nothing was written, run again"

# --- history -----------------------------------------------------------------------------


@cli.command("history")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@with_cluster
def history_cmd(session: Session, as_json: bool) -> None:
    """Timeline changes: when each timeline ended, where, why, and who took over."""
    entries = sorted(session.store.history(), key=lambda e: (e.at, e.timeline))
    if as_json:
        click.echo(json.dumps([
            {"timeline": e.timeline, "lsn": format_lsn(e.lsn), "lsn_bytes": e.lsn, "at": iso(e.at),
             "reason": e.reason, "new_leader": e.new_leader, "old_leader": e.old_leader, "kind": e.kind}
            for e in entries], indent=2))
        return
    rows = [[str(e.timeline), format_lsn(e.lsn), iso(e.at), e.reason, e.new_leader] for e in entries]
    click.echo(table(("TL", "LSN", "Time", "Reason", "New leader"), rows, ">>"))


# --- configuration ---------------------------------------------------------------------------


def stored_config(session: Session) -> tuple[ClusterConfig, int]:
    """The cluster config and its mod_revision; an invalid stored config yields its usable settings.

    (The agents do the same: they keep every valid setting and ignore the others.)
    """
    try:
        return session.store.get_config()
    except ValueError as exc:
        click.echo(f"pgha: warning: {exc}; using the valid settings only", err=True)
        current = session.kv.get(session.store.key("config"))
        return session.read().config, current.mod_revision if current else 0


@cli.command("show-config")
@with_cluster
def show_config(session: Session) -> None:
    """The cluster-wide configuration (YAML), as the agents read it from the DCS."""
    config, _ = stored_config(session)
    click.echo(config_yaml(config), nl=False)


def _assignment(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint=option)
    return key.strip(), value.strip()


def _setting_value(key: str, text: str) -> Any:
    """A -s value as a YAML scalar: ``30`` -> 30, ``true`` -> True, ``"on"`` -> 'on', empty -> None.

    Only true/false are booleans: YAML 1.1's on/off/yes/no stay text (synchronous_mode=on).
    """
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        raise Refused(f"-s {key}={text}: not a valid YAML value; quote strings, e.g. '\"...\"'") from None
    if isinstance(value, dict | list):
        raise Refused(f"-s {key}={text}: expected a single value, not a {type(value).__name__}")
    if isinstance(value, bool) and text.lower() not in ("true", "false"):
        return text
    return value


def _param_value(text: str) -> Any:
    """A -p value: numbers become numbers, anything else stays the text (``on`` stays 'on')."""
    if not text:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value
    return text


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> None:
    """Deep-merge ``changes`` into ``base``; a None value removes the key (back to its default)."""
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise Refused(f"-s {dotted}: {p} is not a mapping")
        node = child
    _merge(node, {last: value})


def _validated(data: Any) -> ClusterConfig:
    try:
        config = build(ClusterConfig, data)
    except ConfigError as exc:
        raise Refused(f"invalid configuration: {exc}") from None
    # build() turns every parameter value into text (str comes first in the union); keep 100 a number.
    params = data.get("parameters") if isinstance(data, dict) else None
    if isinstance(params, dict):
        config = dataclasses.replace(config, parameters={str(k): v for k, v in params.items()})
    problem = config.problem()
    if problem:
        raise Refused(f"invalid configuration: {problem}")
    return config


def _read_apply(stream: IO[str]) -> dict[str, Any]:
    name = getattr(stream, "name", "--apply")
    try:
        data = yamlsafe.load(stream.read())
    except ValueError as exc:
        raise Refused(f"{name}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise Refused(f"{name}: expected a mapping of settings, got {type(data).__name__}")
    return data


@cli.command("edit-config")
@click.option("-s", "--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Set a cluster setting (YAML value: 30, true, \"on\"); empty resets it. Repeatable.")
@click.option("-p", "--pg", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a PostgreSQL parameter cluster-wide; empty removes it. Repeatable.")
@click.option("--apply", "apply_file", type=click.File("r"), metavar="FILE",
              help="Merge the settings of a YAML file ('-' for stdin); null values reset.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@with_cluster
def edit_config(session: Session, settings: tuple[str, ...], params: tuple[str, ...],
                apply_file: IO[str] | None, force: bool) -> None:
    """Change the cluster-wide configuration; shows a diff and asks before writing.

    Without -s, -p or --apply, opens $EDITOR when run from a terminal.
    """
    current, revision = stored_config(session)
    before = config_yaml(current)
    data: dict[str, Any] = to_jsonable(current)
    if apply_file is not None:
        _merge(data, _read_apply(apply_file))
    for text in settings:
        key, value = _assignment(text, "-s")
        _set_path(data, key, _setting_value(key, value))
    for text in params:
        name, value = _assignment(text, "-p")
        _merge(data.setdefault("parameters", {}), {name: _param_value(value)})
    if not (settings or params or apply_file) and sys.stdin.isatty():
        edited = click.edit(before, extension=".yaml")
        if edited is not None:
            try:
                data = yaml.safe_load(edited) or {}
            except yaml.YAMLError:
                raise Refused("the edited text is not valid YAML; nothing was changed") from None
    new = _validated(data)
    after = config_yaml(new)
    if new == current:
        click.echo("No changes.")
        return
    click.echo("".join(difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                            "before", "after")), nl=False)
    confirm("Apply these changes?", force)
    if not session.store.set_config(new, revision):
        raise Refused(CHANGED_MEANWHILE)
    click.echo("Configuration changed; the agents apply it on their next loop.")
    if dict(current.parameters) != dict(new.parameters):
        click.echo("Some PostgreSQL parameters may need a restart: see 'Pending restart' in pgha list.")


# --- maintenance mode --------------------------------------------------------------------------


def in_pause_section(rule_id: str) -> bool:
    """Whether the member's last rule is one of maintenance mode's."""
    rule = RULES_BY_ID.get(rule_id)
    return rule is not None and rule.section == "pause"


def _pause_progress(want: bool, written: int = 0) -> Callable[[ClusterView], str | None]:
    """Who has not yet reported the change written at revision ``written``.

    Fix: the rule alone is not enough; right after a resume, members still publishing the
    previous pause's "paused" made 'pause --wait' return at once.  A member that publishes
    its config revision must have seen ``written``; an older agent (0) is judged by its rule.
    """
    def seen(m: MemberInfo) -> bool:
        return m.config_revision == 0 or m.config_revision >= written

    def check(view: ClusterView) -> str | None:
        waiting = sorted(n for n, m in view.members.items() if in_pause_section(m.rule_id) != want
                         or not seen(m))
        if not waiting:
            return None
        return f"waiting for {', '.join(waiting)} to {'pause' if want else 'resume'}"

    return check


def _set_pause(session: Session, want: bool, wait: bool) -> None:
    config, revision = stored_config(session)
    if config.pause == want:
        raise Refused("the cluster is already paused" if want else "the cluster is not paused")
    if not session.store.set_config(dataclasses.replace(config, pause=want), revision):
        raise Refused(CHANGED_MEANWHILE)
    if want:
        click.echo("Maintenance mode on: the agents take no automatic action until 'pgha resume'.")
    else:
        click.echo("Maintenance mode off: the agents manage the cluster again.")
    if wait:
        check = _pause_progress(want, stored_config(session)[1])
        wait_for(lambda: check(session.read()), context.WAIT_TIMEOUT, "pause" if want else "resume")
        click.echo("Every member has " + ("paused." if want else "resumed."))


@cli.command("pause")
@click.option("--wait", is_flag=True, help="Wait until every member reports that it is paused.")
@with_cluster
def pause_cmd(session: Session, wait: bool) -> None:
    """Maintenance mode: agents keep publishing state but take no automatic action."""
    _set_pause(session, True, wait)


@cli.command("resume")
@click.option("--wait", is_flag=True, help="Wait until every member reports that it has resumed.")
@with_cluster
def resume_cmd(session: Session, wait: bool) -> None:
    """Leave maintenance mode: agents manage the cluster again."""
    _set_pause(session, False, wait)


# --- version ------------------------------------------------------------------------------------


@cli.command("version")
@with_optional_cluster
def version_cmd(session: Session | None) -> None:
    """This pgha's version; with -c/--dcs also the version each member runs."""
    click.echo(f"pgha {__version__}")
    if session is None:
        return
    view = session.read()
    for name in sorted(view.members):
        click.echo(f"{name}: pgha {view.members[name].version or 'unknown'}")


# --- remove -------------------------------------------------------------------------------------


@cli.command("remove")
@click.argument("cluster_name", metavar="CLUSTER")
@click.option("--force", is_flag=True, help="Remove even while members run, without asking.")
@with_cluster
def remove_cmd(session: Session, cluster_name: str, force: bool) -> None:
    """Delete every key of CLUSTER from the DCS (stop its agents first)."""
    if session.cluster and session.cluster != cluster_name:
        raise Refused(f"CLUSTER is {cluster_name} but -c/--cluster names {session.cluster}; they must match")
    store = session.for_cluster(cluster_name)
    _, keys = session.kv.get_prefix(store.root)
    if not keys:
        raise Refused(f"cluster {cluster_name} not found under {session.prefix} at {session.url}")
    alive = sorted(store.read().members)
    if alive and not force:
        raise Refused(f"{len(alive)} member(s) still running ({', '.join(alive)}); "
                      "stop their agents first, or use --force")
    if not force:
        try:
            typed = click.prompt(f"This deletes every key of cluster {cluster_name}. "
                                 "Type the cluster name to confirm", default="", show_default=False)
        except click.Abort:
            typed = ""
        if typed != cluster_name:
            raise Refused("the name typed does not match; nothing was removed")
    store.remove_cluster()
    click.echo(f"Cluster {cluster_name} removed.")
