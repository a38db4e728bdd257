"""Issue 20: no client can take the primary down through the REST API.

One 2-node demo cluster (API over TLS with basic auth, as `pgha demo up` runs it) takes, in turn,
slow heads and slow bodies, two rounds of 3,000 idle TLS connections held and released, a
connection flood with steady requests, and cross-site-style POSTs.  Throughout: no fencing, no
leader change, no lease renewal later than its period, and every /primary probe (a new TLS
connection each, its own 1 s deadline) answered 200 within 1 s.  The POSTs change nothing.

The load runs in a child process (tests/support/hostile.py), the probe in this one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import urllib3

from pgha.demo import DemoCluster
from tests.support.cluster import leader_name, running_cluster
from tests.support.hostile import LoadProcess, LoadSpec, LoadStats, PrimaryProbe, Target, Watch, raise_nofile

pytestmark = pytest.mark.integration

IDLE = 3000


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    # The agents inherit this limit; the load process raises its own.
    raise_nofile(IDLE + 1024)
    with running_cluster(nodes=2) as cluster:
        cluster.wait_healthy(timeout=120)
        yield cluster


def under_load(demo: DemoCluster, spec_of: dict[str, float | int]) -> tuple[Watch, PrimaryProbe, LoadStats]:
    target = Target.of(demo, leader_name(demo))
    watch = Watch.start(demo)
    with PrimaryProbe(target, interval=0.25, deadline=1.0) as probe:
        stats = LoadProcess(LoadSpec(target, **spec_of)).result()  # type: ignore[arg-type]
    return watch.finish(), probe, stats


def assert_unharmed(demo: DemoCluster, watch: Watch, probe: PrimaryProbe, stats: LoadStats) -> None:
    period = demo.view().config.renewal_period()
    assert stats.errors == []
    assert watch.fencings == []
    assert watch.leader_after == watch.leader
    assert watch.worst < period, f"a lease renewal ran {watch.worst:.2f} s late (period {period} s)"
    assert all(late < period for late in watch.late_logged), watch.late_logged
    summary = probe.summary()
    assert summary["probes"] and summary["failed"] == 0, summary


def test_slow_heads_and_slow_bodies(demo: DemoCluster) -> None:
    watch, probe, stats = under_load(demo, {"seconds": 15, "slow_heads": 200, "slow_bodies": 200})
    assert_unharmed(demo, watch, probe, stats)
    # The server closed them at the cap or the deadline, and they came back.
    assert stats.slow_reopened > 400


def test_rounds_of_3000_idle_tls_connections_held_and_released(demo: DemoCluster) -> None:
    watch, probe, stats = under_load(demo, {"seconds": 5, "idle": IDLE, "rounds": 2, "hold": 5.0})
    assert_unharmed(demo, watch, probe, stats)
    assert stats.idle_opened + stats.idle_failed == 2 * IDLE and stats.idle_opened > IDLE, stats


def test_connection_flood_with_steady_requests(demo: DemoCluster) -> None:
    watch, probe, stats = under_load(demo, {"seconds": 15, "flood": 4, "rate": 50.0, "idle": 500})
    assert_unharmed(demo, watch, probe, stats)
    assert stats.flood_connections > 100 and stats.requests_ok > 0, stats


# Cross-site-style POSTs, with the credentials a browser would have cached.
CROSS_SITE = [
    ({"Content-Type": "text/plain"}, b'{"leader": "%s"}', 415),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"leader=%s", 415),
    ({"Content-Type": "application/json", "Origin": "https://evil.example"}, b'{"leader": "%s"}', 403),
    ({"Content-Type": "application/json", "Host": "evil.example"}, b'{"leader": "%s"}', 421),
]


@pytest.mark.parametrize(("headers", "body", "status"), CROSS_SITE)
def test_cross_site_posts_change_nothing(demo: DemoCluster, headers: dict[str, str], body: bytes,
                                         status: int) -> None:
    lead = leader_name(demo)
    assert demo.state is not None
    creds = demo.api_user, demo.api_password
    http = urllib3.PoolManager(retries=False, timeout=5.0, ca_certs=demo.state.api_ca)
    try:
        for path in ("/switchover", "/pause", "/restart"):
            r = http.request("POST", demo.node(lead).api_url + path, body=body.replace(b"%s", lead.encode()),
                             headers={**headers, **urllib3.make_headers(basic_auth=f"{creds[0]}:{creds[1]}")})
            assert r.status == status, (path, r.data)
            assert "error" in json.loads(r.data)
    finally:
        http.clear()
    data = demo.store().read()
    assert data.switchover is None and data.intents == {} and not data.config.pause
    assert leader_name(demo) == lead
