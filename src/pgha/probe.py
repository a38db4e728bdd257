"""`pgha probe`: measure what a client sees of a PostgreSQL service, write by write.

Every interval the probe runs a health check, a SELECT and an autocommit INSERT of
``(run_id, seq)`` into a probe table.  An INSERT that returned successfully, in time, is
an *acknowledged* (committed) write.  After the run it reads the table back through the
same DSN and counts the acknowledged writes the final primary does not have.

The module has two halves:

* a pure half (``ProbeStats``, ``ProbeReport``, ``mask_dsn``…) that never reads a clock,
  opens a socket or starts a thread: times are arguments, so tests feed it synthetic data;
* an I/O half (``Probe``, ``probe_each``, ``Watchdog``) that talks to PostgreSQL.

Timeouts are client-side, so they work through any pooler and against a frozen server:

* ``connect_timeout`` bounds each connection attempt (libpq's minimum is 2 s);
* TCP keepalives and ``tcp_user_timeout`` make the kernel give up on a dead peer;
* a ``Watchdog`` thread bounds every statement: at the deadline it sends a cancel request
  (``Connection.cancel_safe``), and if the statement is still not back after a short grace
  (the server may be frozen, so the cancel request itself hangs) it shuts the socket down,
  which wakes the blocked client at once.  A statement the watchdog had to stop counts as
  failed even if it then returned: cancelling a commit that waits for synchronous
  replication makes PostgreSQL return success with a warning, and that is not an
  acknowledgement a client could rely on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_TABLE = "pgha_probe"
DEFAULT_TIMEOUT = 2.0
MAX_ERRORS = 5
MAX_ERROR_LEN = 200

# Client-side connection defaults; a value the DSN sets itself wins.
CONNECT_DEFAULTS: Mapping[str, str] = {
    "connect_timeout": "2",
    "keepalives": "1",
    "keepalives_idle": "2",
    "keepalives_interval": "1",
    "keepalives_count": "2",
    "application_name": "pgha-probe",
}


class ProbeError(Exception):
    """A probe that cannot start: malformed DSN, bad table name.  The message is safe to print."""


# --------------------------------------------------------------------------------------
# Pure half: secrets, statistics, the report.
# --------------------------------------------------------------------------------------

_URI_USERINFO = re.compile(r"(postgres(?:ql)?://[^:/@\s?#]*:)([^@\s/?#]*)(@)", re.IGNORECASE)
_URI_PARAM = re.compile(r"([?&]password=)([^&\s#]*)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"((?<![?&\w])password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']*)", re.IGNORECASE)
_LOOSE_PASSWORD = re.compile(r"password\s*=?\s*('(?:[^'\\]|\\.)*'?|[^\s'&]+)", re.IGNORECASE)


def dsn_secrets(dsn: str) -> list[str]:
    """Every string in ``dsn`` that may be its password, parseable or not (longest first)."""
    found: set[str] = set()
    try:
        pw = conninfo_to_dict(dsn).get("password")
        if pw:
            found.add(str(pw))
    except psycopg.Error:
        pass
    for pattern, group in ((_URI_USERINFO, 2), (_URI_PARAM, 2), (_LOOSE_PASSWORD, 1)):
        for m in pattern.finditer(dsn):
            value = m.group(group)
            found.add(value)
            found.add(value.strip("'"))
    return sorted((s for s in found if len(s) >= 2), key=len, reverse=True)


def mask_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``****`` (key=value and URI forms)."""
    out = _URI_USERINFO.sub(r"\1****\3", dsn)
    out = _URI_PARAM.sub(r"\1****", out)
    return _KV_PASSWORD.sub(r"\1****", out)


