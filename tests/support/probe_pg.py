"""A minimal throwaway PostgreSQL 15 for the probe tests (not the real adapter).

``initdb`` runs once per session into a template; each server copies it, runs as the
``postgres`` OS user on a free loopback port, and is stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.procs import PG_BIN, chown_postgres, free_port, postgres_user_kwargs, stop_pid


class ProbePG:
    def __init__(self, data: Path, port: int, log: Path) -> None:
        self.data = data
        self.port = port
        self.log = log
        self.pids: set[int] = set()

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [f"{PG_BIN}/pg_ctl", "-D", str(self.data), *args],
            check=True, capture_output=True, text=True, timeout=60, **postgres_user_kwargs(),
        )

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.data}"
        self._pg_ctl("start", "-w", "-t", "30", "-l", str(self.log), "-o", opts)
        pid = self.pid()
        if pid is not None:
            self.pids.add(pid)

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: no shutdown checkpoint, clients cut off."""
        self._pg_ctl("stop", "-w", "-m", "immediate")

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            self.pids.add(pid)
        for p in self.pids:
            stop_pid(p, signal.SIGINT)


def _template(root: Path) -> Path:
    tpl = root / "template"
    if not tpl.exists():
        tpl.mkdir(mode=0o700)
        chown_postgres(str(tpl))
        subprocess.run(
            [f"{PG_BIN}/initdb", "-D", str(tpl), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, text=True, timeout=120, **postgres_user_kwargs(),
        )
        with open(tpl / "postgresql.conf", "a") as f:
            f.write("fsync = off\nfull_page_writes = off\nlogging_collector = off\n")
    return tpl


@contextmanager
def pg_root() -> Iterator[Path]:
    """A scratch directory the postgres OS user can reach (pytest's tmp_path is root-only)."""
    root = Path(tempfile.mkdtemp(prefix="pgha-probe-"))
    os.chmod(root, 0o755)
    chown_postgres(str(root))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running_pg(root: Path, name: str, extra_conf: str = "") -> Iterator[ProbePG]:
    tpl = _template(root)
    data = root / name
    shutil.copytree(tpl, data, symlinks=True)
    for p in [data, *data.rglob("*")]:
        chown_postgres(str(p))
    if extra_conf:
        with open(data / "postgresql.conf", "a") as f:
            f.write(extra_conf)
    pg = ProbePG(data, free_port(), root / f"{name}.log")
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
