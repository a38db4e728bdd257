"""Cloning a replica with pg_basebackup, reporting progress as it goes."""

from __future__ import annotations

import logging
import os
import re
import shutil

import psycopg

from pgha.config import NodeConfig
from pgha.core.model import DataDir
from pgha.postgres import conf, db, libpq
from pgha.postgres.binaries import Binaries, last_line
from pgha.postgres.common import PostgresError, Progress, Upstream
from pgha.postgres.control import make_data_dir
from pgha.postgres.layout import Layout
from pgha.postgres.observe import data_dir_state

log = logging.getLogger(__name__)

# "  12345/67890 kB (18%), 0/1 tablespace (…)"
PROGRESS_RE = re.compile(r"(\d+)/(\d+) kB \((\d+)%\)")


def parse_progress(line: str) -> tuple[int, int] | None:
    """(done bytes, total bytes) from one pg_basebackup --progress line."""
    m = PROGRESS_RE.search(line)
    return (int(m.group(1)) * 1024, int(m.group(2)) * 1024) if m else None


def source_has_slot(config: NodeConfig, layout: Layout, source: Upstream, slot: str) -> bool:
    try:
        with db.remote(config, layout, source, config.postgresql.replication.username) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND slot_type = 'physical'", (slot,)
            ).fetchone()
            return row is not None
    except psycopg.Error as exc:
        log.info(
            "clone: cannot look up slot %s on %s (%s); cloning without it",
            slot,
            source.name,
            db.one_line(exc),
        )
        return False


def clone(
    config: NodeConfig, layout: Layout, binaries: Binaries, source: Upstream, progress: Progress
) -> None:
    if data_dir_state(layout) != DataDir.EMPTY:
        raise PostgresError(
            f"postgresql.data_dir: {layout.data} is not empty; clone needs an empty directory"
        )
    binaries.path("pg_basebackup")
    slot = conf.slot_name(config.name)
    # The other site's slots are its own members' (a member there may well have our name).
    use_slot = source.remote is None and source_has_slot(config, layout, source, slot)
    make_data_dir(layout, binaries)
    dsn = conf.conninfo(
        host=source.host,
        port=source.port,
        user=config.postgresql.replication.username,
        passfile=str(layout.passfile),
        application_name=f"{config.name}_clone",
        connect_timeout=5,
        **libpq.for_tools(config),
    )
    args = ["-D", str(layout.data), "-X", "stream", "-c", "fast", "--progress", "--verbose", "-d", dsn]
    if use_slot:
        args += ["-S", slot]
    log.info(
        "clone: pg_basebackup from %s (%s:%s)%s",
        source.name,
        source.host,
        source.port,
        f" using slot {slot}" if use_slot else "",
    )
    proc = binaries.popen("pg_basebackup", args)
    assert proc.stderr is not None
    lines: list[str] = []
    done: int = 0
    total: int | None = None
    buf = b""
    try:
        while True:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            *complete, buf = re.split(rb"[\r\n]", buf)
            for raw in complete:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                lines.append(line)
                del lines[:-50]
                counts = parse_progress(line)
                if counts is not None:
                    done, total = counts
                _report(progress, done, total, line)
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        shutil.rmtree(layout.data, ignore_errors=True)
        raise
    finally:
        proc.stderr.close()
    if buf.strip():
        lines.append(buf.decode(errors="replace").strip())
    if rc != 0:
        shutil.rmtree(layout.data, ignore_errors=True)
        errors = [ln for ln in lines if "error:" in ln]
        gist = errors[-1] if errors else last_line("\n".join(lines), f"exit code {rc}")
        raise PostgresError(f"clone from {source.name} failed: {gist}")
    _report(progress, total or done, total, "base backup complete")


def _report(progress: Progress, done: int, total: int | None, msg: str) -> None:
    try:
        progress(done, total, msg)
    except Exception:  # a broken progress display must not break the clone
        log.exception("clone progress callback failed")
