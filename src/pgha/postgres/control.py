"""Driving the local server: initdb, managed files, start, stop, reload, promote, checkpoint."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from pgha.config import NodeConfig
from pgha.core.model import DataDir
from pgha.postgres import conf, db, external_conf, versions
from pgha.postgres.binaries import Binaries, RunAs, last_line
from pgha.postgres.common import PostgresError, Upstream
from pgha.postgres.layout import Layout
from pgha.postgres.lsn import format_lsn, parse_lsn
from pgha.postgres.observe import controldata, data_dir_state, postmaster_alive, read_postmaster
from pgha.postgres.processes import describe_tree, fence_postmaster

log = logging.getLogger(__name__)


def make_data_dir(layout: Layout, binaries: Binaries) -> None:
    """Create the (empty) data directory owned by the PostgreSQL user, mode 0700."""
    d = layout.data
    if not d.parent.is_dir():
        raise PostgresError(
            f"postgresql.data_dir: {d.parent} does not exist; create it owned by "
            f"{binaries.run_as.name or 'postgres'}"
        )
    d.mkdir(mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    binaries.run_as.chown(d)


def make_socket_dir(layout: Layout, binaries: Binaries) -> None:
    """Create the socket directory (mode 0700, PostgreSQL's user) when it does not exist yet."""
    d = layout.socket_dir
    if not d.is_dir():
        d.mkdir(mode=0o700, parents=True)
        os.chmod(d, 0o700)
        binaries.run_as.chown(d)


def initdb(config: NodeConfig, layout: Layout, binaries: Binaries) -> str:
    pgc = config.postgresql
    if data_dir_state(layout) != DataDir.EMPTY:
        raise PostgresError(
            f"postgresql.data_dir: {layout.data} is not empty; initdb needs an empty directory"
        )
    binaries.path("initdb")
    make_data_dir(layout, binaries)
    args = [
        "-D",
        str(layout.data),
        "-U",
        pgc.superuser.username,
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        *pgc.initdb,
    ]
    pwfile = layout.parent / f".pgha-initdb-{os.getpid()}.pw"
    try:
        if pgc.superuser.password:
            conf.write_atomic(pwfile, pgc.superuser.password + "\n", binaries.run_as)
            args.append(f"--pwfile={pwfile}")
        r = binaries.run("initdb", args, timeout=600)
    finally:
        conf.remove(pwfile)
    if r.returncode != 0:
        raise PostgresError(f"initdb failed: {last_line(r.stderr, f'exit code {r.returncode}')}")
    os.replace(layout.conf, layout.base_conf)
    # pgha writes its own pg_hba.conf next; initdb's is not an operator's file to keep aside.
    conf.remove(layout.hba)
    cd = controldata(binaries, layout)
    if cd is None or cd.system_id is None:
        raise PostgresError(f"initdb finished but pg_controldata cannot read {layout.data}")
    log.info("initdb: new cluster in %s, system identifier %s", layout.data, cd.system_id)
    return cd.system_id


def configure(
    config: NodeConfig,
    layout: Layout,
    binaries: Binaries,
    parameters: Mapping[str, conf.Value],
    upstream: Upstream | None,
    synchronous_standby_names: str,
    standby: bool,
) -> bool:
    """Write the managed files; return True when the running server needs a restart for them."""
    if data_dir_state(layout) != DataDir.VALID:
        raise PostgresError(f"postgresql.data_dir: {layout.data} holds no cluster; cannot configure it")
    run_as = binaries.run_as
    take_over_files(layout, run_as)
    make_socket_dir(layout, binaries)
    conf.write_atomic(
        layout.conf,
        conf.render_postgresql_conf(config, layout, parameters, upstream, synchronous_standby_names),
        run_as,
    )
    conf.write_atomic(layout.hba, conf.render_hba(config), run_as)
    if standby:
        conf.touch(layout.standby_signal, run_as)
    else:
        conf.remove(layout.standby_signal)
    return _needs_restart(config, layout, standby)


def take_over_files(layout: Layout, run_as: RunAs) -> None:
    """Make the configuration files pgha's, keeping what was there (an adopted cluster).

    A postgresql.conf pgha did not write becomes postgresql.base.conf, which pgha's includes; when
    that exists already (Patroni keeps initdb's file there), the old file is kept as
    postgresql.conf.pre-pgha.  pg_hba.conf is kept as pg_hba.conf.pre-pgha.  Settings pgha
    manages are removed from postgresql.auto.conf (pg_basebackup -R puts primary_conninfo there,
    and ALTER SYSTEM would override pgha's), the original kept as postgresql.auto.conf.pre-pgha.
    """
    if layout.config_dir is not None:
        try:
            external_conf.take_over(layout.data, layout.config_dir, run_as)
        except external_conf.ExternalConfError as exc:
            raise PostgresError(str(exc)) from None
    current = _read(layout.conf)
    if not layout.base_conf.exists():
        if current and not current.startswith(conf.MARKER):
            os.replace(layout.conf, layout.base_conf)
        else:
            conf.write_atomic(layout.base_conf, "# initdb's settings were not available\n", run_as)
    elif current and not current.startswith(conf.MARKER):
        _keep(layout.conf, current, run_as)
    hba = _read(layout.hba)
    if hba and not hba.startswith(conf.MARKER):
        _keep(layout.hba, hba, run_as)
    auto = _read(layout.auto_conf)
    kept, removed = conf.without_managed_settings(auto)
    if removed:
        _keep(layout.auto_conf, auto, run_as)
        conf.write_atomic(layout.auto_conf, kept, run_as)
        log.warning("removed %s from %s: pgha sets them (the old file is kept as %s%s)",
                    ", ".join(removed), layout.auto_conf.name, layout.auto_conf.name, PRE_PGHA)


PRE_PGHA = ".pre-pgha"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return ""


def _keep(path: Path, text: str, run_as: RunAs) -> None:
    """A copy of a file pgha is about to replace, next to it (only the first original is kept)."""
    copy = path.with_name(path.name + PRE_PGHA)
    if not copy.exists():
        conf.write_atomic(copy, text, run_as)
        log.warning("%s was not written by pgha: pgha manages it now; the original is kept as %s",
                    path.name, copy.name)


def _needs_restart(config: NodeConfig, layout: Layout, standby: bool) -> bool:
    if read_postmaster(layout) is None:
        return False
    try:
        with db.local(config, layout, statement_timeout_ms=5000) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            # pg_file_settings reads the files now; a changed postmaster-context value cannot be applied.
            names = [
                str(r[0])
                for r in conn.execute(
                    "SELECT DISTINCT f.name FROM pg_file_settings f JOIN pg_settings s USING (name)"
                    " WHERE f.error IS NOT NULL AND s.context = 'postmaster' ORDER BY 1"
                ).fetchall()
            ]
    except psycopg.Error as exc:
        log.warning("cannot tell whether the new settings need a restart: %s", db.one_line(exc))
        return False
    # Only what the role needs forces a restart (where to stream from); every other setting
    # that needs one shows as pending restart (`pgha list`) until the operator's `pgha restart`:
    # an adopted server keeps running.
    role_names = [n for n in names if n in ("primary_conninfo", "primary_slot_name")]
    if names:
        log.info("pending restart for: %s", ", ".join(names))
    if role_names:
        log.info("restart needed for: %s", ", ".join(role_names))
        return True
    if row is not None and row[0] is False and standby:
        log.info("restart needed: a running primary becomes a standby")
        return True
    return False


def _log_size(layout: Layout) -> int:
    try:
        return layout.log_file.stat().st_size
    except FileNotFoundError:
        return 0


def _log_since(layout: Layout, offset: int) -> str:
    try:
        with open(layout.log_file, "rb") as f:
            f.seek(offset)
            return f.read(256 * 1024).decode(errors="replace")
    except OSError:
        return ""


def start_error(config: NodeConfig, layout: Layout, log_text: str, fallback: str) -> str:
    pgc = config.postgresql
    if "Address already in use" in log_text or "could not create any TCP/IP sockets" in log_text:
        return (
            f"postgresql.port: {pgc.listen}:{pgc.port} is already in use by another process; "
            "stop it or change postgresql.port"
        )
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    gist = next((ln for ln in reversed(lines) if "FATAL:" in ln or "PANIC:" in ln), None)
    gist = gist or (lines[-1] if lines else fallback)
    for tag in ("FATAL:", "PANIC:"):
        if tag in gist:
            gist = gist[gist.index(tag) :]
    return f"PostgreSQL did not start: {gist} (log: {layout.log_file})"


def wait_ready(config: NodeConfig, layout: Layout, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(psycopg.Error), db.local(config, layout) as conn:
            conn.execute("SELECT 1")
            return True
        if time.monotonic() >= deadline or read_postmaster(layout) is None:
            return False
        time.sleep(0.2)


def clear_stale_locks(layout: Layout, port: int) -> None:
    """Remove postmaster.pid, and the socket's lock file, when they name no live postgres (the
    caller saw no live postmaster for this data directory).

    PostgreSQL refuses to start while the PID in either exists at all and is the postgres
    user's: a postmaster that was SIGKILLed stays a zombie until its parent (init, as pg_ctl
    has exited) reaps it, which took 2 to 3 s on a machine whose init reaps slowly, and after
    a reboot the PID may be another program's.  Its own interlock stays: a new postmaster still
    refuses while backends of the dead one hold its shared memory.
    """
    for lock in (layout.pid_file, layout.socket_dir / f".s.PGSQL.{port}.lock"):
        try:
            pid = lock.read_text().split("\n", 1)[0].strip()
        except OSError:
            continue
        if pid.isdigit() and postmaster_alive(int(pid)):
            continue  # the socket is another live postmaster's: PostgreSQL says so itself
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            log.info("removed the stale %s (PID %s is no running postgres)", lock.name, pid or "?")


def start(config: NodeConfig, layout: Layout, binaries: Binaries, timeout: float) -> None:
    if data_dir_state(layout) != DataDir.VALID:
        raise PostgresError(f"postgresql.data_dir: {layout.data} holds no cluster; cannot start")
    if read_postmaster(layout) is not None:
        if wait_ready(config, layout, timeout):
            return
        raise PostgresError(f"PostgreSQL is running but did not accept connections within {timeout:.0f} s")
    versions.check_data_dir(str(binaries.bin_dir), layout.data)
    os.chmod(layout.data, 0o700)
    clear_stale_locks(layout, config.postgresql.port)
    make_socket_dir(layout, binaries)
    if not layout.log_file.exists():
        conf.write_atomic(layout.log_file, "", binaries.run_as)
    offset = _log_size(layout)
    seconds = max(1, int(timeout))
    r = binaries.run(
        "pg_ctl",
        ["start", "-D", str(layout.data), "-l", str(layout.log_file), "-w", "-t", str(seconds), "-s"],
        timeout=seconds + 15,
        new_session=True,
    )
    if r.returncode == 0 and wait_ready(config, layout, 10):
        log.info("PostgreSQL started (log: %s)", layout.log_file)
        return
    text = _log_since(layout, offset)
    if read_postmaster(layout) is not None:
        raise PostgresError(
            f"PostgreSQL did not accept connections within {seconds} s; it is still "
            f"starting (log: {layout.log_file})"
        )
    raise PostgresError(start_error(config, layout, text, last_line(r.stderr + r.stdout, "pg_ctl failed")))


# The signal pg_ctl stop -m MODE sends the postmaster.
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
# How often we look whether the postmaster is gone.  pg_ctl -w looks every 100 ms, and in
# a switchover each of those milliseconds is write downtime.
STOP_POLL = 0.01


def stop(layout: Layout, mode: str, timeout: float) -> None:
    """Signal the postmaster as ``pg_ctl stop -m MODE`` does, then wait until it is gone."""
    if mode not in STOP_SIGNALS:
        raise PostgresError(f"stop mode must be smart, fast or immediate, not {mode!r}")
    pm = read_postmaster(layout)
    if pm is None:
        return
    try:
        os.kill(pm.pid, STOP_SIGNALS[mode])
    except ProcessLookupError:
        pass
    except PermissionError:
        raise PostgresError(f"stop -m {mode}: not allowed to signal postmaster {pm.pid}") from None
    if _gone_within(layout, max(1.0, timeout)):
        log.info("PostgreSQL stopped (%s)", mode)
        return
    # A shutdown that hangs (a process stuck on the disk, a walsender waiting on a standby that
    # does not answer) cannot be called off: PostgreSQL refuses connections until it ends.  Left
    # alone, a leader would hold its key with no server behind it.  Finish it as pg_ctl -m
    # immediate would, then kill what still stands; the next start runs crash recovery.
    stuck = describe_tree(pm.pid)
    if mode != "immediate":
        with contextlib.suppress(ProcessLookupError):
            os.kill(pm.pid, STOP_SIGNALS["immediate"])
    # An immediate stop that did not end is killed at once: fencing must not wait twice.
    if mode == "immediate" or not _gone_within(layout, STOP_ESCALATION):
        fence_postmaster(pm.pid)
        _gone_within(layout, STOP_ESCALATION)
    raise PostgresError(f"stop -m {mode}: PostgreSQL still ran after {max(1.0, timeout):.0f} s, so it was "
                        f"stopped at once (see {layout.log_file}); its processes were: {stuck}")


# Seconds an immediate stop, then a kill, may take once a stop hung.
STOP_ESCALATION = 5.0


def _gone_within(layout: Layout, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while read_postmaster(layout) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(STOP_POLL)
    return True


def reload(layout: Layout) -> None:
    """SIGHUP the postmaster; a stopped server reads the files when it starts."""
    pm = read_postmaster(layout)
    if pm is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pm.pid, signal.SIGHUP)


def checkpoint(config: NodeConfig, layout: Layout) -> None:
    with db.local_or_error(config, layout, "checkpoint", statement_timeout_ms=0) as conn:
        try:
            conn.execute("CHECKPOINT")
        except psycopg.Error as exc:
            raise PostgresError(f"checkpoint failed: {db.one_line(exc)}") from None


def promote(config: NodeConfig, layout: Layout, binaries: Binaries, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with db.local_or_error(config, layout, "promote", statement_timeout_ms=0) as conn:
        try:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and row[0]:
                _wait_replayed(conn, min(deadline, time.monotonic() + timeout / 2))
                seconds = max(1, int(deadline - time.monotonic()))
                done = conn.execute(
                    "SELECT pg_promote(wait => true, wait_seconds => %s)", (seconds,)
                ).fetchone()
                if not done or not done[0]:
                    raise PostgresError(f"promotion did not complete within {seconds} s")
        except psycopg.Error as exc:
            raise PostgresError(f"promote failed: {db.one_line(exc)}") from None
    conf.remove(layout.standby_signal)
    with contextlib.suppress(FileNotFoundError):
        text = layout.conf.read_text()
        conf.write_atomic(layout.conf, conf.without_upstream(text), binaries.run_as)
    reload(layout)
    log.info("promoted")


def _wait_replayed(conn: psycopg.Connection[tuple[object, ...]], until: float) -> None:
    """Until replay reaches what was received (bounded: promotion replays the rest anyway)."""
    while True:
        row = conn.execute(
            "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text"
        ).fetchone()
        received = parse_lsn(str(row[0])) if row and row[0] else None
        replayed = parse_lsn(str(row[1])) if row and row[1] else None
        if received is None or (replayed is not None and replayed >= received):
            return
        if time.monotonic() >= until:
            log.warning(
                "promoting before replay caught up (replayed %s of %s received)",
                format_lsn(replayed or 0),
                format_lsn(received),
            )
            return
        time.sleep(0.1)


def bootstrap_roles(config: NodeConfig, layout: Layout) -> None:
    """Create or update the replication role; the password reaches the server already hashed."""
    repl = config.postgresql.replication
    with db.local_or_error(config, layout, "bootstrap roles") as conn:
        try:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (repl.username,)).fetchone()
            verb = sql.SQL("ALTER ROLE") if exists else sql.SQL("CREATE ROLE")
            stmt = sql.SQL("{} {} WITH REPLICATION LOGIN").format(verb, sql.Identifier(repl.username))
            if repl.password:
                hashed = conn.pgconn.encrypt_password(
                    repl.password.encode(), repl.username.encode(), b"scram-sha-256"
                ).decode()
                stmt = sql.SQL("{} PASSWORD {}").format(stmt, sql.Literal(hashed))
            conn.execute(stmt)
        except psycopg.Error as exc:
            raise PostgresError(
                f"cannot create the replication role {repl.username!r}: {db.one_line(exc)}"
            ) from None
    log.info("replication role %s ready", repl.username)


def wipe(layout: Layout) -> str:
    """Rename the data directory to <data>.failed-<epoch>; keep only that newest copy."""
    d = layout.data
    target = d.with_name(f"{d.name}.failed-{int(time.time())}")
    n = 0
    while target.exists():
        n += 1
        target = d.with_name(f"{d.name}.failed-{int(time.time())}-{n}")
    if not d.exists():
        return ""
    os.replace(d, target)
    for old in d.parent.glob(f"{d.name}.failed-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    log.warning("moved %s aside to %s", d, target)
    return str(target)
