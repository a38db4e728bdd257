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

LINES = 40
STEADY = ("[leader-steady]", "[replica-steady]")


def agent_log_tails(demo: DemoCluster) -> str:
    if demo.state is None:
        return ""
    out = []
    for node in demo.state.nodes:
        path = Path(node.config).parent / "agent.log"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        kept = [line for line in lines if not any(s in line for s in STEADY)][-LINES:]
        out.append(f"--- {node.name} ({path}) ---\n" + "\n".join(kept))
    return "\n".join(out)


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
