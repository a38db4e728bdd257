"""Issue 9 part 5 acceptance: pgha adopts a running PostgreSQL cluster it did not create.

A plain primary and two streaming replicas are built with initdb and pg_basebackup -R only
(slots named after the members, as Patroni names them; wal_log_hints on, as pg_rewind needs),
and started.  A client writes through a multi-host DSN the whole time.  Then the primary's
agent starts with `pgha adopt` and the replicas' with `bootstrap.adopt: true` in their node
files: nothing restarts, nothing is cloned, no acknowledged write is lost, and a switchover
works afterwards.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from click.testing import CliRunner, Result

from pgha.cli.main import _register, cli
from pgha.demo import DemoCluster
from pgha.demo.procs import stop_pid
from pgha.demo.state import DemoState
from tests.support.cluster import free_port_base, postgres_readable_dir, wait_for
from tests.support.faults import client_writing, wait_new_leader
from tests.support.procs import PG_BIN, free_port, postgres_user_kwargs

pytestmark = pytest.mark.integration

NAMES = ("node1", "node2", "node3")


def as_postgres(args: list[str], env: dict[str, str] | None = None) -> None:
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd="/",
                       env={**os.environ, **(env or {})}, **postgres_user_kwargs())
    assert r.returncode == 0, f"{' '.join(args)}: {r.stderr or r.stdout}"


def postmaster_pid(data_dir: str) -> int | None:
    try:
        return int((Path(data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


class PlainCluster:
    """A primary and its replicas made the way an operator (or Patroni) would, without pgha."""

    def __init__(self, demo: DemoCluster, password: str, repl_password: str) -> None:
        assert demo.state is not None
        self.demo = demo
        self.bin = demo.pg_bin
        self.nodes = demo.state.nodes
        self.password = password
        self.repl_password = repl_password

    def build(self) -> None:
        bin_dir = self.bin
        primary, *replicas = self.nodes
        pw = Path(primary.data_dir).parent / "initdb.pw"
        pw.write_text(self.password + "\n")
        os.chown(pw, *_owner())
        as_postgres([f"{bin_dir}/initdb", "-D", primary.data_dir, "-U", "postgres", "--pwfile", str(pw),
                     "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                     "--no-sync"])
        pw.unlink()
        self._append_conf(primary.data_dir, primary.pg_port)
        self._start(primary.data_dir)
        sql = (f"CREATE ROLE replicator REPLICATION LOGIN PASSWORD '{self.repl_password}';"
               + "".join(f"SELECT pg_create_physical_replication_slot('{r.name}');" for r in replicas))
        as_postgres([f"{bin_dir}/psql", "-h", str(Path(primary.data_dir).parent), "-p", str(primary.pg_port),
                     "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql])
        for r in replicas:
            as_postgres([f"{bin_dir}/pg_basebackup", "-D", r.data_dir, "-R", "-X", "stream", "-c", "fast",
                         "-S", r.name, "-d",
                         f"host=127.0.0.1 port={primary.pg_port} user=replicator application_name={r.name}"],
                        env={"PGPASSWORD": self.repl_password})
            self._append_conf(r.data_dir, r.pg_port)
            (Path(r.data_dir) / "adopt-test-marker").write_text("a re-clone would remove this file\n")
            self._start(r.data_dir)

    def _append_conf(self, data_dir: str, port: int) -> None:
        # The node's own directory for the socket: not pgha's pg_socket/, so the agent must find it.
        with open(Path(data_dir) / "postgresql.conf", "a") as f:
            f.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{Path(data_dir).parent}'\n"
                    "wal_log_hints = on\nshared_buffers = 32MB\nmax_connections = 50\nfsync = off\n")

    def _start(self, data_dir: str) -> None:
        as_postgres([f"{self.bin}/pg_ctl", "start", "-D", data_dir, "-w", "-t", "60", "-s",
                     "-l", str(Path(data_dir).parent / "postgresql.log")])

    def stop(self) -> None:
        for n in self.nodes:
            pid = postmaster_pid(n.data_dir)
            if pid:
                stop_pid(pid, 2, timeout=20)  # SIGINT: fast shutdown


def _owner() -> tuple[int, int]:
    kw = postgres_user_kwargs()
    return (kw["user"], kw["group"]) if kw else (os.getuid(), os.getgid())


@pytest.fixture(scope="module", params=["15", "18"])
def adopted(request: pytest.FixtureRequest) -> Iterator[tuple[DemoCluster, PlainCluster]]:
    """etcd, the node files (bootstrap.adopt on) and the plain cluster, running; no agent yet.

    Once on Debian's PostgreSQL 15 and once on 18 (`make pg18`)."""
    pg_bin = PG_BIN if request.param == "15" else request.getfixturevalue("pg18_bin")
    with postgres_readable_dir("pgha-adopt-") as tmp:
        demo = DemoCluster(tmp / "cluster", nodes=3, port_base=free_port_base(3), ttl=6.0, say=lambda s: None,
                           extra_node_config={"*": {"bootstrap": {"adopt": True}}}, pg_bin=pg_bin)
        plain: PlainCluster | None = None
        demo.dir.mkdir(parents=True)
        os.chmod(demo.dir, 0o755)
        try:
            etcd_pid = demo._start_dcs()
            # What `demo up` does before it starts the agents (which it would let initdb and clone).
            demo.state = DemoState(cluster=demo.cluster, etcd=demo.etcd_url, etcd_pid=etcd_pid, dir=str(demo.dir),
                                   client_netns=None, vip=None, api_netrc=str(demo.api_netrc),
                                   api_ca=str(demo.api_ca) if demo.api_tls else "")
            demo._write_api_credentials()
            password, repl_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
            for i in range(1, 4):
                demo.state.nodes.append(demo._write_node(i, password, repl_password))
            passfile = demo.dir / "pgpass"
            passfile.write_text("".join(f"127.0.0.1:{n.pg_port}:*:postgres:{password}\n" for n in demo.state.nodes))
            os.chmod(passfile, 0o600)
            demo._save()
            plain = PlainCluster(demo, password, repl_password)
            plain.build()
            yield demo, plain
        finally:
            if demo.state is not None:
                demo.down()
            if plain is not None:
                plain.stop()


