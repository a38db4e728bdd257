"""What to do about a hole in the WAL archive, found by the gap check after a timeline change.  Pure.

The gap check (pgha.backup.gapcheck, a thread of the primary's agent) lists the segments a restore
from the oldest kept backup to the newest WAL would need and cannot find.  ``decide()`` turns that
list, ``backup.gap_repair`` and whether the members were already asked to push into one decision,
a row of ``RULES`` (id and reason, logged and shown in the agent's event feed):

- ``push`` (the default): every member pushes the missing segments it still holds in pg_wal (a
  former primary, a standby that received them); the ones nobody held are then covered by a new
  full backup, taken at once;
- ``full``: a new full backup at once (a restore from it needs no segment before it);
- ``none``: the hole is reported (event, metric ``pgha_backup_archive_gap``) and left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MODES = ("push", "full", "none")
Action = Literal["nothing", "report", "push", "full"]


@dataclass(frozen=True)
class GapRule:
    id: str
    action: Action
    comment: str


RULES: tuple[GapRule, ...] = (
    GapRule("gap-none", "nothing", "the archive is continuous from the oldest backup to the newest segment"),
    GapRule("gap-report-only", "report", "backup.gap_repair is none: the hole is reported, not repaired"),
    GapRule("gap-full-at-once", "full", "backup.gap_repair is full: a new full backup is taken at once"),
    GapRule("gap-push-from-members", "push",
            "every member pushes the missing segments it still holds in pg_wal"),
    GapRule("gap-push-left-hole-full", "full",
            "no member held the missing segments: a new full backup is taken at once"),
)
_BY_ID = {r.id: r for r in RULES}


@dataclass(frozen=True)
class GapDecision:
    action: Action
    rule_id: str
    reason: str
    # The segments the members are asked to push (action push), else empty.
    push: tuple[str, ...] = ()


def _row(rule_id: str, missing: Sequence[str], push: tuple[str, ...] = ()) -> GapDecision:
    r = _BY_ID[rule_id]
    what = f"{len(missing)} segment(s) missing, first {missing[0]}; " if missing else ""
    return GapDecision(r.action, r.id, what + r.comment, push)


def decide(missing: Sequence[str], mode: str, members_asked: bool) -> GapDecision:
    """The decision for one gap check: ``missing`` segment names, ``mode`` backup.gap_repair,
    ``members_asked``: the members were already asked to push exactly these and had their turn."""
    if not missing:
        return _row("gap-none", missing)
    if mode == "none":
        return _row("gap-report-only", missing)
    if mode == "full":
        return _row("gap-full-at-once", missing)
    if not members_asked:
        return _row("gap-push-from-members", missing, tuple(missing))
    return _row("gap-push-left-hole-full", missing)
