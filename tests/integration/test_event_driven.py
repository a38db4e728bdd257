"""The agent is woken by events, not by its reconcile interval (issue 10).

With loop_wait far longer than anything these tests wait for, what they see can only have been
started by an event: the postmaster exiting, or nothing at all (an idle agent reads nothing).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from pgha.demo import DemoCluster
from tests.support.cluster import leader_name, running_cluster, wait_for
from tests.support.faults import postmaster_pid

pytestmark = pytest.mark.integration

LOOP_WAIT = 60.0


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    with running_cluster(3, ttl=130.0, loop_wait=LOOP_WAIT) as d:
        yield d


def etcd_requests(demo: DemoCluster, method: str) -> float:
    """gRPC calls of ``method`` etcd has started since it started (its /metrics)."""
    text = urllib3.request("GET", demo.etcd_url + "/metrics", timeout=5).data.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("grpc_server_started_total{") and f'grpc_method="{method}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_idle_reconcile_reads_nothing_from_etcd(demo: DemoCluster) -> None:
    demo.wait_healthy(timeout=60)
    time.sleep(3)  # let the last publications of the start settle
    before = etcd_requests(demo, "Range")
    time.sleep(20)
    after = etcd_requests(demo, "Range")
    assert after - before == 0, f"{after - before:g} reads in 20 s of idle"


def test_a_dead_postmaster_wakes_its_agent(demo: DemoCluster) -> None:
    leader = leader_name(demo)
    pid = postmaster_pid(demo, leader)
    assert pid is not None
    log = Path(demo.node(leader).config).parent / "agent.log"
    start = log.stat().st_size
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        new = postmaster_pid(demo, leader)
        return new is not None and new != pid and "leader-crash-restart" in log.read_text()[start:]

    wait_for("the leader to restart its PostgreSQL", restarted, timeout=LOOP_WAIT / 2)
    # Far sooner than the reconcile interval: the exit itself woke the loop.
    assert time.monotonic() - killed < LOOP_WAIT / 2
    assert re.search(r"\[leader-crash-restart\]", log.read_text()[start:])
