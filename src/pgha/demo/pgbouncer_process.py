"""Creating a node's PgBouncer for `pgha demo` and the tests: its pgbouncer.ini, userlist and process.

The agent itself only manages a PgBouncer someone else runs (``pgha.routing.pgbouncer``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import re
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgha.demo.procs import stop_pid
from pgha.routing.pgbouncer import PGBOUNCER_BIN, PgBouncerError

# From this version on PgBouncer tracks clients' protocol-level prepared statements in transaction
# pooling (max_prepared_statements); before it they fail there (docs/configuration.md#pgbouncer).
PREPARED_STATEMENTS_SINCE = (1, 21)
MAX_PREPARED_STATEMENTS = 200


@functools.lru_cache(maxsize=4)
def pgbouncer_version(binary: str = PGBOUNCER_BIN) -> tuple[int, int] | None:
    """(major, minor) from ``pgbouncer --version`` ("PgBouncer 1.18.0"), or None if it does not say."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def prepared_statements_lines(version: tuple[int, int] | None) -> str:
    """The ini lines for clients' prepared statements, for a PgBouncer of ``version``."""
    if version is not None and version >= PREPARED_STATEMENTS_SINCE:
        return ("; clients' protocol-level prepared statements survive transaction pooling\n"
                f"max_prepared_statements = {MAX_PREPARED_STATEMENTS}\n")
    shown = ".".join(map(str, version)) if version else "unknown"
    return (f"; PgBouncer {shown} < 1.21: clients must not use protocol-level prepared statements in\n"
            "; transaction mode (docs/configuration.md#pgbouncer names each client's setting)\n")


def render_pgbouncer_ini(
    *,
    listen_port: int,
    target_host: str,
    target_port: int,
    dir: str,
    listen_addr: str = "127.0.0.1",
    admin_users: Sequence[str] = ("pgbouncer",),
    auth_type: str = "scram-sha-256",
    databases: Sequence[str] = ("*",),
    pool_mode: str = "transaction",
    default_pool_size: int = 20,
    max_client_conn: int = 200,
    version: tuple[int, int] | None = None,
) -> str:
    """A pgbouncer.ini for one node; its files (userlist.txt, log, pid, socket) live in ``dir``.

    ``version`` is the PgBouncer's (``pgbouncer_version()``): from 1.21 on, max_prepared_statements is set.
    """
    if auth_type not in ("scram-sha-256", "md5"):
        raise ValueError(f"auth_type {auth_type!r}: use 'scram-sha-256' or 'md5'")
    entries = "".join(
        f"{name} = host={target_host} port={target_port}" + ("" if name == "*" else f" dbname={name}") + "\n"
        for name in databases
    )
    return (
        "; Written by pgha. The agent rewrites only the [databases] section.\n"
        "[databases]\n"
        f"{entries}\n"
        "[pgbouncer]\n"
        f"listen_addr = {listen_addr}\n"
        f"listen_port = {listen_port}\n"
        f"unix_socket_dir = {dir}\n"
        f"auth_type = {auth_type}\n"
        f"auth_file = {dir}/userlist.txt\n"
        f"admin_users = {', '.join(admin_users)}\n"
        "; transaction pooling lets PAUSE finish at the end of each transaction\n"
        f"pool_mode = {pool_mode}\n"
        f"default_pool_size = {default_pool_size}\n"
        f"max_client_conn = {max_client_conn}\n"
        f"{prepared_statements_lines(version)}"
        "ignore_startup_parameters = extra_float_digits,options\n"
        "server_login_retry = 1\n"
        "server_connect_timeout = 5\n"
        f"logfile = {dir}/pgbouncer.log\n"
        f"pidfile = {dir}/pgbouncer.pid\n"
    )


def render_userlist(users: Mapping[str, str]) -> str:
    """userlist.txt with plain-text passwords (keep it mode 0600).

    PgBouncer needs the plain password (or the SCRAM secret) to log in to
    PostgreSQL on the client's behalf; plain text works with both scram-sha-256
    and md5 client authentication and with any server password encryption.
    """
    def quote(s: str) -> str:
        return '"' + s.replace('"', '""') + '"'

    return "".join(f"{quote(user)} {quote(password)}\n" for user, password in users.items())


class PgBouncerProcess:
    """Start one pgbouncer in the background and stop it by PID.

    PgBouncer refuses to run as root; when we are root it runs as ``user``
    (postgres by default), like PostgreSQL.  Its directory and files must be
    readable by that user.
    """

    def __init__(self, config: str | Path, user: str = "postgres", binary: str = PGBOUNCER_BIN) -> None:
        self.config = Path(config)
        self.user = user
        self.binary = binary
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, host: str, port: int, timeout: float = 10.0) -> int:
        """Start pgbouncer and wait until it accepts connections on host:port; return its PID."""
        kw: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        out = open(self.config.with_suffix(".stderr"), "ab")  # noqa: SIM115 - handed to the child
        try:
            self._proc = subprocess.Popen([self.binary, str(self.config)], stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=out, start_new_session=True, cwd="/", **kw)
        except FileNotFoundError:
            raise PgBouncerError(f"{self.binary}: not found; install the Debian package pgbouncer") from None
        finally:
            out.close()
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self.config.with_suffix(".stderr").read_text(errors="replace")
                tail = err.strip().splitlines()[-1:]
                raise PgBouncerError(f"pgbouncer exited with code {self._proc.returncode}: "
                                     f"{tail[0] if tail else 'see its logfile'}")
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
                return self.pid
            time.sleep(0.05)
        self.stop()
        raise PgBouncerError(f"pgbouncer did not accept connections on {host}:{port} within {timeout:g}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (immediate shutdown), SIGKILL after ``timeout``; reaps our child."""
        if self.pid is None:
            return
        stop_pid(self.pid, timeout=timeout)
        if self._proc is not None:
            self._proc.wait()
        self.pid = None
