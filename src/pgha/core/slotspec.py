"""Permanent replication slots as the cluster config names them (Patroni's ``slots:`` and
``ignore_slots:``), and the name checks every slot, plugin and database passes before any SQL.  Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

# What PostgreSQL accepts as a slot name; plugin and database names are held to the same plain
# identifier shape (letters, digits, underscore; a database name may also hold '-') before any SQL.
SLOT_NAME_RE = re.compile(r"[a-z0-9_]{1,63}")
PLUGIN_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,63}")
DATABASE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}")


@dataclass(frozen=True)
class SlotSpec:
    """One permanent replication slot (Patroni's ``slots:`` entry)."""

    type: Literal["physical", "logical"] = "physical"
    # Logical slots only: the output plugin (e.g. pgoutput, test_decoding) and the database.
    plugin: str = ""
    database: str = ""


@dataclass(frozen=True)
class IgnoreSlot:
    """One ``ignore_slots`` matcher (Patroni's format): a slot matching every field given is never
    dropped by pgha."""

    name: str = ""
    type: Literal["", "physical", "logical"] = ""
    plugin: str = ""
    database: str = ""

    def matches(self, name: str, type: str, plugin: str, database: str) -> bool:
        return all(not want or want == got for want, got in
                   ((self.name, name), (self.type, type), (self.plugin, plugin), (self.database, database)))


def slots_problem(slots: Mapping[str, SlotSpec]) -> str | None:
    """One line naming the first bad ``slots:`` entry and the fix, or None."""
    for name, spec in slots.items():
        if not SLOT_NAME_RE.fullmatch(name):
            return (f"slots.{name}: not a valid slot name; use 1 to 63 lowercase letters, digits "
                    "or underscores")
        if spec.type == "physical":
            if spec.plugin or spec.database:
                return f"slots.{name}: a physical slot takes no plugin or database; remove them"
            continue
        if not PLUGIN_NAME_RE.fullmatch(spec.plugin):
            return (f"slots.{name}.plugin: {spec.plugin!r} is not a plugin name; give one such as "
                    "pgoutput or test_decoding (letters, digits, underscores)")
        if not DATABASE_NAME_RE.fullmatch(spec.database):
            return (f"slots.{name}.database: {spec.database!r} is not a database name pgha accepts; "
                    "use letters, digits, '_' or '-' (63 at most)")
    return None
