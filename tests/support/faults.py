"""Fault injection for cluster tests and benchmarks: host death, frozen agents, split-brain watch."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Self

from pgha.agent.watchdog import children_of
from pgha.demo import DemoCluster, pid_alive
from pgha.probe import probe_each
from tests.support.cluster import connect


def postmaster_pid(demo: DemoCluster, name: str) -> int | None:
    try:
        return int((Path(demo.node(name).data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _kill_tree(pid: int) -> None:
    """SIGSTOP first so nothing is restarted, then SIGKILL the process and its children."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    for child in children_of(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def walsender_pid(demo: DemoCluster, primary: str, replica: str) -> int:
    """The primary's walsender for ``replica``; freezing it keeps WAL from ever being sent
    (freezing the replica's receiver would not: the kernel still buffers what arrives)."""
    with connect(demo, primary) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_replication WHERE application_name = %s", (replica,)).fetchone()
    assert row is not None, f"{primary} has no walsender for {replica}"
    return int(row[0])


def kill_host(demo: DemoCluster, name: str) -> None:
    """Everything of that node dies at once: agent, its watchdog, postmaster and backends (and its
    PgBouncer, when the demo runs one)."""
    node = demo.node(name)
    agent = node.agent_pid
    pm = postmaster_pid(demo, name)
    _kill_tree(agent)
    if pm is not None:
        _kill_tree(pm)
    if node.pgbouncer_pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pgbouncer_pid, signal.SIGKILL)
        demo.stop_pgbouncer(name)
    demo.reap(agent, signal.SIGKILL, timeout=5)


def host_pids(demo: DemoCluster, name: str) -> list[int]:
    """Every process of a node: agent, its children (watchdog), postmaster and backends."""
    agent = demo.node(name).agent_pid
    pm = postmaster_pid(demo, name)
    pids = [agent, *children_of(agent)]
    if pm is not None:
        pids += [pm, *children_of(pm)]
    return pids


def freeze_host(demo: DemoCluster, name: str) -> list[int]:
    """A host that vanishes silently: every process stopped, so nothing refuses a connection
    (the kernel still accepts TCP handshakes) and only the lease can tell it is gone."""
    pids = host_pids(demo, name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    return pids


def kill_frozen(demo: DemoCluster, name: str, pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    demo.reap(demo.node(name).agent_pid, signal.SIGKILL, timeout=5)


def kill_agent(demo: DemoCluster, name: str) -> None:
    """Only the agent dies (SIGKILL); its PostgreSQL is left to the watchdog."""
    agent = demo.node(name).agent_pid
    demo.reap(agent, signal.SIGKILL, timeout=5)


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


def wait_new_leader(demo: DemoCluster, old: str, timeout: float = 60.0) -> str:
    """Wait until a member other than ``old`` holds the key and runs as primary."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            view = demo.view()
            if view.leader is not None and view.leader.name != old:
                m = view.members.get(view.leader.name)
                if m is not None and m.role.value == "primary" and m.state == "running":
                    return view.leader.name
        time.sleep(0.1)
    raise AssertionError(f"no new leader within {timeout:.0f}s after {old}")


def restart_node(demo: DemoCluster, name: str) -> None:
    """Bring a node back: stop leftovers of its previous life, start its agent again."""
    node = demo.node(name)
    if pid_alive(node.agent_pid):
        demo.stop_agent(name)
    if node.pgbouncer_port is not None and not pid_alive(node.pgbouncer_pid or 0):
        demo.start_pgbouncer(name)
    demo.start_agent(name)
