"""Connections to the local server (Unix socket, trust) and to other members (TCP, password)."""

from __future__ import annotations

from typing import Any

import psycopg

from pgha.config import NodeConfig
from pgha.postgres.common import PostgresError, Upstream
from pgha.postgres.layout import Layout


def local(
    config: NodeConfig, layout: Layout, statement_timeout_ms: int = 2000, connect_timeout: int = 2
) -> psycopg.Connection[tuple[Any, ...]]:
    """A superuser connection over the Unix socket; raises psycopg.Error.

    libpq's shortest connect_timeout is 2 s, and statements time out after
    ``statement_timeout_ms``, so a hung server costs a bounded wait.
    """
    return psycopg.connect(
        host=str(layout.socket_dir),
        port=config.postgresql.port,
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
    """A TCP connection to another member, the password read from pgha's password file."""
    return psycopg.connect(
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
