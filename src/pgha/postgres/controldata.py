"""pg_controldata: what the control file says about a (possibly stopped) cluster."""

from __future__ import annotations

from dataclasses import dataclass

from pgha.postgres.lsn import parse_lsn


@dataclass(frozen=True)
class ControlData:
    system_id: str | None
    # "in production", "shut down", "shut down in recovery", "in archive recovery", …
    state: str | None
    checkpoint_lsn: int | None
    checkpoint_redo_lsn: int | None
    timeline: int | None
    min_recovery_lsn: int | None
    min_recovery_timeline: int | None

    @property
    def latest_timeline(self) -> int | None:
        """The newest timeline the files know of (a replica may be past its last restartpoint)."""
        tls = [t for t in (self.timeline, self.min_recovery_timeline) if t]
        return max(tls) if tls else None


def parse(text: str) -> ControlData:
    """Parse pg_controldata's output (run with LC_ALL=C)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()

    def lsn(key: str) -> int | None:
        try:
            return parse_lsn(fields.get(key))
        except ValueError:
            return None

    def num(key: str) -> int | None:
        v = fields.get(key, "")
        return int(v) if v.isdigit() else None

    return ControlData(
        system_id=fields.get("Database system identifier") or None,
        state=fields.get("Database cluster state") or None,
        checkpoint_lsn=lsn("Latest checkpoint location"),
        checkpoint_redo_lsn=lsn("Latest checkpoint's REDO location"),
        timeline=num("Latest checkpoint's TimeLineID"),
        min_recovery_lsn=lsn("Minimum recovery ending location"),
        min_recovery_timeline=num("Min recovery ending loc's timeline") or None,
    )
