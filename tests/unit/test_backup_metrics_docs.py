"""The backup metrics are defined once (src/pgha/backup/metrics.py); docs/dashboard.md names each, and
the summary that /ui/state and `pgha list` show reads RPO, the window and the restore test right."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from pgha.backup.info import BackupRecord, BackupSummary, RestoreWindow
from pgha.backup.metrics import BackupMetrics
from pgha.backup.scheduler import BackupStatus
from pgha.backup.status import list_lines, summary_json
from pgha.backup.verify import VerifyResult

DOCS = Path(__file__).resolve().parents[2] / "docs" / "dashboard.md"


def exported(status: BackupStatus | None) -> dict[str, float]:
    reg = CollectorRegistry()
    BackupMetrics(reg).status = status
    text = generate_latest(reg).decode()
    return {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln and not ln.startswith("#")}


def test_every_backup_metric_is_documented() -> None:
    names = exported(None)
    assert len(names) >= 12 and all(n.startswith("pgha_backup_") for n in names)
    text = DOCS.read_text()
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"docs/dashboard.md does not name {missing}"


def test_values_and_summary() -> None:
    import time

    now = time.time()
    info = BackupSummary("demo", "ok", (BackupRecord("F1", "full", now - 100, now - 90),),
                         RestoreWindow(now - 90, "000000010000000000000007", now - 5))
    verify = VerifyResult("v", False, "WAL replay stopped at … (a gap)", now - 60, now - 30, gap=True)
    status = BackupStatus(info=info, verify=verify, ready=2, oldest_ready_at=now - 400)
    v = exported(status)
    assert 4 <= v["pgha_backup_wal_archive_age_seconds"] < 60
    assert 89 <= v["pgha_backup_last_backup_age_seconds"] < 150
    assert v["pgha_backup_verify_ok"] == 0.0 and v["pgha_backup_archive_gap"] == 1.0
    assert v["pgha_backup_wal_ready_segments"] == 2 and v["pgha_backup_wal_oldest_ready_age_seconds"] >= 400
    s = summary_json(info, None, verify, now)
    assert s is not None and s["rpo_seconds"] == 5 and s["window"]["start"] == now - 90
    lines = list_lines(info, None, verify, now)
    assert lines[0].startswith("Backups: last backup 90 s ago (full F1); RPO 5 s")
    assert lines[-1].startswith("Restore test: FAILED 30 s ago (archive gap)")
    assert summary_json(None, None, None, now) is None and list_lines(None, None, None, now) == []
