"""`pgha backup verify` (a restore test now) and `pgha backup schedule` (the schedule and its slots).

`backup verify` records a request at /backup/verify-request (validated by ``pgha.intents.verify``)
and waits for the repository host to restore the latest backup into a scratch directory, replay
the archive to its end and check the copy (``pgha.backup.restoretest``).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import click

from pgha import intents as validate
from pgha.cli.commands_backup import await_result, backup_group
from pgha.cli.context import Refused, Session, requester, valid, with_cluster
from pgha.cli.render import iso

# Seconds `pgha backup verify` waits (a restore of a big database takes as long as a restore).
VERIFY_WAIT = 6 * 3600.0


@backup_group.command("verify")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the result.")
@with_cluster
def backup_verify(session: Session, wait: bool) -> None:
    """Restore the latest backup on the repository host, replay the archive, check it, measure the RTO."""
    from pgha.backup import verify as keys

    pending = keys.read_request(session.store)
    request = valid(validate.verify(session.read(), requester(), id=uuid.uuid4().hex[:12],
                                    pending_id=pending.id if pending else None))
    if not keys.put_request(session.store, request):
        raise Refused("another restore test was requested at the same moment; wait for it to finish")
    click.echo(f"restore test requested (id {request.id}).")
    if not wait:
        return
    result = await_result(request.id, "restore test", lambda: keys.read_result(session.store),
                          lambda: keys.read_request(session.store), VERIFY_WAIT)
    if not result.ok:
        raise Refused(f"restore test {request.id} FAILED: {result.message}")
    click.echo(f"restore test passed: {result.message} (measured RTO {result.rto_seconds:.1f} s).")


@backup_group.command("schedule")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_cluster
def backup_schedule(session: Session, as_json: bool) -> None:
    """backup.schedule: each kind, its next slot, the last slot claimed, and the last restore test."""
    from pgha.backup import verify as keys
    from pgha.backup.scheduler import read_claim

    config, _ = session.store.get_config()
    now = time.time()
    rows: list[dict[str, Any]] = []
    for kind, spec in config.backup.specs().items():
        claim, _rev = read_claim(session.store, kind)
        rows.append({"kind": kind, "when": config.backup.schedule[kind], "next": spec.next_start(now),
                     "last_slot": claim.slot if claim else None, "claimed_by": claim.member if claim else None,
                     "submitted": bool(claim and claim.submitted), "skipped": bool(claim and claim.skipped)})
    verify = keys.read_result(session.store)
    if as_json:
        click.echo(json.dumps({"schedule": rows, "verify": verify.__dict__ if verify else None}, indent=2,
                              sort_keys=True))
        return
    if not rows:
        click.echo("no backup.schedule (set it with 'pgha edit-config', docs/configuration.md)")
    for r in rows:
        last = "never"
        if r["last_slot"] is not None:
            state = "skipped" if r["skipped"] else "submitted" if r["submitted"] else "claimed"
            last = f"{iso(r['last_slot'])} {state} by {r['claimed_by']}"
        click.echo(f"{r['kind']:<7} {r['when']:<20} next {iso(r['next'])}  last {last}")
    if verify is not None:
        mark = "passed" if verify.ok else "FAILED"
        click.echo(f"last restore test {iso(verify.finished_at)}: {mark}, RTO {verify.rto_seconds:.1f} s: "
                   f"{verify.message}")
