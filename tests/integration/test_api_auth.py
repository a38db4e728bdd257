"""Issue 9, secure by default: on a default demo (basic auth with a generated password, HTTPS),
every mutating endpoint refuses a request without credentials or with wrong ones (401), and
nothing changes: no intent, no switchover, the same config, the same leader on the same lease.
A node configuration without api.auth does not start; ``auth: none`` opens the endpoints and
warns at every start.  No password shows in logs, API answers, etcd values or ``ps``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pgha.api.routes import ROUTES
from pgha.core.model import Role
from pgha.demo import DemoCluster
from tests.support.cluster import leader_name, replicas, running_cluster, wait_for

pytestmark = pytest.mark.integration

MUTATING = [(r.method, r.path) for r in ROUTES if r.method in ("POST", "PATCH", "DELETE")]
# A body each route would accept, so that only the credentials decide.
BODIES: dict[str, Any] = {"/switchover": {}, "/failover": {"candidate": "REPLICA"}, "/config": {"ttl": 30},
                          "/failsafe": {"leader": "LEADER"}}


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoCluster]:
    with running_cluster(nodes=2, ttl=6.0) as cluster:
        yield cluster


def _body(path: str, lead: str, replica: str) -> Any:
    body = BODIES.get(path, {})
    return json.loads(json.dumps(body).replace("REPLICA", replica).replace("LEADER", lead))


def _dcs_state(demo: DemoCluster) -> tuple[Any, ...]:
    """What an operator request could change: switchover, intents, config, the leader and its lease."""
    view = demo.view()
    assert view.leader is not None
    return view.switchover, dict(view.intents), view.config, view.leader.name, view.leader.lease_id


def test_every_mutating_endpoint_needs_the_right_credentials(demo: DemoCluster) -> None:
    assert {p for _, p in MUTATING} >= {"/switchover", "/failover", "/restart", "/reload", "/reinitialize",
                                       "/config", "/pause", "/resume", "/failsafe"}
    lead = leader_name(demo)
    replica = replicas(demo)[0]
    assert demo.state is not None and demo.state.api_ca and demo.node(lead).api_url.startswith("https://")
    before = _dcs_state(demo)
    wrong = [False, ("pgha", "not-the-password"), ("admin", demo.api_password), ("", ""),
             ("pgha", demo.api_password + "x"), ("pgha", demo.api_password[:-1])]
    for name in (lead, replica):
        for method, path in MUTATING:
            for auth in wrong:
                status, body = demo.api_call(name, method, path, _body(path, lead, replica), auth=auth)
                assert status == 401, f"{method} {path} on {name} with {auth!r}: {status} {body}"
                assert body["error"].startswith("authentication required")
    assert _dcs_state(demo) == before
    view = demo.view()
    assert view.leader is not None and view.leader.name == lead
    assert view.members[lead].role == Role.PRIMARY and view.members[lead].state == "running"
    # The right credentials work (and the read-only endpoints need none).
    assert demo.api_call(replica, "GET", "/status", auth=False)[0] == 200
    status, body = demo.api_call(replica, "POST", "/reload", {})
    assert status == 202, body
    wait_for("the reload to be carried out", lambda: replica not in demo.view().intents, timeout=30)


def test_no_password_in_logs_api_answers_etcd_or_ps(demo: DemoCluster) -> None:
    assert demo.state is not None
    node_cfg = yaml.safe_load(Path(demo.state.nodes[0].config).read_text())
    secrets = {demo.api_password, node_cfg["api"]["auth"]["password"],
               node_cfg["postgresql"]["superuser"]["password"], node_cfg["postgresql"]["replication"]["password"]}
    assert all(len(s) >= 12 for s in secrets)
    places: dict[str, str] = {}
    for n in demo.state.nodes:
        for log in (Path(n.config).parent / "agent.log", Path(n.data_dir).parent / "postgresql.log",
                    demo.dir / "etcd.log"):
            if log.exists():
                places[str(log)] = log.read_text(errors="replace")
        for path in ("/config", "/cluster", "/status", "/history", "/metrics", "/openapi.json", "/primary",
                     "/replica"):
            _, body = demo.api_call(n.name, "GET", path)
            places[f"{n.name} GET {path}"] = body.decode() if isinstance(body, bytes) else json.dumps(body)
    _, kvs = demo.open_kv().get_prefix("/")
    assert kvs, "etcd holds the cluster"
    for kv in kvs:
        places[f"etcd {kv.key}"] = kv.value.decode(errors="replace")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                places[f"ps {proc.name}"] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
    leaks = [(where, s[:3] + "…") for where, text in places.items() for s in secrets if s in text]
    assert not leaks, f"passwords found in: {leaks}"


def _agent_exits(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgha", "agent", "-c", str(config)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_a_config_without_api_auth_does_not_start(demo: DemoCluster, tmp_path: Path) -> None:
    """The agent refuses such a file before it touches anything (and validate names the fix)."""
    assert demo.state is not None
    cfg = yaml.safe_load(Path(demo.state.nodes[0].config).read_text())
    del cfg["api"]["auth"]
    cfg["name"] = "stranger"
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    before = _dcs_state(demo)
    for res in (_agent_exits(path), subprocess.run([sys.executable, "-m", "pgha", "validate", "-c", str(path)],
                                                   capture_output=True, text=True, timeout=60, check=False)):
        assert res.returncode == 1
        assert res.stderr.strip().splitlines() == [
            f"pgha: {path}: api.auth: missing; set credentials (auth: {{username: pgha, password: ...}}) to "
            "protect the mutating endpoints, or write 'auth: none' to leave them open"]
    assert "stranger" not in demo.view().members and _dcs_state(demo) == before


def test_auth_none_opens_the_endpoints_and_warns_at_every_start() -> None:
    with running_cluster(nodes=1, ttl=6.0, api_tls=False,
                         extra_node_config={"*": {"api": {"auth": "none"}}}) as demo:
        name = leader_name(demo)
        status, body = demo.api_call(name, "POST", "/reload", {}, auth=False)
        assert status == 202, body
        log = Path(demo.node(name).config).parent / "agent.log"
        warning = "api.auth is none: anyone who reaches"
        assert log.read_text().count(warning) == 1
        demo.stop_agent(name)
        demo.start_agent(name)
        demo.wait_healthy(60)
        wait_for("the warning at the second start", lambda: log.read_text().count(warning) == 2, timeout=30)
