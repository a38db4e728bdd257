"""Checks of the machine against a node configuration; they read, and never create anything."""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from pgha.config import ConfigError, NodeConfig
from pgha.postgres import versions
from pgha.postgres.common import PostgresError

REQUIRED_BINARIES = ("initdb", "pg_ctl", "pg_basebackup", "pg_rewind", "pg_controldata", "postgres")


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("*", "") else "0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            if exc.errno == errno.EADDRNOTAVAIL:
                return True  # the address lives in another namespace; nothing to check here
            raise
    return True


def check_binaries(cfg: NodeConfig) -> None:
    bin_dir = Path(cfg.postgresql.bin_dir)
    for name in REQUIRED_BINARIES:
        path = bin_dir / name
        if not os.access(path, os.X_OK):
            raise ConfigError(f"postgresql.bin_dir: {_short(path)} not found or not executable; "
                              "install postgresql-15 or fix bin_dir")


def check_major(cfg: NodeConfig) -> None:
    """The data directory's major (PG_VERSION) is bin_dir's (postgres/versions.py)."""
    try:
        versions.check_data_dir(cfg.postgresql.bin_dir, Path(cfg.postgresql.data_dir))
    except PostgresError as exc:
        raise ConfigError(str(exc)) from None


def check_backup_version(cfg: NodeConfig) -> None:
    """With backup:, this host's pgBackRest supports bin_dir's major (2.45 predates PostgreSQL 18)."""
    if cfg.backup is None:
        return
    problem = versions.check_pgbackrest(cfg.postgresql.bin_dir)
    if problem:
        raise ConfigError(problem)


def check_ports(cfg: NodeConfig, postgres_running: bool) -> None:
    pgc = cfg.postgresql
    if not postgres_running:
        for host in pgc.listen.split(","):
            host = host.strip()
            if not _port_free(host, pgc.port, "postgresql.listen"):
                raise ConfigError(f"postgresql.port: {host}:{pgc.port} is already in use; "
                                  "stop what listens there or choose another port")
    if not _port_free(cfg.api.host, cfg.api.port, "api.listen"):
        raise ConfigError(f"api.listen: {cfg.api.listen} is already in use; "
                          "stop what listens there or choose another port")


def _port_free(host: str, port: int, key: str) -> bool:
    try:
        return port_free(host, port)
    except socket.gaierror:
        raise ConfigError(f"{key}: {host!r} does not resolve to an address of this host; give an IP "
                          "address or a name in /etc/hosts") from None
    except OSError as exc:
        raise ConfigError(f"{key}: cannot bind {host}:{port} to check it ({exc.strerror or exc}); give an "
                          "address of this host") from None


def data_dir_running(cfg: NodeConfig) -> bool:
    """A postmaster of this data dir is alive (its port is then legitimately busy)."""
    pidfile = Path(cfg.postgresql.data_dir) / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def check_data_dir(cfg: NodeConfig) -> None:
    """The data dir (or the parent it will be created in) must be usable by the PostgreSQL user."""
    data = Path(cfg.postgresql.data_dir)
    run_as = _postgres_uid()
    if data.exists():
        st = data.stat()
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"postgresql.data_dir: {_short(data)} is not a directory; point data_dir at a directory")
        if st.st_uid != run_as:
            owner = _user_name(st.st_uid)
            raise ConfigError(f"postgresql.data_dir: {_short(data)} is owned by {owner}, not {_user_name(run_as)}; "
                              f"run: chown -R {_user_name(run_as)} {_short(data)}")
        if any(data.iterdir()) and stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(f"postgresql.data_dir: {_short(data)} has mode {stat.S_IMODE(st.st_mode):o}; "
                              f"PostgreSQL needs 0700 or 0750: run chmod 700 {_short(data)}")
        return
    parent = data.parent
    while not parent.exists():
        parent = parent.parent
    # The agent creates the data directory itself (as root it then hands it to postgres).
    creator = os.geteuid()
    if not _can_write(parent.stat(), creator):
        raise ConfigError(f"postgresql.data_dir: {_short(data)} does not exist and {_user_name(creator)} cannot "
                          f"create it in {_short(parent)}; create it owned by {_user_name(run_as)} with mode 0700")


def _short(path: Path | str, limit: int = 160) -> str:
    """A path as an error line shows it: whole unless very long."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"


def _postgres_uid() -> int:
    if os.geteuid() != 0:
        return os.geteuid()
    try:
        return pwd.getpwnam("postgres").pw_uid
    except KeyError:
        raise ConfigError("no 'postgres' user on this host; install postgresql-15 or run the agent "
                          "as the user that owns the data directory") from None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _can_write(st: os.stat_result, uid: int) -> bool:
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    return bool(st.st_mode & stat.S_IWOTH)


def run_all(cfg: NodeConfig) -> None:
    """Every check `pgha validate` and `pgha agent` run before touching anything; whatever the
    operating system answers ends in one line (ConfigError) naming the key."""
    checks: tuple[tuple[str, Callable[[], None]], ...] = (
        ("postgresql.bin_dir", lambda: check_binaries(cfg)),
        ("postgresql.data_dir", lambda: check_data_dir(cfg)),
        ("postgresql.data_dir", lambda: check_major(cfg)),
        ("backup", lambda: check_backup_version(cfg)),
        ("postgresql.listen, api.listen", lambda: check_ports(cfg, data_dir_running(cfg))),
    )
    for key, check in checks:
        try:
            check()
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"{key}: cannot check it on this host ({reason}); fix the value or the "
                              "host") from None


def exposed_secrets(path: str, cfg: NodeConfig) -> str | None:
    """A warning when the node file at ``path`` holds a password and every user may read it.

    A warning, not a refusal: a file that worked before keeps working, and `pgha validate`
    and every agent start say it (once) until the mode is fixed."""
    if path == "-":
        return None
    secrets = [cfg.postgresql.superuser.password, cfg.postgresql.replication.password, cfg.dcs.etcd.password,
               cfg.api.credentials.password if cfg.api.credentials else "",
               cfg.pgbouncer.admin_password if cfg.pgbouncer else ""]
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if any(secrets) and mode & stat.S_IROTH:
        return (f"{path} holds passwords and every user of this host may read it (mode {mode:04o}); "
                f"run: chmod 600 {path}")
    return None
