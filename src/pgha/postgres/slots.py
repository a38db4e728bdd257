"""Physical replication slots on the primary, one per member.

A member's slot is named ``slot_name(member)`` (lowercase, [a-z0-9_]), so
every primary computes the same names without a prefix.  pgha records the
slots it created in ``pgha.slots`` in the data directory and only ever drops
slots listed there: slots an operator made are never touched, except that a slot named
after a current member is that member's (an adopted cluster's, or Patroni's, which names
slots the same way) and is taken over.  The record
travels with the data (clones copy it), so a new primary knows which slots
were pgha's.  An active slot of a departed member is kept and dropped by a
later call once its walsender has gone.
"""

from __future__ import annotations

import logging

import psycopg

from pgha.config import NodeConfig
from pgha.postgres import conf, db
from pgha.postgres.binaries import RunAs
from pgha.postgres.common import PostgresError
from pgha.postgres.layout import Layout

log = logging.getLogger(__name__)


def read_owned(layout: Layout) -> set[str]:
    try:
        return {
            ln.strip()
            for ln in layout.slots.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")
        }
    except (OSError, UnicodeDecodeError):
        return set()


def write_owned(layout: Layout, run_as: RunAs, names: set[str]) -> None:
    text = "# replication slots created by pgha (only these are ever dropped by it)\n"
    conf.write_atomic(layout.slots, text + "".join(f"{n}\n" for n in sorted(names)), run_as)


def sync_slots(config: NodeConfig, layout: Layout, run_as: RunAs, members: tuple[str, ...],
               keep: tuple[str, ...] = ()) -> None:
    """``keep``: permanent and ignored slots, which the permanent-slot plan handles."""
    wanted = {conf.slot_name(m) for m in members if m != config.name}
    owned = read_owned(layout)
    before = set(owned)
    with db.local_or_error(config, layout, "replication slots") as conn:
        try:
            existing = {
                str(n): bool(a)
                for n, a in conn.execute(
                    "SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'"
                ).fetchall()
            }
            for name in sorted(wanted - existing.keys()):
                conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
                owned.add(name)
                log.info("created replication slot %s", name)
            for name in sorted((wanted & existing.keys()) - owned):
                # A member's slot made before pgha (an adopted cluster; Patroni names slots after
                # members the same way): pgha keeps it and, from now on, manages it like its own.
                owned.add(name)
                log.info("adopted replication slot %s (it existed already)", name)
            for name in sorted(existing.keys() - wanted - owned - set(keep)):
                if not existing[name]:
                    log.warning("replication slot %s is not a member's and nobody streams from it: it keeps "
                                "WAL on this primary until dropped (SELECT pg_drop_replication_slot('%s'))",
                                name, name)
            for name in sorted(owned - wanted - set(keep)):
                if name not in existing:
                    owned.discard(name)
                elif existing[name]:
                    log.info("replication slot %s is still active; dropping it later", name)
                else:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                    owned.discard(name)
                    log.info("dropped replication slot %s", name)
        except psycopg.Error as exc:
            raise PostgresError(f"replication slots: {db.one_line(exc)}") from None
        finally:
            if owned != before:
                write_owned(layout, run_as, owned)
