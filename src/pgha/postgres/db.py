"""Connections to the local server (Unix socket, trust) and to other members (TCP, password)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from pgha.config import NodeConfig
from pgha.postgres import libpq
from pgha.postgres.common import PostgresError, Upstream
from pgha.postgres.layout import Layout


def listening(config: NodeConfig, layout: Layout) -> tuple[str, int]:
    """(socket directory, port) the running server listens on, from postmaster.pid; else the configured ones.

    A server pgha adopted keeps its own socket directory and port until it restarts (both
    need one), and so does one whose postgresql.port changed.
    """
    try:
        lines = layout.pid_file.read_text().splitlines()
        port, sock = lines[3].strip(), lines[4].strip()
        if port.isdigit() and sock and Path(sock).is_dir():
            return sock, int(port)
    except (OSError, UnicodeDecodeError, IndexError):
        pass
    return str(layout.socket_dir), config.postgresql.port


def local(
    config: NodeConfig, layout: Layout, statement_timeout_ms: int = 2000, connect_timeout: int = 2
) -> psycopg.Connection[tuple[Any, ...]]:
    """A superuser connection over the Unix socket; raises psycopg.Error.

    libpq's shortest connect_timeout is 2 s, and statements time out after
    ``statement_timeout_ms``, so a hung server costs a bounded wait.  The password file
    serves servers whose local connections need a password (pgha's pg_hba trusts the socket).
    """
    sock, port = listening(config, layout)
    return psycopg.connect(
        host=sock,
        port=port,
        passfile=str(layout.passfile),
        user=config.postgresql.superuser.username,
        dbname="postgres",
        connect_timeout=connect_timeout,
        application_name="pgha",
        options=f"-c statement_timeout={statement_timeout_ms}",
        autocommit=True,
    )


def local_or_error(
    config: NodeConfig, layout: Layout, what: str, statement_timeout_ms: int = 10000
) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        return local(config, layout, statement_timeout_ms)
    except psycopg.Error as exc:
        raise PostgresError(f"{what}: cannot connect to the local server ({one_line(exc)})") from None


def remote(
    config: NodeConfig, layout: Layout, upstream: Upstream, user: str
) -> psycopg.Connection[tuple[Any, ...]]:
    """A TCP connection to another member, the password read from pgha's password file, with
    ``postgresql.ssl``'s sslmode and, where psycopg's libpq has it, require_auth."""
    return psycopg.connect(
        make_conninfo("", **libpq.for_psycopg(config)),
        host=upstream.host,
        port=upstream.port,
        user=user,
        dbname="postgres",
        connect_timeout=3,
        passfile=str(layout.passfile),
        application_name="pgha",
        autocommit=True,
        options="-c statement_timeout=5000",
    )


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
