"""What a running PostgreSQL says about itself, for `pgha generate-config`.

It is read over the server's local Unix socket as its superuser (peer authentication), like Patroni's
``--generate-config --dsn``.  As root the query runs in a child process under the data directory's
owner, since peer authentication maps the OS user to the role; the DSN travels on the child's stdin,
never on a command line.  Only reads: nothing is changed on the server.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgha.postgres.conf import DEFAULTS, PROTECTED, Value

# Set from the node file or by pgha itself; a value read from the server would be wrong or harmful here.
NOT_CARRIED = PROTECTED | {
    "data_directory", "config_file", "hba_file", "ident_file", "external_pid_file", "cluster_name",
}

QUERY_SETTINGS = """
SELECT name, current_setting(name) FROM pg_settings
WHERE source = 'configuration file' ORDER BY name
"""


class RunningError(Exception):
    """The running server could not be read; ``str()`` is one line naming the fix."""


@dataclass(frozen=True)
class RunningServer:
    major: int
    port: int
    listen: str
    data_dir: str
    # Settings the server's configuration files set, minus those pgha sets itself.
    parameters: dict[str, str] = field(default_factory=dict)
    # The directory of the configuration file the server was started with, when not the data directory
    # (Debian's /etc/postgresql/15/main): the node file's postgresql.config_dir.
    config_dir: str = ""
    # The directory of the server's own programs (its backend's /proc/PID/exe), when this host runs it:
    # the node file's bin_dir, whichever major and wherever installed.
    bin_dir: str = ""


@dataclass(frozen=True)
class Postmaster:
    """A live postmaster as its postmaster.pid describes it."""

    pid: int
    port: int
    socket_dir: str
    owner: int

    @property
    def dsn(self) -> str:
        user = _user_name(self.owner)
        return f"host={self.socket_dir} port={self.port} dbname=postgres user={user}"


def live_postmaster(data_dir: str) -> Postmaster | None:
    """The postmaster running on ``data_dir``, or None (no postmaster.pid, or its process is gone)."""
    pidfile = Path(data_dir) / "postmaster.pid"
    try:
        lines = pidfile.read_text().split("\n")
        pid, port = int(lines[0]), int(lines[3])
        owner = pidfile.stat().st_uid
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return Postmaster(pid, port, lines[4].strip() if len(lines) > 4 else "", owner)


def read_running(dsn: str, run_as: int | None = None) -> RunningServer:
    """Query the server at ``dsn``; as root, from a child running as ``run_as`` (a uid)."""
    kw: dict[str, Any] = {}
    if os.geteuid() == 0 and run_as not in (None, 0):
        pw = pwd.getpwuid(run_as)
        kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": {**os.environ, "HOME": pw.pw_dir}}
    try:
        res = subprocess.run([sys.executable, "-m", "pgha.postgres.running"], input=dsn, capture_output=True,
                             text=True, timeout=30, check=False, cwd="/", **kw)
    except subprocess.TimeoutExpired:
        raise RunningError("the running PostgreSQL did not answer within 30 s; check it, or omit --pg-dsn") from None
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines()
        raise RunningError(lines[-1] if lines else f"reading the running PostgreSQL failed ({res.returncode})")
    return RunningServer(**json.loads(res.stdout))


def query(dsn: str) -> RunningServer:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = str(conninfo_to_dict(dsn).get("password") or "")
    except psycopg.Error:
        # libpq's message quotes a piece of the string, which may be part of a password.
        raise RunningError("--pg-dsn: not a libpq connection string; give key=value pairs, e.g. "
                           "'host=/var/run/postgresql port=5432 user=postgres', or a postgresql:// URL") from None
    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int / 10000, "
                               "current_setting('port')::int, current_setting('listen_addresses'), "
                               "current_setting('data_directory'), current_setting('config_file')").fetchone()
            assert row is not None
            settings = conn.execute(QUERY_SETTINGS).fetchall()
            bin_dir = _programs_of(conn.info.backend_pid)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if password:
            first = first.replace(password, "***")
        raise RunningError(f"cannot read the running PostgreSQL ({first}); pass --pg-dsn with a superuser "
                           "connection, e.g. 'host=/var/run/postgresql port=5432 user=postgres'") from None
    params = {name: value for name, value in settings
              if name not in NOT_CARRIED and not _is_pgha_default(name, value)}
    config_dir = str(Path(str(row[4])).parent)
    outside = Path(config_dir).resolve() != Path(str(row[3])).resolve()
    return RunningServer(int(row[0]), int(row[1]), str(row[2]), str(row[3]), params, config_dir if outside else "",
                         bin_dir)


def _programs_of(backend_pid: int) -> str:
    """The directory of the ``postgres`` program serving us, when it runs here and we may look; else ""."""
    try:
        exe = Path(os.readlink(f"/proc/{backend_pid}/exe"))
    except OSError:
        return ""
    return str(exe.parent) if exe.name == "postgres" else ""


def _is_pgha_default(name: str, value: str) -> bool:
    """The server has what pgha would set anyway (wal_level = replica...): not worth a line."""
    default: Value | None = DEFAULTS.get(name)
    if isinstance(default, bool):
        return value == ("on" if default else "off")
    return default is not None and value == str(default)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _main() -> None:
    try:
        server = query(sys.stdin.read().strip())
    except RunningError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    print(json.dumps(server.__dict__))


if __name__ == "__main__":
    _main()
