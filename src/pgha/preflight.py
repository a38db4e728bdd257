"""Checks of the machine against a node configuration; they read, and never create anything."""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
from pathlib import Path

from pgha.config import ConfigError, NodeConfig

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
            raise ConfigError(f"postgresql.bin_dir: {path} not found or not executable; "
                              "install postgresql-15 or fix bin_dir")


def check_ports(cfg: NodeConfig, postgres_running: bool) -> None:
    pgc = cfg.postgresql
    if not postgres_running:
        for host in pgc.listen.split(","):
            host = host.strip()
            if not port_free(host, pgc.port):
                raise ConfigError(f"postgresql.port: {host}:{pgc.port} is already in use; "
                                  "stop what listens there or choose another port")
    if not port_free(cfg.api.host, cfg.api.port):
        raise ConfigError(f"api.listen: {cfg.api.listen} is already in use; "
                          "stop what listens there or choose another port")


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
            raise ConfigError(f"postgresql.data_dir: {data} is not a directory; point data_dir at a directory")
        if st.st_uid != run_as:
            owner = _user_name(st.st_uid)
            raise ConfigError(f"postgresql.data_dir: {data} is owned by {owner}, not {_user_name(run_as)}; "
                              f"run: chown -R {_user_name(run_as)} {data}")
        if any(data.iterdir()) and stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(f"postgresql.data_dir: {data} has mode {stat.S_IMODE(st.st_mode):o}; "
                              f"PostgreSQL needs 0700 or 0750: run chmod 700 {data}")
        return
    parent = data.parent
    while not parent.exists():
        parent = parent.parent
    # The agent creates the data directory itself (as root it then hands it to postgres).
    creator = os.geteuid()
    if not _can_write(parent.stat(), creator):
        raise ConfigError(f"postgresql.data_dir: {data} does not exist and {_user_name(creator)} cannot "
                          f"create it in {parent}; create it owned by {_user_name(run_as)} with mode 0700")


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
    """Every check `pgha validate` and `pgha agent` run before touching anything."""
    check_binaries(cfg)
    check_data_dir(cfg)
    check_ports(cfg, data_dir_running(cfg))
