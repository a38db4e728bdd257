"""Issue 4: every REST endpoint of real agents, on the leader and on a replica of a 3-node cluster
(synchronous mode, so /sync and /async have one member each), with the demo's defaults: basic auth
with a generated password, and HTTPS with the demo's CA."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from pgha.demo import DemoCluster
from tests.support.cluster import leader_name, running_cluster, wait_for

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    with running_cluster(nodes=3, ttl=6.0, sync=True) as cluster:
        yield cluster


def call(demo: DemoCluster, name: str, method: str, path: str, body: Any = None,
         auth: bool = False, raw: bytes | None = None) -> tuple[int, Any]:
    return demo.api_call(name, method, path, body, raw=raw, auth=auth)


def roles(demo: DemoCluster) -> tuple[str, str, str]:
    """(leader, synchronous standby, asynchronous replica)."""
    view = demo.view()
    lead = leader_name(demo)
    assert view.sync is not None and len(view.sync.standbys) == 1
    sync = view.sync.standbys[0]
    other = next(n for n in view.members if n not in (lead, sync))
    return lead, sync, other


# The status code each health check answers on the leader, the sync standby and the async replica.
EXPECTED = {
    "/primary": (200, 503, 503), "/read-write": (200, 503, 503), "/leader": (200, 503, 503),
    "/replica": (503, 200, 200), "/replica?lag=16MB": (503, 200, 200), "/replica?tag_zone=nowhere": (503, 503, 503),
    "/read-only": (200, 200, 200), "/sync": (503, 200, 503), "/async": (503, 503, 200),
    "/health": (200, 200, 200), "/liveness": (200, 200, 200), "/readiness": (200, 200, 200),
    # Patroni's other names (docs/api.md); unknown query parameters are ignored, as Patroni does.
    "/": (200, 503, 503), "/master": (200, 503, 503), "/standby-leader": (503, 503, 503),
    "/synchronous": (503, 200, 503), "/asynchronous?lag=16MB&check=1": (503, 503, 200),
    "/read-only-sync": (200, 200, 503), "/quorum": (503, 503, 503), "/readiness?mode=write": (200, 200, 200),
}


def test_health_checks_on_leader_and_replicas(demo: DemoCluster) -> None:
    wait_for("a synchronous standby", lambda: demo.view().sync is not None and demo.view().sync.standbys)
    nodes = roles(demo)
    for path, codes in EXPECTED.items():
        for name, code in zip(nodes, codes, strict=True):
            for method in ("GET", "HEAD", "OPTIONS"):
                status, body = call(demo, name, method, path)
                assert status == code, f"{method} {path} on {name}: {status}, expected {code}"
                if method == "GET":
                    assert body["name"] == name and body["leader"] == nodes[0]
                else:
                    assert not body, f"{method} {path} has a body"


def test_state_endpoints(demo: DemoCluster) -> None:
    lead, sync, _ = roles(demo)
    status, body = call(demo, sync, "GET", "/status")
    assert status == 200 and body["role"] == "replica" and body["sync_standby"] is True
    assert body["rule_id"] and isinstance(body["lsn"], int)
    status, cluster = call(demo, sync, "GET", "/cluster")
    assert status == 200 and {m["name"] for m in cluster["members"]} == {n.name for n in demo.state.nodes}  # type: ignore[union-attr]
    status, history = call(demo, lead, "GET", "/history")
    assert status == 200 and history[0]["reason"] == "cluster initialized"
    status, config = call(demo, lead, "GET", "/config")
    assert status == 200 and config["synchronous_mode"] == "on" and config["ttl"] == 6.0
    status, metrics = call(demo, lead, "GET", "/metrics")
    text = metrics.decode()
    assert status == 200 and "pgha_timeline" in text and "pgha_last_rule_info" in text
    status, spec = call(demo, lead, "GET", "/openapi.json")
    assert status == 200 and "/switchover" in spec["paths"]
    # No secret is served: not the API password, not PostgreSQL's.
    for payload in (json.dumps(cluster), json.dumps(config), text):
        assert demo.api_password not in payload and "password" not in payload.lower()


def test_actions_need_authentication_and_validate_their_body(demo: DemoCluster) -> None:
    lead, _, _ = roles(demo)
    for method, path in (("POST", "/switchover"), ("POST", "/restart"), ("POST", "/reload"),
                         ("PATCH", "/config"), ("POST", "/pause"), ("POST", "/reinitialize")):
        status, body = call(demo, lead, method, path, body={})
        assert status == 401, f"{method} {path} without credentials: {status}"
        assert "authentication required" in body["error"]
    status, body = call(demo, lead, "POST", "/switchover", raw=b"{not json", auth=True)
    assert status == 400 and body["error"]
    status, body = call(demo, lead, "POST", "/switchover", body={"candidate": "nobody"}, auth=True)
    assert status >= 400 and status < 500 and "nobody" in body["error"]
    status, body = call(demo, lead, "PATCH", "/config", body={"ttl": "soon"}, auth=True)
    assert status == 400 and "ttl" in body["error"]
    status, body = call(demo, lead, "GET", "/replica?lag=lots")
    assert status == 400 and "lag" in body["error"]


def test_authenticated_reload_is_carried_out_by_the_agent(demo: DemoCluster) -> None:
    _, sync, _ = roles(demo)
    status, body = call(demo, sync, "POST", "/reload", body={}, auth=True)
    assert 200 <= status < 300, body
    # The intent is written to etcd and the agent completes it.
    wait_for("the reload to be carried out", lambda: sync not in demo.view().intents, timeout=30)
