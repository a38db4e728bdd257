"""Fault injection for cluster tests and benchmarks: host death, frozen agents, split-brain watch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from pgha.demo import DemoCluster
from pgha.faults.procs import (  # noqa: F401  (re-exported for the tests)
    freeze_host,
    host_pids,
    kill_agent,
    kill_frozen,
    kill_host,
    postmaster_pid,
    restart_node,
    wait_new_leader,
)
from pgha.probe import Probe, probe_each
from tests.support.cluster import connect, wait_for


def walsender_pid(demo: DemoCluster, primary: str, replica: str) -> int:
    """The primary's walsender for ``replica``; freezing it keeps WAL from ever being sent
    (freezing the replica's receiver would not: the kernel still buffers what arrives)."""
    with connect(demo, primary) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_replication WHERE application_name = %s", (replica,)).fetchone()
    assert row is not None, f"{primary} has no walsender for {replica}"
    return int(row[0])


def node_dsns(demo: DemoCluster) -> dict[str, str]:
    assert demo.state is not None
    return {n.name: n.dsn + " connect_timeout=2" for n in demo.state.nodes}


def multi_host_dsn(demo: DemoCluster) -> str:
    assert demo.state is not None
    hosts = ",".join("127.0.0.1" for _ in demo.state.nodes)
    ports = ",".join(str(n.pg_port) for n in demo.state.nodes)
    return (f"host={hosts} port={ports} user=postgres dbname=postgres target_session_attrs=read-write "
            f"passfile={demo.dir / 'pgpass'} connect_timeout=2")


def writable_nodes(demo: DemoCluster, timeout: float = 1.0) -> list[str]:
    """Members that accept (and acknowledge) a write right now, tried directly."""
    dsns = node_dsns(demo)
    result = probe_each(list(dsns.values()), timeout=timeout)
    return sorted(name for name, dsn in dsns.items() if result.get(dsn))


class NodeSetWatch:
    """Samples a set of node names in the background (``sample()``), remembering the largest
    set seen at once and every change."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples = 0
        self.max_seen = 0
        self.worst: list[str] = []
        # (monotonic time, names) at every change, starting with the first sample.
        self.changes: list[tuple[float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def sample(self) -> list[str]:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            names = tuple(self.sample())
            now = time.monotonic()
            self.samples += 1
            if len(names) > self.max_seen:
                self.max_seen, self.worst = len(names), list(names)
            if not self.changes or self.changes[-1][1] != names:
                self.changes.append((now, names))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class SplitBrainWatch(NodeSetWatch):
    """Polls every node directly in the background and remembers the most writable at once."""

    def __init__(self, demo: DemoCluster, interval: float = 0.2) -> None:
        super().__init__(interval)
        self.demo = demo

    def sample(self) -> list[str]:
        return writable_nodes(self.demo)

    @property
    def max_writable(self) -> int:
        return self.max_seen


@contextmanager
def client_writing(demo: DemoCluster, warmup: int = 50, timeout: float = 30.0) -> Iterator[Probe]:
    """A client writing through the multi-host DSN (psycopg's defaults, target_session_attrs=read-write,
    a deadline per statement) before, during and after the block, which moves the leader; then no
    acknowledged write may be missing, and at no sample (every 50 ms) were two members writable."""
    probe = Probe(multi_host_dsn(demo), interval=0.01)
    probe.start()
    try:
        with SplitBrainWatch(demo, interval=0.05) as watch:
            wait_for("probe writes", lambda: probe.acknowledged > warmup, timeout=timeout)
            yield probe
            before = probe.acknowledged
            wait_for("writes after the change", lambda: probe.acknowledged > before + warmup, timeout=timeout)
    finally:
        report = probe.stop()
    assert report.missing == 0, report.to_text()
    assert watch.max_writable <= 1, f"two writable primaries: {watch.worst}"
    assert watch.samples > 10
