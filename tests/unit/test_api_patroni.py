"""Patroni 4.1.5's health checks, path x role, against pgha's server; GET /patroni; Patroni's metrics.

EXPECTED is written down from Patroni 4.1.5's patroni/api.py (``RestApiHandler.do_GET``,
``_readiness``, ``do_GET_liveness``, ``do_GET_metrics``), not from pgha's code: for each path,
Patroni computes

- replica_status_code = 200 iff not noloadbalance, role replica, state running, and not
  ``leader_optime > replayed_location + lag`` (no ``lag``: never lagging);
- primary/leader = 200 iff it holds the leader lock (paused without the DCS: by role);
- ``/read-only``: 200 if the primary check is, else replica_status_code;
- ``/sync`` ``/quorum`` ``/async`` ``/read-only-sync`` ``/read-only-quorum``: replica_status_code
  when sync_standby / quorum_standby / neither, 200 on the primary for the read-only-* ones;
- ``tag_KEY=VALUE`` only where the answer is 200 and never on the leader checks;
- ``/readiness``: leader, or streaming with (leader_optime - replayed or received) <= lag
  (default maximum_lag_on_failover); ``/liveness``: paused, or the loop ran within
  loop_wait + ttl (2 x ttl unless a running primary).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgha.api.handle import NodeSnapshot
from pgha.api.patroni import PATRONI_METRIC_NAMES, PATRONI_METRICS, document, markdown_table
from pgha.core import model as M
from pgha.core.actions import Decision
from pgha.core.model import ClusterConfig, LocalPostgres, LocalState, MemberInfo, PgRunState, Role, Tags
from tests.unit.test_api_helpers import Client, FakeHandle, make_handle, serving

MB = 1024 * 1024
TOP = 900 * MB  # the leader's WAL position

CONFIG = ClusterConfig(synchronous_mode="on")
MEMBERS = {
    "n1": MemberInfo("n1", Role.PRIMARY, "running", timeline=3, wal_lsn=TOP),
    "n2": MemberInfo("n2", Role.REPLICA, "streaming", timeline=3, received_lsn=TOP - 1000,
                     replayed_lsn=TOP - 2000, tags=Tags(extra={"zone": "a"})),
    "n3": MemberInfo("n3", Role.REPLICA, "streaming", timeline=3, received_lsn=TOP, replayed_lsn=TOP),
    "n4": MemberInfo("n4", Role.REPLICA, "streaming", timeline=3, received_lsn=TOP - 50 * MB,
                     replayed_lsn=TOP - 50 * MB),
    "n5": MemberInfo("n5", Role.REPLICA, "streaming", timeline=3, received_lsn=TOP, replayed_lsn=TOP,
                     tags=Tags(noloadbalance=True)),
    "n6": MemberInfo("n6", Role.REPLICA, "stopped", timeline=3),
}
VIEW = M.ClusterView(name="main", revision=7, system_id="7300000000000000009", leader=M.Leader("n1", 1, 5),
                   members=MEMBERS, config=CONFIG, sync=M.SyncState("n1", ("n3",), 1))


def _replica(name: str, received: int, replayed: int, tags: Tags | None = None) -> LocalState:
    return LocalState(name, LocalPostgres(run_state=PgRunState.RUNNING, in_recovery=True, timeline=3,
                                          received_lsn=received, replayed_lsn=replayed,
                                          receiver_status="streaming", following="n1",
                                          server_version=150010, postmaster_start=1.7e9,
                                          replay_timestamp=1.7e9 + 60), tags=tags or Tags())


PRIMARY = LocalState("n1", LocalPostgres(run_state=PgRunState.RUNNING, in_recovery=False, timeline=3,
                                         wal_lsn=TOP, server_version=150010, postmaster_start=1.7e9,
                                         system_id="7300000000000000009",
                                         replication=(M.Replication("n3", "streaming", "sync", TOP, TOP),)),
                     lease_deadline=1e12)
REPLICA = _replica("n2", TOP - 1000, TOP - 2000, Tags(extra={"zone": "a"}))
SYNC = _replica("n3", TOP, TOP)
LAGGING = _replica("n4", TOP - 50 * MB, TOP - 50 * MB)
NOLB = _replica("n5", TOP, TOP, Tags(noloadbalance=True))
STOPPED = LocalState("n6", LocalPostgres(run_state=PgRunState.STOPPED, timeline=3))


def snap(local: LocalState, *, config: ClusterConfig = CONFIG, stale: bool = False) -> NodeSnapshot:
    view = replace(VIEW, config=config)
    at = time.monotonic() - (config.loop_wait + 2 * config.ttl + 5 if stale else 0)
    return NodeSnapshot(view=view, local=local, decision=Decision((), "r", "why"), member=MEMBERS[local.name],
                        cluster_config=config, holds_lease=local.name == "n1", at=at)


PAUSED = replace(CONFIG, pause=True)
QUORUM = replace(CONFIG, synchronous_mode="quorum")
# The snapshots' loop times are relative to when they were built; fresh() moves them to now, so the
# answers do not depend on how long the suite ran before this file.
BUILT_AT = time.monotonic()


def fresh(s: NodeSnapshot) -> NodeSnapshot:
    return replace(s, at=s.at + time.monotonic() - BUILT_AT)


ROLES: dict[str, NodeSnapshot] = {
    "primary": snap(PRIMARY),
    "replica": snap(REPLICA),
    "sync": snap(SYNC),
    "lagging": snap(LAGGING),
    "noloadbalance": snap(NOLB),
    "paused primary": snap(PRIMARY, config=PAUSED, stale=True),
    "paused replica": snap(REPLICA, config=PAUSED, stale=True),
    "quorum": snap(SYNC, config=QUORUM),
    "stale replica": snap(REPLICA, stale=True),
    "stopped": snap(STOPPED),
}

P, R, S, L, N, PP, PR, Q, ST, X = range(10)  # the columns, in ROLES' order


def codes(ok: set[int]) -> tuple[int, ...]:
    return tuple(200 if i in ok else 503 for i in range(len(ROLES)))


PRIMARY_ONLY = codes({P, PP})
REPLICAS = codes({R, S, L, PR, Q, ST})
EXPECTED: dict[str, tuple[int, ...]] = {
    **{path: PRIMARY_ONLY for path in ("/", "/primary", "/master", "/read-write", "/leader",
                                       "/primary?tag_zone=b", "/?lag=1&foo=bar")},
    "/standby-leader": codes(set()),
    "/standby_leader": codes(set()),
    "/replica": REPLICAS,
    "/replica?lag=1MB": codes({R, S, PR, Q, ST}),
    "/replica?lag=1000": codes({S, Q}),
    "/replica?lag=2000": codes({R, S, PR, Q, ST}),
    "/replica?lag=1.5kB": codes({S, Q}),
    "/replica?tag_zone=a": codes({R, PR, ST}),
    "/replica?tag_zone=a&tag_zone=b": codes({R, PR, ST}),  # Patroni reads the first value
    "/replica?tag_noloadbalance=true": codes(set()),
    "/replica?tag_zone=a&whatever=1": codes({R, PR, ST}),
    "/read-only": codes({P, R, S, L, PP, PR, Q, ST}),
    "/read-only?lag=1MB": codes({P, R, S, PP, PR, Q, ST}),
    "/read-only?tag_zone=b": codes(set()),
    "/sync": codes({S}),
    "/synchronous": codes({S}),
    "/sync?lag=1000": codes({S}),
    "/quorum": codes({Q}),
    "/async": codes({R, L, PR, ST}),
    "/asynchronous": codes({R, L, PR, ST}),
    "/async?lag=16MB": codes({R, PR, ST}),
    "/read-only-sync": codes({P, PP, S}),
    "/read-only-synchronous": codes({P, PP, S}),
    "/read-only-quorum": codes({P, PP, Q}),
    "/health": codes({P, R, S, L, N, PP, PR, Q, ST}),
    "/health?tag_zone=a": codes({R, PR, ST}),
    "/liveness": codes({P, R, S, L, N, PP, PR, Q, X}),
    "/readiness": codes({P, R, S, N, PP, PR, Q, ST}),
    "/readiness?lag=1000": codes({P, S, N, PP, Q}),
    "/readiness?lag=1000&mode=write": codes({P, R, S, N, PP, PR, Q, ST}),
    "/readiness?lag=100MB": codes({P, R, S, L, N, PP, PR, Q, ST}),
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FakeHandle, Client]]:
    handle = make_handle("leader")
    with serving(handle) as client:
        yield handle, client


@pytest.mark.parametrize("path", list(EXPECTED))
def test_path_by_role_answers_as_patroni(server: tuple[FakeHandle, Client], path: str) -> None:
    handle, client = server
    got: dict[str, dict[str, int]] = {}
    for role, s in ROLES.items():
        handle.snap = fresh(s)
        got[role] = {m: client.request(m, path).status for m in ("GET", "HEAD", "OPTIONS")}
    want = dict(zip(ROLES, EXPECTED[path], strict=True))
    assert {r: g["GET"] for r, g in got.items()} == want, path
    for role, g in got.items():
        assert g["HEAD"] == g["OPTIONS"] == want[role], (path, role, g)


def test_built_in_tags_match_their_defaults(server: tuple[FakeHandle, Client]) -> None:
    """A difference from Patroni (docs/api.md): pgha's built-in tags always have a value, so
    tag_nofailover=false matches a node that does not set it; Patroni answers 503 unless the tag is
    in the node's file."""
    handle, client = server
    handle.snap = fresh(ROLES["replica"])
    for query in ("tag_nofailover=false", "tag_noloadbalance=false&tag_nosync=0", "tag_failover_priority=1"):
        assert client.get("/replica?" + query).status == 200, query
    assert client.get("/replica?tag_nofailover=true").status == 503


