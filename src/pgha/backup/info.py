"""The backups and the restore window, from one stanza of ``pgbackrest info --output=json``.  Pure.

The window runs from the end of the oldest backup (the earliest point a restore can reach: a
backup is consistent only once its WAL up to its stop point is replayed) to the last WAL segment
in the archive.  The archive's newest segment comes from the same ``info``; the time it arrived
is given by the caller (the repository host reads it from the repository's files).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BackupRecord:
    label: str
    type: str
    started_at: float
    stopped_at: float
    wal_start: str = ""
    wal_stop: str = ""
    lsn_start: str = ""
    lsn_stop: str = ""
    size: int = 0
    repo_size: int = 0
    error: bool = False


@dataclass(frozen=True)
class RestoreWindow:
    # Epoch seconds: the end of the oldest backup (0: no backup yet).
    start_at: float = 0.0
    # The newest WAL segment in the archive, and when it arrived (0: unknown).
    end_wal: str = ""
    end_at: float = 0.0


@dataclass(frozen=True)
class BackupSummary:
    stanza: str
    status: str
    backups: tuple[BackupRecord, ...] = ()
    window: RestoreWindow = RestoreWindow()
    archive_min: str = ""
    archive_max: str = ""
    # When the summary was read (epoch seconds), by whom, and the last error reading it.
    read_at: float = 0.0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def summarize(stanza: str, info: Mapping[str, Any], last_archived_at: float = 0.0, now: float = 0.0) -> BackupSummary:
    """The summary of one stanza's info (``{}``: the stanza does not exist yet)."""
    if not info:
        return BackupSummary(stanza, "no stanza", read_at=now)
    backups = []
    for b in info.get("backup") or ():
        if not isinstance(b, Mapping):
            continue
        backups.append(BackupRecord(
            label=_str(b.get("label")), type=_str(b.get("type")),
            started_at=_num(_get(b, "timestamp", "start")), stopped_at=_num(_get(b, "timestamp", "stop")),
            wal_start=_str(_get(b, "archive", "start")), wal_stop=_str(_get(b, "archive", "stop")),
            lsn_start=_str(_get(b, "lsn", "start")), lsn_stop=_str(_get(b, "lsn", "stop")),
            size=int(_num(_get(b, "info", "size"))), repo_size=int(_num(_get(b, "info", "repository", "delta"))),
            error=bool(b.get("error", False))))
    backups.sort(key=lambda r: r.started_at)
    archives = [a for a in info.get("archive") or () if isinstance(a, Mapping)]
    mins = [_str(a.get("min")) for a in archives if _str(a.get("min"))]
    maxs = [_str(a.get("max")) for a in archives if _str(a.get("max"))]
    amin, amax = (min(mins) if mins else ""), (max(maxs, key=_segment_order) if maxs else "")
    good = [b for b in backups if not b.error]
    window = RestoreWindow(start_at=good[0].stopped_at if good else 0.0, end_wal=amax if good else "",
                           end_at=last_archived_at if good else 0.0)
    status = _str(_get(info, "status", "message")) or "unknown"
    if _get(info, "status", "code") in (1, 3):  # missing stanza path, missing stanza data
        status = "no stanza"
    return BackupSummary(stanza, status, tuple(backups), window, amin, amax, read_at=now)


def _segment_order(name: str) -> tuple[str, str]:
    """Order WAL names by position, then timeline (a later timeline may hold an earlier position)."""
    return (name[8:], name[:8])


def from_dict(data: Mapping[str, Any]) -> BackupSummary:
    """The summary back from its JSON form (as the repository host publishes it in the DCS)."""
    backups = tuple(BackupRecord(**{k: v for k, v in b.items() if k in BackupRecord.__dataclass_fields__})
                    for b in data.get("backups") or () if isinstance(b, Mapping))
    w = data.get("window") or {}
    window = RestoreWindow(**{k: v for k, v in w.items() if k in RestoreWindow.__dataclass_fields__}) \
        if isinstance(w, Mapping) else RestoreWindow()
    return BackupSummary(stanza=_str(data.get("stanza")), status=_str(data.get("status")), backups=backups,
                         window=window, archive_min=_str(data.get("archive_min")),
                         archive_max=_str(data.get("archive_max")), read_at=_num(data.get("read_at")),
                         error=_str(data.get("error")))
