"""`pgha agent -c FILE` and `pgha validate -c FILE`."""

from __future__ import annotations

import click

from pgha.agent.entry import load_checked, run_agent
from pgha.cli.main import cli


@cli.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(),
              help="Node YAML file; - reads standard input.")
def validate(config_path: str) -> None:
    """Check a node configuration and this machine against it; create nothing."""
    cfg = load_checked(config_path)
    click.echo(f"{'<stdin>' if config_path == '-' else config_path}: OK (cluster {cfg.cluster}, node {cfg.name})")


@cli.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(), help="Node YAML file.")
def agent(config_path: str) -> None:
    """Run the HA agent in the foreground (for systemd); SIGTERM stops it cleanly."""
    run_agent(config_path)
