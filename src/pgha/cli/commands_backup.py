"""`pgha backup [--type]`, `pgha backup list`, `pgha backup stanza-create`, `pgha repository run`.

`pgha backup` records a request at /backup/request (validated by ``pgha.intents.backup``) and
waits for the repository host to carry it out; `backup list` shows what the repository host last
published at /backup/info: each backup and the restore window.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Protocol, TypeVar

import click

from pgha import intents as validate
from pgha.cli.context import (
    EtcdFlags,
    Refused,
    Session,
    dcs_options,
    make_session,
    requester,
    valid,
    wait_for,
    with_cluster,
)
from pgha.cli.main import cli
from pgha.cli.render import iso
from pgha.dcs.base import DCSError

# Seconds `pgha backup` waits for the repository host (a full backup of a big database takes long).
BACKUP_WAIT = 6 * 3600.0


@cli.group("backup", invoke_without_command=True)
@click.option("--type", "kind", type=click.Choice(["full", "diff", "incr"]), default="full", show_default=True)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the backup is done.")
@dcs_options
@click.pass_context
def backup_group(ctx: click.Context, /, kind: str, wait: bool, **where: str | None) -> None:
    """Take a backup now (on the repository host, from a standby when one streams); see its subcommands."""
    # -c/--dcs given here serve the subcommands too (pgha backup -c FILE list).
    root = ctx.find_root()
    root.obj = {**(root.obj or {}), **{k: v for k, v in where.items() if v is not None}}
    if ctx.invoked_subcommand is None:
        o = root.obj
        flags = EtcdFlags(o.get("dcs_cacert"), o.get("dcs_cert"), o.get("dcs_key"), o.get("dcs_user"))
        session = make_session(o.get("config_path"), o.get("dcs"), o.get("cluster"), o.get("prefix"), True, flags)
        assert session is not None
        try:
            _run_backup(session, kind, wait)
        except DCSError as exc:
            raise session.unreachable(exc) from None
        finally:
            session.close()


def _run_backup(session: Session, kind: str, wait: bool) -> None:
    from pgha.backup import keys

    request = valid(validate.backup(session.read(), requester(), id=uuid.uuid4().hex[:12], type=kind,
                                    pending=keys.read_request(session.store)))
    if not keys.put_request(session.store, request):
        raise Refused("another backup was requested at the same moment; wait for it to finish")
    click.echo(f"{kind} backup requested (id {request.id}).")
    if not wait:
        return
    result = await_result(request.id, "backup", lambda: keys.read_result(session.store),
                          lambda: keys.read_request(session.store), BACKUP_WAIT)
    if not result.ok:
        raise Refused(f"backup {request.id} failed: {result.message}")
    source = f" from {result.source}" if result.source else ""
    click.echo(f"{result.message}{source} in {result.finished_at - result.started_at:.1f} s.")


class _Keyed(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=_Keyed)


def await_result(request_id: str, what: str, read_result: Callable[[], R | None],
                 read_request: Callable[[], _Keyed | None], timeout: float) -> R:
    """Wait until the repository host's result for ``request_id`` is in (a request it dropped is one
    line); shared by `pgha backup` and `pgha backup verify`."""
    started = time.monotonic()

    def check() -> str | None:
        result = read_result()
        if result is not None and result.id == request_id:
            return None
        pending = read_request()
        if pending is None or pending.id != request_id:
            raise Refused(f"{what} {request_id} was dropped; see the repository host's log")
        return f"running ({int(time.monotonic() - started) // 10 * 10} s)"

    wait_for(check, timeout, f"the {what}", interval=1.0)
    result = read_result()
    assert result is not None
    return result


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n //= 1024
    return str(n)


@backup_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_cluster
def backup_list(session: Session, as_json: bool) -> None:
    """Each backup in the repository and the window a restore can reach."""
    from pgha.backup import keys

    summary = keys.read_info(session.store)
    if summary is None:
        raise Refused("no backup information in the DCS; is 'pgha repository run' running on the repository host?")
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
        return
    click.echo(f"stanza {summary.stanza}: {summary.status} (read {iso(summary.read_at)})")
    if summary.error:
        click.echo(f"  last read failed: {summary.error}")
    if not summary.backups:
        click.echo("  no backups")
    else:
        click.echo(f"  {'LABEL':<34} {'TYPE':<5} {'STARTED':<20} {'DURATION':>8} {'SIZE':>10}  WAL")
        for b in summary.backups:
            mark = " (error)" if b.error else ""
            click.echo(f"  {b.label:<34} {b.type:<5} {iso(b.started_at):<20} {b.stopped_at - b.started_at:>7.0f}s "
                       f"{_size(b.size):>10}  {b.wal_start}..{b.wal_stop}{mark}")
    w = summary.window
    if w.start_at:
        end = f"{iso(w.end_at)} ({w.end_wal})" if w.end_at else w.end_wal or "?"
        click.echo(f"restore window: {iso(w.start_at)} .. {end}")
    else:
        click.echo("restore window: none (no backup yet; run 'pgha backup')")


@backup_group.command("stanza-create")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(), help="This member's node file.")
def stanza_create(config_path: str) -> None:
    """Create the stanza from this member (the initializing member does it by itself), then check it."""
    from pgha.backup.command import BackupError
    from pgha.backup.member import MemberArchive
    from pgha.config import ConfigError, load

    try:
        cfg = load(config_path)
        if cfg.backup is None:
            raise Refused(f"{config_path}: no backup: section; add one first")
        archive = MemberArchive(cfg)
        archive.prepare()
        click.echo(archive.create_stanza())
    except (ConfigError, BackupError) as exc:
        raise Refused(str(exc)) from None


@cli.group("repository")
def repository_group() -> None:
    """The pgBackRest repository host's pgha process."""


