"""PgBouncer in front of the primary: rewrite [databases], RELOAD, PAUSE/RESUME, drop old servers.

The agent owns only the ``[databases]`` section of the node's pgbouncer.ini.
For ``databases: ["*"]`` it keeps one fallback entry ``* = host=H port=P``;
otherwise one entry per database.  Extra parameters of an entry it manages
(``pool_size=``, ``user=``…), entries it does not manage, comments and every
other section are kept as they are.  The file is replaced atomically.

Use ``pool_mode = transaction``: PAUSE waits until every server connection is
released, which in transaction mode happens at the end of each transaction,
whereas in session mode it waits for every client to disconnect.

The admin console only speaks the simple query protocol, so commands are sent
with libpq's ``PQsendQuery`` on the psycopg connection (never prepared or
parameterised), in autocommit.  Passwords never appear in logs or errors.

Switchover: ``pause()`` → the old primary stops, the new one is promoted →
``repoint()`` → ``resume()``.  Failover: ``repoint()`` alone; server
connections to the old primary are closed (RECONNECT, then KILL for those that
linger) so no session keeps writing to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq

from pgha.config import PgBouncerConfig
from pgha.core import names
from pgha.routing.errors import RoutingError

log = logging.getLogger("pgha.routing.pgbouncer")

PGBOUNCER_BIN = "/usr/sbin/pgbouncer"

# Seconds an admin command other than PAUSE may take: they answer at once, so a PgBouncer that
# hangs costs the agent's loop this long, not the 10 s a PAUSE may legitimately wait.
ADMIN_TIMEOUT = 3.0

class PgBouncerError(RoutingError):
    """PgBouncer could not be reached or refused a command; ``str()`` is one line."""


# --- the [databases] section ---------------------------------------------------------

_SECTION = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(?:[;#].*)?$")
_ENTRY = re.compile(r"^\s*(\"[^\"]*\"|[^=;#\s][^=]*?)\s*=\s*(.*?)\s*$")
_PARAM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


def parse_connstr(value: str) -> list[tuple[str, str]]:
    """``host=a port=5 dbname='x y'`` → [(host, a), (port, 5), (dbname, 'x y')] (quotes kept)."""
    return [(m.group(1), m.group(2)) for m in _PARAM.finditer(value)]


def _set_target(value: str, host: str, port: int) -> str:
    params = parse_connstr(value)
    wanted = {"host": host, "port": str(port)}
    out: list[tuple[str, str]] = []
    for key, val in params:
        if key in wanted:
            out.append((key, wanted.pop(key)))
        else:
            out.append((key, val))
    out = [(k, v) for k, v in wanted.items()] + out
    return " ".join(f"{k}={v}" for k, v in out)


def _entry_name(raw: str) -> str:
    return raw[1:-1] if raw.startswith('"') and raw.endswith('"') else raw


def _section_bounds(lines: list[str], name: str) -> tuple[int, int] | None:
    """Indexes [start, end) of the body of section ``name`` (after its header line)."""
    start: int | None = None
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if not m:
            continue
        if start is not None:
            return start, i
        if m.group(1).lower() == name:
            start = i + 1
    return (start, len(lines)) if start is not None else None


def rewrite_databases(text: str, databases: Sequence[str], host: str, port: int) -> str:
    """Point the managed ``[databases]`` entries at host:port; keep everything else.

    Raises ValueError (one line) for a host, port or database name that could break the file."""
    why = names.problem("host", host) or names.port_problem(port)
    why = why or next(filter(None, (names.problem("pgbouncer database", d) for d in databases)), None)
    if why is not None:
        raise ValueError(why)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    bounds = _section_bounds(lines, "databases")
    if bounds is None:
        lines[0:0] = ["[databases]\n", "\n"]
        bounds = (1, 1)
    start, end = bounds
    body = lines[start:end]
    todo = list(dict.fromkeys(databases))
    for i, line in enumerate(body):
        m = _ENTRY.match(line)
        if not m or line.lstrip().startswith((";", "#")):
            continue
        name = _entry_name(m.group(1))
        if name in todo:
            todo.remove(name)
            body[i] = f"{m.group(1)} = {_set_target(m.group(2), host, port)}\n"
    new = [f"{name} = host={host} port={port}" + ("" if name == "*" else f" dbname={name}") + "\n"
           for name in todo]
    # New entries go after the last entry of the section, before trailing blank lines.
    insert_at = len(body)
    while insert_at > 0 and not body[insert_at - 1].strip():
        insert_at -= 1
    body[insert_at:insert_at] = new
    lines[start:end] = body
    return "".join(lines)


def read_target(text: str, databases: Sequence[str]) -> tuple[str, int] | None:
    """host:port of the first managed entry in ``[databases]``, or None."""
    lines = text.splitlines()
    bounds = _section_bounds(lines, "databases")
    if bounds is None:
        return None
    for line in lines[bounds[0]:bounds[1]]:
        m = _ENTRY.match(line)
        if not m or line.lstrip().startswith((";", "#")) or _entry_name(m.group(1)) not in databases:
            continue
        params = dict(parse_connstr(m.group(2)))
        host = params.get("host", "").strip("'")
        port = params.get("port", "5432").strip("'")
        if host and port.isdigit():
            return host, int(port)
    return None


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (temp file, fsync, rename), keeping mode and owner."""
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if st is not None:
            os.chmod(tmp, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# --- the admin console -----------------------------------------------------------------


@dataclass(frozen=True)
class AdminResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[str | None, ...], ...]
    status: str

    def dicts(self) -> list[dict[str, str | None]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class PgBouncer:
    def __init__(self, cfg: PgBouncerConfig, connect_timeout: float = 3.0) -> None:
        self.cfg = cfg
        self.path = Path(cfg.config)
        self.connect_timeout = connect_timeout
        self._paused = False
        # Auto-database names last refused (each set is logged once).
        self._refused_names: set[str] = set()

    # - config file -
    def current_target(self) -> tuple[str, int] | None:
        """host:port the managed entries of the config file point at (None if none)."""
        try:
            return read_target(self.path.read_text(), self.cfg.databases)
        except FileNotFoundError:
            return None

    def write_config(self, host: str, port: int) -> bool:
        """Rewrite [databases] for host:port; False when the file already said so."""
        try:
            old = self.path.read_text()
        except FileNotFoundError:
            raise PgBouncerError(f"{self.path}: file not found; set pgbouncer.config to the "
                                 "pgbouncer.ini this PgBouncer runs with") from None
        except OSError as exc:
            raise PgBouncerError(f"{self.path}: cannot read it ({exc.strerror}); "
                                 "the agent's OS user needs read and write access") from None
        try:
            new = rewrite_databases(old, self.cfg.databases, host, port)
        except ValueError as exc:
            raise PgBouncerError(f"{self.path}: not rewritten: {exc}") from None
        if new == old:
            return False
        try:
            write_atomically(self.path, new)
        except OSError as exc:
            raise PgBouncerError(f"{self.path}: cannot replace it ({exc.strerror}); the agent's OS user "
                                 "needs write access to the file and its directory") from None
        return True

    # - admin console -
    def _connect(self) -> psycopg.Connection[Any]:
        kw: dict[str, Any] = {"host": self.cfg.admin_host, "port": self.cfg.admin_port, "dbname": "pgbouncer",
                              "user": self.cfg.admin_user, "autocommit": True,
                              "connect_timeout": max(1, round(self.connect_timeout)),
                              "application_name": "pgha"}
        if self.cfg.admin_password:
            kw["password"] = self.cfg.admin_password
        try:
            return psycopg.connect(**kw)
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise PgBouncerError(
                f"cannot reach the PgBouncer admin console at {self.cfg.admin_host}:{self.cfg.admin_port} "
                f"as {self.cfg.admin_user!r}: {first}; check that PgBouncer runs and pgbouncer.admin_* "
                "(the user must be in admin_users)") from None

    def admin(self, command: str, timeout: float = ADMIN_TIMEOUT) -> AdminResult:
        """Run one admin console command (simple query protocol) and return its last result."""
        with self._connect() as conn:
            return _simple_query(conn, command, timeout)

    def pause(self, timeout: float = 10.0) -> None:
        """PAUSE: wait until every server connection is released and closed.

        Raises PgBouncerError after ``timeout``; PgBouncer then stays in pause mode
        (new queries wait) until ``resume()``.  Already paused counts as done.
        """
        try:
            self._paused = True
            self.admin("PAUSE", timeout)
        except PgBouncerError as exc:
            if "already suspended/paused" in str(exc):
                return
            raise
        log.info("PgBouncer paused")

    def resume(self) -> None:
        """RESUME; not being paused is fine."""
        try:
            self.admin("RESUME")
        except PgBouncerError as exc:
            if "not paused" in str(exc):
                self._paused = False
                return
            raise
        self._paused = False
        log.info("PgBouncer resumed")

    @property
    def paused(self) -> bool:
        """Whether this adapter paused PgBouncer (1.18 has no SHOW STATE to ask it)."""
        return self._paused

    def repoint(self, host: str, port: int, grace: float = 2.0) -> None:
        """Point PgBouncer at host:port and close every server connection to anywhere else.

        Rewrites the file and RELOADs (changed entries close their server
        connections once released).  Databases PgBouncer created from the ``*``
        fallback keep their old address across RELOAD, so those are named in the
        file too.  Server connections still open to an old address after ``grace``
        seconds are cut with KILL + RESUME of their database (when not paused).
        """
        self.write_config(host, port)
        self.admin("RELOAD")
        stale = self._stale_auto_databases(host, port)
        if stale:
            self.write_config_entries(stale, host, port)
            self.admin("RELOAD")
        self._close_old_servers(host, port, grace)
        log.info("PgBouncer points at %s:%d", host, port)

    def write_config_entries(self, databases: Sequence[str], host: str, port: int) -> None:
        """Add or update explicit entries for ``names`` (used for auto-created databases)."""
        text = self.path.read_text()
        try:
            new = rewrite_databases(text, [*self.cfg.databases, *databases], host, port)
        except ValueError as exc:
            raise PgBouncerError(f"{self.path}: not rewritten: {exc}") from None
        write_atomically(self.path, new)

    def _databases(self) -> list[dict[str, str | None]]:
        return [row for row in self.admin("SHOW DATABASES").dicts()
                if row.get("name") not in ("pgbouncer", None)]

    def _stale_auto_databases(self, host: str, port: int) -> list[str]:
        if "*" not in self.cfg.databases:
            return []
        text = self.path.read_text()
        explicit = _explicit_names(text)
        targets = _addresses(host)
        stale = [str(row["name"]) for row in self._databases()
                 if row["name"] not in explicit and not _same(row.get("host"), row.get("port"), targets, port)]
        plain, bad = plain_database_names(stale)
        if bad and set(bad) != self._refused_names:
            log.warning("PgBouncer: %d auto-databases not written into %s (names such as %s are not plain "
                        "database names); their connections to the old primary are closed", len(bad),
                        self.path, names.shown(bad[0]))
        self._refused_names = set(bad)
        return plain

    def _close_old_servers(self, host: str, port: int, grace: float) -> None:
        targets = _addresses(host)

        def old() -> set[str]:
            rows = self.admin("SHOW SERVERS").dicts()
            return {str(r["database"]) for r in rows
                    if not _same(r.get("addr"), r.get("port"), targets, port)}

        if not old():
            return
        paused = self._paused
        if not paused:
            self.admin("RECONNECT")
        deadline = time.monotonic() + grace
        dbs = old()
        while dbs and time.monotonic() < deadline:
            time.sleep(0.05)
            dbs = old()
        if paused or not dbs:
            return
        for db in sorted(dbs):
            # KILL drops that database's clients and servers and pauses it; RESUME reopens it.
            log.warning("PgBouncer: closing connections of database %s still on the old primary", db)
            try:
                self.admin(f"KILL {_ident(db)}")
            except PgBouncerError as exc:
                if "already suspended/paused" in str(exc):
                    return  # paused by someone else: its servers close as transactions end
                raise
            self.admin(f"RESUME {_ident(db)}")


def plain_database_names(found: Sequence[str]) -> tuple[list[str], list[str]]:
    """(names pgha may write into pgbouncer.ini, the others).  PgBouncer registers an auto-database for
    any name a client sends, even with a wrong password ("x y", "appdb=host=203.0.113.9")."""
    bad = [name for name in found if name == "*" or names.problem("pgbouncer database", name)]
    return [name for name in found if name not in bad], bad


def _ident(name: str) -> str:
    """A database name as a quoted identifier of the admin console (control characters dropped)."""
    return '"' + names.CONTROL.sub("", name).replace('"', '""') + '"'


def _explicit_names(text: str) -> set[str]:
    lines = text.splitlines()
    bounds = _section_bounds(lines, "databases")
    names: set[str] = set()
    if bounds:
        for line in lines[bounds[0]:bounds[1]]:
            m = _ENTRY.match(line)
            if m and not line.lstrip().startswith((";", "#")):
                names.add(_entry_name(m.group(1)))
    return names


def _addresses(host: str) -> set[str]:
    addrs = {host}
    with contextlib.suppress(OSError):
        addrs |= {str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    return addrs


def _same(addr: str | None, port: str | None, targets: set[str], target_port: int) -> bool:
    return addr in targets and port == str(target_port)


def _simple_query(conn: psycopg.Connection[Any], sql: str, timeout: float) -> AdminResult:
    """Send ``sql`` with PQsendQuery (simple protocol) and collect the results, bounded by ``timeout``."""
    pg = conn.pgconn
    deadline = time.monotonic() + timeout

    def wait(readable: bool) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PgBouncerError(f"PgBouncer did not answer {sql.split()[0]} within {timeout:g}s")
        if readable:
            select.select([pg.socket], [], [], left)
        else:
            select.select([], [pg.socket], [], left)

    pg.send_query(sql.encode())
    while pg.flush() != 0:
        wait(readable=False)
    results: list[pq.abc.PGresult] = []
    while True:
        pg.consume_input()
        if pg.is_busy():
            wait(readable=True)
            continue
        res = pg.get_result()
        if res is None:
            break
        results.append(res)
    if not results:
        raise PgBouncerError(f"PgBouncer returned nothing for {sql.split()[0]}")
    for res in results:
        if res.status == pq.ExecStatus.FATAL_ERROR:
            msg = res.error_message.decode(errors="replace").strip().replace("\n", " ")
            raise PgBouncerError(f"PgBouncer refused {sql.split()[0]}: {msg}")
    res = results[-1]
    columns = tuple((res.fname(i) or b"").decode() for i in range(res.nfields))
    rows = tuple(
        tuple(None if (v := res.get_value(r, c)) is None else bytes(v).decode() for c in range(res.nfields))
        for r in range(res.ntuples)
    )
    status = (res.command_status or b"").decode()
    return AdminResult(columns, rows, status)
