"""The write probe's I/O half: a statement watchdog, the probe loop, the per-node helper."""


from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from pgha.probe.report import (
    DEFAULT_TABLE,
    DEFAULT_TIMEOUT,
    ProbeError,
    ProbeReport,
    ProbeStats,
    create_table_sql,
    dsn_secrets,
    error_line,
    probe_conninfo,
    table_identifier,
)

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
