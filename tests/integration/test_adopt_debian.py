"""Issue 18 item 7: adopting Debian's own layout in place.

A primary made by `pg_createcluster 15 NAME` (configuration in /etc/postgresql/15/NAME with a conf.d include,
started by pg_ctlcluster with -c config_file=...) and a replica made the same way then re-cloned from it with
pg_basebackup -R.  `pgha generate-config` writes each node file from its running server (postgresql.config_dir
from the server's config_file).  A client writes the whole time while `pgha adopt` takes the primary over, then
the replica: the postmasters keep running (same PIDs), the old configuration and its include files are now
pgha's (postgresql.base.conf), the servers reload pgha's settings through the file they were started with, and
no acknowledged write is lost.  The clusters are dropped at the end (pg_dropcluster, as root); PostgreSQL runs
as postgres.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pgha.demo.procs import stop_pid
from pgha.postgres.conf import MARKER, slot_name
from pgha.probe import Probe
from tests.integration.test_adopt import postmaster_pid
from tests.support.cluster import postgres_readable_dir, wait_for
from tests.support.etcd import EtcdServer
from tests.support.procs import PG_BIN, free_port, postgres_user_kwargs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="pg_createcluster and pg_dropcluster need root"),
]

MARK = "work_mem = '7MB'   # from conf.d: pgha must carry it over"


@dataclass
class DebNode:
    cluster: str
    member: str
    port: int
    api_port: int
    dir: Path
    agent: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def etc(self) -> Path:
        return Path("/etc/postgresql/15") / self.cluster

    @property
    def node_file(self) -> Path:
        return self.dir / "pgha.yaml"

    def postmaster_pid(self) -> int | None:
        return postmaster_pid(str(self.data))

    def sql(self, query: str, password: str) -> str:
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", password=password,
                             dbname="postgres", connect_timeout=3, autocommit=True) as conn:
            row = conn.execute(query).fetchone()
        return "" if row is None else str(row[0])


def run(args: list[str], as_postgres: bool = False, env: dict[str, str] | None = None) -> str:
    kw = postgres_user_kwargs() if as_postgres else {}
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd="/", env={**os.environ, **(env or {})},
                       **kw)
    assert r.returncode == 0, f"{' '.join(args)}: {r.stdout}{r.stderr}"
    return r.stdout


def create(node: DebNode) -> None:
    """pg_createcluster with its data directory in the test's directory, and a conf.d file of the operator's."""
    node.dir.mkdir()
    kw = postgres_user_kwargs()
    os.chown(node.dir, kw["user"], kw["group"])
    run(["pg_createcluster", "15", node.cluster, "-p", str(node.port), "-d", str(node.data), "--",
         "--auth-local=peer", "--auth-host=scram-sha-256"])
    (node.etc / "conf.d" / "50-operator.conf").write_text(
        f"listen_addresses = '127.0.0.1'\nshared_buffers = 32MB\nmax_connections = 40\nfsync = off\n{MARK}\n")


def ctl(node: DebNode, action: str) -> None:
    run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", node.cluster, action])


def generate(node: DebNode, etcd: EtcdServer, cluster: str, *extra: str) -> dict[str, Any]:
    """`pgha generate-config` from the running Debian cluster (as an operator would); the timing made short for
    the test.  Returns the file's content."""
    run([sys.executable, "-m", "pgha", "generate-config", "--cluster", cluster, "--name", node.member,
         "--data-dir", str(node.data), "--etcd", etcd.url, "--connect-address", "127.0.0.1",
         "--api-listen", f"127.0.0.1:{node.api_port}", "-o", str(node.node_file), *extra])
    data: dict[str, Any] = yaml.safe_load(node.node_file.read_text())
    assert data["postgresql"]["config_dir"] == str(node.etc)  # read from the running server's config_file
    data["cluster_config"] = {"ttl": 10, "loop_wait": 1, "retry_timeout": 3}
    node.node_file.write_text(yaml.safe_dump(data))
    return data