def safe_dsn(dsn: str) -> str:
    """``dsn`` fit to print: passwords masked, even in a DSN that does not parse."""
    return scrub(mask_dsn(dsn), dsn_secrets(dsn))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every literal secret replaced by ``****``."""
    for s in secrets:
        text = text.replace(s, "****")
    return text


def error_line(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One short line for ``exc``: its first non-empty line, secrets masked, length capped."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    text = scrub(mask_dsn(text), secrets)
    return text if len(text) <= MAX_ERROR_LEN else text[: MAX_ERROR_LEN - 1] + "…"


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ProbeReport:
    """What one probe run saw.  ``missing`` is None when the final read-back failed."""

    run_id: str
    acknowledged: int
    failed: int
    max_gap_ms: float
    max_gap_at: str | None  # wall-clock time (UTC, ISO 8601) the longest gap began
    mean_interval_ms: float | None  # mean time between consecutive acknowledged writes
    missing: int | None
    duration_s: float
    errors: tuple[tuple[str, int], ...] = ()  # (message, count), most frequent first
    missing_seqs: tuple[int, ...] = ()  # the first few missing sequence numbers
    connected: bool = True  # False: no connection succeeded during the whole run

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors"] = [{"message": m, "count": c} for m, c in self.errors]
        d["missing_seqs"] = list(self.missing_seqs)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_text(self) -> str:
        gap_at = f" (began {self.max_gap_at})" if self.max_gap_at else ""
        mean = "-" if self.mean_interval_ms is None else f"{self.mean_interval_ms:.1f} ms"
        if self.missing is None:
            missing = "unknown (could not read the probe table back)"
        elif self.missing_seqs:
            more = ", …" if self.missing > len(self.missing_seqs) else ""
            missing = f"{self.missing} (seq {', '.join(map(str, self.missing_seqs))}{more})"
        else:
            missing = str(self.missing)
        rows = [
            ("run id", self.run_id),
            ("acknowledged writes", str(self.acknowledged)),
            ("failed attempts", str(self.failed)),
            ("longest gap", f"{self.max_gap_ms:.1f} ms{gap_at}"),
            ("mean interval", mean),
            ("missing after run", missing),
            ("duration", f"{self.duration_s:.1f} s"),
        ]
        lines = [f"{k:<20} {v}" for k, v in rows]
        if self.errors:
            lines.append("errors:")
            lines += [f"  {c:>6}  {m}" for m, c in self.errors]
        return "\n".join(lines)


class ProbeStats:
    """Accumulates one run's outcomes; every method takes the time it refers to.

    ``start`` and every ack time are monotonic seconds; ``wall_start`` is the wall-clock
    time matching ``start``.  The run's start and end count as gap boundaries, so an
    outage at the beginning or the end of a run is not hidden.
    """

    def __init__(self, run_id: str, start: float, wall_start: float) -> None:
        self.run_id = run_id
        self.start = start
        self.wall_start = wall_start
        self.acked = array("q")
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.connected = False
        self._last = start
        self._first_ack: float | None = None
        self._max_gap = 0.0
        self._max_gap_from = start

    @property
    def acknowledged(self) -> int:
        return len(self.acked)

    def _gap(self, t: float) -> None:
        if t - self._last > self._max_gap:
            self._max_gap = t - self._last
            self._max_gap_from = self._last

    def ack(self, seq: int, t: float) -> None:
        self._gap(t)
        self._last = t
        if self._first_ack is None:
            self._first_ack = t
        self.acked.append(seq)

    def fail(self, message: str) -> None:
        self.failed += 1
        self.errors[message] += 1

    def report(self, end: float, present: Iterable[int] | None, max_errors: int = MAX_ERRORS) -> ProbeReport:
        """The report at monotonic time ``end``; ``present``: seqs found afterwards (None: unknown)."""
        self._gap(end)
        n = len(self.acked)
        mean = None
        if n >= 2 and self._first_ack is not None:
            mean = (self._last - self._first_ack) / (n - 1) * 1000.0
        missing: int | None = None
        missing_seqs: tuple[int, ...] = ()
        if present is not None:
            lost = sorted(set(self.acked) - set(present))
            missing, missing_seqs = len(lost), tuple(lost[:10])
        return ProbeReport(
            run_id=self.run_id,
            acknowledged=n,
            failed=self.failed,
            max_gap_ms=round(self._max_gap * 1000.0, 3),
            max_gap_at=_iso(self.wall_start + (self._max_gap_from - self.start)) if self._max_gap else None,
            mean_interval_ms=None if mean is None else round(mean, 3),
            missing=missing,
            duration_s=round(end - self.start, 3),
            errors=top_errors(self.errors, max_errors),
            missing_seqs=missing_seqs,
            connected=self.connected,
        )


def top_errors(errors: Mapping[str, int], limit: int = MAX_ERRORS) -> tuple[tuple[str, int], ...]:
    """The ``limit`` most frequent messages (ties by message); the rest summed as one line."""
    ranked = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[:limit]
    rest = sum(c for _, c in ranked[limit:])
    if rest:
        top.append((f"({len(ranked) - limit} other distinct errors)", rest))
    return tuple(top)


def table_identifier(name: str) -> sql.Identifier:
    """``name`` or ``schema.name`` as a quoted identifier; ProbeError when it is not one."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", p) for p in parts):
        raise ProbeError(f"invalid table name {name!r}: use NAME or SCHEMA.NAME (letters, digits, _)")
    return sql.Identifier(*parts)


