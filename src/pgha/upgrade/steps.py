"""pg_upgrade and the data directories on one member.

The layout keeps ``postgresql.data_dir`` where it is: pg_upgrade --link builds the new cluster in
``<data_dir>.new`` (initdb of the new major, with the old cluster's checksum setting), then the old
directory becomes ``<data_dir>.<old major>`` (e.g. ``data.15``) and the new one ``<data_dir>``.  With
--link the two share their files: the old one is a way back only until the new server has started
(pg_upgrade renames its ``global/pg_control`` to ``pg_control.old`` so it cannot start by mistake).
A replica's old directory moves to ``<data_dir>.<old major>`` untouched before it is cloned again.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from pgha.config import NodeConfig
from pgha.postgres import db, versions
from pgha.postgres.binaries import Binaries
from pgha.postgres.common import PostgresError
from pgha.postgres.node import PostgresNode
from pgha.upgrade import bindir, checks

log = logging.getLogger("pgha.upgrade")

Params = Mapping[str, str | int | float | bool]


def controldata_fields(binaries: Binaries, data: Path) -> dict[str, str]:
    r = binaries.run("pg_controldata", ["-D", str(data)], timeout=30)
    if r.returncode != 0:
        raise PostgresError(f"pg_controldata cannot read {data}")
    fields: dict[str, str] = {}
    for line in r.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _new_node(config: NodeConfig, data: Path, bin_dir: str, initdb: tuple[str, ...]) -> PostgresNode:
    pg = bindir.with_bin_dir(config, bin_dir).postgresql
    import dataclasses

    return PostgresNode(dataclasses.replace(config, postgresql=dataclasses.replace(pg, data_dir=str(data),
                                                                                  initdb=initdb)))


def _prepare_new(config: NodeConfig, old: PostgresNode, data: Path, to_bin_dir: str, params: Params) -> PostgresNode:
    """initdb of the new major into ``data`` with the old cluster's checksum setting, and pgha's files."""
    shutil.rmtree(data, ignore_errors=True)
    fields = controldata_fields(old.binaries, old.layout.data)
    options = checks.initdb_options(config, checks.checksums_on(fields), versions.bin_dir_major(to_bin_dir))
    new = _new_node(config, data, to_bin_dir, options)
    new.initdb()
    new.configure(params, None)
    return new


def _pg_upgrade(old: PostgresNode, new: PostgresNode, user: str, ports: tuple[int, int], sock: str,
                extra: tuple[str, ...]) -> str | None:
    """Run pg_upgrade as PostgreSQL's user in the data directory's parent; one line on failure."""
    args = ["-b", str(old.binaries.bin_dir), "-B", str(new.binaries.bin_dir), "-d", str(old.layout.data),
            "-D", str(new.layout.data), "-U", user, "-p", str(ports[0]), "-P", str(ports[1]), "-s", sock, *extra]
    r = new.binaries.run("pg_upgrade", args, timeout=24 * 3600)
    if r.returncode == 0:
        return None
    return _gist(r.stdout + "\n" + r.stderr)


def _gist(output: str) -> str:
    """pg_upgrade's reason: the first line after the check that failed ("... fatal")."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.endswith("fatal") or line.startswith("Failure, exiting"):
            rest = [ln for ln in lines[i + 1:] if not ln.startswith("Failure, exiting")]
            return f"{line.removesuffix('fatal').strip(' .')}: {rest[0]}" if rest else line
    return lines[-1] if lines else "pg_upgrade failed"


