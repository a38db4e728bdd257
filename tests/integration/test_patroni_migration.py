"""Issue 18 items 5-6: a real Patroni 4.1.5 cluster migrated to pgha in place, and back.

Patroni (scripts/install-patroni.sh puts it in .venv-patroni) runs three members on etcd v3, as the postgres
user, behind an HAProxy with the seed-style configuration Patroni's documentation ships (option httpchk,
http-check expect status 200, each server checked on its member's REST API port).  A client writes through
HAProxy the whole time, with its own deadline per statement, and counts what was acknowledged.

Forward: patronictl pause, stop the Patroni daemons (paused, they leave PostgreSQL running), convert each
node's configuration with `pgha generate-config --from-patroni`, `pgha adopt` the primary and start the
replicas' agents: the same postmasters keep running, the same HAProxy configuration (pgha's REST API listens on
Patroni's port: restapi.listen is carried over) keeps routing to the primary, and a pgha switchover works
through it.  Back: pgha pause, stop the agents, start Patroni with its own files: its leader key has expired,
so the running primary takes it, and patronictl resume hands the cluster back to Patroni.

HAProxy's check is the seed's bare `option httpchk` (OPTIONS /) when pgha has a `/` health route (Patroni's, issue
18 item 1); without one it checks `OPTIONS /primary`, which Patroni and pgha both answer 200 on the primary only.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pgha.api.routes import ROUTES
from pgha.demo.procs import stop_pid
from pgha.probe import Probe
from tests.integration.test_adopt import postmaster_pid
from tests.support.cluster import postgres_readable_dir, wait_for
from tests.support.etcd import EtcdServer
from tests.support.procs import PG_BIN, free_port, postgres_user_kwargs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PATRONI_VENV = ROOT / ".venv-patroni"
NAMES = ("pnode0", "pnode1", "pnode2")


@dataclass
class Node:
    name: str
    dir: Path
    pg_port: int
    api_port: int
    patroni_pid: int | None = None
    agent_pid: int | None = None

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def patroni_yml(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def pgha_yml(self) -> Path:
        return self.dir / "pgha.yaml"

    def postmaster_pid(self) -> int | None:
        return postmaster_pid(str(self.data_dir))


@dataclass
class Cluster:
    scope: str
    dir: Path
    etcd: EtcdServer
    password: str
    nodes: list[Node] = field(default_factory=list)
    haproxy_pid: int | None = None
    haproxy_port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def dsn(self) -> str:
        return (f"host=127.0.0.1 port={self.haproxy_port} user=postgres password={self.password} dbname=postgres "
                "connect_timeout=2")

    def spawn(self, args: list[str], log: Path) -> int:
        with open(log, "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=str(log.parent), env={**os.environ, "HOME": str(log.parent)},
                                    **postgres_user_kwargs())
        self.procs.append(proc)
        return proc.pid

    def postmasters(self) -> dict[str, int | None]:
        return {n.name: n.postmaster_pid() for n in self.nodes}

    def stop_managers(self, kind: str, says: dict[str, str]) -> None:
        """Stop every member's Patroni (kind "patroni") or pgha agent ("agent"); each log must say ``says``."""
        for node in self.nodes:
            pid = getattr(node, f"{kind}_pid")
            assert pid, f"{node.name}: no {kind} running"
            stop_pid(pid, timeout=30)
            setattr(node, f"{kind}_pid", None)
            log = (node.dir / f"{kind}.log").read_text()
            assert says.get(node.name, "") in log, log[-3000:]

    def start_patroni(self, node: Node) -> None:
        node.patroni_pid = self.spawn([str(PATRONI_VENV / "bin" / "patroni"), str(node.patroni_yml)],
                                      node.dir / "patroni.log")

    def patronictl(self, *args: str) -> str:
        r = subprocess.run([str(PATRONI_VENV / "bin" / "patronictl"), "-c", str(self.nodes[0].patroni_yml), *args],
                           capture_output=True, text=True, timeout=120, cwd=str(self.dir),
                           env={**os.environ, "HOME": str(self.dir)}, **postgres_user_kwargs())
        assert r.returncode == 0, f"patronictl {' '.join(args)}: {r.stdout}{r.stderr}"
        return str(r.stdout)

    def pgha(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "pgha", *args, "-c", str(self.nodes[0].pgha_yml)],
                           capture_output=True, text=True, timeout=120, cwd="/")
        assert r.returncode == 0, f"pgha {' '.join(args)}: {r.stdout}{r.stderr}"
        return r.stdout

    def start_agent(self, node: Node, command: str) -> None:
        node.agent_pid = self.spawn([sys.executable, "-m", "pgha", command, "-c", str(node.pgha_yml)],
                                    node.dir / "agent.log")

    def routed_port(self) -> int | None:
        """The PostgreSQL port HAProxy sends a new connection to (None: no server up)."""
        try:
            with psycopg.connect(self.dsn(), autocommit=True) as conn:
                row = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row is not None and row[1] is False else None