def pgha(demo: DemoCluster, *args: str) -> Result:
    _register()
    return CliRunner().invoke(cli, [*args, "--dcs", demo.etcd_url, "--cluster", demo.cluster])


def adopt_check(demo: DemoCluster, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgha", "adopt", "--check", "-c", demo.node(name).config],
                          capture_output=True, text=True, timeout=60, cwd="/")


def start_adopt(demo: DemoCluster, name: str) -> None:
    """`pgha adopt -c FILE` as the postgres user, stopped by PID with the demo."""
    node = demo.node(name)
    with open(Path(node.config).parent / "agent.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pgha", "adopt", "-c", node.config], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd="/", **postgres_user_kwargs())
    demo.procs[proc.pid] = proc
    node.agent_pid = proc.pid
    demo._save()


def agent_log(demo: DemoCluster, name: str) -> str:
    return (Path(demo.node(name).config).parent / "agent.log").read_text()


def test_adopt_in_place_then_switchover(adopted: tuple[DemoCluster, PlainCluster]) -> None:
    demo, _plain = adopted
    data = {n: demo.node(n).data_dir for n in NAMES}
    pids = {n: postmaster_pid(data[n]) for n in NAMES}
    inodes = {n: os.stat(data[n]).st_ino for n in NAMES}

    # A replica cannot be adopted first: one line, exit 1, nothing started.
    r = adopt_check(demo, "node2")
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "replica" in r.stderr and "primary first" in r.stderr, r.stderr
    r = adopt_check(demo, "node1")
    assert r.returncode == 0 and "as the leader of new cluster" in r.stderr, r.stderr

    with client_writing(demo):
        start_adopt(demo, "node1")
        wait_for("node1 to lead", lambda: demo.view().leader is not None, timeout=60)
        for name in ("node2", "node3"):
            demo.start_agent(name)  # `pgha agent` with bootstrap.adopt: true in the node file
        view = demo.wait_healthy(timeout=90)

    assert view.leader is not None and view.leader.name == "node1"
    for name in NAMES:
        assert postmaster_pid(data[name]) == pids[name], f"{name}'s PostgreSQL was restarted"
        assert os.stat(data[name]).st_ino == inodes[name], f"{name}'s data directory was replaced"
        log = agent_log(demo, name)
        assert "clone: pg_basebackup" not in log and "initdb: new cluster" not in log, log
    for name in ("node2", "node3"):
        assert (Path(data[name]) / "adopt-test-marker").exists(), f"{name} was cloned again"
        assert view.members[name].state == "streaming" and view.members[name].following == "node1"
    assert view.members["node1"].pending_restart, "wal_log_hints etc. differ: a restart should be pending"
    # The slots the replicas used before are kept and now pgha's.
    assert (Path(data["node1"]) / "pgha.slots").read_text().split("\n")[1:3] == ["node2", "node3"]
    listing = pgha(demo, "list")
    assert listing.exit_code == 0, listing.output
    rows = {cells[0]: cells[1:] for ln in listing.output.splitlines()
            if (cells := [c.strip() for c in ln.strip("|").split("|")])[0] in NAMES}
    assert rows["node1"][1:3] == ["Leader", "running"], listing.output
    assert [rows[n][1:3] for n in ("node2", "node3")] == [["Replica", "streaming"]] * 2, listing.output

    # A switchover works on the adopted cluster, losing nothing.
    with client_writing(demo):
        r2 = pgha(demo, "switchover", "--candidate", "node2", "--force")
        assert r2.exit_code == 0, r2.output
        wait_new_leader(demo, "node1")
        demo.wait_healthy(timeout=90)
    assert demo.view().leader.name == "node2"  # type: ignore[union-attr]
    assert (Path(data["node3"]) / "adopt-test-marker").exists()


