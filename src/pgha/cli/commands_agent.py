"""`pgha agent -c FILE` and `pgha validate -c FILE`."""

from __future__ import annotations

import sys

import click

from pgha.agent.entry import load_checked, run_loaded
from pgha.cli.main import cli


@cli.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(),
              help="Node YAML file; - reads standard input.")
def validate(config_path: str) -> None:
    """Check a node configuration and this machine against it; create nothing."""
    cfg = load_checked(config_path)
    if cfg.backup is not None:
        from pgha.backup.probe import reach_repository

        problem = reach_repository(cfg.backup)
        if problem:
            click.echo(f"pgha: {problem}", err=True)
            sys.exit(1)
    click.echo(f"{'<stdin>' if config_path == '-' else config_path}: OK (cluster {cfg.cluster}, node {cfg.name})")


@cli.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(), help="Node YAML file.")
def agent(config_path: str) -> None:
    """Run the HA agent in the foreground (for systemd); SIGTERM stops it cleanly."""
    run_loaded(load_checked(config_path))


@cli.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(), help="Node YAML file.")
@click.option("--check", is_flag=True, help="Only check that this node can be adopted; start nothing.")
def adopt(config_path: str, check: bool) -> None:
    """Take over the existing PostgreSQL of this node in place: run the agent with bootstrap.adopt on.

    Start it on the primary first, then on each replica.  Nothing is restarted; settings that
    need a restart show as pending.  Refused (one line, exit 1) when the data directory is not the
    cluster's, or this is a replica and no member leads yet.
    """
    import dataclasses

    from pgha.agent import adopt as adoption
    from pgha.config import BootstrapConfig
    from pgha.dcs.base import DCSError
    from pgha.dcs.factory import open_kv
    from pgha.dcs.store import ClusterStore
    from pgha.postgres.node import PostgresNode

    cfg = dataclasses.replace(load_checked(config_path), bootstrap=BootstrapConfig(adopt=True))
    pg = PostgresNode(cfg).observe()
    try:
        view = ClusterStore(open_kv(cfg.dcs), cfg.cluster, cfg.dcs.prefix).read()
    except DCSError as exc:
        click.echo(f"pgha: {cfg.dcs.type}: {exc}; check the dcs section", err=True)
        sys.exit(3)
    problem = adoption.problem(cfg, pg, view, adoption.running_port(cfg))
    if problem:
        click.echo(f"pgha: cannot adopt: {problem}", err=True)
        sys.exit(1)
    click.echo(f"pgha: {adoption.plan(cfg, pg, view)}" + (" (check only)" if check else ""), err=True)
    if not check:
        run_loaded(cfg)
