"""PgBouncer and HAProxy in front of a real 3-node cluster, driven by the agents.

* Planned switchover: one client per node's PgBouncer runs write transactions back to back;
  none of them sees an error, only a pause; the replica not involved is not restarted.
* A PgBouncer left paused by an agent that died is resumed by its successor; a PgBouncer that
  is down holds up nothing else its agent does.
* HAProxy with `pgha haproxy-config`'s output: writes on the rw port reach the leader before
  and after a switchover, reads on the ro port reach a replica.
* Failover: after the leader's host dies, every surviving PgBouncer points at the new leader.

The speed targets (pause <= 2 s, repoint <= 1 s after the promotion) are measured by
bench/pgbouncer; the bounds here only catch a routing that is broken.
"""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgha.config import load
from pgha.core.model import MemberIntent
from pgha.demo import DemoCluster
from pgha.routing.pgbouncer import PgBouncer
from tests.support.cluster import leader_name, replicas, running_cluster, wait_for
from tests.support.faults import postmaster_pid, restart_node, wait_new_leader
from tests.support.procs import free_port, stop_pid
from tests.support.routing import (
    TABLE,
    bouncer_targets,
    create_probe_table,
    failover_repoint,
    request_switchover,
    switchover_through_bouncers,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists(),
                       reason="needs pgbouncer (Debian package pgbouncer)"),
]


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    with running_cluster(3, pgbouncer=True) as d:
        create_probe_table(d, leader_name(d))
        yield d


def healthy(demo: DemoCluster) -> str:
    demo.wait_healthy(timeout=120)
    demo.wait_bouncers_at_leader(timeout=30)
    return leader_name(demo)


def test_demo_records_and_runs_a_pgbouncer_per_node(demo: DemoCluster) -> None:
    lead = healthy(demo)
    assert demo.state is not None
    for node in demo.state.nodes:
        assert node.pgbouncer_port == node.pg_port + 2 and node.pgbouncer_pid
        assert bouncer_targets(demo.bouncer(node.name)) == {("127.0.0.1", demo.node(lead).pg_port)}
        with psycopg.connect(demo.bouncer_dsn(node.name), connect_timeout=5) as conn:
            row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
        assert row == (demo.node(lead).pg_port, False)
    saved = (demo.dir / "demo.json").read_text()
    assert '"pgbouncer_port"' in saved and '"pgbouncer_pid"' in saved
    cfg = load(demo.node(lead).config)
    assert cfg.pgbouncer is not None
    passwords = {cfg.postgresql.superuser.password, cfg.pgbouncer.admin_password}
    logs = [demo.dir / "demo.json", *demo.dir.glob("node*/agent.log"), *demo.dir.glob("node*/pgbouncer/*.log"),
            *demo.dir.glob("node*/pgbouncer/pgbouncer.ini")]
    for path in logs:
        assert not any(p in path.read_text() for p in passwords), f"a password is in {path}"


def postmasters(demo: DemoCluster) -> dict[str, int | None]:
    assert demo.state is not None
    return {n.name: postmaster_pid(demo, n.name) for n in demo.state.nodes}


def assert_bystander_kept_running(demo: DemoCluster, before: dict[str, int | None], old: str, new: str) -> None:
    """The replica that took no part in a switchover keeps streaming: no restart (and no rewind)."""
    (bystander,) = set(before) - {old, new}
    assert postmaster_pid(demo, bystander) == before[bystander], f"{bystander} restarted in the switchover"


def test_switchover_through_pgbouncer_shows_clients_a_pause_not_errors(demo: DemoCluster) -> None:
    healthy(demo)
    before = postmasters(demo)
    run = switchover_through_bouncers(demo)
    assert_bystander_kept_running(demo, before, run.old, run.new)
    gaps = {c.name: round(c.max_gap(), 3) for c in run.clients}
    print(f"switchover {run.old} -> {run.new}: longest pause per client (s) {gaps}")
    assert run.errors == {c.name: [] for c in run.clients}
    for c in run.clients:
        assert c.commits[0][1] == demo.node(run.old).pg_port and c.commits[-1][1] == demo.node(run.new).pg_port
    assert run.longest_pause < 10, gaps
    # Every PgBouncer was resumed: a fresh client gets through each of them at once.
    assert demo.state is not None
    for n in demo.state.nodes:
        with psycopg.connect(demo.bouncer_dsn(n.name), connect_timeout=5) as conn:
            conn.execute("SET statement_timeout = '2s'")
            assert conn.execute("SELECT inet_server_port()").fetchone() == (demo.node(run.new).pg_port,)


