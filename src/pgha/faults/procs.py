"""Process faults on a demo cluster: kill or freeze an agent, a postmaster or a whole host,
and bring a node back.  Shared by the fault suite and the integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from pgha.demo import DemoCluster, pid_alive
from pgha.postgres.processes import children_of


def postmaster_pid(demo: DemoCluster, name: str) -> int | None:
    try:
        return int((Path(demo.node(name).data_dir) / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def kill_tree(pid: int) -> None:
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


def kill_host(demo: DemoCluster, name: str) -> None:
    """Everything of that node dies at once: agent, its watchdog, postmaster and backends (and its
    PgBouncer, when the demo runs one)."""
    node = demo.node(name)
    agent = node.agent_pid
    pm = postmaster_pid(demo, name)
    kill_tree(agent)
    if pm is not None:
        kill_tree(pm)
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


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def freeze_host(demo: DemoCluster, name: str) -> list[int]:
    """A host that vanishes silently: every process stopped, so nothing refuses a connection
    (the kernel still accepts TCP handshakes) and only the lease can tell it is gone."""
    pids = host_pids(demo, name)
    signal_all(pids, signal.SIGSTOP)
    return pids


def kill_frozen(demo: DemoCluster, name: str, pids: list[int]) -> None:
    signal_all(pids, signal.SIGKILL)
    signal_all(pids, signal.SIGCONT)
    demo.reap(demo.node(name).agent_pid, signal.SIGKILL, timeout=5)


def kill_agent(demo: DemoCluster, name: str) -> None:
    """Only the agent dies (SIGKILL); its PostgreSQL is left to the watchdog."""
    demo.reap(demo.node(name).agent_pid, signal.SIGKILL, timeout=5)


def restart_node(demo: DemoCluster, name: str) -> None:
    """Bring a node back: stop leftovers of its previous life, start its agent again."""
    node = demo.node(name)
    if pid_alive(node.agent_pid):
        demo.stop_agent(name)
    if node.pgbouncer_port is not None and not pid_alive(node.pgbouncer_pid or 0):
        demo.start_pgbouncer(name)
    demo.start_agent(name)


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
