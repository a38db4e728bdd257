"""`pgha dsn` (connection strings for clients) and `pgha query` (the one command that talks to PostgreSQL)."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

import click

from pgha.cli.context import Refused, Session, with_cluster
from pgha.cli.main import cli
from pgha.cli.render import table
from pgha.core.model import ClusterView, MemberInfo, Role

# target_session_attrs for each --role (libpq 14+).
SESSION_ATTRS = {"primary": "read-write", "replica": "standby", "any": "any"}


def _addressed(view: ClusterView, role: str) -> list[MemberInfo]:
    """Members with an address, in the order a client should try them for ``role``."""
    leader = view.leader.name if view.leader else None
    members = [m for _, m in sorted(view.members.items()) if m.host and m.port]
    if role == "replica":
        return sorted(members, key=lambda m: m.name == leader)
    return sorted(members, key=lambda m: m.name != leader)


def _kw_value(value: str) -> str:
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def dsn_strings(members: list[MemberInfo], attrs: str, dbname: str | None,
                user: str | None) -> tuple[str, str]:
    """The keyword form and the URI form of one multi-host connection string (never a password)."""
    kw = [f"host={','.join(m.host for m in members)}", f"port={','.join(str(m.port) for m in members)}"]
    query = []
    if dbname:
        kw.append(f"dbname={_kw_value(dbname)}")
    if user:
        kw.append(f"user={_kw_value(user)}")
        query.append(f"user={quote(user, safe='')}")
    kw.append(f"target_session_attrs={attrs}")
    query.append(f"target_session_attrs={attrs}")
    hosts = ",".join(f"{_uri_host(m.host)}:{m.port}" for m in members)
    path = f"/{quote(dbname, safe='')}" if dbname else "/"
    return " ".join(kw), f"postgresql://{hosts}{path}?{'&'.join(query)}"


@cli.command("dsn")
@click.option("--role", type=click.Choice(sorted(SESSION_ATTRS)), default="primary", show_default=True,
              help="Which server a client should end up on.")
@click.option("--fallback", is_flag=True,
              help="With --role replica: fall back to the primary when no standby answers (prefer-standby).")
@click.option("--dbname", "-d", metavar="D", help="Database name.")
@click.option("--user", "-U", metavar="U", help="User name.")
@with_cluster
def dsn_cmd(session: Session, role: str, fallback: bool, dbname: str | None, user: str | None) -> None:
    """libpq connection strings listing every member, so they survive a failover."""
    view = session.read()
    members = _addressed(view, role)
    if not members:
        raise Refused(f"no member of cluster {view.name} has published its address yet")
    attrs = "prefer-standby" if role == "replica" and fallback else SESSION_ATTRS[role]
    keywords, uri = dsn_strings(members, attrs, dbname, user)
    click.echo(keywords)
    click.echo(uri)


def _pick(view: ClusterView, member: str | None, role: str) -> MemberInfo:
    if member is not None:
        m = view.members.get(member)
        if m is None:
            known = ", ".join(sorted(view.members)) or "none publishing"
            raise Refused(f"{member} is not a member of cluster {view.name} (members: {known})")
    elif role == "primary":
        if view.leader is None:
            raise Refused("the cluster has no leader right now; name a member with --member")
        m = view.members.get(view.leader.name)
        if m is None:
            raise Refused(f"the leader {view.leader.name} publishes no status (and no address)")
    else:
        replicas = [r for _, r in sorted(view.members.items())
                    if r.role == Role.REPLICA and r.state == "streaming"]
        if not replicas:
            raise Refused("no replica is streaming right now; name a member with --member")
        m = replicas[0]
    if not m.host or not m.port:
        raise Refused(f"{m.name} has not published its address yet")
    return m


def _one_line(exc: BaseException, secret: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.replace(secret, "***") if secret else text


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


@cli.command("query")
@click.argument("sql")
@click.option("--member", "-m", metavar="NAME", help="Run on this member.")
@click.option("--role", "-r", type=click.Choice(["primary", "replica"]), help="Run on the primary (default) "
              "or on a streaming replica.")
@click.option("--username", "-U", metavar="USER", help="Default: the superuser of -c FILE, else postgres.")
@click.option("--dbname", "-d", metavar="DB", default="postgres", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@with_cluster
def query_cmd(session: Session, sql: str, member: str | None, role: str | None, username: str | None,
              dbname: str, fmt: str) -> None:
    """Run SQL on a member and print the rows (password from PGPASSWORD or -c FILE; never printed)."""
    import psycopg

    if member is not None and role is not None:
        raise click.UsageError("give --member or --role, not both")
    m = _pick(session.read(), member, role or "primary")
    node = session.node
    user = username or (node.postgresql.superuser.username if node else "postgres")
    password = os.environ.get("PGPASSWORD", "")
    if not password and node is not None and user == node.postgresql.superuser.username:
        password = node.postgresql.superuser.password
    kwargs: dict[str, Any] = {"host": m.host, "port": m.port, "user": user, "dbname": dbname,
                              "connect_timeout": 5, "application_name": "pgha query", "autocommit": True}
    if password:
        kwargs["password"] = password
    try:
        conn = psycopg.connect(**kwargs)
    except psycopg.Error as exc:
        why = _one_line(exc, password)
        raise Refused(f"cannot connect to {m.name} at {m.host}:{m.port}: {why}") from None
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql.encode())
            if cur.description is None:
                click.echo(cur.statusmessage or "OK")
                return
            names = [d.name for d in cur.description]
            rows = cur.fetchall()
    except psycopg.Error as exc:
        raise Refused(f"query failed on {m.name}: {_one_line(exc, password)}") from None
    if fmt == "json":
        click.echo(json.dumps([dict(zip(names, r, strict=True)) for r in rows], indent=2, default=str))
    else:
        click.echo(table(names, [[_cell(v) for v in r] for r in rows]))
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