def test_a_restarted_agent_resumes_a_pgbouncer_its_predecessor_left_paused(demo: DemoCluster) -> None:
    lead = healthy(demo)
    name = replicas(demo)[0]
    demo.stop_agent(name, signal.SIGKILL)  # died between PAUSE and RESUME
    demo.bouncer(name).admin("PAUSE", timeout=5)
    restart_node(demo, name)
    started = time.monotonic()
    with psycopg.connect(demo.bouncer_dsn(name), connect_timeout=5, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '30s'")
        assert conn.execute("SELECT inet_server_port()").fetchone() == (demo.node(lead).pg_port,)
    print(f"{name}'s restarted agent resumed its PgBouncer: the query waited {time.monotonic() - started:.2f}s")


def test_a_dead_pgbouncer_holds_up_nothing_but_itself(demo: DemoCluster) -> None:
    old = healthy(demo)
    name = replicas(demo)[0]
    demo.stop_pgbouncer(name)
    try:
        request_switchover(demo, old)
        new = wait_new_leader(demo, old, timeout=60)
        # Its agent cannot resume that PgBouncer, but the rest of its work goes on: a reload.
        assert demo.store().set_intent(name, MemberIntent("reload", uuid.uuid4().hex))
        wait_for(f"the reload intent of {name} to complete", lambda: name not in demo.view().intents, timeout=30)
    finally:
        demo.start_pgbouncer(name)
    with psycopg.connect(demo.bouncer_dsn(name), connect_timeout=10, autocommit=True) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone() == (demo.node(new).pg_port,)


# --- HAProxy ------------------------------------------------------------------------------------


def where(port: int, password: str, write: bool = False) -> tuple[int, bool]:
    """(server port, in recovery) of a new session through HAProxy's ``port``; writes a row if asked."""
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", password=password,
                         connect_timeout=2, autocommit=True) as conn:
        if write:
            conn.execute(f"INSERT INTO {TABLE} (client) VALUES ('haproxy')")
        row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
    assert row is not None
    return int(row[0]), bool(row[1])


def settled(check: Any, what: str, timeout: float = 30.0, streak: int = 5) -> None:
    """``check`` must hold ``streak`` times in a row (HAProxy health checks take a few intervals)."""
    good = 0

    def holds() -> bool:
        nonlocal good
        try:
            ok = bool(check())
        except psycopg.Error:
            ok = False
        good = good + 1 if ok else 0
        return good >= streak

    wait_for(what, holds, timeout=timeout, interval=0.1)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (Debian package haproxy)")
def test_haproxy_from_generated_config_routes_writes_to_the_leader_and_reads_to_replicas(
        demo: DemoCluster, tmp_path: Path) -> None:
    old = healthy(demo)
    rw, ro = free_port(), free_port()
    res = subprocess.run([sys.executable, "-m", "pgha", "haproxy-config", "--dcs", demo.etcd_url,
                          "--cluster", demo.cluster, "--rw-port", str(rw), "--ro-port", str(ro),
                          "--bind", "127.0.0.1", "--check-interval", "200ms", "--lag", "16MB",
                          "--ca-file", demo.state.api_ca],  # type: ignore[union-attr]
                         capture_output=True, text=True, check=False, timeout=30)
    assert res.returncode == 0, res.stderr
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(res.stdout)
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    password = load(demo.node(old).config).postgresql.superuser.password
    with open(tmp_path / "haproxy.log", "wb") as log:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        replica_ports = {demo.node(n).pg_port for n in replicas(demo)}
        settled(lambda: where(rw, password, write=True) == (demo.node(old).pg_port, False),
                "writes through HAProxy's rw port to reach the leader")
        settled(lambda: where(ro, password)[0] in replica_ports and where(ro, password)[1],
                "reads through HAProxy's ro port to reach a replica")
        assert {where(ro, password)[0] for _ in range(6)} == replica_ports  # round robin over both

        before = postmasters(demo)
        request_switchover(demo, old)
        new = wait_new_leader(demo, old, timeout=60)
        settled(lambda: where(rw, password, write=True) == (demo.node(new).pg_port, False),
                f"writes through HAProxy's rw port to reach the new leader {new}")
        demo.wait_healthy(timeout=120)
        assert_bystander_kept_running(demo, before, old, new)
        replica_ports = {demo.node(n).pg_port for n in replicas(demo)}
        settled(lambda: where(ro, password)[0] in replica_ports and where(ro, password)[1],
                "reads through HAProxy's ro port to reach a replica after the switchover")
    finally:
        stop_pid(proc.pid, timeout=5)
        proc.wait()


# --- failover (last: it kills the leader's host) ------------------------------------------------


def no_server_on(bouncer: PgBouncer, port: str) -> bool:
    return port not in {r["port"] for r in bouncer.admin("SHOW SERVERS").dicts()}


def test_failover_repoints_every_surviving_pgbouncer_at_the_new_leader(demo: DemoCluster) -> None:
    healthy(demo)  # right after the HAProxy test's switchover
    result = failover_repoint(demo, timeout=90)
    print(f"failover {result.old} -> {result.new}: new primary {result.to_primary:.2f}s after the kill, "
          f"PgBouncers repointed {result.delay:+.3f}s after the promotion")
    want = {("127.0.0.1", demo.node(result.new).pg_port)}
    assert all(t == want for t in result.targets.values()), result.targets
    assert result.delay < 5.0
    # Right after a switchover the replicas must know they follow the new timeline even once its
    # primary died (not wait ~ttl for its member key to expire): the dead-leader fast path.
    assert result.to_primary < 6.0
    old_port = str(demo.node(result.old).pg_port)
    for name in result.targets:
        assert demo.bouncer_target(name) == ("127.0.0.1", demo.node(result.new).pg_port)
        wait_for(f"{name}'s PgBouncer to hold no server connection to the old primary",
                 functools.partial(no_server_on, demo.bouncer(name), old_port), timeout=10)
        with psycopg.connect(demo.bouncer_dsn(name), connect_timeout=5, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {TABLE} (client) VALUES ('after-failover')")
            assert conn.execute("SELECT inet_server_port()").fetchone() == (demo.node(result.new).pg_port,)
