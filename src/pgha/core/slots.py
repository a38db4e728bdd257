"""Permanent replication slots (``slots:``, ``ignore_slots``): which to create, advance, copy or
drop on this member, as rows of a table (``SLOT_RULES``, rendered into docs/rules.md).

Every name the rows see is one slot: a permanent slot of the configuration, a slot that exists
here, or both.  The first row whose guard holds decides what happens to it.  The primary
creates the permanent slots and publishes their positions in its member key
(``MemberInfo.slots``); every other member keeps a copy of each, advanced to the position the
primary published (never past its own replay position), so that a consumer finds its slot at
the right place on whichever member is promoted.

Logical slots on a replica are made in one of two ways, chosen by server version (``native_slot_sync``):

* PostgreSQL 17 and later synchronize them themselves: the primary creates them with
  ``failover => true`` and replicas run with ``sync_replication_slots = on``; pgha leaves them be.
* Before 17 (tested on 15), as Patroni does: the replica copies the slot's state file
  (pg_replslot/<slot>/state, read on the primary with pg_read_binary_file), restarts to load
  it, then advances it with pg_replication_slot_advance to the confirmed_flush_lsn the primary
  published.  hot_standby_feedback keeps the rows the copy still needs on the primary.

The member slots (one physical slot per member, ``SyncSlots``) are not rows here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pgha.core.actions import SlotOp
from pgha.core.model import ClusterConfig, LocalSlot, SlotSpec

# The first server version (server_version_num) that synchronizes failover slots itself.
NATIVE_SLOT_SYNC = 170000


def slot_name(member: str) -> str:
    """The physical slot for a member: its name lowercased, other characters than [a-z0-9_] as '_'.

    The mapping is deterministic so every primary computes the same names.  Two
    member names that differ only in case or punctuation ("node-1", "node_1")
    share a slot; member names should not do that.
    """
    return re.sub(r"[^a-z0-9_]", "_", member.lower())[:63]


def native_slot_sync(server_version: int) -> bool:
    return server_version >= NATIVE_SLOT_SYNC


def has_logical(config: ClusterConfig) -> bool:
    return any(s.type == "logical" for s in config.slots.values())


def slot_parameters(config: ClusterConfig, server_version: int) -> dict[str, str | int | float | bool]:
    """Server settings permanent logical slots need on every member: hot_standby_feedback, so that
    the primary keeps the catalog rows a replica's copy still needs; and on 17+ the server's own
    slot synchronization.  (wal_level = logical is the operator's: ``problem()`` asks for it.)"""
    if not has_logical(config):
        return {}
    out: dict[str, str | int | float | bool] = {"hot_standby_feedback": True}
    if native_slot_sync(server_version):
        out["sync_replication_slots"] = True
    return out


@dataclass(frozen=True)
class SlotCase:
    """What the rows know about one slot name on this member."""

    name: str
    spec: SlotSpec | None  # the permanent slot of that name (None: not in ``slots:``)
    local: LocalSlot | None  # the slot of that name here (None: missing)
    primary: bool  # this member runs as the primary and leads
    owned: bool  # pgha created it here (pgha.slots)
    ignored: bool  # it matches ignore_slots
    member_slot: bool  # the name is a member's physical slot
    target: int | None  # the position the primary published for it
    replay: int | None  # this replica's replay position
    server_version: int
    restart_target: int | None = None  # the primary's restart_lsn of this (logical) slot
    wal_floor: int | None = None  # our oldest WAL position

    @property
    def copy_usable(self) -> bool:
        """A copy of the primary's logical slot could be advanced here: all the WAL from its
        restart_lsn on is still in our pg_wal (a fresh clone starts later than an old slot)."""
        return (self.restart_target is not None and self.wal_floor is not None
                and self.restart_target >= self.wal_floor)

    @property
    def mismatch(self) -> bool:
        """The slot here is not the one the configuration describes (type, plugin or database)."""
        s, loc = self.spec, self.local
        if s is None or loc is None:
            return False
        if s.type != loc.type:
            return True
        return s.type == "logical" and (s.plugin, s.database) != (loc.plugin, loc.database)

    @property
    def advance_to(self) -> int | None:
        """Where a replica's copy should be: the primary's position, never past our replay."""
        if self.target is None or self.replay is None:
            return None
        return min(self.target, self.replay)

    def behind(self) -> bool:
        loc, to = self.local, self.advance_to
        if loc is None or to is None:
            return False
        at = loc.confirmed_flush_lsn if loc.type == "logical" else loc.restart_lsn
        return at is not None and at < to


@dataclass(frozen=True)
class SlotRule:
    id: str
    comment: str
    when: Callable[[SlotCase], bool]
    then: Callable[[SlotCase], tuple[SlotOp, ...]]


def _none(c: SlotCase) -> tuple[SlotOp, ...]:
    return ()


def _spec(c: SlotCase) -> SlotSpec:
    assert c.spec is not None
    return c.spec


SLOT_RULES: tuple[SlotRule, ...] = (
    SlotRule("slot-member", "A member's own physical slot: the member slots keep it (leader-steady).",
             lambda c: c.member_slot, _none),
    SlotRule("slot-ignored", "The slot matches ignore_slots: pgha never creates, advances or drops it.",
             lambda c: c.ignored, _none),
    SlotRule("slot-unlisted-drop", "A slot pgha created that is no longer in slots: drop it once inactive.",
             lambda c: c.spec is None and c.owned and c.local is not None and not c.local.active,
             lambda c: (SlotOp("drop", c.name),)),
    SlotRule("slot-foreign", "A slot pgha did not create and slots: does not name: leave it to its owner.",
             lambda c: c.spec is None, _none),
    SlotRule("slot-mismatch-drop", "Our slot differs from slots: (type, plugin or database): drop it once "
             "inactive; it is created again as configured.",
             lambda c: c.mismatch and c.owned and c.local is not None and not c.local.active,
             lambda c: (SlotOp("drop", c.name),)),
    SlotRule("slot-mismatch-keep", "A slot of that name exists but differs from slots: and is not ours, or "
             "is in use: keep it (logged).",
             lambda c: c.mismatch, _none),
    SlotRule("slot-create-physical", "A permanent physical slot is missing here: create it, reserving WAL now.",
             lambda c: c.local is None and _spec(c).type == "physical",
             lambda c: (SlotOp("create_physical", c.name),)),
    SlotRule("slot-create-logical", "The primary lacks a permanent logical slot: create it in its database "
             "(on 17+ with failover => true, for the server's own synchronization).",
             lambda c: c.primary and c.local is None,
             lambda c: (SlotOp("create_logical", c.name, _spec(c).plugin, _spec(c).database,
                               failover=native_slot_sync(c.server_version)),)),
    SlotRule("slot-primary-keep", "On the primary the permanent slot exists: its consumer moves it.",
             lambda c: c.primary, _none),
    SlotRule("slot-native-sync", "PostgreSQL 17+ replica: the server's slot sync worker keeps logical "
             "failover slots (sync_replication_slots); nothing to do.",
             lambda c: _spec(c).type == "logical" and native_slot_sync(c.server_version), _none),
    SlotRule("slot-copy-logical", "A replica lacks a permanent logical slot the primary published, and holds "
             "all the WAL from its restart_lsn on: copy its state file from the primary and restart to load "
             "it (Patroni's way before 17).",
             lambda c: c.local is None and c.target is not None and c.copy_usable,
             lambda c: (SlotOp("copy", c.name, _spec(c).plugin, _spec(c).database),)),
    SlotRule("slot-wait-position", "A replica lacks a logical slot the primary has not published yet, or whose "
             "restart_lsn is older than our oldest WAL (a fresh clone; a copy could never be advanced): wait "
             "until the slot's consumer moves it on.",
             lambda c: c.local is None, _none),
    SlotRule("slot-advance", "Our copy is behind the primary's published position: advance it there (never "
             "past our replay position).",
             lambda c: c.behind(),
             lambda c: (SlotOp("advance", c.name, _spec(c).plugin, _spec(c).database, lsn=c.advance_to or 0),)),
    SlotRule("slot-in-step", "Our copy is where the primary's is: nothing to do.",
             lambda c: True, _none),
)


def decide_slot(c: SlotCase) -> tuple[SlotRule, tuple[SlotOp, ...]]:
    for rule in SLOT_RULES:
        if rule.when(c):
            return rule, tuple(SlotOp(o.kind, o.name, o.plugin, o.database, o.lsn, o.failover, rule.id)
                               for o in rule.then(c))
    raise AssertionError("slot-in-step matches every slot")


@dataclass(frozen=True)
class SlotInputs:
    """Everything the slot plan reads; built from Facts by ``upkeep``."""

    config: ClusterConfig
    local: tuple[LocalSlot, ...]
    owned: frozenset[str]
    members: tuple[str, ...]
    primary: bool
    targets: Mapping[str, int]
    replay: int | None
    server_version: int
    restart_targets: Mapping[str, int] = field(default_factory=dict)
    wal_floor: int | None = None


def plan(i: SlotInputs) -> tuple[SlotOp, ...]:
    """The slot operations this member needs now, in name order."""
    here = {s.name: s for s in i.local}
    member_slots = {slot_name(m) for m in i.members}
    ops: list[SlotOp] = []
    for name in sorted(set(i.config.slots) | set(here)):
        loc = here.get(name)
        ignored = loc is not None and any(
            m.matches(name, loc.type, loc.plugin, loc.database) for m in i.config.ignore_slots)
        case = SlotCase(name, i.config.slots.get(name), loc, i.primary, name in i.owned, ignored,
                        name in member_slots, i.targets.get(name), i.replay, i.server_version,
                        i.restart_targets.get(name), i.wal_floor)
        ops += decide_slot(case)[1]
    return tuple(ops)


def kept_by_plan(i: SlotInputs) -> tuple[str, ...]:
    """Names the member slots (``SyncSlots``) must leave alone: permanent and ignored slots."""
    names = set(i.config.slots)
    for s in i.local:
        if any(m.matches(s.name, s.type, s.plugin, s.database) for m in i.config.ignore_slots):
            names.add(s.name)
    return tuple(sorted(names))


def published_positions(config: ClusterConfig, local: tuple[LocalSlot, ...]) -> dict[str, int]:
    """What a primary publishes (MemberInfo.slots): each permanent slot's position."""
    out: dict[str, int] = {}
    for s in local:
        spec = config.slots.get(s.name)
        if spec is None or spec.type != s.type:
            continue
        pos = s.confirmed_flush_lsn if s.type == "logical" else s.restart_lsn
        if pos is not None:
            out[s.name] = pos
    return out


def published_restarts(config: ClusterConfig, local: tuple[LocalSlot, ...]) -> dict[str, int]:
    """What a primary publishes (MemberInfo.slot_restart): each permanent logical slot's restart_lsn."""
    return {s.name: s.restart_lsn for s in local if s.restart_lsn is not None and s.type == "logical"
            and (spec := config.slots.get(s.name)) is not None and spec.type == "logical"}
