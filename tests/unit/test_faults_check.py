"""The fault suite's checkers and nemesis rules, on synthetic histories (no cluster)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from pgha.faults import check, cli, netfault
from pgha.faults.check import FaultRecord, Op, Writable
from pgha.faults.workload import classify
from pgha.probe.client import StatementTimeout


def op(value: int, type_: str, complete: float = 1.0) -> Op:
    return Op(client=0, via="vip", value=value, invoke=complete - 0.01, complete=complete, type=type_)


def test_lost_writes_are_acknowledged_ones_missing_before_the_read() -> None:
    ops = [op(1, "ok"), op(2, "ok"), op(3, "info"), op(4, "fail"), op(5, "ok", complete=9.0)]
    # 3 (indeterminate) may be missing; 5 completed after the read began.
    assert [o.value for o in check.lost_writes(ops, {1}, before=5.0)] == [2]


def test_failed_writes_that_are_present() -> None:
    ops = [op(1, "fail"), op(2, "fail"), op(3, "info")]
    assert [o.value for o in check.failed_but_present(ops, {2, 3})] == [2]


def test_dual_writable_needs_two_nodes_overlapping() -> None:
    same = [Writable("n1", 0, 5), Writable("n1", 4, 6)]
    assert check.dual_writable(same) == []
    handover = [Writable("n1", 0, 5), Writable("n2", 5.01, 9)]
    assert check.dual_writable(handover) == []
    both = [Writable("n1", 0, 5), Writable("n2", 3, 9), Writable("n3", 10, 11)]
    assert check.dual_writable(both) == [("n1", "n2", 3, 5)]


def test_longest_gap_counts_the_window_bounds() -> None:
    assert check.longest_gap([1.0, 1.5, 4.0], start=0.0, end=5.0) == pytest.approx(2.5)
    assert check.longest_gap([], start=2.0, end=3.0) == pytest.approx(1.0)


def record(kind: str, **kw: object) -> FaultRecord:
    base: dict[str, object] = {"index": 1, "kind": kind, "target": "node1", "start": 0.0, "healed": 6.0,
                               "recovered": 9.0}
    base.update(kw)
    return FaultRecord(**base)  # type: ignore[arg-type]


def test_verdict_sync_requires_no_loss_and_no_dual_async_only_recovery() -> None:
    lossy = record("part-leader-all", lost=[7])
    assert not check.verdict([lossy], sync=True).ok
    assert check.verdict([lossy], sync=False).ok
    assert not check.verdict([record("kill-host", recovered=None)], sync=False).ok
    assert not check.verdict([record("kill-host", fail_present=[3])], sync=False).ok
    assert not check.verdict([record("stop-agent", dual=[("a", "b", 1.0, 2.0)])], sync=True).ok


def test_summary_one_line_per_kind() -> None:
    kinds = check.summarise([record("a", max_gap=2.0), record("a", recovered=7.0), record("b", recovered=None)])
    assert [(k.kind, k.count, k.unrecovered) for k in kinds] == [("a", 2, 0), ("b", 1, 1)]
    assert kinds[0].max_gap == 2.0 and kinds[0].max_recovery == pytest.approx(3.0)
    assert "n=2" in kinds[0].line()


def test_classify_outcomes() -> None:
    assert classify(psycopg.OperationalError("connection refused"), sent=False) == "fail"
    assert classify(StatementTimeout(2.0), sent=True) == "info"
    assert classify(psycopg.OperationalError("server closed the connection unexpectedly"), sent=True) == "info"
    assert classify(psycopg.errors.ReadOnlySqlTransaction("read-only"), sent=True) == "fail"
    assert classify(psycopg.errors.AdminShutdown("terminating"), sent=True) == "info"


def test_nft_ruleset_drops_only_what_is_named_on_eth0() -> None:
    text = netfault.ruleset(["198.19.1.11", "198.19.1.1"], [])
    assert 'iifname "eth0" ip saddr { 198.19.1.1, 198.19.1.11 } drop' in text
    assert "daddr" not in text
    assert text.count("policy accept") == 2


def test_cli_refuses_unknown_kinds_and_non_results_dirs(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli.main, ["soak", "--faults", "1", "--kinds", "bogus,freeze-host"])
    assert res.exit_code == 2 and "unknown fault kind bogus; known: failover-to-cut-replica" in res.output
    res = CliRunner().invoke(cli.main, ["summarise", str(tmp_path)])
    assert res.exit_code == 2 and "is it a pgha-faults results directory?" in res.output
