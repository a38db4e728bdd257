"""When an agent writes its member key again for WAL positions alone (pgha.core.publish.lsn_publish_due)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pgha.core.model import ClusterConfig, MemberInfo, Role
from pgha.core.publish import LSN_REFRESH, LSN_STEP, lsn_publish_due

CONFIG = ClusterConfig()  # ttl 10: positions at most every 3.33 s
PRIMARY = MemberInfo("n1", Role.PRIMARY, "running", 1, wal_lsn=50_000_000)
REPLICA = MemberInfo("n2", Role.REPLICA, "streaming", 1, received_lsn=50_000_000, replayed_lsn=50_000_000)


def test_a_small_move_waits_for_the_refresh() -> None:
    # A checkpoint record on an idle primary: not worth waking every agent's watch for.
    moved = replace(PRIMARY, wal_lsn=PRIMARY.wal_lsn + 200)  # type: ignore[operator]
    assert not lsn_publish_due(PRIMARY, moved, 60.0, CONFIG)
    assert lsn_publish_due(PRIMARY, moved, LSN_REFRESH, CONFIG)


def test_a_move_of_a_step_goes_out_after_a_third_of_ttl() -> None:
    for last, moved in ((PRIMARY, replace(PRIMARY, wal_lsn=50_000_000 + LSN_STEP)),
                        (REPLICA, replace(REPLICA, replayed_lsn=50_000_000 + LSN_STEP))):
        assert not lsn_publish_due(last, moved, CONFIG.ttl / 3 - 0.1, CONFIG)
        assert lsn_publish_due(last, moved, CONFIG.ttl / 3, CONFIG)


def test_the_step_is_a_sixteenth_of_the_lag_limit_at_most() -> None:
    # With a lag limit of 3,000 bytes every move of 187 bytes counts; with 0 every move does.
    for limit, counted in ((3_000, 187), (0, 1)):
        config = replace(CONFIG, maximum_lag_on_failover=limit)
        assert lsn_publish_due(PRIMARY, replace(PRIMARY, wal_lsn=50_000_000 + counted), 4.0, config)
        assert limit == 0 or not lsn_publish_due(PRIMARY, replace(PRIMARY, wal_lsn=50_000_000 + counted - 1),
                                                 4.0, config)


def test_a_permanent_slot_that_moved_goes_out_after_a_third_of_ttl() -> None:
    # Replicas copy a permanent slot's position from the primary's key: no threshold.
    slotted = replace(PRIMARY, slots={"cdc": 50_000_000})
    moved = replace(slotted, slots={"cdc": 50_000_100})
    assert lsn_publish_due(slotted, moved, CONFIG.ttl / 3, CONFIG)
    assert not lsn_publish_due(slotted, moved, 1.0, CONFIG)


def test_the_docs_name_the_step_and_the_refresh_the_code_has() -> None:
    text = " ".join((Path(__file__).resolve().parents[2] / "docs/architecture.md").read_text().split())
    assert f"`LSN_STEP` ({LSN_STEP // 1024} kB" in text
    assert f"`LSN_REFRESH` ({LSN_REFRESH / 60:g} minutes)" in text
