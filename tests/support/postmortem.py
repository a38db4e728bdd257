"""When a test on a real cluster fails, its report carries the end of every agent's log.

CI keeps only the test output: without this, a failure there would name the assertion but
not what the agents decided.  Only lines that changed decision are kept (the steady rules
repeat every loop), the last ``LINES`` of each node.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pgha.demo import DemoCluster
from pgha.faults.report import agent_log_tails
from pgha.postgres.processes import describe_tree


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, DemoCluster):
            text = agent_log_tails(value)
            if text:
                report.sections.append((f"agent logs of fixture {name!r}", text))
            report.sections.append((f"DCS of fixture {name!r} at the failure", dcs_state(value)))
            report.sections.append((f"PostgreSQL of fixture {name!r} at the failure", postgres_state(value)))


PG_LOG_LINES = 12


def postgres_state(demo: DemoCluster) -> str:
    """Each node's PostgreSQL processes with their state letter (R, S, D, T: a stopped or stuck
    process shows here), and the end of its server log."""
    if demo.state is None:
        return ""
    out = []
    for node in demo.state.nodes:
        data = Path(node.data_dir)
        out.append(f"--- {node.name} ---")
        try:
            pm = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
            out.append("  " + (describe_tree(pm) or f"{pm}: not running"))
        except (OSError, ValueError):
            out.append("  no postmaster.pid")
        try:
            log = (data.parent / "postgresql.log").read_text(errors="replace").splitlines()
            out += ["  | " + line for line in log[-PG_LOG_LINES:]]
        except OSError:
            pass
    return "\n".join(out)


def dcs_state(demo: DemoCluster) -> str:
    """The leader key (and how long its lease has left) and each member key, as the DCS holds them now."""
    try:
        view = demo.view()
        lines = [f"revision {view.revision}"]
        if view.leader is None:
            lines.append("leader: none")
        else:
            lease = view.leader.lease_id
            ttl = demo.store().kv.time_to_live(lease) if lease else None
            lines.append(f"leader: {view.leader.name} (lease {lease:x}, {ttl} s left)")
        for m in view.members.values():
            lines.append(f"member {m.name}: role {m.role}, state {m.state}, lease {m.lease_id:x}, "
                         f"following {m.following}")
        return "\n".join(lines)
    except Exception as exc:  # a report must not fail the report
        return f"cannot read the DCS: {exc}"
