"""`pgha promote-cluster` and `pgha demote-cluster`: move the primary role between two sites.

Both record one change of the cluster config's ``standby_cluster`` in the DCS (validated by
``pgha.intents``, as the REST API's ``POST /promote-cluster`` and ``/demote-cluster``); the leader
carries it out (rules ``standby-*`` and ``leader-promote``) and the command waits for it.
"""

from __future__ import annotations

import click

from pgha import intents as validate
from pgha.cli import context
from pgha.cli.commands_cluster_list import print_list
from pgha.cli.context import Refused, Session, confirm, valid, wait_for, with_cluster
from pgha.cli.main import cli
from pgha.core.model import ClusterConfig, ClusterView, Role
from pgha.core.standby import StandbyCluster

CHANGED_MEANWHILE = "the configuration was changed by someone else meanwhile; nothing was written, run again"


def leader_role_progress(view: ClusterView, want: Role) -> str | None:
    """None once the leader runs with role ``want`` (primary, or replica: the standby leader) and has
    decided with the new config; else a progress line."""
    if view.leader is None:
        return "no leader right now, waiting for the election"
    m = view.members.get(view.leader.name)
    if m is None:
        return f"{view.leader.name} holds the leader key but publishes no status yet"
    if m.role == want and m.state in ("running", "streaming") and m.config_revision >= view.config_revision:
        return None
    doing = f"{m.state}, rule {m.rule_id}" if m.rule_id else m.state
    return f"{m.name}: {doing}"


def _record(session: Session, view: ClusterView, new: ClusterConfig, prompt: str, force: bool) -> None:
    confirm(prompt, force)
    if not session.store.set_config(new, view.config_revision):
        raise Refused(CHANGED_MEANWHILE)


def _finish(session: Session, want: Role, what: str, wait: bool) -> None:
    if not wait:
        return
    wait_for(lambda: leader_role_progress(session.read(), want), context.WAIT_TIMEOUT, what)
    print_list(session.store)


@cli.command("promote-cluster")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the leader runs as primary, then show the cluster.")
@with_cluster
def promote_cluster_cmd(session: Session, force: bool, wait: bool) -> None:
    """Turn this standby cluster into a primary cluster: its standby leader promotes."""
    view = session.read()
    new = valid(validate.promote_cluster(view))
    _record(session, view, new, f"Promote standby cluster {view.name} to a primary cluster (it stops following "
                                "the other site and accepts writes)?", force)
    click.echo("standby_cluster removed; the standby leader promotes.")
    _finish(session, Role.PRIMARY, "promote-cluster", wait)


@cli.command("demote-cluster")
@click.option("--host", default="", metavar="HOST", help="The primary to follow: a host, or 'h1:p1,h2:p2'.")
@click.option("--port", default=5432, show_default=True, type=int, help="Its port (for hosts given without one).")
@click.option("--slot", "slot", default="", metavar="NAME", help="The replication slot to stream through there.")
@click.option("--restore-command", default="", metavar="CMD", help="Fetch WAL from the other site's archive.")
@click.option("--apply-delay", "delay", default="", metavar="DELAY", help="recovery_min_apply_delay, e.g. 5min.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the leader runs as the standby leader, then show the cluster.")
@with_cluster
def demote_cluster_cmd(session: Session, host: str, port: int, slot: str, restore_command: str, delay: str,
                       force: bool, wait: bool) -> None:
    """Turn this primary cluster into a standby cluster of another one (its leader shuts down, rewinds
    where the timelines diverged, and follows HOST or the archive)."""
    source = StandbyCluster(host=host, port=port, primary_slot_name=slot, restore_command=restore_command,
                            recovery_min_apply_delay=delay)
    view = session.read()
    new = valid(validate.demote_cluster(view, source))
    _record(session, view, new, f"Demote cluster {view.name} to a standby cluster of "
                                f"{host or 'the archive (restore_command)'} (its primary stops taking writes)?", force)
    click.echo("standby_cluster recorded; the leader shuts down and follows the other site.")
    _finish(session, Role.REPLICA, "demote-cluster", wait)
