"""The archive gap check: its decisions (pgha.core.gaprepair, a table of rows), reading pgBackRest's
repo-ls listing across timelines, backup.gap_repair's check, the push intent each member serves and
the pgha_backup_archive_gap metric fed by both the gap check and the restore test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pgha.backup import gapcheck
from pgha.backup.continuity import missing, parse_history
from pgha.backup.metrics import BackupMetrics
from pgha.backup.scheduler import BackupStatus
from pgha.config import ConfigError, parse
from pgha.core import gaprepair
from pgha.dcs.memory import MemoryKV
from pgha.dcs.store import ClusterStore
from tests.unit.test_backup_config import node

LOST = ["000000010000000000000004", "000000010000000000000005"]


@pytest.mark.parametrize(("lost", "mode", "asked", "rule", "action"), [
    ([], "push", False, "gap-none", "nothing"),
    ([], "full", True, "gap-none", "nothing"),
    (LOST, "none", False, "gap-report-only", "report"),
    (LOST, "full", False, "gap-full-at-once", "full"),
    (LOST, "push", False, "gap-push-from-members", "push"),
    (LOST, "push", True, "gap-push-left-hole-full", "full"),
])
def test_gap_decisions_are_rows(lost: list[str], mode: str, asked: bool, rule: str, action: str) -> None:
    d = gaprepair.decide(lost, mode, asked)
    assert (d.rule_id, d.action) == (rule, action)
    assert d.rule_id in {r.id for r in gaprepair.RULES}
    assert d.push == (tuple(lost) if action == "push" else ())
    if lost:
        assert LOST[0] in d.reason


def test_every_rule_is_reachable() -> None:
    seen = {gaprepair.decide(lost, mode, asked).rule_id for lost in ([], LOST) for mode in gaprepair.MODES
            for asked in (False, True)}
    assert seen == {r.id for r in gaprepair.RULES}


def test_gap_repair_mode_is_checked(tmp_path: Path) -> None:
    assert parse(node(tmp_path)).backup.gap_repair == "push"  # type: ignore[union-attr]
    assert parse(node(tmp_path, gap_repair="full")).backup.gap_repair == "full"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"backup.gap_repair: 'later' is not one of push, full, none"):
        parse(node(tmp_path, gap_repair="later"))


def listing(*names: str) -> dict[str, Any]:
    out: dict[str, Any] = {".": {"type": "path"}, "15-1": {"type": "path"}}
    for n in names:
        out[n] = {"type": "file", "size": 1}
    return out


def test_repo_ls_listing_across_a_timeline_switch() -> None:
    seg = "15-1/0000000100000000/{}-0123abcd.gz"
    names = [seg.format(f"0000000100000000000000{i:02X}") for i in (3, 4, 6)]
    names += ["15-1/0000000200000000/000000020000000000000006-ff.gz", "15-1/00000002.history"]
    present, histories = gapcheck.archive_files(listing(*names))
    assert histories == {2: "15-1/00000002.history"}
    assert (1, 3) in present and (2, 6) in present and len(present) == 4
    # Timeline 2 began in segment 6: segment 5 of timeline 1 is the hole.
    lost = missing(present, parse_history("1\t0/6000100\tno recovery target specified\n"), (1, 3), 2)
    assert lost == ["000000010000000000000005"]


class FakePgBackRest:
    def __init__(self) -> None:
        self.pushed: list[str] = []

    def run(self, command: str, args: list[str], timeout: float = 0) -> str:
        assert command == "archive-push"
        self.pushed.append(Path(args[0]).name)
        return ""


def test_each_member_pushes_the_missing_segments_it_holds(tmp_path: Path) -> None:
    store = ClusterStore(MemoryKV(), "main")
    (tmp_path / LOST[1]).write_bytes(b"x")
    (tmp_path / "000000010000000000000009").write_bytes(b"x")
    pgbr, events = FakePgBackRest(), []
    thread = gapcheck.GapThread(store, "node2", "push", tmp_path, lambda: pgbr,  # type: ignore[arg-type, return-value]
                                lambda: False, events.append, lambda found: None)
    assert thread.push_requested() == 0
    store.kv.put(store.key(gapcheck.GAP), json.dumps({"segments": LOST, "by": "node1"}).encode())
    assert thread.push_requested() == 1
    assert pgbr.pushed == [LOST[1]] and events == ["node2 pushed 1 segment(s) missing from the archive"]
    # A value that names anything but segments is refused, not pushed.
    store.kv.put(store.key(gapcheck.GAP), json.dumps({"segments": ["../../etc/passwd"]}).encode())
    assert thread.push_requested() == 0


def gap_metric(status: BackupStatus) -> float:
    reg = CollectorRegistry()
    BackupMetrics(reg).status = status
    line = next(ln for ln in generate_latest(reg).decode().splitlines() if ln.startswith("pgha_backup_archive_gap "))
    return float(line.split()[1])


def test_archive_gap_metric_reads_the_gap_check_and_the_restore_test() -> None:
    assert str(gap_metric(BackupStatus())) == "nan"
    assert gap_metric(BackupStatus(archive_gap=False)) == 0.0
    assert gap_metric(BackupStatus(archive_gap=True)) == 1.0


def test_backup_fault_kinds_are_known_to_the_cli() -> None:
    from click.testing import CliRunner

    from pgha.faults import cli
    from pgha.faults.backupfaults import BACKUP_KINDS

    assert set(BACKUP_KINDS) == {"part-backup-host", "kill-backup-host", "archive-push-failing"}
    res = CliRunner().invoke(cli.main, ["soak", "--faults", "1", "--backup", "--kinds", "bogus,part-backup-host"])
    assert res.exit_code == 2 and "unknown fault kind bogus;" in res.output and "part-backup-host" in res.output


def test_operations_doc_names_every_gap_rule_and_mode() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = text[text.index("### Archive gaps and repair"):]
    section = section[:section.index("\n### ", 5)]
    missing = [r.id for r in gaprepair.RULES if f"`{r.id}`" not in section]
    missing += [m for m in gaprepair.MODES if f"`{m}`" not in section]
    assert not missing, f"docs/operations.md, 'Archive gaps and repair', does not name {missing}"
