"""`pgha upgrade --to-bin-dir DIR`: record a major-version upgrade and follow its progress.

The request is validated by ``pgha.intents.upgrade`` (as POST /upgrade is); the leader's agent runs
the pre-flight on every member, then the upgrade (``pgha.upgrade``).  Without ``--no-wait`` the
command prints each phase as the leader records it and exits 1 with the leader's one line when
the pre-flight fails or the upgrade rolls back.
"""

from __future__ import annotations

import time
import uuid

import click

from pgha import intents as validate
from pgha.cli.context import Refused, Session, confirm, requester, valid, wait_for, with_cluster
from pgha.cli.main import cli
from pgha.upgrade import keys
from pgha.upgrade.record import Upgrade

# An upgrade of a large cluster takes as long as its replicas' clones: wait up to a day.
UPGRADE_WAIT = 24 * 3600.0


def progress_line(up: Upgrade) -> str:
    """One line for the CLI: the phase and the leader's line."""
    return f"{up.phase}: {up.message}" if up.message else up.phase


@cli.command("upgrade")
@click.option("--to-bin-dir", "to_bin_dir", required=True, metavar="DIR",
              help="The new major's bin directory, installed on every member (e.g. /usr/lib/postgresql/18/bin).")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-wait", is_flag=True, help="Record the request and return.")
@click.option("--inject-failure", "inject", default="", hidden=True)
@with_cluster
def upgrade_cmd(session: Session, to_bin_dir: str, force: bool, no_wait: bool, inject: str) -> None:
    """Major-version upgrade of the running cluster (pg_upgrade --link on the primary, replicas cloned)."""
    pending, _ = keys.read(session.store)
    up = valid(validate.upgrade(session.read(), requester(), id=uuid.uuid4().hex, to_bin_dir=to_bin_dir,
                                pending=pending, inject=inject))
    confirm(f"Upgrade cluster {session.cluster} to the PostgreSQL in {to_bin_dir} (pg_upgrade --link on "
            f"{up.leader}, a write pause)?", force)
    if not keys.request(session.store, up, pending):
        raise Refused("another upgrade was recorded meanwhile; nothing was written")
    click.echo(f"Upgrade to {to_bin_dir} recorded (id {up.id}); {up.leader}'s agent runs the pre-flight.")
    if no_wait:
        return
    started = time.monotonic()

    def check() -> str | None:
        current, _ = keys.read(session.store)
        if current is None or current.id != up.id:
            raise Refused("the upgrade request was removed")
        if current.phase == "done":
            return None
        if current.phase in ("failed", "rolled-back"):
            raise Refused(current.message)
        return f"[{time.monotonic() - started:5.0f} s] {progress_line(current)}"

    wait_for(check, UPGRADE_WAIT, "the upgrade", interval=1.0)
    done, _ = keys.read(session.store)
    assert done is not None
    click.echo(f"Upgrade done: {done.message}; system identifier {done.old_system_id} -> {done.new_system_id}.")