def check(config: NodeConfig, old: PostgresNode, to_bin_dir: str, params: Params) -> str | None:
    """``pg_upgrade --check`` against the live old server and a scratch new cluster (removed after)."""
    scratch = Path(config.postgresql.data_dir + ".upgrade-check")
    try:
        new = _prepare_new(config, old, scratch, to_bin_dir, params)
        sock, port = db.listening(config, old.layout)
        other = 50432 if port != 50432 else 50433
        problem = _pg_upgrade(old, new, config.postgresql.superuser.username, (port, other), sock,
                              ("--check", "--link"))
        return f"pg_upgrade --check: {problem}" if problem else None
    except PostgresError as exc:
        return f"pg_upgrade --check: {exc}"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def kept_dir(data: Path, major: int) -> Path:
    """Where the old data directory goes: <data>.<major> (with a suffix if that is taken)."""
    target = data.with_name(f"{data.name}.{major}")
    n = 0
    while target.exists():
        n += 1
        target = data.with_name(f"{data.name}.{major}-{n}")
    return target


def staging_dir(config: NodeConfig) -> Path:
    data = Path(config.postgresql.data_dir)
    return data.with_name(data.name + ".new")


def prepare_primary(config: NodeConfig, old: PostgresNode, to_bin_dir: str, params: Params) -> None:
    """The new major's empty cluster in <data>.new, made while the old primary still serves (initdb
    takes seconds: not part of the write gap)."""
    _prepare_new(config, old, staging_dir(config), to_bin_dir, params)


def upgrade_primary(config: NodeConfig, old: PostgresNode, to_bin_dir: str, fault: str = "") -> Path:
    """pg_upgrade --link of the stopped primary into the prepared <data>.new, which then takes the old
    one's place; the old one is kept as <data>.<old major> (returned).
    On failure the old data directory is back in place and startable (``roll_back``)."""
    data = Path(config.postgresql.data_dir)
    staging = staging_dir(config)
    kept = kept_dir(data, versions.data_dir_major(data))
    try:
        new = _new_node(config, staging, to_bin_dir, config.postgresql.initdb)
        started = time.monotonic()
        problem = _pg_upgrade(old, new, config.postgresql.superuser.username,
                              (config.postgresql.port, config.postgresql.port), str(old.layout.socket_dir),
                              ("--link",))
        if problem:
            raise PostgresError(f"pg_upgrade: {problem}")
        log.info("pg_upgrade --link took %.1f s", time.monotonic() - started)
        os.replace(data, kept)
        os.replace(staging, data)
        if fault == "after-pg-upgrade":
            raise PostgresError("injected failure after pg_upgrade (PGHA_UPGRADE_FAULTS)")
        return kept
    except Exception:
        roll_back(data, kept, staging)
        raise


def roll_back(data: Path, kept: Path, staging: Path) -> None:
    """Put the old data directory back, startable: the new cluster was never started."""
    if kept.exists():
        if data.exists():
            os.replace(data, data.with_name(f"{data.name}.failed-upgrade-{int(time.time())}"))
        os.replace(kept, data)
    shutil.rmtree(staging, ignore_errors=True)
    control = data / "global" / "pg_control"
    renamed = data / "global" / "pg_control.old"
    if renamed.exists() and not control.exists():
        os.replace(renamed, control)
    for failed in data.parent.glob(f"{data.name}.failed-upgrade-*"):
        shutil.rmtree(failed, ignore_errors=True)
    log.warning("upgrade rolled back: %s is the old cluster again", data)


def analyze_in_background(node: PostgresNode, major: int) -> None:
    """vacuumdb --all --analyze-in-stages on the new primary (18 carries the statistics over:
    only what is missing)."""
    sock, port = db.listening(node.config, node.layout)
    user = node.config.postgresql.superuser.username
    args = ["--all", "--analyze-in-stages", "-h", sock, "-p", str(port), "-U", user]
    if major >= 18:
        args.append("--missing-stats-only")
    try:
        node.binaries.popen("vacuumdb", args, stderr=None)
    except PostgresError as exc:
        log.warning("vacuumdb did not start (%s); run it by hand: vacuumdb %s", exc, " ".join(args))


def move_replica_aside(config: NodeConfig) -> Path:
    """A stopped replica's old data directory to <data>.<old major>: cloned again afterwards."""
    data = Path(config.postgresql.data_dir)
    kept = kept_dir(data, versions.data_dir_major(data))
    os.replace(data, kept)
    return kept
