"""`pgha demo up|down`: a local cluster with its own etcd, for trying pgha out."""

from __future__ import annotations

import sys
import time

import click

from pgha.cli.main import cli


@cli.group()
def demo() -> None:
    """Start or stop a local demo cluster (etcd + N agents on this machine)."""


@demo.command("up")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--dir", "directory", default=".demo", show_default=True, type=click.Path())
@click.option("--port-base", default=15400, show_default=True, type=click.IntRange(1024, 65000))
@click.option("--ttl", default=10.0, show_default=True, type=click.FloatRange(2, 300))
@click.option("--sync", is_flag=True, help="synchronous_mode: on")
@click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds to wait for health.")
@click.option("--pgbouncer", is_flag=True, help="A PgBouncer per node (port P+10i+2), pointed at the primary "
              "by its agent.")
def demo_up(nodes: int, directory: str, port_base: int, ttl: float, sync: bool, timeout: float,
            pgbouncer: bool) -> None:
    """Start etcd and NODES agents; return once there is a leader and NODES-1 streaming replicas."""
    from pgha.demo import DemoCluster, DemoError

    started = time.monotonic()
    d = DemoCluster(directory, nodes=nodes, port_base=port_base, ttl=ttl, sync=sync)
    d.pgbouncer = pgbouncer
    try:
        state = d.up(timeout=timeout)
    except DemoError as exc:
        click.echo(f"pgha: {exc}", err=True)
        sys.exit(1)
    click.echo(f"\ncluster '{state.cluster}' healthy in {time.monotonic() - started:.1f}s\n")
    from pgha.cli.commands_cluster_list import print_list

    print_list(d.store(), as_json=False)
    leader_dsn = " ".join(
        [f"host={','.join('127.0.0.1' for _ in state.nodes)}",
         f"port={','.join(str(n.pg_port) for n in state.nodes)}",
         "user=postgres dbname=postgres target_session_attrs=read-write",
         f"passfile={d.dir / 'pgpass'}"])
    click.echo("\nConnect to the primary (whichever node it is):")
    click.echo(f"  psql '{leader_dsn}'")
    click.echo("Each node:")
    for n in state.nodes:
        click.echo(f"  {n.name}: psql '{n.dsn}'")
    if pgbouncer:
        click.echo("Through each node's PgBouncer (it always points at the primary):")
        for n in state.nodes:
            click.echo(f"  {n.name}: psql '{d.bouncer_dsn(n.name)}'")
    click.echo(f"\nSee the cluster:  .venv/bin/pgha list --dcs {state.etcd} --cluster {state.cluster}")
    click.echo(f"Stop everything:  .venv/bin/pgha demo down --dir {directory}")


@demo.command("down")
@click.option("--dir", "directory", default=".demo", show_default=True, type=click.Path())
def demo_down(directory: str) -> None:
    """Stop every process the demo started (agents, PostgreSQL, PgBouncers, etcd)."""
    from pgha.demo import DemoCluster, DemoError

    try:
        d = DemoCluster.load(directory)
    except DemoError as exc:
        click.echo(f"pgha: {exc}", err=True)
        sys.exit(1)
    d.down()
    click.echo(f"demo in {directory} stopped")
