"""Run Patroni's own health-check code (patroni/api.py: RestApiHandler.do_GET, _readiness,
do_GET_liveness) on the roles of tests/unit/test_api_patroni.py and compare its answers with that
file's EXPECTED table, which was written down from the same code; and compare the names, types and
help texts of the metrics its do_GET_metrics writes with pgha.api.patroni.PATRONI_METRICS.

Needs a Python with patroni==4.1.5 and pgha's test dependencies (pytest, prometheus_client, PyYAML):

    python3 -m venv /tmp/patroni-venv
    /tmp/patroni-venv/bin/pip install 'patroni[etcd3,psycopg3]==4.1.5' pytest prometheus_client
    PYTHONPATH=src /tmp/patroni-venv/bin/python -m tests.support.patroni_xcheck

(or PGHA_PATRONI_PYTHON=/tmp/patroni-venv/bin/python pytest tests/unit/test_api_patroni.py).
Patroni's objects around the handler (its Patroni, DCS cluster, HA) are stand-ins that give it what
each role's node would report; the decisions are Patroni's code.  Exit status 1 on any difference.
"""

from __future__ import annotations

import sys
import time
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlparse

from patroni.api import RestApiHandler  # type: ignore[import-not-found]
from patroni.postgresql.misc import PostgresqlRole, PostgresqlState  # type: ignore[import-not-found]

from pgha.api.handle import NodeSnapshot
from tests.unit import test_api_patroni as T

TOP = T.TOP


def patroni_inputs(s: NodeSnapshot) -> dict[str, Any]:
    """What Patroni's get_postgresql_status would return on this node."""
    loc = s.local
    assert loc is not None and s.view is not None and s.view.sync is not None
    pg = loc.pg
    running = pg.run_state.value == "running"
    resp: dict[str, Any] = {"state": PostgresqlState.RUNNING if running else PostgresqlState.STOPPED}
    if running:
        if pg.in_recovery:
            resp["role"] = PostgresqlRole.REPLICA
            resp["xlog"] = {"received_location": pg.received_lsn, "replayed_location": pg.replayed_lsn}
            resp["latest_end_lsn"] = pg.received_lsn
            resp["replication_state"] = "streaming"
            if loc.name in s.view.sync.standbys:
                resp["quorum_standby" if s.cluster_config.synchronous_mode == "quorum" else "sync_standby"] = True
        else:
            resp["role"] = PostgresqlRole.PRIMARY
            resp["xlog"] = {"location": pg.wal_lsn}
    else:
        resp["role"] = PostgresqlRole.REPLICA
    if s.cluster_config.pause:
        resp["pause"] = True
    return resp


def run(s: NodeSnapshot, path: str) -> int:
    """The status code Patroni's handler answers ``path`` with on this node."""
    assert s.local is not None
    h = RestApiHandler.__new__(RestApiHandler)
    u = urlparse(path)
    h.path = u.path
    h.path_query = parse_qs(u.query) or {}
    codes: list[int] = []
    h._write_status_code_only = lambda c: codes.append(c)
    h._write_status_response = lambda c, r: codes.append(c)
    resp = patroni_inputs(s)
    h.get_postgresql_status = lambda retry=False: dict(resp, xlog=dict(resp.get("xlog", {})))
    patroni = mock.MagicMock()
    cluster = mock.MagicMock()
    cluster.config = None  # Patroni's default global config: not a standby cluster, 1 MB max lag
    cluster.status.last_lsn = TOP
    patroni.dcs.cluster = cluster
    patroni.dcs.ttl = s.cluster_config.ttl
    leader = s.local.name == "n1"
    patroni.ha.is_leader.return_value = leader
    patroni.ha.is_paused.return_value = s.cluster_config.pause
    t = s.local.tags
    patroni.tags = {**({"noloadbalance": True} if t.noloadbalance else {}), **t.extra}
    patroni.noloadbalance = t.noloadbalance
    patroni.postgresql.state = resp["state"]
    patroni.postgresql.role = resp["role"]
    patroni.postgresql.is_running.return_value = resp["state"] == PostgresqlState.RUNNING
    # Patroni's next_run: when its last loop ran, plus loop_wait.
    patroni.next_run = time.time() - (time.monotonic() - s.at) + s.cluster_config.loop_wait
    h.server = mock.MagicMock()
    h.server.patroni = patroni
    if u.path == "/readiness":
        return 503 if h._readiness() else 200
    if u.path == "/liveness":
        h.do_GET_liveness()
        return codes[0]
    h.do_GET(write_status_code_only=True)
    return codes[0]


def metric_rows() -> list[tuple[str, str, str]]:
    """(name, type, help) of every metric Patroni's do_GET_metrics writes, in its order."""
    h = RestApiHandler.__new__(RestApiHandler)
    out: list[str] = []
    h.write_response = lambda status, body, content_type="": out.append(body)
    h.get_postgresql_status = lambda retry=False: {"state": PostgresqlState.RUNNING, "role": PostgresqlRole.PRIMARY,
                                                   "server_version": 150010, "xlog": {"location": 1}}
    h.server = mock.MagicMock()
    h.server.patroni.version = "4.1.5"
    h.do_GET_metrics()
    helps = {ln.split()[2]: ln.split(" ", 3)[3] for ln in out[0].splitlines() if ln.startswith("# HELP ")}
    return [(ln.split()[2], ln.split()[3], helps[ln.split()[2]]) for ln in out[0].splitlines()
            if ln.startswith("# TYPE ")]


def main() -> int:
    from pgha.api.patroni import PATRONI_METRICS
    mine = [(m.name, m.type, m.help) for m in PATRONI_METRICS]
    theirs = metric_rows()
    for row in sorted(set(mine) ^ set(theirs)):
        print(f"metric differs: {row} ({'pgha' if row in mine else 'Patroni'} only)")
    bad = len(set(mine) ^ set(theirs))
    for path, want in T.EXPECTED.items():
        got = tuple(run(s, path) for s in T.ROLES.values())
        if got != want:
            bad += 1
            print(f"{path}: Patroni answers {got} on {tuple(T.ROLES)}, the table says {want}")
    print(f"{len(theirs)} metrics (name, type, help) and {len(T.EXPECTED)} paths x {len(T.ROLES)} roles: "
          f"{bad} differ from Patroni 4.1.5's own code")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
