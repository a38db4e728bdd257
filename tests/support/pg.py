"""Real PostgreSQL 15 for adapter tests: node configurations in a temp dir, every server stopped after.

As root, the sandbox directory is created under /tmp (mode 0755) and each
node's directory is owned by ``postgres``, so the adapter runs PostgreSQL as
that user.  Short paths keep the Unix socket path under its 107-byte limit.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgha.config import Credentials, NodeConfig, PostgresConfig
from pgha.postgres.node import PostgresNode
from tests.support.procs import PG_BIN, pg18_bin_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


class PgSandbox:
    """Makes nodes under one temp dir and stops every postmaster they started."""

    def __init__(self, bin_dir: str = PG_BIN) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pgha-pg-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.nodes: list[PostgresNode] = []
        self.pids: set[int] = set()

    def config(self, name: str, **pg: Any) -> NodeConfig:
        node_dir = self.root / name
        node_dir.mkdir(exist_ok=True)
        os.chmod(node_dir, 0o755)
        owner = _pg_owner()
        if owner is not None:
            os.chown(node_dir, *owner)
        settings: dict[str, Any] = {
            "data_dir": str(node_dir / "data"),
            "bin_dir": self.bin_dir,
            "listen": "127.0.0.1",
            "port": free_port(),
            "superuser": Credentials("postgres", "su-secret:pw"),
            "replication": Credentials("replicator", "repl-secret"),
            "parameters": {"shared_buffers": "16MB", "max_connections": 20, "fsync": False},
            "initdb": ("--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
        }
        settings.update(pg)
        return NodeConfig(cluster="test", name=name, postgresql=PostgresConfig(**settings))

    def node(self, name: str, **pg: Any) -> PostgresNode:
        node = PostgresNode(self.config(name, **pg))
        self.nodes.append(node)
        return node

    def track(self, node: PostgresNode) -> None:
        """Remember the node's postmaster pid (call after each start)."""
        pid = node.postmaster_pid()
        if pid:
            self.pids.add(pid)

    def primary(self, name: str = "node1", **pg: Any) -> PostgresNode:
        """A running, bootstrapped primary."""
        node = self.node(name, **pg)
        node.initdb()
        node.configure(dict(node.config.postgresql.parameters), None)
        node.start(60)
        self.track(node)
        node.bootstrap_roles()
        return node

    def close(self) -> None:
        for node in self.nodes:
            pid = node.postmaster_pid()
            if pid:
                self.pids.add(pid)
                with contextlib.suppress(Exception):
                    node.stop("immediate", 10)
        for pid in self.pids:
            _kill(pid)
        shutil.rmtree(self.root, ignore_errors=True)


def _kill(pid: int) -> None:
    """SIGKILL ``pid`` if it is still a postgres process, and wait briefly for it to go."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            if not f.read().startswith("postgres"):
                return
        os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ProcessLookupError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)


@pytest.fixture
def pg_sandbox() -> Iterator[PgSandbox]:
    box = PgSandbox()
    try:
        yield box
    finally:
        box.close()


@pytest.fixture(scope="session")
def pg18_bin() -> str:
    """PostgreSQL 18's bin directory; outside CI a test that needs it is skipped when it is not installed."""
    path = pg18_bin_dir()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL 18 is not installed: run 'make pg18' (make test does)")
        pytest.skip("PostgreSQL 18 is not installed: run 'make pg18'")
    return path
