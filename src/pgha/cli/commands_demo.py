"""`pgha demo up|down`: a local cluster with its own etcd, for trying pgha out."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pgha.cli.main import cli
from pgha.core.model import PROFILES

if TYPE_CHECKING:
    from pgha.demo import DemoState


def _lab_option(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """--netns and --vip are kept in the context (read by _lab_options), not passed as arguments."""
    ctx.meta[f"pgha.demo.{param.name}"] = value


def _lab_options() -> tuple[bool, str | None]:
    meta = click.get_current_context().meta
    vip = meta.get("pgha.demo.vip")
    return bool(meta.get("pgha.demo.netns")), str(vip) if vip else None


@cli.group()
def demo() -> None:
    """Start or stop a local demo cluster (etcd + N agents on this machine)."""


@demo.command("up")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--dir", "directory", default=".demo", show_default=True, type=click.Path())
@click.option("--port-base", default=15400, show_default=True, type=click.IntRange(1024, 65000))
@click.option("--profile", type=click.Choice(["default", "fast"]), default="default", show_default=True,
              help=f"Timing preset: default (ttl {PROFILES['default']['ttl']:g} s) or fast "
                   f"(ttl {PROFILES['fast']['ttl']:g} s, five etcd requests a second per agent).")
@click.option("--ttl", type=click.FloatRange(2, 300), help="Lease ttl in seconds (overrides the profile's).")
@click.option("--sync", is_flag=True, help="synchronous_mode: on")
@click.option("--netns", is_flag=True, expose_value=False, callback=_lab_option,
              help="Each node in its own network namespace on a bridge (needs root).")
@click.option("--vip", metavar="ADDR", expose_value=False, callback=_lab_option,
              help="With --netns: a virtual IP in 198.18.0.0/15 the agents move to the leader.")
@click.option("--etcd-members", default=1, show_default=True, type=click.IntRange(1, 7),
              help="With --netns: an etcd cluster of this many members (odd), each in its own namespace, "
              "with TLS and authentication.")
@click.option("--timeout", default=120.0, show_default=True, type=float, help="Seconds to wait for health.")
@click.option("--pgbouncer", is_flag=True, help="A PgBouncer per node (port P+10i+2), pointed at the primary "
              "by its agent.")
@click.option("--backup", is_flag=True, help="A pgBackRest repository host (TLS, port P+3; its own namespace with "
              "--netns): WAL archiving on every member, `pgha backup`, `pgha restore`.")
@click.option("--dcs", "dcs_type", type=click.Choice(["etcd", "zookeeper"]), default="etcd", show_default=True,
              help="Which DCS the demo starts (on port P) and the agents use.")
@click.option("--api-tls/--no-api-tls", default=True, show_default=True,
              help="Serve the REST API over HTTPS, with certificates from a CA made for the demo.")
@click.option("--pg-bin", "pg_bin", metavar="DIR",
              help="PostgreSQL's bin directory (postgresql.bin_dir; default: Debian's PostgreSQL 15): it picks "
                   "the major, e.g. $(make -s pg18-bin) for PostgreSQL 18.")
def demo_up(nodes: int, directory: str, port_base: int, profile: str, ttl: float | None, sync: bool,
            timeout: float, pgbouncer: bool, api_tls: bool, etcd_members: int, dcs_type: str, backup: bool,
            pg_bin: str | None) -> None:
    """Start etcd (or ZooKeeper) and NODES agents; return once there is a leader and NODES-1 streaming replicas."""
    from pgha.demo import DemoCluster, DemoError
    from pgha.demo.state import PG_BIN

    started = time.monotonic()
    d = DemoCluster(directory, nodes=nodes, port_base=port_base, ttl=ttl, sync=sync, profile=profile,
                    api_tls=api_tls, dcs=dcs_type, pg_bin=pg_bin or PG_BIN)
    d.pgbouncer = pgbouncer
    d.backup = backup
    d.etcd_members = etcd_members
    try:
        d.netns, d.vip = _lab_options()
        state = d.up(timeout=timeout)
    except DemoError as exc:
        click.echo(f"pgha: {exc}", err=True)
        sys.exit(1)
    click.echo(f"\ncluster '{state.cluster}' healthy in {time.monotonic() - started:.1f}s\n")
    from pgha.cli.commands_cluster_list import print_list

    print_list(d.store(), as_json=False)
    leader_dsn = " ".join(
        [f"host={','.join(n.address or '127.0.0.1' for n in state.nodes)}",
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
    _echo_dashboard(state)
    if state.etcd_members or state.dcs == "zookeeper":
        # The DCS needs the credential and the TLS files in the node's YAML.
        click.echo(f"\nSee the cluster:  .venv/bin/pgha -c {state.nodes[0].config} list")
        if state.etcd_members:
            _echo_etcd_members(state, d.dir)
    else:
        click.echo(f"\nSee the cluster:  .venv/bin/pgha list --dcs {state.etcd} --cluster {state.cluster}")
    first = state.nodes[0]
    ca = f" --cacert {state.api_ca}" if state.api_ca else ""
    click.echo(f"REST API (credentials in {state.api_netrc}):  curl --netrc-file {state.api_netrc}{ca} "
               f"-X POST {first.api_url}/reload")
    click.echo(f"Stop everything:  .venv/bin/pgha demo down --dir {directory}")
    if state.repository_config:
        click.echo(f"Backups (repository host: {d.repository_address}:{d.repository_port}, its log "
                   f"{d.dir / 'repository' / 'repository.log'}):")
        click.echo(f"  .venv/bin/pgha -c {first.config} backup --type full")
        click.echo(f"  .venv/bin/pgha -c {first.config} backup list")
    if state.client_netns:
        _echo_lab(state, d.dir)


def _echo_dashboard(state: DemoState) -> None:
    click.echo("\nDashboard in a browser (every member serves it):")
    for n in state.nodes:
        click.echo(f"  {n.name}: {n.api_url}/ui")
    if state.api_netrc:
        click.echo(f"  its buttons ask for the API user and password in {state.api_netrc}")
    if state.api_ca:
        click.echo(f"  the API's certificate is signed by the demo's own CA ({state.api_ca}): import it "
                   "or accept the browser's warning")


def _echo_lab(state: DemoState, directory: Path) -> None:
    """How to reach the cluster from the client namespace (and through the VIP)."""
    click.echo(f"\nEvery node runs in its own network namespace ({', '.join(n.netns or '' for n in state.nodes)});")
    click.echo(f"a client namespace {state.client_netns} sits on the same bridge.")
    if state.vip:
        port = state.nodes[0].pg_port
        dsn = f"host={state.vip} port={port} user=postgres dbname=postgres passfile={directory / 'pgpass'}"
        click.echo(f"The VIP {state.vip} follows the leader; from the client namespace:")
        click.echo(f"  ip netns exec {state.client_netns} psql '{dsn}'")
    click.echo("'pgha demo down' removes the namespaces and the bridge as well.")


def _echo_etcd_members(state: DemoState, directory: Path) -> None:
    """Where the etcd members run and how to reach them with etcdctl (as root; TLS and auth are on)."""
    members = ", ".join(f"{m.name} {m.address} ({m.netns})" for m in state.etcd_members)
    pki = directory / "etcd-pki"
    click.echo(f"etcd members (TLS, client certificates, auth): {members}")
    click.echo(f"  export ETCDCTL_API=3 ETCDCTL_ENDPOINTS={state.etcd} ETCDCTL_CACERT={pki}/ca.crt "
               f"ETCDCTL_CERT={pki}/admin.crt ETCDCTL_KEY={pki}/admin.key")
    click.echo(f"  etcdctl --user root member list < {pki}/root.password")


@demo.command("down")
@click.option("--dir", "directory", default=".demo", show_default=True, type=click.Path())
def demo_down(directory: str) -> None:
    """Stop every process the demo started (agents, PostgreSQL, PgBouncers, etcd or ZooKeeper)."""
    from pgha.demo import DemoCluster, DemoError

    try:
        d = DemoCluster.load(directory)
    except DemoError as exc:
        click.echo(f"pgha: {exc}", err=True)
        sys.exit(1)
    d.down()
    click.echo(f"demo in {directory} stopped")
