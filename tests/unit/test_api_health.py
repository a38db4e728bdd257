"""Health checks and read-only endpoints, on a leader, a replica, a lagging replica and a stopped node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pgha.api.health import parse_size, tags_match
from pgha.api.metrics import AgentMetrics
from pgha.api.schema import BadRequest
from pgha.core.model import ClusterConfig, Tags
from tests.unit.test_api_helpers import (
    LEADER_LSN,
    SECRETS,
    Client,
    FakeHandle,
    make_handle,
    serving,
    with_view,
)

KINDS = ("leader", "replica", "lagging", "stopped")


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[str, tuple[FakeHandle, Client]]]:
    handles = {k: make_handle(k) for k in KINDS}
    with serving(handles["leader"]) as a, serving(handles["replica"]) as b, \
            serving(handles["lagging"]) as c, serving(handles["stopped"]) as d:
        yield {"leader": (handles["leader"], a), "replica": (handles["replica"], b),
               "lagging": (handles["lagging"], c), "stopped": (handles["stopped"], d)}


# path -> expected status on (leader, replica, lagging, stopped).  n2 is sync, n3 is async.
EXPECTED = {
    "/primary": (200, 503, 503, 503),
    "/read-write": (200, 503, 503, 503),
    "/leader": (200, 503, 503, 503),
    "/replica": (503, 200, 200, 503),
    "/replica?lag=16MB": (503, 200, 503, 503),
    "/replica?lag=100GB": (503, 200, 200, 503),
    "/replica?lag=999": (503, 503, 503, 503),
    "/replica?lag=1000": (503, 503, 503, 503),  # replayed is 2000 behind (Patroni measures replay)
    "/replica?lag=2000": (503, 200, 503, 503),
    "/replica?tag_zone=a": (503, 200, 503, 503),
    "/replica?tag_zone=b": (503, 503, 503, 503),
    "/replica?tag_nofailover=false&lag=1MB": (503, 200, 503, 503),
    "/replica?tag_failover_priority=1": (503, 200, 200, 503),
    "/read-only": (200, 200, 200, 503),
    "/sync": (503, 200, 503, 503),
    "/async": (503, 503, 200, 503),
    "/health": (200, 200, 200, 503),
    "/liveness": (200, 200, 200, 200),
    "/readiness": (200, 200, 503, 503),  # 50 MB behind > maximum_lag_on_failover
}


@pytest.mark.parametrize("path", list(EXPECTED))
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_health_status_codes(clients: dict[str, tuple[FakeHandle, Client]], path: str, method: str) -> None:
    for kind, want in zip(KINDS, EXPECTED[path], strict=True):
        r = clients[kind][1].request(method, path)
        assert r.status == want, (kind, method, path, r.data)
        if method == "GET":
            assert r.json()["name"] == clients[kind][0].config.name
        elif method == "HEAD":
            assert r.data == b"" and int(r.headers["content-length"]) > 0
        else:
            assert r.data == b"" and r.headers["allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize("query", ["lag=fast", "lag=-1", "lag=1.5.5GB", "lag=16XB", "lag="])
def test_replica_bad_query_is_400_with_message(clients: dict[str, tuple[FakeHandle, Client]],
                                               query: str) -> None:
    for kind in ("leader", "replica"):
        r = clients[kind][1].get("/replica?" + query)
        assert r.status == 400, (kind, query)
        assert r.error and "\n" not in r.error


def test_unknown_query_parameters_are_ignored_by_checks_only(clients: dict[str, tuple[FakeHandle, Client]]) -> None:
    # As Patroni: HAProxy configs add their own parameters to health checks.
    assert clients["leader"][1].get("/primary?lag=1MB&foo&tag_=x").status == 200
    r = clients["leader"][1].get("/cluster?lag=1MB")
    assert r.status == 400 and "unknown query parameter 'lag'" in r.error


@pytest.mark.parametrize(("text", "size"), [("0", 0), ("123", 123), ("100B", 100), ("16MB", 16 * 1024**2),
                                            ("16mb", 16 * 1024**2), ("1GB", 1024**3), ("512kB", 512 * 1024),
                                            (" 2 TB ", 2 * 1024**4), ("1.5MB", 3 * 512 * 1024)])
def test_parse_size_units(text: str, size: int) -> None:
    assert parse_size("lag", text) == size


@pytest.mark.parametrize("text", ["", "MB", "1.5.5MB", "-1", "1PB", "12 34", "9" * 30])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(BadRequest, match=r"lag: .* is not a size"):
        parse_size("lag", text)


def test_tag_matching() -> None:
    tags = Tags(nofailover=True, failover_priority=3, extra={"zone": "b", "rack": "7"})
    assert tags_match(tags, {"zone": "b", "rack": "7"})
    assert not tags_match(tags, {"zone": "a"})
    assert not tags_match(tags, {"missing": ""})
    assert tags_match(tags, {"nofailover": "true", "nosync": "false", "failover_priority": "3"})
    assert tags_match(tags, {"nofailover": "1"})
    assert not tags_match(tags, {"nofailover": "false"})
    assert not tags_match(tags, {"failover_priority": "1"})


def test_status_has_peer_probe_keys(clients: dict[str, tuple[FakeHandle, Client]]) -> None:
    leader = clients["leader"][1].get("/status").json()
    assert leader["name"] == "n1" and leader["role"] == "primary" and leader["state"] == "running"
    assert leader["lsn"] == LEADER_LSN and leader["timeline"] == 2 and leader["in_recovery"] is False
    assert leader["leader"] == "n1" and leader["lease_held"] is True
    assert leader["rule_id"] == "leader-renews" and leader["reason"] == "leader reason"
    assert leader["pending_restart"] is False and leader["tags"]["nofailover"] is False
    replica = clients["replica"][1].get("/status").json()
    assert replica["role"] == "replica" and replica["in_recovery"] is True and replica["leader"] == "n1"
    assert replica["lsn"] == LEADER_LSN - 1000 and replica["lag"] == 1000 and replica["lease_held"] is False
    assert replica["tags"]["extra"] == {"zone": "a"}
    stopped = clients["stopped"][1].get("/status").json()
    assert stopped["lsn"] is None and stopped["in_recovery"] is None and stopped["state"] == "stopped"


def test_status_reports_the_live_lsn_when_it_is_further(clients: dict[str, tuple[FakeHandle, Client]]) -> None:
    """An election probe must not rank a replica by a position a loop old."""
    handle, client = clients["replica"]
    handle.live = LEADER_LSN - 10
    assert client.get("/status").json()["lsn"] == LEADER_LSN - 10
    handle.live = 5  # never backwards
    assert client.get("/status").json()["lsn"] == LEADER_LSN - 1000
    handle.live = None


def test_liveness_fails_when_the_loop_is_stale() -> None:
    h = make_handle("leader")
    h.snap = replace(h.snap, at=h.snap.at - 3 * h.snap.cluster_config.ttl)
    with serving(h) as c:
        assert c.get("/liveness").status == 503
        assert c.get("/primary").status == 200


def test_primary_needs_the_lease() -> None:
    h = make_handle("leader")
    h.snap = replace(h.snap, holds_lease=False)
    with_view(h, leader=None)
    with serving(h) as c:
        assert c.get("/primary").status == 503
        # As Patroni: a primary without the lock is neither the primary nor a replica.
        assert c.get("/read-only").status == 503
        assert c.get("/readiness").status == 503


def test_before_the_first_loop_every_role_check_fails() -> None:
    h = make_handle("replica")
    h.snap = replace(h.snap, view=None, local=None, decision=None, member=None)
    with serving(h) as c:
        for path in ("/primary", "/replica", "/read-only", "/sync", "/async", "/health", "/readiness"):
            assert c.get(path).status == 503, path
        assert c.get("/liveness").status == 200
        cluster = c.get("/cluster").json()
        assert cluster["members"] == [] and cluster["dcs_error"]
        assert c.get("/status").json()["lsn"] is None


def test_cluster_document(clients: dict[str, tuple[FakeHandle, Client]]) -> None:
    doc = clients["replica"][1].get("/cluster").json()
    assert doc["leader"] == "n1" and doc["system_id"] == "7300000000000000001" and doc["paused"] is False
    assert [m["name"] for m in doc["members"]] == ["n1", "n2", "n3", "n4", "n5"]
    assert doc["sync"] == {"leader": "n1", "standbys": ["n2"], "quorum": 1}
    assert doc["switchover"] is None and doc["config"]["ttl"] == ClusterConfig().ttl
    lags = {m["name"]: m["lag"] for m in doc["members"]}
    assert lags["n1"] is None and lags["n2"] == 1000 and lags["n3"] == 50 * 1024 * 1024


def test_metrics(clients: dict[str, tuple[FakeHandle, Client]]) -> None:
    r = clients["replica"][1].get("/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.data.decode()
    for line in ('pgha_role{role="replica"} 1.0', "pgha_lease_held 0.0", "pgha_replication_lag_bytes 1000.0",
                 "pgha_timeline 2.0", 'pgha_last_rule_info{rule_id="replica-follows"} 1.0',
                 'pgha_actions_total{action="Promote"} 1.0', 'pgha_action_errors_total{action="Rewind"} 1.0'):
        assert line in text, line


def test_metrics_rule_label_follows_the_last_loop() -> None:
    h = make_handle("leader")
    registry = CollectorRegistry()
    m = AgentMetrics(registry)
    m.observe_loop(h.snap)
    assert h.snap.decision is not None
    m.observe_loop(replace(h.snap, decision=replace(h.snap.decision, rule_id="other")))
    text = generate_latest(registry).decode()
    assert 'pgha_last_rule_info{rule_id="other"}' in text
    assert 'pgha_last_rule_info{rule_id="leader-renews"}' not in text
    # The decision counter keeps every rule followed.
    assert 'pgha_decisions_total{rule_id="leader-renews"} 1.0' in text


def test_no_secret_in_any_read_response(clients: dict[str, tuple[FakeHandle, Client]]) -> None:
    for _, c in clients.values():
        for path in ("/status", "/cluster", "/config", "/history", "/metrics", "/openapi.json", "/primary"):
            data = c.get(path).data.decode()
            assert not any(s in data for s in SECRETS), path
