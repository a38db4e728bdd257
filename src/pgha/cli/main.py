"""`pgha` entry point: a click group; each command lives in its own module."""

from __future__ import annotations

import sys

import click

from pgha import __version__
from pgha.cli.context import dcs_options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pgha")
@dcs_options
@click.pass_context
def cli(ctx: click.Context, /, config_path: str | None, dcs: str | None, cluster: str | None,
        prefix: str | None, **etcd_flags: str | None) -> None:
    """PostgreSQL high availability: agent, CLI and tools.

    Where the cluster is may be given before the command (pgha -c FILE list) or after it
    (pgha list -c FILE); after it wins.
    """
    ctx.obj = {"config_path": config_path, "dcs": dcs, "cluster": cluster, "prefix": prefix, **etcd_flags}


def _register() -> None:
    # Each module adds its commands to `cli` when imported.
    import pgha.cli.commands_cluster  # noqa: F401  (operator commands; it imports the others)
    from pgha.cli import (  # noqa: F401
        commands_agent,
        commands_backup,
        commands_demo,
        commands_generate,
        commands_haproxy,
        commands_probe,
        commands_upgrade,
        commands_verify,
    )


def main() -> None:
    _register()
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
