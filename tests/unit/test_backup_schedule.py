"""core/schedule.py: the schedule's syntax, its slots and the rules that decide a slot (pure, now passed in)."""

from __future__ import annotations

import calendar
import time

import pytest

from pgha.config import ConfigError, build
from pgha.core import schedule as S
from pgha.core.model import ClusterConfig


def at(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S")))


@pytest.mark.parametrize(("text", "now", "start"), [
    ("every 20s", at("2026-12-07 03:00:45"), at("2026-12-07 03:00:40")),
    ("every 6h", at("2026-12-07 13:00:00"), at("2026-12-07 12:00:00")),
    ("daily 01:30", at("2026-12-07 01:29:59"), at("2026-12-06 01:30:00")),
    ("daily 01:30", at("2026-12-07 01:30:00"), at("2026-12-07 01:30:00")),
    # 2026-12-07 is a Monday; the last Sunday 01:00 before it is 2026-12-06.
    ("weekly sun 01:00", at("2026-12-07 03:00:00"), at("2026-12-06 01:00:00")),
    ("Weekly  MON 00:00", at("2026-12-07 03:00:00"), at("2026-12-07 00:00:00")),
])
def test_slot_start(text: str, now: float, start: float) -> None:
    spec = S.parse(text)
    assert isinstance(spec, S.Spec)
    assert spec.slot_start(now) == start
    assert spec.next_start(now) == start + spec.period


@pytest.mark.parametrize(("text", "words"), [
    ("every 5s", "at least 10s"), ("daily 25:00", "time of day"), ("weekly xyz 01:00", "not a day"),
    ("at noon", "not a schedule"), ("every 1w", "not a schedule"),
])
def test_bad_schedules_name_the_problem(text: str, words: str) -> None:
    found = S.parse(text)
    assert isinstance(found, str) and words in found


def test_cluster_config_refuses_a_bad_schedule_in_one_line() -> None:
    ok = build(ClusterConfig, {"backup": {"schedule": {"full": "weekly sun 01:00", "incr": "daily 01:00",
                                                       "verify": "daily 03:00"}}})
    assert ok.problem() is None and ok.backup.backup_interval() == 86400
    assert build(ClusterConfig, {"backup": {"schedule": {"verify": "every 20s"}}}).backup.backup_interval() == 0
    assert build(ClusterConfig, {"backup": {"schedule": {"full": "daily 9:99"}}}).problem() == \
        "backup.schedule.full: 'daily 9:99': 09:99 is not a time of day; use 00:00-23:59"
    assert "not a kind" in str(build(ClusterConfig, {"backup": {"schedule": {"weekly": "daily 01:00"}}}).problem())
    with pytest.raises(ConfigError):
        build(ClusterConfig, {"backup": {"schedule": "daily"}})


SPEC = S.Spec(20.0)
NOW = 1000.0  # slot 1000..1020


def decide(claim: S.Claim | None, me: str = "a", primary: bool = True, kind: str = "full",
           now: float = NOW) -> S.SlotDecision:
    return S.decide_slot(S.facts(kind, SPEC, claim, me, primary, now))


def test_the_first_slot_is_skipped_then_each_slot_claimed_once() -> None:
    assert (decide(None).act, decide(None).rule_id) == ("start", "schedule-start")
    skipped = S.Claim(1000.0, "a", "full-1000", NOW, skipped=True)
    assert decide(skipped).rule_id == "schedule-done"
    # The next slot: every agent decides to claim; the compare-and-swap lets one win.
    assert decide(skipped, me="b", now=1021.0).act == "claim"
    claimed = S.Claim(1020.0, "b", "full-1020", 1021.0)
    assert decide(claimed, me="b", now=1022.0).rule_id == "schedule-submit"
    assert decide(claimed, me="a", now=1022.0).rule_id == "schedule-claimed-elsewhere"
    assert decide(S.Claim(1020.0, "b", "full-1020", 1021.0, submitted=True), me="a", now=1039.0).act == "none"


def test_a_claim_never_submitted_is_taken_over() -> None:
    claimed = S.Claim(1000.0, "dead", "full-1000", NOW)
    assert decide(claimed, now=NOW + S.TAKEOVER_AFTER - 1).act == "none"
    d = decide(claimed, now=NOW + S.TAKEOVER_AFTER)
    assert (d.act, d.rule_id) == ("take-over", "schedule-take-over")


def test_a_backup_waits_for_a_primary_a_verify_does_not() -> None:
    old = S.Claim(980.0, "a", "full-980", 980.0, submitted=True)
    assert decide(old, primary=False).rule_id == "schedule-wait-primary"
    assert decide(old, primary=False, kind="verify").act == "claim"


def test_request_ids_are_the_same_for_every_agent_and_rules_are_unique() -> None:
    assert S.request_id("incr", 1020.0) == "incr-1020"
    ids = [r.id for r in S.SCHEDULE_RULES]
    assert len(ids) == len(set(ids)) and all(r.comment for r in S.SCHEDULE_RULES)
    assert S.next_wake({"full": SPEC}, 1015.0, 15.0) == 5.0


# --- the agents' side over one in-memory DCS: several agents, one request per slot ----------------
def test_three_agents_submit_each_slot_once_and_a_dead_claimer_is_taken_over() -> None:
    from pgha.backup import keys
    from pgha.backup import verify as vkeys
    from pgha.backup.scheduler import BackupScheduler, BackupStatus, read_claim, write_claim
    from pgha.core.model import ClusterView, MemberInfo, Role
    from pgha.dcs.memory import MemoryKV
    from pgha.dcs.store import ClusterStore

    kv = MemoryKV()
    config = build(ClusterConfig, {"backup": {"schedule": {"full": "every 20s", "verify": "every 20s"}}})
    view = ClusterView("main", members={"a": MemberInfo(name="a", role=Role.PRIMARY, state="running")})
    agents = [BackupScheduler(ClusterStore(kv, "main"), name, "/nonexistent", lambda: config, lambda: view,
                              BackupStatus()) for name in ("a", "b", "c")]
    store = agents[0].store
    seen: list[str] = []

    def tick(now: float) -> None:
        for agent in agents:
            agent.run_once(now)
        req = keys.read_request(store)
        if req is not None and req.id not in seen:
            seen.append(req.id)
            keys.clear_request(store)  # the repository host took it
        vreq = vkeys.read_request(store)
        if vreq is not None and vreq.id not in seen:
            seen.append(vreq.id)
            vkeys.clear_request(store)

    for now in (1001.0, 1005.0, 1021.0, 1022.0, 1030.0, 1041.0, 1059.0):
        tick(now)
    # Slot 1000 was the first (skipped); slots 1020 and 1040 ran once each, whatever the agents.
    assert sorted(seen) == ["full-1020", "full-1040", "verify-1020", "verify-1040"]
    # An agent claims slot 1060 and dies before submitting: another one takes it over.
    claim, rev = read_claim(store, "full")
    assert claim is not None
    assert write_claim(store, "full", S.Claim(1060.0, "dead", "full-1060", 1061.0), rev)
    tick(1062.0)
    assert "full-1060" not in seen
    tick(1061.0 + S.TAKEOVER_AFTER)
    assert "full-1060" in seen and seen.count("full-1060") == 1
    claim, _ = read_claim(store, "full")
    assert claim is not None and claim.submitted and claim.member != "dead"
    # That backup fails (a failover under it): one agent submits the slot's second attempt, once.
    keys.put_result(store, keys.BackupResult("full-1060", "full", False, "failed", 1063.0, 1064.0))
    tick(1065.0)
    tick(1066.0)
    assert seen.count("full-1060-2") == 1


def test_a_failed_backup_is_retried_within_its_slot_a_failed_verify_is_not() -> None:
    sent = S.Claim(1000.0, "a", "full-1000", NOW, submitted=True)
    failed = ("full-1000", False)
    d = S.decide_slot(S.facts("full", SPEC, sent, "b", True, NOW + 5, failed))
    assert (d.act, d.rule_id) == ("retry", "schedule-retry-failed")
    # Not while no primary runs (the failover is not over), nor past MAX_ATTEMPTS, nor for a verify.
    assert S.decide_slot(S.facts("full", SPEC, sent, "b", False, NOW + 5, failed)).act == "none"
    last = S.Claim(1000.0, "a", S.request_id("full", 1000.0, S.MAX_ATTEMPTS), NOW, submitted=True,
                   attempt=S.MAX_ATTEMPTS)
    assert S.decide_slot(S.facts("full", SPEC, last, "b", True, NOW + 5, (last.request_id, False))).act == "none"
    v = S.Claim(1000.0, "a", "verify-1000", NOW, submitted=True)
    assert S.decide_slot(S.facts("verify", SPEC, v, "b", True, NOW + 5, ("verify-1000", False))).act == "none"
    assert S.request_id("full", 1000.0, 2) == "full-1000-2"


def test_docs_name_every_schedule_rule() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    missing = [r.id for r in S.SCHEDULE_RULES if f"`{r.id}`" not in text]
    assert not missing, f"docs/operations.md, 'Scheduled backups', does not name {missing}"