@repository_group.command("run")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(), help="Repository host YAML file.")
def repository_run(config_path: str) -> None:
    """Run on the repository host: its pgbackrest server, the backups asked for, /backup/info."""
    import logging

    from pgha.backup.repository import Repository, load
    from pgha.config import ConfigError
    from pgha.dcs.factory import open_kv
    from pgha.dcs.store import ClusterStore

    try:
        cfg = load(config_path)
    except ConfigError as exc:
        raise Refused(str(exc)) from None
    logging.basicConfig(level=cfg.log.level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = ClusterStore(open_kv(cfg.dcs), cfg.cluster, cfg.dcs.prefix)
    repo = Repository(cfg, store)

    def stop(signum: int, frame: FrameType | None) -> None:
        repo.stop.set()
        repo._wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    repo.run()
    sys.exit(0)


@cli.command("restore")
@click.option("-c", "--config", "config_path", required=True, type=click.Path(),
              help="The node file of the NEW cluster's first member (bootstrap.method: pgbackrest).")
@click.option("--stanza", "source", metavar="NAME", help="The stanza to restore from (default: "
              "bootstrap.pgbackrest.stanza).")
@click.option("--target-time", metavar="TIME", default="", help="ISO 8601; replay up to this time.")
@click.option("--target-lsn", metavar="LSN", default="", help="Replay up to this WAL position.")
@click.option("--target-name", metavar="NAME", default="", help="Replay up to this restore point.")
@click.option("--latest", is_flag=True, help="Replay the whole archive (the default when no target is given).")
def restore_cmd(config_path: str, source: str | None, target_time: str, target_lsn: str, target_name: str,
                latest: bool) -> None:
    """Point-in-time recovery into a NEW cluster, on its first member: restore from the repository, replay
    up to the target, promote.  The cluster restored from is never touched.  Then start this member's agent."""
    from pgha.backup.archive import settings
    from pgha.backup.restore import RestoreError, parse_target, restore_into
    from pgha.config import ConfigError, load
    from pgha.dcs.factory import open_kv
    from pgha.dcs.store import ClusterStore
    from pgha.postgres.node import PostgresError, PostgresNode

    try:
        cfg = load(config_path)
        boot = cfg.bootstrap.pgbackrest
        if latest and (target_time or target_lsn or target_name):
            raise RestoreError("--latest and a target exclude each other; give one")
        if target_time or target_lsn or target_name or latest or boot is None:
            target = parse_target(target_time, target_lsn, target_name)
        else:
            target = parse_target(boot.target_time, boot.target_lsn, boot.target_name)
        stanza = source or (boot.stanza if boot is not None else "")
        if not stanza:
            raise RestoreError("say which stanza to restore from: --stanza NAME (or bootstrap.pgbackrest.stanza)")
        if cfg.bootstrap.method != "pgbackrest":
            raise RestoreError(f"{config_path}: set bootstrap.method: pgbackrest so that the agent takes the "
                               "restored data over as the new cluster's primary")
        kv = open_kv(cfg.dcs)
        try:
            view = ClusterStore(kv, cfg.cluster, cfg.dcs.prefix).read()
        finally:
            kv.close()
        if view.system_id is not None or view.members:
            raise RestoreError(f"cluster {cfg.cluster} already exists in the DCS; a restore builds a NEW cluster: "
                               "give the node file another cluster name")
        params = {**cfg.cluster_config.parameters, **cfg.postgresql.parameters, **settings(cfg)}
        restore_into(cfg, stanza, target, params, lambda text: click.echo(f"  {text}"))
        PostgresNode(cfg).stop("fast", 120)
    except (ConfigError, RestoreError, PostgresError) as exc:
        raise Refused(str(exc)) from None
    except DCSError as exc:
        raise Refused(f"the DCS did not answer ({exc}); the restore needs it to check the cluster is new") from None
    click.echo(f"Cluster {cfg.cluster} restored; start its first agent: pgha agent -c {config_path}")
