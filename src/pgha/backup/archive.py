"""WAL archiving as pgha manages it on a member: the settings, its pgbackrest.conf, ``.ready`` pushes.

Every member gets the same ``archive_mode = on`` (pgBackRest's archive-mode-check refuses
``always``), ``archive_command`` (archive-push) and ``restore_command`` (archive-get); only the
primary archives.  These settings win over the cluster and node parameters.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pgha.backup.command import PgBackRest
from pgha.backup.conffile import render_member, state_dir
from pgha.config import NodeConfig
from pgha.postgres.binaries import RunAs
from pgha.postgres.conf import write_atomic

log = logging.getLogger("pgha.backup")

# The settings pgha sets when backup: is configured; parameters cannot override them.
MANAGED = ("archive_mode", "archive_command", "restore_command")


def config_file(config: NodeConfig) -> Path:
    """This member's pgbackrest.conf."""
    assert config.backup is not None
    if config.backup.config_file:
        return Path(config.backup.config_file)
    return Path(config.postgresql.data_dir).parent / "pgbackrest.conf"


def socket_dir(config: NodeConfig) -> str:
    sock = config.postgresql.socket_dir
    return sock or str(Path(config.postgresql.data_dir).parent / "pg_socket")


def settings(config: NodeConfig) -> dict[str, str | bool]:
    """archive_mode, archive_command and restore_command for this member (empty without backup:)."""
    if config.backup is None:
        return {}
    conf = config_file(config)
    stanza = config.backup.stanza_for(config.cluster)
    base = f"pgbackrest --config={conf} --stanza={stanza}"
    return {"archive_mode": "on", "archive_command": f"{base} archive-push %p",
            "restore_command": f'{base} archive-get %f "%p"'}


def render(config: NodeConfig) -> str:
    assert config.backup is not None
    pgc = config.postgresql
    return render_member(config.backup, config.cluster, config_file(config), pgc.listen, pgc.data_dir, pgc.port,
                         socket_dir(config), pgc.superuser.username)


def write_config(config: NodeConfig, run_as: RunAs) -> Path:
    """Write this member's pgbackrest.conf (and the directories it names); its path."""
    path = config_file(config)
    base = state_dir(path)
    for d in (base, base / "log", base / "lock", base / "spool"):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_as.chown(d)
    write_atomic(path, render(config), run_as, 0o640)
    return path


def client(config: NodeConfig, run_as: RunAs) -> PgBackRest:
    assert config.backup is not None
    return PgBackRest(config_file(config), config.backup.stanza_for(config.cluster), run_as)


def push_ready(config: NodeConfig, run_as: RunAs, timeout: float = 60.0) -> int:
    """Push the WAL segments (and history files) PostgreSQL marked ``.ready`` but never archived.

    A former primary does this before pg_rewind or a clone replaces its pg_wal: they are the
    only copy of what it wrote after its last archived segment.  Returns how many were pushed;
    raises BackupError on the first one that fails.
    """
    wal = Path(config.postgresql.data_dir) / "pg_wal"
    status = wal / "archive_status"
    try:
        ready = sorted(p.name[: -len(".ready")] for p in status.iterdir() if p.name.endswith(".ready"))
    except FileNotFoundError:
        return 0
    # History files first (as PostgreSQL's archiver does), then segments in order.
    ready.sort(key=lambda n: (not n.endswith(".history"), n))
    pgbr = client(config, run_as)
    for name in ready:
        segment = wal / name
        if not segment.exists():
            continue
        pgbr.run("archive-push", [str(segment)], timeout=timeout)
        (status / f"{name}.ready").rename(status / f"{name}.done")
        log.info("pushed %s to the repository before replacing pg_wal", name)
    return len(ready)


def current_timeline(config: NodeConfig) -> int:
    """This primary's timeline: the newest .history file in pg_wal (1 without any)."""
    wal = Path(config.postgresql.data_dir) / "pg_wal"
    names = [f.name for f in wal.glob("*.history") if len(f.name) == 16]
    return max((int(n[:8], 16) for n in names), default=1)


def push_previous_timelines(config: NodeConfig, run_as: RunAs, timeline: int, timeout: float = 60.0) -> int:
    """On a new primary: push the earlier timelines' complete segments it still has in pg_wal.

    A standby promoted with archive_mode=on never archives WAL it did not write itself, so the
    segments its old primary had not archived yet when it died would be a hole in the archive.
    The new primary received them by streaming: it pushes each one that ends before its
    timeline's switch point (the segment holding the switch point is archived on the new
    timeline).  pgBackRest accepts a segment already archived with the same content.
    """
    from pgha.backup.continuity import SEGMENT_SIZE, parse_history, parse_segment

    wal = Path(config.postgresql.data_dir) / "pg_wal"
    try:
        history = parse_history((wal / f"{timeline:08X}.history").read_text())
    except FileNotFoundError:
        return 0
    switch_seg = {tli: lsn // SEGMENT_SIZE for tli, lsn in history}
    todo = []
    for f in wal.iterdir():
        seg = parse_segment(f.name) if len(f.name) == 24 else None
        if seg is not None and seg[0] in switch_seg and seg[1] < switch_seg[seg[0]]:
            todo.append((seg, f))
    pgbr = client(config, run_as)
    for _, f in sorted(todo):
        pgbr.run("archive-push", [str(f)], timeout=timeout)
    return len(todo)
