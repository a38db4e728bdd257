"""What the long-running processes load: the watchdog no pgha and almost no standard library,
the agent no click (issue 10: every import stays resident for as long as a node runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pgha.agent.entry import config_path_of
from pgha.agent.watchdog import CHILD


@pytest.mark.parametrize(("args", "path"), [
    (["agent", "-c", "/etc/pgha.yaml"], "/etc/pgha.yaml"),
    (["agent", "--config", "a.yaml"], "a.yaml"),
    (["agent", "--config=a.yaml"], "a.yaml"),
    (["agent", "--config="], None),
    (["agent", "--help"], None),
    (["agent"], None),
    (["validate", "-c", "a.yaml"], None),
    (["-c", "a.yaml", "agent"], None),
    (["agent", "-c", "a.yaml", "--verbose"], None),
])
def test_only_a_plain_agent_command_skips_click(args: list[str], path: str | None) -> None:
    assert config_path_of(args) == path


def test_the_watchdog_process_imports_no_pgha_and_no_subprocess() -> None:
    code = CHILD.replace("watchdog_child.main()", "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True,
                         timeout=30).stdout.split()
    assert "watchdog_child" in out
    assert not [m for m in out if m.startswith(("pgha", "subprocess", "enum", "logging", "threading"))]


def test_the_watchdog_process_fences_when_its_agent_goes_away() -> None:
    victim = subprocess.Popen(["sleep", "60"])  # stands in for the postmaster (no children)
    dog = subprocess.Popen([sys.executable, "-I", "-S", "-c", CHILD], stdin=subprocess.PIPE)
    try:
        assert dog.stdin is not None
        dog.stdin.write(f"arm {victim.pid} {time.monotonic() + 60:.3f}\n".encode())
        dog.stdin.flush()
        dog.stdin.close()  # the agent died while its PostgreSQL was primary
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert dog.wait(timeout=10) == 0
    finally:
        for p in (victim, dog):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
