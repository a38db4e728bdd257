"""`pgha agent -c FILE` and `pgha validate -c FILE`."""

from __future__ import annotations

import logging
import sys

import click

from pgha.cli.main import cli
from pgha.config import ConfigError, NodeConfig, load
from pgha.preflight import run_all


def _load_checked(path: str) -> NodeConfig:
    try:
        cfg = load(path)
        run_all(cfg)
        return cfg
    except ConfigError as exc:
        click.echo(f"pgha: {exc}", err=True)
        sys.exit(1)


@cli.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(),
              help="Node YAML file; - reads standard input.")
def validate(config_path: str) -> None:
    """Check a node configuration and this machine against it; create nothing."""
    cfg = _load_checked(config_path)
    click.echo(f"{'<stdin>' if config_path == '-' else config_path}: OK (cluster {cfg.cluster}, node {cfg.name})")


@cli.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(), help="Node YAML file.")
def agent(config_path: str) -> None:
    """Run the HA agent in the foreground (for systemd); SIGTERM stops it cleanly."""
    cfg = _load_checked(config_path)
    from pgha.agent.agent import Agent, install_signal_handlers
    from pgha.api.server import ApiStartError
    from pgha.logging_setup import setup_logging

    setup_logging(cfg)
    a = Agent(cfg)
    install_signal_handlers(a)
    try:
        a.run()
    except (ConfigError, ApiStartError) as exc:
        logging.getLogger("pgha").error("%s", exc)
        sys.exit(1)
