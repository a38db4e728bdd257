"""The permanent-slot rows (core/slots.py): one case per row, the config checks, and the plan."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pgha.config import ConfigError, build
from pgha.core.actions import SlotOp
from pgha.core.model import ClusterConfig, IgnoreSlot, LocalSlot, SlotSpec
from pgha.core.slots import (
    SLOT_RULES,
    SlotCase,
    SlotInputs,
    decide_slot,
    kept_by_plan,
    plan,
    published_positions,
    published_restarts,
    slot_parameters,
)

PHYS = SlotSpec()
LOGI = SlotSpec("logical", "test_decoding", "app")


def case(spec: SlotSpec | None = LOGI, local: LocalSlot | None = None, *, primary: bool = False,
         owned: bool = False, ignored: bool = False, member: bool = False, target: int | None = None,
         replay: int | None = 1000, version: int = 150010, restart: int | None = 300,
         floor: int | None = 200) -> SlotCase:
    return SlotCase("cdc", spec, local, primary, owned, ignored, member, target, replay, version, restart, floor)


def logical(confirmed: int = 100, active: bool = False, plugin: str = "test_decoding") -> LocalSlot:
    return LocalSlot("cdc", "logical", plugin, "app", active, restart_lsn=50, confirmed_flush_lsn=confirmed)


def physical(restart: int = 100, active: bool = False) -> LocalSlot:
    return LocalSlot("cdc", "physical", active=active, restart_lsn=restart)


CASES: list[tuple[str, SlotCase, tuple[tuple[str, int], ...]]] = [
    ("slot-member", case(PHYS, None, member=True), ()),
    ("slot-ignored", case(None, logical(), owned=True, ignored=True), ()),
    ("slot-unlisted-drop", case(None, logical(), owned=True), (("drop", 0),)),
    ("slot-foreign", case(None, logical()), ()),
    ("slot-foreign", case(None, logical(active=True), owned=True), ()),
    ("slot-mismatch-drop", case(LOGI, logical(plugin="pgoutput"), owned=True), (("drop", 0),)),
    ("slot-mismatch-keep", case(LOGI, logical(plugin="pgoutput")), ()),
    ("slot-mismatch-keep", case(PHYS, logical(active=True), owned=True), ()),
    ("slot-create-physical", case(PHYS, None), (("create_physical", 0),)),
    ("slot-create-physical", case(PHYS, None, primary=True), (("create_physical", 0),)),
    ("slot-create-logical", case(LOGI, None, primary=True), (("create_logical", 0),)),
    ("slot-primary-keep", case(LOGI, logical(), primary=True, target=900), ()),
    ("slot-native-sync", case(LOGI, None, target=900, version=170002), ()),
    ("slot-copy-logical", case(LOGI, None, target=900), (("copy", 0),)),
    ("slot-wait-position", case(LOGI, None), ()),
    ("slot-wait-position", case(LOGI, None, target=900, restart=100, floor=200), ()),  # fresh clone
    ("slot-wait-position", case(LOGI, None, target=900, floor=None), ()),
    ("slot-advance", case(LOGI, logical(100), target=900), (("advance", 900),)),
    ("slot-advance", case(LOGI, logical(100), target=5000, replay=1000), (("advance", 1000),)),
    ("slot-advance", case(PHYS, physical(100), target=700), (("advance", 700),)),
    ("slot-in-step", case(LOGI, logical(900), target=900), ()),
    ("slot-in-step", case(PHYS, physical(100)), ()),  # nothing published: keep holding WAL
]


@pytest.mark.parametrize(("rule", "c", "ops"), CASES, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(CASES)])
def test_slot_rows(rule: str, c: SlotCase, ops: tuple[tuple[str, int], ...]) -> None:
    row, got = decide_slot(c)
    assert row.id == rule
    assert tuple((o.kind, o.lsn) for o in got) == ops
    assert all(o.rule_id == rule and o.name == "cdc" for o in got)


def test_every_slot_row_has_a_case() -> None:
    assert {r.id for r in SLOT_RULES} == {r for r, _, _ in CASES}


def test_logical_slot_on_17_is_a_failover_slot() -> None:
    (op,) = decide_slot(case(LOGI, None, primary=True, version=170000))[1]
    assert op == SlotOp("create_logical", "cdc", "test_decoding", "app", failover=True, rule_id="slot-create-logical")
    assert slot_parameters(ClusterConfig(slots={"cdc": LOGI}, parameters={"wal_level": "logical"}), 170000) == {
        "hot_standby_feedback": True, "sync_replication_slots": True}
    assert slot_parameters(ClusterConfig(slots={"cdc": LOGI}, parameters={"wal_level": "logical"}), 150010) == {
        "hot_standby_feedback": True}
    assert slot_parameters(ClusterConfig(slots={"p": PHYS}), 170000) == {}


def _inputs(**kw: object) -> SlotInputs:
    cfg = ClusterConfig(slots={"cdc": LOGI, "archiver": PHYS}, parameters={"wal_level": "logical"},
                        ignore_slots=(IgnoreSlot(type="logical", plugin="pgoutput"),))
    base = SlotInputs(cfg, (), frozenset(), ("a", "b"), True, {}, None, 150010)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_plan_on_primary_and_replica() -> None:
    foreign = LocalSlot("debezium", "logical", "pgoutput", "app")
    member = LocalSlot("b", "physical", restart_lsn=10)
    ops = plan(_inputs(local=(foreign, member)))
    assert [(o.kind, o.name) for o in ops] == [("create_physical", "archiver"), ("create_logical", "cdc")]
    assert kept_by_plan(_inputs(local=(foreign, member))) == ("archiver", "cdc", "debezium")
    rep = _inputs(primary=False, targets={"cdc": 800, "archiver": 600}, replay=700,
                  restart_targets={"cdc": 500}, wal_floor=400,
                  local=(LocalSlot("archiver", "physical", restart_lsn=100),))
    assert [(o.kind, o.name, o.lsn) for o in plan(rep)] == [("advance", "archiver", 600), ("copy", "cdc", 0)]


def test_published_positions_only_permanent_slots() -> None:
    cfg = ClusterConfig(slots={"cdc": LOGI, "arch": PHYS}, parameters={"wal_level": "logical"})
    local = (LocalSlot("cdc", "logical", "test_decoding", "app", confirmed_flush_lsn=5, restart_lsn=1),
             LocalSlot("arch", "physical", restart_lsn=7), LocalSlot("b", "physical", restart_lsn=9))
    assert published_positions(cfg, local) == {"cdc": 5, "arch": 7}
    assert published_restarts(cfg, local) == {"cdc": 1}


@pytest.mark.parametrize(("data", "error"), [
    ({"slots": {"Bad-Name": {"type": "physical"}}}, "slots.Bad-Name: not a valid slot name"),
    ({"slots": {"cdc": {"type": "logical", "plugin": "x; drop", "database": "app"}},
      "parameters": {"wal_level": "logical"}}, "slots.cdc.plugin"),
    ({"slots": {"cdc": {"type": "logical", "plugin": "pgoutput", "database": "a'b"}},
      "parameters": {"wal_level": "logical"}}, "slots.cdc.database"),
    ({"slots": {"cdc": {"type": "logical", "plugin": "pgoutput", "database": "app"}}},
     "logical slots need parameters.wal_level: logical"),
    ({"slots": {"p": {"type": "physical", "database": "app"}}}, "a physical slot takes no plugin or database"),
    ({"slots": {"p": {"type": "sideways"}}}, "slots.p.type"),
    ({"ignore_slots": [{"name": "x", "colour": "red"}]}, "unknown key"),
])
def test_bad_slot_config_is_one_line(data: dict[str, object], error: str) -> None:
    try:
        cfg = build(ClusterConfig, data)
    except ConfigError as exc:
        message = str(exc)
    else:
        message = cfg.problem() or ""
    assert error in message and "\n" not in message


def test_patroni_format_is_accepted() -> None:
    cfg = build(ClusterConfig, {
        "parameters": {"wal_level": "logical"},
        "slots": {"cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"}, "arch": {"type": "physical"}},
        "ignore_slots": [{"name": "ext"}, {"type": "logical", "database": "app", "plugin": "wal2json"}]})
    assert cfg.problem() is None
    assert cfg.slots["cdc"] == SlotSpec("logical", "pgoutput", "app")
    assert cfg.ignore_slots[1].matches("any", "logical", "wal2json", "app")
    assert not cfg.ignore_slots[1].matches("any", "logical", "pgoutput", "app")


def test_slots_survive_the_dcs_and_patch_config() -> None:
    from pgha.api.intents import patched_config
    from pgha.api.schema import BadRequest
    from pgha.dcs.codec import decode_config, encode_config

    cfg = patched_config(ClusterConfig(), {"parameters": {"wal_level": "logical"},
                                           "slots": {"cdc": {"type": "logical", "plugin": "pgoutput",
                                                             "database": "app"}},
                                           "ignore_slots": [{"name": "ext"}]})
    assert decode_config(encode_config(cfg)) == cfg
    assert patched_config(cfg, {"slots": {"cdc": None}}).slots == {}
    with pytest.raises(BadRequest, match=r"slots\.x-y: not a valid slot name"):
        patched_config(cfg, {"slots": {"x-y": {"type": "physical"}}})
