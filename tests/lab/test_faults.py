"""Fixed-seed regression cases of the fault suite (pgha-faults), each a short run on the lab.

Every anomaly the suite found has a case here, with the seed and kinds that showed it; the
whole suite (random seed, ~40 faults) runs as `make fault-suite`.  See docs/faults-findings.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pgha.demo import netlab
from pgha.faults import netfault
from pgha.faults.runner import FaultRun, RunConfig

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _lab() -> None:
    why = netlab.unavailable() or netfault.unavailable()
    if why:
        pytest.skip(why)


def run(tmp_path: Path, seed: int, kinds: list[str], faults: int, sync: bool = True, pg_bin: str = "") -> FaultRun:
    r = FaultRun(RunConfig(faults=faults, seed=seed, sync=sync, results=tmp_path / "results", kinds=kinds,
                           pg_bin=pg_bin, say=lambda s: print(s, flush=True)))
    verdict = r.execute()
    report = tmp_path / "results" / "report.txt"
    assert verdict.ok, verdict.problems + ([report.read_text()] if report.exists() else [])
    return r


def test_rewind_after_a_fresh_promotion_needs_no_retry(tmp_path: Path) -> None:
    """Finding 1 (seed 30654185, stop-agent): pg_rewind against a just-promoted leader said "no rewind
    required" (its pg_control still named the old timeline), and the old primary then failed to start
    ("requested timeline 2 is not a child of this server's history") until the promotion checkpoint
    ended.  The rewind now checkpoints the source first."""
    r = run(tmp_path, seed=30654185, kinds=["stop-agent", "freeze-host"], faults=2)
    assert all(f.leader_after != f.leader_before for f in r.faults), [f.to_json() for f in r.faults]
    logs = "".join(p.read_text() for p in (tmp_path / "results").glob("agent-*.log"))
    assert "start failed" not in logs


def test_sync_run_on_postgresql_18_loses_nothing(tmp_path: Path, pg18_bin: str) -> None:
    """Issue 21: the fault suite's synchronous run on PostgreSQL 18 (`make pg18`), short: five faults drawn
    from host killed, host frozen, leader cut off, agent stopped and postmaster killed (seed 18180618: three
    host kills, a cut-off leader, a frozen host), under the write workload; the checker asserts no
    acknowledged write lost, no split brain, and every fault healed.  The longer run
    is `pgha-faults soak --sync --faults 30 --pg-bin "$(make -s pg18-bin)"`."""
    r = run(tmp_path, seed=18180618, faults=5, pg_bin=pg18_bin,
            kinds=["kill-host", "freeze-host", "part-leader-all", "stop-agent", "kill-postmaster"])
    assert len(r.faults) == 5
