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
    _run_agent(_load_checked(config_path))


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

    cfg = dataclasses.replace(_load_checked(config_path), bootstrap=BootstrapConfig(adopt=True))
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
        _run_agent(cfg)


def _run_agent(cfg: NodeConfig) -> None:
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