def create_table_sql(table: sql.Identifier) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}(run_id text, seq bigint, at timestamptz DEFAULT now(),"
        " PRIMARY KEY (run_id, seq))"
    ).format(table)


def probe_conninfo(dsn: str) -> str:
    """``dsn`` plus the client-side timeout defaults; ProbeError (password masked) if malformed."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ProbeError(f"invalid DSN {safe_dsn(dsn)!r}: {error_line(exc, dsn_secrets(dsn))}") from None
    extra = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in params}
    return make_conninfo(dsn, **extra)


# --------------------------------------------------------------------------------------
# I/O half: a statement watchdog, the probe loop, the per-node helper.
# --------------------------------------------------------------------------------------

Conn = psycopg.Connection[Any]


class Watchdog:
    """Bounds blocking calls on one connection at a time, from a helper thread.

    ``with wd.guard(conn, timeout) as fired:`` runs the block; if it is still running at
    the deadline the watchdog sends a cancel request, and after ``grace`` more seconds
    shuts the socket down.  ``fired()`` tells afterwards whether the deadline passed.
    The connection stays open (and its socket valid) until the guard has exited.
    """

    def __init__(self, cancel_timeout: float = 1.0, grace: float = 0.5) -> None:
        self.cancel_timeout = cancel_timeout
        self.grace = grace
        self._cond = threading.Condition()
        self._conn: Conn | None = None
        self._deadline = 0.0
        self._token = 0
        self._fired_token = -1
        self._firing = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="pgha-probe-watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def guard(self, conn: Conn, timeout: float) -> Iterator[Callable[[], bool]]:
        with self._cond:
            self._token += 1
            token = self._token
            self._conn = conn
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        try:
            yield lambda: self._fired_token == token
        finally:
            with self._cond:
                self._conn = None
                self._cond.notify_all()
                while self._firing:
                    self._cond.wait()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    armed = self._conn is not None and self._token != self._fired_token
                    left = self._deadline - time.monotonic()
                    if armed and left <= 0:
                        break
                    self._cond.wait(left if armed else None)
                if self._closed:
                    return
                conn, token = self._conn, self._token
                assert conn is not None
                self._fired_token = token
                self._firing = True
            try:
                self._fire(conn, token)
            finally:
                with self._cond:
                    self._firing = False
                    self._cond.notify_all()

    def _fire(self, conn: Conn, token: int) -> None:
        with contextlib.suppress(Exception):
            conn.cancel_safe(timeout=self.cancel_timeout)
        with self._cond:
            self._cond.wait_for(lambda: self._conn is None or self._token != token, timeout=self.grace)
            if self._conn is conn and self._token == token:
                # Still stuck: the guarded thread cannot close conn before we return.
                with contextlib.suppress(OSError):
                    s = socket.socket(fileno=os.dup(conn.pgconn.socket))
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    finally:
                        s.close()


class StatementTimeout(Exception):
    def __init__(self, timeout: float) -> None:
        super().__init__(f"no answer within {timeout:g}s: statement cancelled by the probe")


def _guarded(wd: Watchdog, conn: Conn, timeout: float, fn: Callable[[], Any]) -> Any:
    """``fn()`` under the watchdog; StatementTimeout when the deadline passed, whatever fn did."""
    with wd.guard(conn, timeout) as fired:
        try:
            result = fn()
        except Exception:
            if fired():
                raise StatementTimeout(timeout) from None
            raise
    if fired():
        raise StatementTimeout(timeout)
    return result


def _close(conn: Conn | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


class Probe:
    """Writes a row every ``interval`` seconds and records what succeeded.

    ``start()`` runs it in a background thread, ``stop()`` ends it and returns the report;
    ``run(duration)`` does both in the foreground.  ``timeout`` bounds every statement.
    """

    def __init__(
        self,
        dsn: str,
        interval: float = 0.01,
        table: str = DEFAULT_TABLE,
        timeout: float = DEFAULT_TIMEOUT,
        verify_timeout: float = 10.0,
        run_id: str | None = None,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ProbeError("interval and timeout must be positive")
        self.dsn = dsn
        self.conninfo = probe_conninfo(dsn)
        self.secrets = dsn_secrets(dsn)
        self.interval = interval
        self.table = table_identifier(table)
        self.timeout = timeout
        self.verify_timeout = verify_timeout
        self.run_id = run_id or uuid.uuid4().hex[:16]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stats: ProbeStats | None = None
        self._wd: Watchdog | None = None

    # -- public ----------------------------------------------------------------------

    @property
    def acknowledged(self) -> int:
        return 0 if self._stats is None else self._stats.acknowledged

    @property
    def failed(self) -> int:
        return 0 if self._stats is None else self._stats.failed

    def start(self) -> None:
        if self._thread is not None:
            raise ProbeError("probe already started")
        self._stats = ProbeStats(self.run_id, time.monotonic(), time.time())
        self._wd = Watchdog()
        self._thread = threading.Thread(target=self._loop, name="pgha-probe", daemon=True)
        self._thread.start()

    def stop(self) -> ProbeReport:
        """Stop writing, read the table back through the DSN, and report."""
        if self._thread is None or self._stats is None or self._wd is None:
            raise ProbeError("probe not started")
        self._stop.set()
        self._thread.join()
        end = time.monotonic()
        stats = self._stats
        present: Iterable[int] | None = ()
        if stats.acknowledged:
            present = self._read_back(stats)
        self._wd.close()
        return stats.report(end, present)

    def run(self, duration: float) -> ProbeReport:
        """Probe for ``duration`` seconds in the foreground (Ctrl-C ends it early) and report."""
        self.start()
        try:
            self._stop.wait(duration)
        finally:
            report = self.stop()
        return report

    def wait(self, timeout: float | None) -> bool:
        """Sleep up to ``timeout`` seconds; True once the probe is stopping.

        Fix: in short slices.  The kernel may deliver SIGINT to the writer thread; a main thread
        blocked in one untimed wait then never ran Python's handler, and Ctrl-C hung the probe.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                return self._stop.is_set()
            if self._stop.wait(left):
                return True

    # -- the loop --------------------------------------------------------------------

    def _error(self, exc: BaseException) -> str:
        return error_line(exc, self.secrets)

    def _connect(self) -> Conn:
        assert self._wd is not None
        conn = psycopg.connect(self.conninfo, autocommit=True)
        try:
            create = create_table_sql(self.table)
            _guarded(self._wd, conn, self.timeout, lambda: conn.execute(create))
        except BaseException:
            _close(conn)
            raise
        return conn

    def _cycle(self, conn: Conn, seq: int) -> None:
        assert self._wd is not None
        wd, t = self._wd, self.timeout
        row = _guarded(wd, conn, t, lambda: conn.execute("SELECT pg_is_in_recovery()").fetchone())
        if row is None or row[0]:
            raise ProbeError("server is in recovery (read-only)")
        select = sql.SQL("SELECT max(seq) FROM {} WHERE run_id = %s").format(self.table)
        _guarded(wd, conn, t, lambda: conn.execute(select, (self.run_id,)).fetchone())
        insert = sql.SQL("INSERT INTO {}(run_id, seq, at) VALUES (%s, %s, %s)").format(self.table)
        now = datetime.now(UTC)
        _guarded(wd, conn, t, lambda: conn.execute(insert, (self.run_id, seq, now)))

    def _loop(self) -> None:
        stats = self._stats
        assert stats is not None
        conn: Conn | None = None
        seq = 0
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = self._connect()
                        stats.connected = True
                    seq += 1
                    self._cycle(conn, seq)
                    stats.ack(seq, time.monotonic())
                except Exception as exc:
                    stats.fail(self._error(exc))
                    _close(conn)
                    conn = None
                next_at += self.interval
                now = time.monotonic()
                if next_at < now:  # fell behind (an outage): do not burst to catch up
                    next_at = now
                self._stop.wait(next_at - now)
        finally:
            _close(conn)

    def _read_back(self, stats: ProbeStats) -> list[int] | None:
        """The seqs of this run present now, retrying for ``verify_timeout``; None if unreachable."""
        assert self._wd is not None
        deadline = time.monotonic() + self.verify_timeout
        query = sql.SQL("SELECT seq FROM {} WHERE run_id = %s").format(self.table)
        while True:
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    rows = _guarded(
                        self._wd, conn, max(self.timeout, 10.0),
                        lambda: conn.execute(query, (self.run_id,)).fetchall(),
                    )
                return [int(r[0]) for r in rows]
            except Exception as exc:
                if time.monotonic() >= deadline:
                    stats.errors[f"read-back failed: {self._error(exc)}"] += 1
                    return None
                time.sleep(0.2)


