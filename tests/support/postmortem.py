"""When a test on a real cluster fails, its report carries the end of every agent's log.

CI keeps only the test output: without this, a failure there would name the assertion but
not what the agents decided.  Only lines that changed decision are kept (the steady rules
repeat every loop), the last ``LINES`` of each node.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pgha.demo import DemoCluster
from pgha.faults.report import agent_log_tails


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
