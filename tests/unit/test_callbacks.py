"""User hooks: arguments, logging, never blocking fire(), timeouts, pre_promote vetoes."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgha.config import CallbacksConfig
from pgha.routing.callbacks import CallbackRunner

LOG = logging.getLogger("test.hooks")


def hook(tmp_path: Path, body: str) -> str:
    """A Python hook script; returns the command line for the config."""
    script = tmp_path / "hook.py"
    script.write_text("import sys, time, os\n" + body)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_fire_passes_event_role_cluster_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "calls"
    cmd = hook(tmp_path, f"open({str(out)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')")
    runner = CallbackRunner(CallbacksConfig(on_role_change=cmd, on_start=cmd), "main", LOG)
    with caplog.at_level(logging.INFO, logger="test.hooks"):
        runner.fire("on_start", "replica")
        runner.fire("on_role_change", "primary")
        runner.fire("on_stop", "primary")  # not configured: nothing runs
        assert runner.wait_idle()
    assert out.read_text().splitlines() == ["on_start replica main", "on_role_change primary main"]
    runs = [r.getMessage() for r in caplog.records if "exit code 0" in r.getMessage()]
    assert len(runs) == 2 and runs[1].startswith("hook on_role_change primary: exit code 0 in ")


def test_slow_hook_does_not_block_fire(tmp_path: Path) -> None:
    done = tmp_path / "done"
    cmd = hook(tmp_path, f"time.sleep(1.0); open({str(done)!r}, 'w').write('x')")
    runner = CallbackRunner(CallbacksConfig(on_reload=cmd), "main", LOG)
    runner.fire("on_reload", "primary")
    assert not done.exists()  # fire() returned while the hook still sleeps
    assert runner.wait_idle()
    assert done.exists()


def test_timeout_kills_the_hook_and_its_children(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pidfile = tmp_path / "pid"
    body = ("import subprocess\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
            "time.sleep(60)\n")
    # Long enough for the hook to start its child and write the pid even on a busy machine.
    runner = CallbackRunner(CallbacksConfig(on_stop=hook(tmp_path, body), timeout=3.0), "main", LOG)
    with caplog.at_level(logging.WARNING, logger="test.hooks"):
        result = runner.run("on_stop", "replica")
    assert result.returncode is None and "timeout" in result.reason
    assert any("killed after the 3s timeout" in r.getMessage() for r in caplog.records)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(child)


def test_pre_promote_allows_on_zero_and_without_a_hook(tmp_path: Path) -> None:
    assert CallbackRunner(CallbacksConfig(), "main", LOG).pre_promote("primary")
    runner = CallbackRunner(CallbacksConfig(pre_promote=hook(tmp_path, "sys.exit(0)")), "main", LOG)
    assert runner.pre_promote("primary")


def test_pre_promote_veto_on_non_zero_exit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cmd = hook(tmp_path, "print('replica too far behind', file=sys.stderr); sys.exit(1)")
    runner = CallbackRunner(CallbacksConfig(pre_promote=cmd), "main", LOG)
    with caplog.at_level(logging.WARNING, logger="test.hooks"):
        assert not runner.pre_promote("primary")
    assert any("vetoed the promotion: exit code 1: replica too far behind" in r.getMessage()
               for r in caplog.records)


def test_pre_promote_veto_on_timeout(tmp_path: Path) -> None:
    runner = CallbackRunner(CallbacksConfig(pre_promote=hook(tmp_path, "time.sleep(30)"), timeout=0.3),
                            "main", LOG)
    assert not runner.pre_promote("primary")


def test_pre_promote_veto_when_hook_is_missing(tmp_path: Path) -> None:
    runner = CallbackRunner(CallbacksConfig(pre_promote=str(tmp_path / "nope")), "main", LOG)
    assert not runner.pre_promote("primary")


def test_flood_is_bounded_and_runs_in_order(tmp_path: Path) -> None:
    out = tmp_path / "calls"
    cmd = hook(tmp_path, f"time.sleep(0.05); open({str(out)!r}, 'a').write(sys.argv[2] + '\\n')")
    runner = CallbackRunner(CallbacksConfig(on_role_change=cmd), "main", LOG)
    for i in range(100):
        runner.fire("on_role_change", f"r{i}")
    assert runner.dropped > 0
    assert runner.wait_idle(timeout=60)
    roles = out.read_text().split()
    assert roles == sorted(roles, key=lambda r: int(r[1:])) and len(roles) == 100 - runner.dropped


def _caps(status: str) -> dict[str, int]:
    pairs = (line.split(":", 1) for line in status.splitlines() if line.startswith("Cap"))
    return {k: int(v.strip(), 16) for k, v in pairs}


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(), reason="needs root and setpriv")
def test_hooks_run_without_the_agents_network_capabilities(tmp_path: Path) -> None:
    """An agent holding CAP_NET_ADMIN and CAP_NET_RAW as ambient capabilities (as systemd gives them for
    the VIP) runs its hooks without them: no ambient or inheritable set, and (as root) not in the bounding set."""
    out = tmp_path / "caps"
    cmd = hook(tmp_path, f"open({str(out)!r}, 'w').write(open('/proc/self/status').read())")
    agent = ("import logging, sys; from pgha.config import CallbacksConfig; "
             "from pgha.routing.callbacks import CallbackRunner; "
             f"r = CallbackRunner(CallbacksConfig(on_start={cmd!r}), 'main', logging.getLogger()); "
             "sys.exit(r.run('on_start', 'primary').returncode)")
    before = subprocess.run(["/usr/bin/setpriv", "--inh-caps=+net_admin,+net_raw",
                             "--ambient-caps=+net_admin,+net_raw", "--", sys.executable, "-c",
                             "print(open('/proc/self/status').read())"], capture_output=True, text=True, check=True)
    net = (1 << 12) | (1 << 13)
    assert _caps(before.stdout)["CapAmb"] == net  # the stand-in agent holds them
    subprocess.run(["/usr/bin/setpriv", "--inh-caps=+net_admin,+net_raw", "--ambient-caps=+net_admin,+net_raw",
                    "--", sys.executable, "-c", agent], check=True, timeout=30)
    caps = _caps(out.read_text())
    assert caps["CapAmb"] == 0 and caps["CapInh"] == 0
    assert caps["CapBnd"] & net == 0 and caps["CapEff"] & net == 0
