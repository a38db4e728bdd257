"""A replica takes the upgraded cluster by pg_upgrade's rsync method, before the new primary starts.

From the PostgreSQL documentation (pg_upgrade, "Upgrade streaming replication and log-shipping standby
servers"): with the primary upgraded by --link and not started, and the standby stopped at the primary's
final checkpoint, ``rsync --archive --delete --hard-links --size-only --no-inc-recursive old_cluster
new_cluster remote_dir`` recreates the new cluster on the standby as hard links to the standby's own old
files: only the new catalog and the changed files travel.  pgha runs it on the replica, pulling from the
primary: local paths when the primary is this machine, else ``host:path`` over ssh as PostgreSQL's user
(``-o BatchMode=yes``: keys must be set up, docs/operations.md).  The replica's data directory must have
the primary's base name (both sides have ``<name>`` and ``<name>.<old major>``).

Anything that stops the method (no rsync, another directory name, ssh refused) leaves the replica's old
data directory in place: it is then cloned from the new primary instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from pgha.postgres.binaries import RunAs, last_line

log = logging.getLogger("pgha.upgrade")

RSYNC_TIMEOUT = 6 * 3600.0


def is_local(host: str) -> bool:
    """Whether ``host`` is an address of this machine (it can be bound here)."""
    with contextlib.suppress(OSError, ValueError), socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return True
    return False


def why_not(data: Path, primary_data_dir: str, kept_name: str) -> str | None:
    if shutil.which("rsync") is None:
        return "rsync is not installed"
    if data.name != Path(primary_data_dir).name:
        return f"the data directory's name {data.name} differs from the primary's {Path(primary_data_dir).name}"
    if (data.parent / kept_name).exists():
        return f"{data.parent / kept_name} exists already"
    return None


def take_new_cluster(data: Path, run_as: RunAs, primary_host: str, primary_data_dir: str, kept_name: str) -> str:
    """Move the stopped replica's data to <parent>/<kept_name> and rsync the primary's pair over it.
    Returns "" when done, else why not (the old data directory is then back in place)."""
    problem = why_not(data, primary_data_dir, kept_name)
    if problem is not None:
        return problem
    source = Path(primary_data_dir)
    prefix = "" if is_local(primary_host) else f"{primary_host}:"
    kept = data.parent / kept_name
    os.replace(data, kept)
    argv = ["rsync", "--archive", "--delete", "--hard-links", "--size-only", "--no-inc-recursive",
            "-e", "ssh -o BatchMode=yes -o ConnectTimeout=10",
            f"{prefix}{source.parent / kept_name}", f"{prefix}{source}", f"{data.parent}/"]
    started = time.monotonic()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=RSYNC_TIMEOUT,
                           stdin=subprocess.DEVNULL, check=False, cwd=str(data.parent), **run_as.popen_kwargs())
        failed = "" if r.returncode == 0 else f"rsync failed: {last_line(r.stderr, f'exit code {r.returncode}')}"
    except (OSError, subprocess.SubprocessError) as exc:
        failed = f"rsync failed: {exc}"
    if failed:
        put_back(data, kept)
        return failed
    log.info("rsync of the upgraded cluster from %s took %.1f s", primary_host, time.monotonic() - started)
    return ""


def put_back(data: Path, kept: Path) -> None:
    """The old data directory in place again, startable (pg_upgrade --link renamed the primary's
    pg_control, and rsync --delete carried that over)."""
    if kept.exists():
        shutil.rmtree(data, ignore_errors=True)
        os.replace(kept, data)
    control, renamed = data / "global" / "pg_control", data / "global" / "pg_control.old"
    if renamed.exists() and not control.exists():
        os.replace(renamed, control)
