"""restoretest's pure parts: WAL names and positions, the latest backup and archive end, its settings."""

from __future__ import annotations

from pgha.backup.restoretest import (
    VerifyConfig,
    _latest,
    lsn_position,
    lsn_segment,
    problem,
    segment_name,
    segment_position,
)


def test_wal_positions() -> None:
    assert segment_position("000000020000000100000003") == 256 + 3
    assert segment_name(2, 259) == "000000020000000100000003"
    # Replay that ended exactly at a segment boundary finished the segment before it.
    assert lsn_segment("0/8000000") == 7 and lsn_segment("0/8000001") == 8
    assert lsn_position("1/0") == 1 << 32


def test_latest_backup_and_archive_end() -> None:
    info = {"backup": [{"label": "F1"}, {"label": "F2", "error": True}],
            "archive": [{"max": "000000010000000000000009"}, {"max": "00000002000000000000000A"}]}
    assert _latest(info) == ("F1", "00000002000000000000000A")
    assert _latest({}) == ("", "")


def test_verify_settings_are_checked() -> None:
    assert problem(VerifyConfig()) is None
    assert "verify.port" in str(problem(VerifyConfig(port=80)))
    assert "verify.scratch_dir" in str(problem(VerifyConfig(scratch_dir="/tmp/a b")))
