"""Is the archive continuous from a backup's first segment to the newest one, across timeline switches?

``missing()`` is pure: given the segments present, the history of the newest timeline and where
to start, it lists the segments a restore would need and cannot find.  At a switch from timeline
T to T+1 at LSN L, the segment holding L is read from T+1 (PostgreSQL copied T's part of it into
T+1's when it promoted); the segments before it come from T.  ``repository_missing`` reads a
local pgBackRest repository (the repository host's, or a test's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

SEGMENT_SIZE = 16 * 1024 * 1024
PER_ID = 0x1_0000_0000 // SEGMENT_SIZE
NAME_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")


def parse_segment(name: str) -> tuple[int, int] | None:
    """(timeline, segment number) of a WAL file name (a pgBackRest archive file name too)."""
    m = NAME_RE.match(name)
    if m is None or "." in name[:24] or (len(name) > 24 and name[24] not in "-"):
        return None
    return int(m.group(1), 16), int(m.group(2), 16) * PER_ID + int(m.group(3), 16)


def segment_name(timeline: int, segno: int) -> str:
    return f"{timeline:08X}{segno // PER_ID:08X}{segno % PER_ID:08X}"


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def parse_history(text: str) -> list[tuple[int, int]]:
    """A timeline history file's switches: (parent timeline, switch LSN), oldest first."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and "/" in parts[1]:
            out.append((int(parts[0]), parse_lsn(parts[1])))
    return out


def missing(present: Iterable[tuple[int, int]], history: Sequence[tuple[int, int]], start: tuple[int, int],
            end_timeline: int) -> list[str]:
    """The segments from ``start`` to the newest one of ``end_timeline`` that are not ``present``."""
    have = set(present)
    # Each timeline on the path to end_timeline, with the first segment read from its successor.
    path = [(tli, lsn // SEGMENT_SIZE) for tli, lsn in history]
    path.append((end_timeline, 1 << 62))
    newest = max((s for t, s in have if t == end_timeline), default=None)
    if newest is None:
        return [f"{end_timeline:08X}.. (no segment of the newest timeline)"]
    lost = []
    segno = start[1]
    for tli, switch_seg in path:
        if tli < start[0]:
            continue
        last = min(switch_seg - 1, newest) if tli != end_timeline else newest
        while segno <= last:
            if (tli, segno) not in have:
                lost.append(segment_name(tli, segno))
            segno += 1
    return lost


def repository_missing(repo_path: str | Path, stanza: str, start_wal: str) -> list[str]:
    """``missing()`` over a local repository's archive, from the segment ``start_wal``."""
    root = Path(repo_path) / "archive" / stanza
    present: set[tuple[int, int]] = set()
    histories: dict[int, str] = {}
    for archive_id in (d for d in root.iterdir() if d.is_dir()):
        for entry in archive_id.iterdir():
            if entry.is_dir():
                present.update(p for p in (parse_segment(f.name) for f in entry.iterdir()) if p is not None)
            elif entry.name.endswith(".history"):
                histories[int(entry.name[:8], 16)] = entry.read_text()
    start = parse_segment(start_wal)
    if start is None:
        raise ValueError(f"{start_wal!r} is not a WAL segment name")
    end_timeline = max([t for t, _ in present] + list(histories))
    return missing(present, parse_history(histories.get(end_timeline, "")), start, end_timeline)
