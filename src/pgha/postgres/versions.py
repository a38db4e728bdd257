"""What differs between the PostgreSQL majors pgha runs on: one table, and the major of a bin_dir read once.

``postgresql.bin_dir`` picks the major (Debian's ``/usr/lib/postgresql/15/bin``, or PostgreSQL 18's).  Code
that must behave differently per major asks ``features(major)`` for its row instead of comparing version
numbers where it stands.  Everything else pgha does (its SQL, its settings, slots, synchronous replication,
adopt) is the same on every major in the table and is tested on 15 and 18.

Differences that need no row: the checkpointer's counters moved from ``pg_stat_bgwriter`` to
``pg_stat_checkpointer`` in 17 and ``pg_stat_wal`` lost its write/sync timings to ``pg_stat_io`` in 18, but
pgha reads neither; libpq's ``require_auth`` (16+) is decided per client library (postgres/libpq.py), since
it is the client's libpq that matters, not the server's major.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pgha.postgres.common import PostgresError


@dataclass(frozen=True)
class Features:
    """One major's row."""

    major: int
    # pg_rewind before 16 reads the source's timeline from its pg_control, which a just-promoted primary
    # updates only at its first checkpoint: the source is asked for a CHECKPOINT first (postgres/rewind.py).
    rewind_needs_source_checkpoint: bool
    # 17+: a standby can keep logical failover slots in step with the primary's (sync_replication_slots),
    # the way to carry logical slots across a failover on these majors.
    sync_replication_slots: bool
    # The oldest pgBackRest that backs this major up (its release notes); None: not known, not refused.
    pgbackrest_since: tuple[int, int, int] | None


# Oldest first.  pgBackRest 2.55.0 (2025-04) is the first with PostgreSQL 18 support; Debian 12 ships 2.45,
# which pgha's tests use with PostgreSQL 15.
TABLE: tuple[Features, ...] = (
    Features(15, rewind_needs_source_checkpoint=True, sync_replication_slots=False, pgbackrest_since=None),
    Features(16, rewind_needs_source_checkpoint=False, sync_replication_slots=False, pgbackrest_since=None),
    Features(17, rewind_needs_source_checkpoint=False, sync_replication_slots=True, pgbackrest_since=None),
    Features(18, rewind_needs_source_checkpoint=False, sync_replication_slots=True, pgbackrest_since=(2, 55, 0)),
)
OLDEST = TABLE[0].major
NEWEST = TABLE[-1].major


def features(major: int) -> Features:
    """The row for ``major``: a newer major than the table knows gets the newest row, an older one the oldest."""
    if major <= OLDEST:
        return TABLE[0]
    return next((f for f in TABLE if f.major == major), TABLE[-1])


def parse_version(text: str) -> int:
    """``postgres (PostgreSQL) 18.6`` -> 18; 0 when there is no version in ``text``."""
    found = re.search(r"\(PostgreSQL\) (\d+)", text)
    return int(found.group(1)) if found else 0


@functools.lru_cache(maxsize=8)
def bin_dir_major(bin_dir: str) -> int:
    """The major of the server in ``bin_dir`` (``postgres --version``, asked once); 0 when it cannot say."""
    try:
        out = subprocess.run([str(Path(bin_dir) / "postgres"), "--version"], capture_output=True, text=True,
                             timeout=10, check=False, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return parse_version(out)


def data_dir_major(data_dir: Path) -> int:
    """The major a data directory was made by (its PG_VERSION); 0 when there is none."""
    try:
        return int((data_dir / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return 0


def check_data_dir(bin_dir: str, data_dir: Path) -> None:
    """Refuse, in one line, to run a data directory with another major's server."""
    data, server = data_dir_major(data_dir), bin_dir_major(bin_dir)
    if data and server and data != server:
        raise PostgresError(
            f"postgresql.data_dir: {data_dir} is PostgreSQL {data} but postgresql.bin_dir {bin_dir} is "
            f"PostgreSQL {server}; point bin_dir at PostgreSQL {data}'s programs (or upgrade the data directory)")


def parse_pgbackrest(text: str) -> tuple[int, int, int] | None:
    """``pgBackRest 2.45`` or ``pgBackRest 2.55.1`` -> (2, 45, 0) / (2, 55, 1); None when unrecognised."""
    found = re.search(r"pgBackRest (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not found:
        return None
    return int(found.group(1)), int(found.group(2)), int(found.group(3) or 0)


def pgbackrest_problem(major: int, pgbackrest: tuple[int, int, int] | None) -> str | None:
    """One line when the installed pgBackRest (``pgbackrest version``) cannot back up ``major``; else None.

    For ``pgha validate``'s backup checks: a node file whose bin_dir is 18 with a ``backup:`` section
    while Debian 12's pgBackRest 2.45 is installed is refused here.
    """
    if not major:
        return None
    need = features(major).pgbackrest_since
    if need is None or pgbackrest is None or pgbackrest >= need:
        return None
    have, want = ".".join(map(str, pgbackrest)), ".".join(map(str, need))
    return (f"backup: pgBackRest {have} cannot back up PostgreSQL {major} (postgresql.bin_dir); "
            f"install pgBackRest {want} or newer (apt.postgresql.org's package), or drop the backup: section")


def installed_pgbackrest(binary: str = "pgbackrest") -> tuple[int, int, int] | None:
    """``pgbackrest version`` of ``binary``; None when it is not installed or does not say."""
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=10, check=False,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_pgbackrest(out)


def check_pgbackrest(bin_dir: str, binary: str = "pgbackrest") -> str | None:
    """For the backup checks of ``pgha validate``: the one line refusing this host's pgBackRest, or None."""
    return pgbackrest_problem(bin_dir_major(bin_dir), installed_pgbackrest(binary))