def test_every_patroni_health_path_is_in_the_table() -> None:
    patroni_paths = {"/", "/primary", "/master", "/read-write", "/leader", "/standby-leader", "/standby_leader",
                     "/replica", "/read-only", "/sync", "/synchronous", "/quorum", "/async", "/asynchronous",
                     "/read-only-sync", "/read-only-synchronous", "/read-only-quorum", "/health", "/liveness",
                     "/readiness"}
    assert {p.partition("?")[0] for p in EXPECTED} == patroni_paths


def test_paused_primary_cut_off_from_the_dcs_answers_by_role(server: tuple[FakeHandle, Client]) -> None:
    handle, client = server
    for config, want in ((PAUSED, 200), (CONFIG, 503)):
        s = snap(PRIMARY, config=config)
        handle.snap = replace(s, holds_lease=False, view=replace(VIEW, config=config, dcs_error="etcd: timeout"))
        assert client.get("/primary").status == want, config.pause


def test_malformed_values_are_400_but_unknown_parameters_are_ignored(server: tuple[FakeHandle, Client]) -> None:
    handle, client = server
    handle.snap = fresh(ROLES["replica"])
    for query in ("lag=fast", "lag=-1", "lag=16XB", "lag="):
        r = client.get("/replica?" + query)
        assert r.status == 400 and "lag:" in r.error and "\n" not in r.error, query
    assert client.get("/readiness?mode=fast").status == 400
    assert client.get("/replica?check=1&haproxy=x").status == 200
    # pgha's own endpoints still refuse what they do not know.
    r = client.get("/status?foo=1")
    assert r.status == 400 and "unknown query parameter 'foo'" in r.error


