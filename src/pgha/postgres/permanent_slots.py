"""Permanent slots at the edge: carry out the plan core/slots.py made (create, advance, drop,
copy from the primary).  Every name reaches SQL as a psycopg parameter or ``sql.Identifier``,
after ``ClusterConfig.problem()`` validated it; the file path of a copied slot is built from
a name that matched ``SLOT_NAME_RE`` again here.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import replace

import psycopg

from pgha.config import NodeConfig
from pgha.core.actions import SlotOp
from pgha.core.slotspec import DATABASE_NAME_RE, PLUGIN_NAME_RE, SLOT_NAME_RE
from pgha.postgres import db
from pgha.postgres.binaries import RunAs
from pgha.postgres.common import PostgresError, Upstream
from pgha.postgres.layout import Layout
from pgha.postgres.slots import read_owned, write_owned

log = logging.getLogger(__name__)

# SQLSTATEs of an advance that can never succeed on this copy (its WAL is gone, or the slot was
# invalidated): drop the copy, the next loops copy it again from the primary.
RECOPY_SQLSTATES = frozenset({"58P01", "55000"})


def _check(op: SlotOp) -> None:
    if not SLOT_NAME_RE.fullmatch(op.name):
        raise PostgresError(f"slot {op.name!r}: not a valid slot name; fix slots: in the cluster config")
    if op.database and not (DATABASE_NAME_RE.fullmatch(op.database) and PLUGIN_NAME_RE.fullmatch(op.plugin)):
        raise PostgresError(f"slot {op.name}: invalid plugin or database; fix slots: in the cluster config")


def _in_database(config: NodeConfig, layout: Layout, database: str) -> psycopg.Connection[tuple[object, ...]]:
    """A local superuser connection to ``database`` (logical slots live in one), no statement limit
    for an advance that decodes a long stretch of WAL."""
    sock, port = db.listening(config, layout)
    return psycopg.connect(host=sock, port=port, passfile=str(layout.passfile),
                           user=config.postgresql.superuser.username, dbname=database, connect_timeout=3,
                           application_name="pgha", autocommit=True, options="-c statement_timeout=60000")


def _lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def apply(config: NodeConfig, layout: Layout, run_as: RunAs, ops: Iterable[SlotOp]) -> None:
    """Create, advance and drop slots here (copies are ``read_states`` + ``install_states``)."""
    owned = read_owned(layout)
    before = set(owned)
    errors: list[str] = []
    try:
        for op in ops:
            _check(op)
            try:
                if op.kind == "create_physical":
                    with db.local_or_error(config, layout, "replication slots") as conn:
                        conn.execute("SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS "
                                     "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)", (op.name, op.name))
                    owned.add(op.name)
                elif op.kind == "create_logical":
                    with _in_database(config, layout, op.database) as conn:
                        # 17+: a failover slot (the standbys synchronize it themselves).
                        flags = ", false, false, true" if op.failover else ""
                        conn.execute(f"SELECT pg_create_logical_replication_slot(%s, %s{flags}) WHERE NOT EXISTS "
                                     "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                                     (op.name, op.plugin, op.name))
                    owned.add(op.name)
                elif op.kind == "advance":
                    dbname = op.database or "postgres"
                    with _in_database(config, layout, dbname) as conn:
                        conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (op.name, _lsn(op.lsn)))
                    log.debug("advanced slot %s to %s", op.name, _lsn(op.lsn))
                    continue
                elif op.kind == "drop":
                    with db.local_or_error(config, layout, "replication slots") as conn:
                        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                                     "WHERE slot_name = %s AND NOT active", (op.name,))
                        left = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                            (op.name,)).fetchone()
                    if left is not None:
                        log.info("replication slot %s is in use; dropping it later", op.name)
                        continue
                    owned.discard(op.name)
                else:
                    continue
                log.info("[%s] %s replication slot %s", op.rule_id, op.kind.replace("_", " "), op.name)
            except psycopg.Error as exc:
                state = getattr(exc, "sqlstate", None)
                if op.kind == "advance" and state in RECOPY_SQLSTATES:
                    log.warning("slot %s cannot be advanced (%s): dropping this copy to copy it again",
                                op.name, db.one_line(exc))
                    apply(config, layout, run_as, [replace(op, kind="drop")])
                    continue
                errors.append(f"{op.kind} {op.name}: {db.one_line(exc)}")
    finally:
        if owned != before:
            write_owned(layout, run_as, owned)
    if errors:
        raise PostgresError("replication slots: " + "; ".join(errors))


def read_states(config: NodeConfig, layout: Layout, leader: Upstream, names: list[str]) -> dict[str, bytes]:
    """The state file of each logical slot on the primary (pg_read_binary_file needs a superuser)."""
    for n in names:
        if not SLOT_NAME_RE.fullmatch(n):
            raise PostgresError(f"slot {n!r}: not a valid slot name")
    try:
        with db.remote(config, layout, leader, config.postgresql.superuser.username) as conn:
            rows = conn.execute(
                "SELECT slot_name, pg_read_binary_file('pg_replslot/' || slot_name || '/state') "
                "FROM pg_replication_slots WHERE slot_type = 'logical' AND NOT pg_is_in_recovery() "
                "AND slot_name = ANY(%s)", (names,)).fetchall()
    except psycopg.Error as exc:
        raise PostgresError(f"copying logical slots from {leader.name}: {db.one_line(exc)}") from None
    return {str(n): bytes(data) for n, data in rows if str(n) in names}


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def install_states(layout: Layout, run_as: RunAs, states: dict[str, bytes]) -> None:
    """With PostgreSQL stopped: write each slot's state as pg_replslot/<slot>/state (through a
    .tmp directory renamed into place, fsynced, as PostgreSQL itself does), owned by its user."""
    base = layout.data / "pg_replslot"
    for name, data in states.items():
        if not SLOT_NAME_RE.fullmatch(name):
            raise PostgresError(f"slot {name!r}: not a valid slot name")
        final, tmp = base / name, base / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        run_as.chown(tmp)
        state = tmp / "state"
        fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        run_as.chown(state)
        _fsync_dir(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(str(base))
    owned = read_owned(layout)
    if not set(states) <= owned:
        write_owned(layout, run_as, owned | set(states))
