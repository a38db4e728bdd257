"""The workload: client threads that write unique values into a set table and record every
operation, run as its own process inside the lab's client namespace.

    python -m pgha.faults.workload --out history.jsonl --dsn vip=DSN --dsn multi=DSN ...

Each thread keeps one connection (psycopg 3 defaults, so the INSERT is auto-prepared after a
few runs) and writes the next value of its own range every ``--interval``.  One operation:

* connect, if there is no connection: libpq's ``connect_timeout`` per host and
  ``tcp_user_timeout``; a failure here is ``fail`` (nothing was sent);
* ``INSERT ... RETURNING cluster_name`` under a watchdog (``pgha.probe.Watchdog``): at the
  deadline it cancels and then shuts the socket down, because a partitioned server never
  answers and ``statement_timeout`` runs on that server;
* ``ok``: the INSERT returned in time, without a notice that the wait for synchronous
  replication was cancelled;
* ``fail``: the server refused the statement with an error that means it was not applied
  (read-only transaction, and the like);
* ``info``: anything else — deadline passed, connection lost after sending, shutdown.

Every operation is one JSON line: client, via, value, invoke and complete times
(CLOCK_MONOTONIC, one clock for every namespace), type, the node that acknowledged it, and
the error.  SIGTERM ends the run after the operations in flight complete.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

import psycopg

from pgha.probe import error_line, probe_conninfo
from pgha.probe.client import StatementTimeout, Watchdog, _close, _guarded

TABLE = "pgha_faults_set"
CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} (value bigint PRIMARY KEY, at timestamptz DEFAULT now())"
INSERT = f"INSERT INTO {TABLE} (value) VALUES (%s) RETURNING current_setting('cluster_name')"
# Server errors that prove the statement was not applied (class 22 data, 23 constraint,
# 25 read-only transaction, 42 syntax/undefined, 53 out of resources before running, 57014
# excluded: a cancel may come after the commit).
DEFINITE_CLASSES = ("22", "23", "25", "42", "53")
OP_DEADLINE = 2.0
CONNECT = {"connect_timeout": "2", "tcp_user_timeout": "2000", "keepalives": "1", "keepalives_idle": "1",
           "keepalives_interval": "1", "keepalives_count": "2", "application_name": "pgha-faults"}


def classify(exc: BaseException, sent: bool) -> str:
    """``fail`` when the write was certainly not applied, else ``info``."""
    if not sent:
        return "fail"
    if isinstance(exc, StatementTimeout):
        return "info"
    state = getattr(exc, "sqlstate", None)
    if isinstance(exc, psycopg.DatabaseError) and state and state[:2] in DEFINITE_CLASSES:
        return "fail"
    return "info"


class Recorder:
    """Writes one JSON line per operation, flushed, from any thread."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.lock = threading.Lock()

    def record(self, op: dict[str, Any]) -> None:
        line = json.dumps(op, separators=(",", ":"))
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


class Client(threading.Thread):
    def __init__(self, index: int, via: str, dsn: str, base: int, interval: float, rec: Recorder,
                 stop: threading.Event) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.index = index
        self.via = via
        self.conninfo = probe_conninfo(psycopg.conninfo.make_conninfo(dsn, **CONNECT))
        self.next_value = base + index * 1_000_000_000
        self.interval = interval
        self.rec = rec
        self.stop_event = stop
        self.wd = Watchdog(cancel_timeout=0.5, grace=0.3)
        self.conn: psycopg.Connection[Any] | None = None
        self.notices: list[str] = []

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.one()
                self.stop_event.wait(self.interval)
        finally:
            self.drop()
            self.wd.close()

    def drop(self) -> None:
        _close(self.conn)
        self.conn = None

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.conninfo, autocommit=True)
        conn.add_notice_handler(lambda d: self.notices.append(d.message_primary or ""))
        return conn

    def one(self) -> None:
        self.next_value += 1
        value = self.next_value
        op: dict[str, Any] = {"client": self.index, "via": self.via, "value": value, "invoke": time.monotonic()}
        sent = False
        try:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self.drop()
                self.conn = self._connect()
            conn = self.conn
            self.notices.clear()
            sent = True
            row = _guarded(self.wd, conn, OP_DEADLINE, lambda: conn.execute(INSERT, (value,)).fetchone())
            op["node"] = row[0] if row else None
            if any("synchronous replication" in n for n in self.notices):
                op.update(type="info", error="commit not confirmed: " + self.notices[-1])
            else:
                op["type"] = "ok"
        except Exception as exc:
            op.update(type=classify(exc, sent), error=error_line(exc))
            self.drop()
        op["complete"] = time.monotonic()
        self.rec.record(op)


def create_table(dsn: str) -> None:
    with psycopg.connect(probe_conninfo(dsn), autocommit=True) as conn:
        conn.execute(CREATE)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pgha.faults.workload")
    p.add_argument("--out", required=True)
    p.add_argument("--dsn", action="append", required=True, help="VIA=DSN, one client thread per --dsn")
    p.add_argument("--base", type=int, default=0, help="first value of client 0's range")
    p.add_argument("--interval", type=float, default=0.02)
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(args.out, "a") as out:
        rec = Recorder(out)
        clients = []
        for i, spec in enumerate(args.dsn):
            via, _, dsn = spec.partition("=")
            clients.append(Client(i, via, dsn, args.base, args.interval, rec, stop))
        for c in clients:
            c.start()
        while not stop.wait(0.2):
            pass
        for c in clients:
            c.join(timeout=15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
