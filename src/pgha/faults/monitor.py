"""The write monitor: run inside one node's namespace, it tells when that node accepted writes.

    python -m pgha.faults.monitor --node node1 --dsn DSN --out monitor-node1.jsonl

Every ``--interval`` (50 ms) it runs, on the node's own PostgreSQL (reached over the
namespace's own address, which the nemesis never filters from inside), an UPSERT of one row
per node under a ``--deadline`` (500 ms) watchdog.

**Accepting writes**, precisely: a node accepts writes at instant t if a monitor write that
committed and was acknowledged within the deadline was in flight at t, or if t lies between two
such acknowledged writes with no failed attempt in between (consecutive successes, at most
``--interval`` plus one deadline apart).  A commit that waits for a synchronous standby past the
deadline is not acknowledged, so an isolated synchronous primary is not accepting writes.

Output: one JSON line per interval of acceptance, ``{"node", "from", "to", "writes"}``,
written when the interval ends (a failed attempt) and at SIGTERM.  Times are CLOCK_MONOTONIC.
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

from pgha.probe import probe_conninfo
from pgha.probe.client import Watchdog, _close, _guarded

TABLE = "pgha_faults_monitor"
UPSERT = (f"INSERT INTO {TABLE} (node, n) VALUES (%s, 1) ON CONFLICT (node) DO UPDATE SET n = {TABLE}.n + 1")
CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} (node text PRIMARY KEY, n bigint NOT NULL)"


class Monitor:
    def __init__(self, node: str, dsn: str, out: IO[str], interval: float, deadline: float) -> None:
        self.node = node
        self.conninfo = probe_conninfo(psycopg.conninfo.make_conninfo(dsn, connect_timeout="2",
                                                                      application_name="pgha-faults-monitor"))
        self.out = out
        self.interval = interval
        self.deadline = deadline
        self.wd = Watchdog(cancel_timeout=0.3, grace=0.2)
        self.conn: psycopg.Connection[Any] | None = None
        # The open interval: (first invoke, last completion, writes).
        self.run: tuple[float, float, int] | None = None
        self.stop = threading.Event()

    def close_run(self) -> None:
        if self.run is not None:
            start, end, n = self.run
            self.out.write(json.dumps({"node": self.node, "from": start, "to": end, "writes": n}) + "\n")
            self.out.flush()
            self.run = None

    def attempt(self) -> bool:
        try:
            if self.conn is None or self.conn.closed or self.conn.broken:
                self.conn = psycopg.connect(self.conninfo, autocommit=True)
            conn = self.conn
            _guarded(self.wd, conn, self.deadline, lambda: conn.execute(UPSERT, (self.node,)))
            return True
        except Exception:
            _close(self.conn)
            self.conn = None
            return False

    def loop(self) -> None:
        while not self.stop.is_set():
            invoked = time.monotonic()
            ok = self.attempt()
            done = time.monotonic()
            if ok:
                start, _, n = self.run if self.run is not None else (invoked, done, 0)
                self.run = (start, done, n + 1)
            else:
                self.close_run()
            self.stop.wait(max(0.0, self.interval - (done - invoked)))
        self.close_run()
        self.wd.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pgha.faults.monitor")
    p.add_argument("--node", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--deadline", type=float, default=0.5)
    args = p.parse_args(argv)
    with open(args.out, "a") as out:
        mon = Monitor(args.node, args.dsn, out, args.interval, args.deadline)
        signal.signal(signal.SIGTERM, lambda *_: mon.stop.set())
        signal.signal(signal.SIGINT, lambda *_: mon.stop.set())
        mon.loop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