def test_adopt_refuses_another_clusters_data(adopted: tuple[DemoCluster, PlainCluster]) -> None:
    """Adopting a data directory whose system identifier is not the cluster's: one line, exit 1."""
    demo, _plain = adopted
    wait_for("the cluster to be initialized", lambda: demo.view().system_id is not None, timeout=60)
    other = Path(demo.node("node3").data_dir).parent.parent / "other"
    other.mkdir()
    os.chown(other, *_owner())
    as_postgres([f"{demo.pg_bin}/initdb", "-D", str(other / "data"), "-U", "postgres", "--no-sync"])
    cfg = yaml.safe_load(Path(demo.node("node3").config).read_text())
    cfg["postgresql"].update(data_dir=str(other / "data"), port=free_port())
    cfg["api"]["listen"] = f"127.0.0.1:{free_port()}"
    path = other / "pgha.yaml"
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)  # it holds passwords (a world-readable one adds a warning line)
    r = subprocess.run([sys.executable, "-m", "pgha", "adopt", "--check", "-c", str(path)],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "another cluster's data" in r.stderr, r.stderr


def test_rollback_leaves_postgresql_running(adopted: tuple[DemoCluster, PlainCluster]) -> None:
    """The way back (docs/operations.md): `pgha pause`, stop the agents; PostgreSQL keeps running."""
    demo, _plain = adopted
    demo.wait_healthy(timeout=90)
    leader = demo.view().leader
    assert leader is not None
    data = {n: demo.node(n).data_dir for n in NAMES}
    pids = {n: postmaster_pid(data[n]) for n in NAMES}
    r = pgha(demo, "pause", "--wait")
    assert r.exit_code == 0, r.output
    for name in NAMES:
        demo.stop_agent(name)
        assert "maintenance mode: leaving PostgreSQL running" in agent_log(demo, name)
    assert {n: postmaster_pid(data[n]) for n in NAMES} == pids
    assert all(pid is not None and os.path.exists(f"/proc/{pid}") for pid in pids.values())
    with psycopg.connect(demo.node(leader.name).dsn, autocommit=True, connect_timeout=3) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS after_rollback (id int)")
        conn.execute("INSERT INTO after_rollback VALUES (1)")
