"""RPO and RTO as operators read them: one JSON object for /ui/state and lines for ``pgha list``.  Pure.

Built from what the repository host last published (/backup/info, /backup/result) and the last
restore test (/backup/verify); ``now`` is passed in.
"""

from __future__ import annotations

import time
from typing import Any

from pgha.backup.info import BackupSummary
from pgha.backup.keys import BackupResult
from pgha.backup.verify import VerifyResult


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def summary_json(info: BackupSummary | None, result: BackupResult | None, verify: VerifyResult | None,
                 now: float) -> dict[str, Any] | None:
    """What the dashboard shows (None: no backup information in the DCS)."""
    if info is None and verify is None:
        return None
    good = [b for b in (info.backups if info else ()) if not b.error]
    last = good[-1] if good else None
    w = info.window if info else None
    return {
        "status": info.status if info else "unknown",
        "error": info.error if info else "",
        "backups": len(good),
        "last_backup": {"label": last.label, "type": last.type, "at": last.stopped_at,
                        "age": now - last.stopped_at} if last else None,
        "last_result": {"ok": result.ok, "message": result.message, "source": result.source,
                        "at": result.finished_at} if result else None,
        "rpo_seconds": now - w.end_at if w is not None and w.end_at else None,
        "window": {"start": w.start_at, "end": w.end_at, "end_wal": w.end_wal}
        if w is not None and w.start_at else None,
        "verify": {"ok": verify.ok, "at": verify.finished_at, "rto_seconds": verify.rto_seconds,
                   "gap": verify.gap, "message": verify.message} if verify else None,
    }


def list_lines(info: BackupSummary | None, result: BackupResult | None, verify: VerifyResult | None,
               now: float) -> list[str]:
    """The lines under ``pgha list``'s table (none without backup information)."""
    s = summary_json(info, result, verify, now)
    if s is None:
        return []
    parts = []
    lb = s["last_backup"]
    parts.append(f"last backup {ago(lb['age'])} ago ({lb['type']} {lb['label']})" if lb else "no backup yet")
    if s["rpo_seconds"] is not None:
        parts.append(f"RPO {ago(s['rpo_seconds'])} (last WAL archived)")
    if s["window"]:
        parts.append(f"restore window {_iso(s['window']['start'])} .. {_iso(s['window']['end'])}")
    lines = ["Backups: " + "; ".join(parts)]
    lr = s["last_result"]
    if lr is not None and not lr["ok"]:
        lines.append(f"Last backup FAILED: {lr['message']}")
    v = s["verify"]
    if v is None:
        lines.append("Restore test: never run ('pgha backup verify')")
    elif v["ok"]:
        lines.append(f"Restore test: passed {ago(now - v['at'])} ago, measured RTO {v['rto_seconds']:.1f} s")
    else:
        lines.append(f"Restore test: FAILED {ago(now - v['at'])} ago{' (archive gap)' if v['gap'] else ''}: "
                     f"{v['message']}")
    return lines
