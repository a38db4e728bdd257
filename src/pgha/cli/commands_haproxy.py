"""`pgha haproxy-config`: an haproxy.cfg for the members published in etcd.

The read-write listener reaches the one member whose REST API answers 200 on
``/primary``; the read-only one balances over the members answering 200 on
``/replica?lag=LAG``.  Sessions on a member marked down are cut.  The member
list is read once: run the command again after adding or removing a member.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from pgha.cli.context import Refused, Session, with_cluster
from pgha.cli.main import cli
from pgha.routing.haproxy import Member, render_haproxy_config

# HAProxy time values: a number with an optional unit (us, ms, s, m, h, d).
_TIME = re.compile(r"\d+(us|ms|s|m|h|d)?")


def haproxy_members(session: Session) -> list[Member]:
    """(name, host, PostgreSQL port, API URL) of every member that published all three."""
    view = session.read()
    members = [(m.name, m.host, m.port, m.api_url) for _, m in sorted(view.members.items())
               if m.host and m.port and m.api_url]
    if not members:
        raise Refused(f"no member of cluster {view.name} has published its address and API URL yet; "
                      "start the agents first")
    return members


@cli.command("haproxy-config")
@click.option("--rw-port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the read-write listener (the primary).")
@click.option("--ro-port", default=5001, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the read-only listener (the replicas).")
@click.option("--bind", "bind_address", default="*", show_default=True, metavar="ADDRESS",
              help="Address both listeners bind to.")
@click.option("--lag", default="16MB", show_default=True, metavar="SIZE",
              help="A replica further behind than this is taken out of the read-only listener.")
@click.option("--stats-port", type=click.IntRange(1, 65535), help="Also serve HAProxy's statistics page here.")
@click.option("--check-interval", default="1s", show_default=True, metavar="TIME",
              help="How often HAProxy asks each member's API (HAProxy time: 500ms, 1s…).")
@click.option("--ca-file", type=click.Path(dir_okay=False), metavar="PATH",
              help="CA of the members' API certificates: HAProxy verifies them (default: HTTPS checks "
                   "without verification).")
@with_cluster
def haproxy_config_cmd(session: Session, rw_port: int, ro_port: int, bind_address: str, lag: str,
                       stats_port: int | None, check_interval: str, ca_file: str | None) -> None:
    """Print an haproxy.cfg routing to the primary (read-write) and the replicas (read-only)."""
    from pgha.api.health import parse_size
    from pgha.api.schema import BadRequest

    try:
        parse_size("--lag", lag)
    except BadRequest as exc:
        raise click.BadParameter(str(exc).removeprefix("--lag: "), param_hint="--lag") from None
    if not _TIME.fullmatch(check_interval):
        raise click.BadParameter(f"{check_interval!r} is not an HAProxy time; use e.g. 500ms or 1s",
                                 param_hint="--check-interval")
    if ca_file is not None and (not ca_file.strip() or any(ch.isspace() for ch in ca_file)):
        raise click.BadParameter(f"{ca_file!r} has a space; HAProxy needs a path without one",
                                 param_hint="--ca-file")
    ports = [rw_port, ro_port, *([stats_port] if stats_port else [])]
    if len(set(ports)) != len(ports):
        raise click.UsageError("--rw-port, --ro-port and --stats-port must all differ")
    try:
        text = render_haproxy_config(haproxy_members(session), rw_port, ro_port, max_lag=lag,
                                     stats_port=stats_port, check_interval=check_interval,
                                     bind_address=bind_address,
                                     ca_file=str(Path(ca_file).absolute()) if ca_file else None)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    click.echo(text, nl=False)