def probe_each(
    dsns: Iterable[str], timeout: float = DEFAULT_TIMEOUT, table: str = DEFAULT_TABLE
) -> dict[str, bool]:
    """Try one write on each DSN directly (in parallel): which accepted it in time.

    A write is accepted only if the INSERT returned successfully within ``timeout``;
    a write still blocked then (e.g. waiting for a synchronous standby) is cancelled and
    counts as not accepted.  Connection and SQL errors count as not accepted.
    """
    targets = list(dict.fromkeys(dsns))
    ident = table_identifier(table)
    run_id = f"each-{uuid.uuid4().hex[:12]}"
    conninfos = {d: probe_conninfo(d) for d in targets}

    def one(dsn: str) -> bool:
        wd = Watchdog(cancel_timeout=min(1.0, timeout), grace=0.5)
        try:
            with psycopg.connect(conninfos[dsn], autocommit=True) as conn:
                create = create_table_sql(ident)
                insert = sql.SQL("INSERT INTO {}(run_id, seq) VALUES (%s, 0)").format(ident)

                def write() -> None:
                    conn.execute(create)
                    conn.execute(insert, (f"{run_id}-{targets.index(dsn)}",))

                _guarded(wd, conn, timeout, write)
            return True
        except Exception:
            return False
        finally:
            wd.close()

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(targets)), thread_name_prefix="pgha-probe-each") as pool:
        return dict(zip(targets, pool.map(one, targets), strict=True))


__all__ = [
    "DEFAULT_TABLE",
    "Probe",
    "ProbeError",
    "ProbeReport",
    "ProbeStats",
    "Watchdog",
    "create_table_sql",
    "dsn_secrets",
    "error_line",
    "mask_dsn",
    "probe_conninfo",
    "probe_each",
    "safe_dsn",
    "scrub",
    "table_identifier",
    "top_errors",
]
