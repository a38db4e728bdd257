"""Backup metrics (RPO and RTO) of one agent, computed at scrape time from its BackupStatus.

Every agent exports them (NaN while unknown: no ``backup:`` section, or nothing read yet); the
alert rules in packaging/prometheus/alerts.yml and the Grafana dashboard read these names.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge

from pgha.backup.scheduler import BackupStatus

NAN = math.nan


def _age(at: float) -> float:
    return time.time() - at if at else NAN


def _gap(s: BackupStatus) -> float:
    found = [g for g in (s.verify.gap if s.verify else None, s.archive_gap) if g is not None]
    return float(any(found)) if found else NAN


class BackupMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.status: BackupStatus | None = None

        def gauge(name: str, doc: str, fn: Callable[[BackupStatus], float]) -> Gauge:
            g = Gauge(name, doc, registry=registry)
            g.set_function(lambda: fn(self.status) if self.status is not None else NAN)
            return g

        gauge("pgha_backup_wal_archive_age_seconds",
              "RPO: seconds since the newest WAL segment arrived in the repository (NaN: unknown)",
              lambda s: _age(s.info.window.end_at) if s.info else NAN)
        gauge("pgha_backup_last_backup_age_seconds",
              "Seconds since the newest good backup finished (NaN: no backup)", lambda s: _age(s.last_backup_at()))
        gauge("pgha_backup_restore_window_start_timestamp_seconds",
              "Epoch seconds of the earliest point a restore can reach: the end of the oldest backup (NaN: none)",
              lambda s: s.info.window.start_at or NAN if s.info else NAN)
        gauge("pgha_backup_restore_window_end_timestamp_seconds",
              "Epoch seconds of the latest point a restore can reach: when the newest archived WAL arrived",
              lambda s: s.info.window.end_at or NAN if s.info else NAN)
        gauge("pgha_backup_last_result_ok", "1 when the last backup the repository host ran succeeded, 0 when it "
              "failed (NaN: none yet)", lambda s: float(s.result.ok) if s.result else NAN)
        gauge("pgha_backup_schedule_interval_seconds",
              "The shortest interval between two scheduled backups (backup.schedule; 0: none scheduled)",
              lambda s: s.policy.backup_interval())
        gauge("pgha_backup_verify_timestamp_seconds", "Epoch seconds the last restore test finished (NaN: none)",
              lambda s: s.verify.finished_at if s.verify else NAN)
        gauge("pgha_backup_verify_duration_seconds",
              "Measured RTO: seconds the last restore test took to restore and replay the whole archive "
              "(NaN: none, or it failed)", lambda s: s.verify.rto_seconds or NAN if s.verify else NAN)
        gauge("pgha_backup_verify_ok", "1 when the last restore test passed, 0 when it failed (NaN: none yet)",
              lambda s: float(s.verify.ok) if s.verify else NAN)
        gauge("pgha_backup_archive_gap", "1 when the last restore test, or this primary's last gap check after "
              "a timeline change, found a WAL segment missing from the archive, else 0 (NaN: neither ran)",
              _gap)
        gauge("pgha_backup_wal_ready_segments",
              "WAL segments on this node that PostgreSQL has not archived yet (.ready files)",
              lambda s: float(s.ready))
        gauge("pgha_backup_wal_oldest_ready_age_seconds",
              "Seconds the oldest WAL segment on this node has waited to be archived (0: none waits)",
              lambda s: _age(s.oldest_ready_at) if s.oldest_ready_at else 0.0)