def api(node: Node, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.api_port}{path}", timeout=2) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def answers(node: Node, path: str) -> Callable[[], bool]:
    """Whether the member's REST API answers 200 on ``path`` (Patroni and pgha alike)."""
    return lambda: api(node, path)[0] == 200


def patroni_config(c: Cluster, node: Node) -> dict[str, Any]:
    return {
        "scope": c.scope,
        "namespace": "/service/",
        "name": node.name,
        "restapi": {"listen": f"127.0.0.1:{node.api_port}", "connect_address": f"127.0.0.1:{node.api_port}"},
        "etcd3": {"hosts": c.etcd.url.removeprefix("http://")},
        "bootstrap": {
            "dcs": {"ttl": 10, "loop_wait": 1, "retry_timeout": 3, "maximum_lag_on_failover": 1048576,
                    "postgresql": {"use_pg_rewind": True,
                                   "parameters": {"max_connections": 50, "fsync": "off", "shared_buffers": "32MB"}}},
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{node.pg_port}",
            "connect_address": f"127.0.0.1:{node.pg_port}",
            "data_dir": str(node.data_dir),
            "bin_dir": PG_BIN,
            "pgpass": str(node.dir / "pgpass"),
            "authentication": {"superuser": {"username": "postgres", "password": c.password},
                               "replication": {"username": "replicator", "password": c.password + "r"}},
            "parameters": {"unix_socket_directories": str(node.dir)},
            "pg_hba": ["local all all trust", "host replication replicator 127.0.0.1/32 scram-sha-256",
                       "host all all 127.0.0.1/32 scram-sha-256"],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def seed_check() -> str:
    """The seed's bare `option httpchk` (HAProxy's default: OPTIONS /) once pgha answers `/` as Patroni does;
    until then `OPTIONS /primary`, which Patroni and pgha answer alike (200 on the primary only)."""
    answers_root = any(r.path == "/" and r.method == "OPTIONS" for r in ROUTES)
    return "option httpchk" if answers_root else "option httpchk OPTIONS /primary"


def haproxy_cfg(c: Cluster) -> str:
    """Patroni's example haproxy.cfg, with each server checked on its member's REST API port."""
    servers = "".join(f"    server {n.name} 127.0.0.1:{n.pg_port} maxconn 100 check port {n.api_port}\n"
                      for n in c.nodes)
    return ("global\n    maxconn 100\n\ndefaults\n    mode tcp\n    retries 2\n    timeout client 30m\n"
            "    timeout connect 4s\n    timeout server 30m\n    timeout check 5s\n\n"
            f"listen {c.scope}\n    bind 127.0.0.1:{c.haproxy_port}\n"
            f"    {seed_check()}\n    http-check expect status 200\n"
            "    default-server inter 300ms fall 2 rise 1 on-marked-down shutdown-sessions\n" + servers)


@pytest.fixture(scope="module")
def patroni(etcd: EtcdServer) -> Iterator[Cluster]:
    """Three Patroni members running (pnode0 initializes, the others clone) and HAProxy in front."""
    if not (PATRONI_VENV / "bin" / "patroni").exists():
        pytest.fail(f"{PATRONI_VENV}/bin/patroni is missing: run `make venv` (scripts/install-patroni.sh)")
    with postgres_readable_dir("pgha-patroni-") as tmp:
        c = Cluster(scope=f"pm{secrets.token_hex(4)}", dir=tmp, etcd=etcd, password=secrets.token_urlsafe(12))
        c.haproxy_port = free_port()
        for name in NAMES:
            node = Node(name, tmp / name, free_port(), free_port())
            node.dir.mkdir()
            os.chown(node.dir, *_postgres_ids())
            os.chmod(node.dir, 0o700)
            node.patroni_yml.write_text(yaml.safe_dump(patroni_config(c, node)))
            c.nodes.append(node)
        try:
            c.start_patroni(c.nodes[0])
            wait_for("pnode0 to lead", lambda: api(c.nodes[0], "/primary")[0] == 200, timeout=90)
            for node in c.nodes[1:]:
                c.start_patroni(node)
            for node in c.nodes[1:]:
                wait_for(f"{node.name} to stream",
                         answers(node, "/replica"), timeout=120)
            cfg = tmp / "haproxy.cfg"
            cfg.write_text(haproxy_cfg(c))
            with open(tmp / "haproxy.log", "ab") as log:
                proc = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd="/")
            c.procs.append(proc)
            c.haproxy_pid = proc.pid
            wait_for("HAProxy to route to pnode0", lambda: c.routed_port() == c.nodes[0].pg_port, timeout=30)
            yield c
        finally:
            for node in c.nodes:
                for pid in (node.agent_pid, node.patroni_pid):
                    if pid:
                        stop_pid(pid, timeout=20)
            for node in c.nodes:
                pid = node.postmaster_pid()
                if pid:
                    stop_pid(pid, 2, timeout=20)  # SIGINT: fast shutdown
            if c.haproxy_pid:
                stop_pid(c.haproxy_pid)
            for proc in c.procs:
                proc.wait(timeout=5)  # reaped already: this only records it
            for prefix in (f"/service/{c.scope}/", f"/pgha/{c.scope}/"):
                subprocess.run(["etcdctl", "--endpoints", etcd.url, "del", "--prefix", prefix],
                               capture_output=True, timeout=30, check=False)


def _postgres_ids() -> tuple[int, int]:
    kw = postgres_user_kwargs()
    return (kw["user"], kw["group"]) if kw else (os.getuid(), os.getgid())


def leader_port(c: Cluster, leader: str) -> int:
    return c.node(leader).pg_port


def converted(c: Cluster) -> dict[str, list[str]]:
    """Every node's pgha file from its Patroni file; the 'left behind:' lines of each."""
    left: dict[str, list[str]] = {}
    first = c.nodes[0].pgha_yml
    for node in c.nodes:
        extra = ["--secrets-from", str(first)] if node is not c.nodes[0] else []
        r = subprocess.run([sys.executable, "-m", "pgha", "generate-config", "--from-patroni", str(node.patroni_yml),
                            "-o", str(node.pgha_yml), *extra], capture_output=True, text=True, timeout=60, cwd="/")
        assert r.returncode == 0, r.stderr
        left[node.name] = [ln for ln in r.stderr.splitlines() if ln.startswith("left behind: ")]
        v = subprocess.run([sys.executable, "-m", "pgha", "validate", "-c", str(node.pgha_yml)],
                           capture_output=True, text=True, timeout=60, cwd="/", **postgres_user_kwargs())
        assert v.returncode == 0, v.stdout + v.stderr
    return left


class Writer:
    """The client: writes through HAProxy with its own statement deadline; 0 acknowledged writes may be lost."""

    def __init__(self, c: Cluster) -> None:
        self.probe = Probe(c.dsn(), interval=0.02, timeout=2.0)

    def __enter__(self) -> Writer:
        self.probe.start()
        wait_for("writes through HAProxy", lambda: self.probe.acknowledged > 20, timeout=30)
        return self

    def more(self, n: int = 20, timeout: float = 60) -> None:
        before = self.probe.acknowledged
        wait_for(f"{n} more writes through HAProxy", lambda: self.probe.acknowledged >= before + n, timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        report = self.probe.stop()
        print(report.to_text())  # acknowledged / failed writes and the longest gap (pytest -s shows it)
        if exc[0] is None:
            assert report.missing == 0, report.to_text()
            assert report.acknowledged > 0


def test_patroni_to_pgha_in_place_then_switchover(patroni: Cluster) -> None:
    c = patroni
    pids = c.postmasters()
    assert all(pids.values()), pids
    with Writer(c) as writer:
        c.patronictl("pause", "--wait")
        c.stop_managers("patroni", {"pnode0": "Leader key is not deleted and Postgresql is not stopped due paused "
                                               "state"})
        assert c.postmasters() == pids, "Patroni stopped PostgreSQL"
        left = converted(c)
        assert all(any("postgresql.pgpass" in ln for ln in lines) for lines in left.values()), left

        c.start_agent(c.nodes[0], "adopt")
        wait_for("HAProxy to route to pnode0 checked by pgha", lambda: c.routed_port() == c.nodes[0].pg_port,
                 timeout=60)
        for node in c.nodes[1:]:
            c.start_agent(node, "agent")  # bootstrap.adopt: true is in the converted file
        for node in c.nodes[1:]:
            wait_for(f"{node.name} to stream under pgha", answers(node, "/replica"), timeout=90)
        writer.more()
        assert c.postmasters() == pids, "a PostgreSQL was restarted"
        listing = c.pgha("list")
        for name in NAMES:
            log = (c.node(name).dir / "agent.log").read_text()
            assert "clone: pg_basebackup" not in log and "initdb: new cluster" not in log, log

        # A pgha switchover, through the same HAProxy.
        c.pgha("switchover", "--candidate", "pnode1", "--force")
        wait_for("HAProxy to route to pnode1", lambda: c.routed_port() == c.node("pnode1").pg_port, timeout=60)
        writer.more()
        wait_for("pnode0 to follow pnode1", lambda: api(c.nodes[0], "/replica")[0] == 200, timeout=90)
    assert c.node("pnode1").postmaster_pid() == pids["pnode1"]
    assert "Leader" in listing


def test_pgha_back_to_patroni(patroni: Cluster) -> None:
    """The way out: pgha pause, stop the agents, start Patroni with its own files, patronictl resume."""
    c = patroni
    leader = "pnode1" if c.routed_port() == c.node("pnode1").pg_port else "pnode0"
    pids = c.postmasters()
    with Writer(c) as writer:
        c.pgha("pause", "--wait")
        c.stop_managers("agent", {n: "maintenance mode: leaving PostgreSQL running" for n in NAMES})
        assert c.postmasters() == pids, "pgha stopped PostgreSQL"
        for node in c.nodes:
            c.start_patroni(node)
        wait_for(f"Patroni on {leader} to take the leader key",
                 lambda: api(c.node(leader), "/primary")[0] == 200, timeout=90)
        c.patronictl("resume", "--wait")
        wait_for("HAProxy to route to the leader checked by Patroni",
                 lambda: c.routed_port() == c.node(leader).pg_port, timeout=60)
        for node in c.nodes:
            if node.name != leader:
                wait_for(f"{node.name} to stream under Patroni", answers(node, "/replica"),
                         timeout=90)
        writer.more()
    assert c.postmasters() == pids, "Patroni restarted a PostgreSQL"
    # One HAProxy, started once with Patroni's seed-style file, routed through both migrations.
    assert c.haproxy_pid is not None and Path(f"/proc/{c.haproxy_pid}").exists()
    assert (c.dir / "haproxy.cfg").read_text() == haproxy_cfg(c)
    listing = c.patronictl("list")
    assert leader in listing and "Leader" in listing, listing