@pytest.fixture(scope="module")
def debian(etcd: EtcdServer) -> Iterator[tuple[list[DebNode], str]]:
    tag = secrets.token_hex(3)
    with postgres_readable_dir("pgha-debian-") as tmp:
        nodes = [DebNode(f"pgha{tag}a", "deb1", free_port(), free_port(), tmp / "a"),
                 DebNode(f"pgha{tag}b", "deb2", free_port(), free_port(), tmp / "b")]
        made: list[DebNode] = []
        try:
            primary, replica = nodes
            for node in nodes:
                create(node)
                made.append(node)
            ctl(primary, "start")
            pg = generate(primary, etcd, f"deb{tag}")["postgresql"]
            password, repl = pg["superuser"]["password"], pg["replication"]["password"]
            sock = ["-h", "/var/run/postgresql", "-p", str(primary.port), "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
            run([f"{PG_BIN}/psql", *sock, "-c", f"ALTER ROLE postgres PASSWORD '{password}'",
                 "-c", f"CREATE ROLE replicator REPLICATION LOGIN PASSWORD '{repl}'",
                 "-c", f"SELECT pg_create_physical_replication_slot('{slot_name(replica.member)}')"], as_postgres=True)
            # The replica: Debian's cluster, its data replaced by a clone of the primary (pg_basebackup -R).
            run(["rm", "-rf", str(replica.data)])
            run([f"{PG_BIN}/pg_basebackup", "-D", str(replica.data), "-R", "-X", "stream", "-c", "fast",
                 "-S", slot_name(replica.member), "-d",
                 f"host=127.0.0.1 port={primary.port} user=replicator application_name={replica.member}"],
                as_postgres=True, env={"PGPASSWORD": repl})
            ctl(replica, "start")
            generate(replica, etcd, f"deb{tag}", "--secrets-from", str(primary.node_file))
            yield nodes, password
        finally:
            for node in nodes:
                if node.agent is not None:
                    stop_pid(node.agent.pid, timeout=20)
                    node.agent.wait(timeout=5)
            for node in nodes:
                pid = node.postmaster_pid()
                if pid:
                    stop_pid(pid, 2, timeout=20)
            for node in made:
                subprocess.run(["pg_dropcluster", "15", node.cluster], capture_output=True, timeout=60, check=False)
                # What pg_dropcluster does not know: the operator's conf.d file and the .pre-pgha copies.
                shutil.rmtree(node.etc, ignore_errors=True)
            subprocess.run(["etcdctl", "--endpoints", etcd.url, "del", "--prefix", f"/pgha/deb{tag}/"],
                           capture_output=True, timeout=30, check=False)


def start(node: DebNode, command: str) -> None:
    with open(node.dir / "agent.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pgha", command, "-c", str(node.node_file)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd="/", **postgres_user_kwargs())
    node.agent = proc


@contextmanager
def writing(nodes: list[DebNode], password: str) -> Iterator[Probe]:
    """A client writing to whichever member is writable (its own deadline per statement) before, during and
    after the block; then no acknowledged write may be missing."""
    ports = ",".join(str(n.port) for n in nodes)
    dsn = (f"host={','.join('127.0.0.1' for _ in nodes)} port={ports} user=postgres password={password} "
           "dbname=postgres target_session_attrs=read-write connect_timeout=2")
    probe = Probe(dsn, interval=0.02, timeout=2.0)
    probe.start()
    try:
        wait_for("writes", lambda: probe.acknowledged > 20, timeout=30)
        yield probe
        before = probe.acknowledged
        wait_for("writes after the change", lambda: probe.acknowledged > before + 30, timeout=30)
    finally:
        report = probe.stop()
    assert report.missing == 0, report.to_text()


def test_debian_layout_adopted_in_place(debian: tuple[list[DebNode], str]) -> None:
    nodes, password = debian
    primary, replica = nodes
    pids = {n.member: n.postmaster_pid() for n in nodes}
    assert all(pids.values()), pids
    with writing(nodes, password):
        start(primary, "adopt")
        wait_for("deb1 to lead", lambda: (primary.etc / "postgresql.conf").read_text().startswith(MARKER),
                 timeout=60)
        start(replica, "adopt")
        wait_for("deb2 to be pgha's", lambda: (replica.etc / "postgresql.conf").read_text().startswith(MARKER),
                 timeout=60)
        wait_for("deb2 to stream from deb1 with pgha's settings",
                 lambda: replica.sql("SELECT status FROM pg_stat_wal_receiver", password) == "streaming"
                 and "passfile" in replica.sql("SHOW primary_conninfo", password), timeout=60)
    assert {n.member: n.postmaster_pid() for n in nodes} == pids, "a PostgreSQL was restarted"
    for node in nodes:
        base = (node.data / "postgresql.base.conf").read_text()
        assert MARK in base and "conf.d/50-operator.conf" in base, base
        assert (node.etc / "postgresql.conf.pre-pgha").read_text().startswith("# -----")  # Debian's original
        assert (node.etc / "start.conf").read_text().endswith("\nmanual\n")  # postgresql.service keeps off
        # The running server still reads the file it was started with, which now includes pgha's.
        assert node.sql("SHOW config_file", password) == str(node.etc / "postgresql.conf")
        assert node.sql("SHOW work_mem", password) == "7MB"
        assert node.sql("SHOW cluster_name", password) == f"15/{node.cluster}"  # restart-only: pending
        log = (node.dir / "agent.log").read_text()
        assert "clone: pg_basebackup" not in log and "initdb: new cluster" not in log, log
    assert primary.sql("SELECT pg_is_in_recovery()", password) == "False"
    assert replica.sql("SELECT pg_is_in_recovery()", password) == "True"


def test_switchover_restarts_the_old_primary_from_pgha_files(debian: tuple[list[DebNode], str]) -> None:
    """The taken-over settings start a server: the old primary, restarted by pgha as a replica, runs from the
    data directory's files (no config_file any more) with the operator's conf.d setting, losing nothing."""
    nodes, password = debian
    primary, replica = nodes
    with writing(nodes, password):
        r = subprocess.run([sys.executable, "-m", "pgha", "switchover", "--candidate", replica.member, "--force",
                            "-c", str(primary.node_file)], capture_output=True, text=True, timeout=120, cwd="/")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for("deb1 to follow deb2", lambda: primary.sql("SELECT pg_is_in_recovery()", password) == "True",
                 timeout=60)
    assert primary.sql("SHOW config_file", password) == str(primary.data / "postgresql.conf")
    assert primary.sql("SHOW work_mem", password) == "7MB"
    assert primary.sql("SHOW cluster_name", password) == primary.member