def test_patroni_document(server: tuple[FakeHandle, Client]) -> None:
    handle, client = server
    handle.snap = fresh(ROLES["primary"])
    doc = client.get("/patroni").json()
    assert doc["state"] == "running" and doc["role"] == "primary" and doc["server_version"] == 150010
    assert doc["xlog"] == {"location": TOP} and doc["timeline"] == 3
    assert doc["postmaster_start_time"].startswith("2023-11-14 22:13:20")
    assert doc["replication"] == [{"application_name": "n3", "state": "streaming", "sync_state": "sync"}]
    assert doc["database_system_identifier"] == "7300000000000000009"
    assert doc["patroni"]["scope"] == "main" and doc["patroni"]["name"] == handle.config.name
    assert "pause" not in doc and "cluster_unlocked" not in doc and "tags" not in doc
    handle.snap = fresh(ROLES["sync"])
    doc = client.get("/patroni?anything=1").json()
    assert doc["role"] == "replica" and doc["sync_standby"] is True and doc["replication_state"] == "streaming"
    assert doc["xlog"]["received_location"] == TOP and doc["xlog"]["paused"] is False
    assert doc["xlog"]["replayed_timestamp"].startswith("2023-11-14 22:14:20")
    handle.snap = fresh(ROLES["quorum"])
    doc = client.get("/patroni").json()
    assert doc["quorum_standby"] is True and "sync_standby" not in doc
    handle.snap = fresh(ROLES["noloadbalance"])
    assert client.get("/patroni").json()["tags"] == {"noloadbalance": True}
    handle.snap = fresh(ROLES["paused replica"])
    assert client.get("/patroni").json()["pause"] is True
    handle.snap = fresh(ROLES["stopped"])
    doc = client.get("/patroni").json()
    assert doc["state"] == "stopped" and "xlog" not in doc


