"""Two throw-away PostgreSQL 15 servers and a PgBouncer in front of them.

Self-contained on purpose (the PostgreSQL adapter is tested elsewhere):
initdb + pg_ctl as the postgres OS user, on free loopback ports, in a
directory under /tmp that postgres can reach.  Everything started here is
stopped by PID in the fixtures' teardown, even when a test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgha.config import PgBouncerConfig
from pgha.demo.pgbouncer_process import PgBouncerProcess, pgbouncer_version, render_pgbouncer_ini, render_userlist
from pgha.routing.pgbouncer import PgBouncer
from tests.support.procs import PG_BIN, chown_postgres, free_port, postgres_user_kwargs, stop_pid

APP_USER = "app"
APP_PASSWORD = "app-secret"
ADMIN_USER = "pgbadmin"
ADMIN_PASSWORD = "admin-secret"


def _as_postgres(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False,
                         **postgres_user_kwargs(), **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return res


def scratch_dir(prefix: str) -> Path:
    """A directory under /tmp owned by postgres (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o700)
    chown_postgres(str(path))
    return path


@dataclass
class PgServer:
    """One PostgreSQL server with an ``app`` role; stopped by its postmaster PID."""

    data: Path
    port: int
    pid: int | None = None

    @classmethod
    def create(cls, parent: Path, name: str) -> PgServer:
        data = parent / name
        pwfile = parent / f"{name}.pw"
        pwfile.write_text("postgres\n")
        chown_postgres(str(pwfile))
        _as_postgres([f"{PG_BIN}/initdb", "-D", str(data), "-U", "postgres", "--auth-local=trust",
                      "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"])
        server = cls(data, free_port())
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"listen_addresses = '127.0.0.1'\nport = {server.port}\n"
                    f"unix_socket_directories = '{data}'\nfsync = off\nmax_connections = 50\n")
        return server

    def start(self) -> None:
        _as_postgres([f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-l", str(self.data / "log"), "-w", "start"])
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        with self.connect(user="postgres") as conn:
            conn.execute(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
            conn.execute(f"ALTER DATABASE postgres OWNER TO {APP_USER}")

    def connect(self, user: str = APP_USER, **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(host=str(self.data), port=self.port, user=user, dbname="postgres",
                               autocommit=True, **kw)

    def stop(self) -> None:
        if self.pid is not None:
            stop_pid(self.pid, signal.SIGINT, timeout=20)  # fast shutdown; SIGKILL if stuck
            self.pid = None


@dataclass
class Bouncer:
    """A running PgBouncer, its adapter and where clients connect."""

    dir: Path
    port: int
    process: PgBouncerProcess
    adapter: PgBouncer

    @property
    def ini(self) -> Path:
        return self.dir / "pgbouncer.ini"

    def close(self) -> None:
        """Stop pgbouncer by PID and remove its directory."""
        try:
            self.process.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, **kw: Any) -> psycopg.Connection[Any]:
        kw.setdefault("autocommit", True)
        kw.setdefault("connect_timeout", 5)
        # PgBouncer in transaction mode cannot keep server-side prepared statements.
        kw.setdefault("prepare_threshold", None)
        return psycopg.connect(host="127.0.0.1", port=self.port, user=APP_USER, password=APP_PASSWORD,
                               dbname="postgres", **kw)


def start_bouncer(target: PgServer, databases: tuple[str, ...] = ("*",), **settings: Any) -> Bouncer:
    """A PgBouncer in front of ``target``; ``settings`` override render_pgbouncer_ini's."""
    settings.setdefault("version", pgbouncer_version())
    d = scratch_dir("pgha-bouncer-")
    port = free_port()
    ini = d / "pgbouncer.ini"
    ini.write_text(render_pgbouncer_ini(listen_port=port, target_host="127.0.0.1", target_port=target.port,
                                        dir=str(d), admin_users=(ADMIN_USER,), databases=databases, **settings))
    users = d / "userlist.txt"
    users.write_text(render_userlist({APP_USER: APP_PASSWORD, ADMIN_USER: ADMIN_PASSWORD}))
    for p in (ini, users):
        os.chmod(p, 0o600)
        chown_postgres(str(p))
    process = PgBouncerProcess(ini)
    try:
        process.start("127.0.0.1", port)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    cfg = PgBouncerConfig(config=str(ini), admin_port=port, admin_user=ADMIN_USER,
                          admin_password=ADMIN_PASSWORD, databases=databases)
    return Bouncer(d, port, process, PgBouncer(cfg))


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[tuple[PgServer, PgServer]]:
    """Two running PostgreSQL 15 servers ("old" and "new" primary) for a test module."""
    parent = scratch_dir("pgha-pgpair-")
    servers: list[PgServer] = []
    try:
        for name in ("one", "two"):
            server = PgServer.create(parent, name)
            servers.append(server)
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def bouncer(pg_pair: tuple[PgServer, PgServer]) -> Iterator[Bouncer]:
    """A PgBouncer pointed at the first server of ``pg_pair``."""
    b = start_bouncer(pg_pair[0])
    try:
        yield b
    finally:
        b.close()
