"""A real cluster for integration tests: the demo harness on a free port range in a temp dir."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from pgha.demo import DemoCluster
from pgha.preflight import port_free


def free_port_base(nodes: int) -> int:
    """A base P such that P, P+1 and P+10i, P+10i+1, P+10i+2 are free for every node."""
    for _ in range(200):
        base = random.randrange(20000, 32000, 100)  # below the ephemeral range
        ports = [base, base + 1] + [base + 10 * i + k for i in range(1, nodes + 1) for k in range(3)]
        if all(port_free("127.0.0.1", p) for p in ports):
            return base
    raise RuntimeError("no free port range found")


@contextmanager
def postgres_readable_dir(prefix: str = "pgha-test-") -> Iterator[Path]:
    """A temp dir the postgres user can traverse (pytest's own tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        # PGHA_TEST_KEEP=1 keeps the directory (agent, PostgreSQL and etcd logs) for a post-mortem.
        if os.environ.get("PGHA_TEST_KEEP"):
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def running_cluster(nodes: int = 3, backup: bool = False, **kw: Any) -> Iterator[DemoCluster]:
    """Start a cluster (with a pgBackRest repository host: ``backup``), yield it, and stop every process
    it started (by PID), even on failure."""
    with postgres_readable_dir() as tmp:
        demo = DemoCluster(tmp / "cluster", nodes=nodes, port_base=free_port_base(nodes), say=lambda s: None,
                           **kw)
        demo.backup = backup
        try:
            demo.up(timeout=180 if backup else 120)
            yield demo
        finally:
            if demo.state is not None:
                demo.down()


def connect(demo: DemoCluster, name: str, **kw: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(demo.node(name).dsn, autocommit=True, connect_timeout=3, **kw)


def leader_name(demo: DemoCluster) -> str:
    view = demo.view()
    assert view.leader is not None
    return view.leader.name


def replicas(demo: DemoCluster) -> list[str]:
    lead = leader_name(demo)
    assert demo.state is not None
    return [n.name for n in demo.state.nodes if n.name != lead]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the condition may raise while the cluster is changing
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_exc})")