def test_patroni_metrics_have_patronis_names_types_and_labels(server: tuple[FakeHandle, Client]) -> None:
    handle, client = server
    assert len(PATRONI_METRIC_NAMES) == len(set(PATRONI_METRIC_NAMES)) == 23
    # Patroni 4.1.5's do_GET_metrics, in its order, with its types.
    patroni = {
        "patroni_version": "gauge", "patroni_postgres_running": "gauge", "patroni_postmaster_start_time": "gauge",
        "patroni_primary": "gauge", "patroni_xlog_location": "counter", "patroni_standby_leader": "gauge",
        "patroni_replica": "gauge", "patroni_sync_standby": "gauge", "patroni_quorum_standby": "gauge",
        "patroni_xlog_received_location": "counter", "patroni_xlog_replayed_location": "counter",
        "patroni_xlog_replayed_timestamp": "gauge", "patroni_xlog_paused": "gauge",
        "patroni_postgres_streaming": "gauge", "patroni_postgres_in_archive_recovery": "gauge",
        "patroni_postgres_server_version": "gauge", "patroni_cluster_unlocked": "gauge",
        "patroni_failsafe_mode_is_active": "gauge", "patroni_postgres_timeline": "gauge",
        "patroni_dcs_last_seen": "gauge", "patroni_pending_restart": "gauge", "patroni_is_paused": "gauge",
        "patroni_postgres_state": "gauge",
    }
    assert [(m.name, m.type) for m in PATRONI_METRICS] == list(patroni.items())
    handle.snap = fresh(ROLES["replica"])
    text = client.get("/metrics").data.decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("patroni_"):
                assert sample.labels == {"scope": "main", "name": handle.config.name}, sample
                samples[sample.name.removesuffix("_total")] = sample.value
    assert set(samples) == set(patroni)
    assert samples["patroni_replica"] == 1 and samples["patroni_primary"] == 0
    assert samples["patroni_xlog_replayed_location"] == TOP - 2000
    assert samples["patroni_xlog_replayed_timestamp"] == 1.7e9 + 60
    assert samples["patroni_postgres_server_version"] == 150010 and samples["patroni_postgres_state"] == 5
    assert samples["patroni_postgres_streaming"] == 1 and samples["patroni_postgres_in_archive_recovery"] == 0
    assert samples["patroni_postgres_timeline"] == 3 and samples["patroni_postmaster_start_time"] == 1.7e9
    assert "patroni_version{" in text and "# Values: 0=initdb" in text


def test_document_is_json_serialisable_for_every_role() -> None:
    handle = make_handle("leader")
    for s in ROLES.values():
        json.dumps(document(s, handle.config, 0.0))


def test_docs_list_every_patroni_metric() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    assert markdown_table() in docs, "docs/api.md is stale: paste the output of `python -m pgha.api` into it"


# Patroni's own Python: PGHA_PATRONI_PYTHON, or the venv scripts/install-patroni.sh makes (make test).
PATRONI_PYTHON = os.environ.get("PGHA_PATRONI_PYTHON") or str(
    Path(__file__).resolve().parents[2] / ".venv-patroni" / "bin" / "python")


@pytest.mark.skipif(not os.path.exists(PATRONI_PYTHON), reason="no Patroni 4.1.5 venv (make patroni, or set "
                    "PGHA_PATRONI_PYTHON) to run Patroni's own handler on EXPECTED (tests/support/patroni_xcheck.py)")
def test_patroni_itself_answers_the_table() -> None:
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([PATRONI_PYTHON, "-m", "tests.support.patroni_xcheck"], cwd=root,
                       env={**os.environ, "PYTHONPATH": str(root / "src")}, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
