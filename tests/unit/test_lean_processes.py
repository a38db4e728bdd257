"""What the long-running processes load: the watchdog is bash and its builtins (no interpreter),
the agent loads no click (issue 10: every import stays resident for as long as a node runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgha.agent.entry import config_path_of
from pgha.agent.watchdog import BASH, SCRIPT, Watchdog
from pgha.postgres.processes import start_ticks
from tests.support.cluster import wait_for


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


def _dog() -> subprocess.Popen[bytes]:
    return subprocess.Popen([BASH, str(SCRIPT)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)


def _postmaster() -> subprocess.Popen[bytes]:
    """Stands in for the postmaster: a process with a child of its own."""
    return subprocess.Popen(["/bin/sh", "-c", "sleep 60 & wait"])


def _children(pid: int) -> list[int]:
    from pgha.postgres.processes import children_of

    return children_of(pid)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _send(dog: subprocess.Popen[bytes], line: str) -> None:
    assert dog.stdin is not None
    dog.stdin.write(line.encode() + b"\n")
    dog.stdin.flush()


def _cleanup(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        for stream in (p.stdin, p.stderr):
            if stream is not None:
                stream.close()


def test_the_watchdog_process_is_bash_and_its_builtins() -> None:
    """It must outlive a dead agent for as long as the node runs: no interpreter stays resident,
    and it runs no program but `ip` (to drop the VIP after fencing)."""
    text = SCRIPT.read_text()
    assert text.startswith("#!/bin/bash")
    commands = {line.split()[0] for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")}
    assert not commands & {"sleep", "python3", "pkill", "ps", "cat", "date", "awk", "sed"}


def test_the_watchdog_process_fences_when_its_agent_goes_away() -> None:
    victim, dog = _postmaster(), _dog()
    try:
        wait_for("the stand-in's child", lambda: _children(victim.pid))
        child = _children(victim.pid)[0]
        _send(dog, f"arm {victim.pid} 60000")
        assert dog.stdin is not None
        dog.stdin.close()  # the agent died while its PostgreSQL was primary
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert dog.wait(timeout=10) == 0
        wait_for("the child killed too", lambda: _gone(child))
        assert dog.stderr is not None and b"agent gone while primary" in dog.stderr.read()
    finally:
        _cleanup(victim, dog)


def test_the_watchdog_process_fences_when_its_deadline_passes() -> None:
    victim, dog = _postmaster(), _dog()
    try:
        _send(dog, f"arm {victim.pid} 300")  # the agent froze after this line
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert dog.poll() is None, "it keeps watching (a restarted agent arms it again)"
        _send(dog, "disarm")
        assert dog.stdin is not None
        dog.stdin.close()
        assert dog.wait(timeout=10) == 0
        assert dog.stderr is not None and b"deadline passed, fencing PostgreSQL" in dog.stderr.read()
    finally:
        _cleanup(victim, dog)


def test_a_renewed_or_disarmed_watchdog_fences_nothing() -> None:
    victim, dog = _postmaster(), _dog()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # renewals every 0.1 s, each with 0.5 s to spare
            _send(dog, f"arm {victim.pid} 500")
            time.sleep(0.1)
        _send(dog, "disarm")
        time.sleep(0.8)
        _send(dog, "arm nonsense 5")  # a garbled line is ignored, not obeyed
        assert dog.stdin is not None
        dog.stdin.close()  # a clean agent shutdown: disarmed, then the pipe closes
        assert dog.wait(timeout=10) == 0
        assert victim.poll() is None
    finally:
        _cleanup(victim, dog)


def test_a_watchdog_armed_for_an_exited_postmaster_kills_nothing() -> None:
    """The pid comes with the postmaster's start time: once that process exited, whatever got its
    pid since (pid_max is often 32768, and CI wraps it) is not fenced."""
    bystander, dog = _postmaster(), _dog()
    try:
        start = start_ticks(bystander.pid)
        assert start is not None
        _send(dog, f"arm {bystander.pid} 200 {start + 1}")  # as if its pid had been reused
        time.sleep(1.0)
        assert bystander.poll() is None
        _send(dog, f"arm {bystander.pid} 200 {start}")  # the real one is fenced
        assert bystander.wait(timeout=10) == -signal.SIGKILL
        assert dog.stdin is not None
        dog.stdin.close()
        assert dog.wait(timeout=10) == 0
        assert dog.stderr is not None
        err = dog.stderr.read().decode()
        assert f"pid {bystander.pid} is not the postmaster it was armed for" in err
        assert "no word from the agent for" in err and "since it armed with 200 ms" in err
    finally:
        _cleanup(bystander, dog)


def test_lines_that_arm_nothing_do_not_push_the_deadline() -> None:
    victim, dog = _postmaster(), _dog()
    try:
        _send(dog, f"arm {victim.pid} 500")
        armed = time.monotonic()
        while victim.poll() is None and time.monotonic() - armed < 3:
            _send(dog, "arm nonsense 5000")  # garbled: ignored, and no renewal either
            time.sleep(0.1)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert time.monotonic() - armed < 2
    finally:
        _cleanup(victim, dog)


def test_the_agents_side_never_rearms_what_it_disarmed() -> None:
    """The lease thread renews while the HA loop disarms: a renewal after the disarm must not arm
    the watchdog again (it would fence at a deadline nobody renews any more)."""
    victim = _postmaster()
    wd = Watchdog()
    wd.start()
    try:
        wd.arm(victim.pid, time.monotonic() + 0.5)
        assert wd.armed_pid == victim.pid
        wd.disarm()
        wd.rearm(time.monotonic() + 0.3)  # the lease thread, a moment late
        assert wd.armed_pid is None
        time.sleep(1.0)
        assert victim.poll() is None
        victim.kill()
        victim.wait(timeout=5)
        wd.arm(victim.pid, time.monotonic() + 0.3)  # an exited postmaster: nothing to arm for
        assert wd.armed_pid is None
    finally:
        wd.stop()
        _cleanup(victim)


def test_arming_again_for_the_same_deadline_sends_nothing() -> None:
    """The HA loop arms every loop with the deadline the lease thread already sent: no line, so an
    idle primary's watchdog wakes once per renewal, not once per loop too."""
    victim = _postmaster()
    wd = Watchdog()
    wd.start()
    try:
        deadline = time.monotonic() + 30
        wd.arm(victim.pid, deadline)
        wd.arm(victim.pid, deadline)
        assert wd.lines == 1
        wd.rearm(deadline + 3)  # a renewal
        wd.arm(victim.pid, deadline + 3)  # the next loop
        assert wd.lines == 2
        wd.arm(victim.pid, deadline + 6)  # a deadline the process was not told: sent
        assert wd.lines == 3 and wd.armed_pid == victim.pid
    finally:
        wd.stop()
        _cleanup(victim)


@pytest.mark.parametrize(("system", "tools", "preset", "imported", "want"), [
    (150018, 150000, None, False, "python"),   # Debian 12: the same libpq as pg_rewind's
    (180001, 150000, None, False, "python"),   # a newer system libpq (PGDG's libpq5)
    (150018, 180000, None, False, None),       # the tools' libpq has require_auth, the system's not
    (0, 150000, None, False, None),            # no system libpq: psycopg-binary's own
    (150018, 150000, "binary", False, None),   # the operator chose (PSYCOPG_IMPL)
    (150018, 150000, None, True, None),        # too late: psycopg is loaded already
])
def test_the_agent_takes_the_systems_libpq_only_when_that_gives_up_nothing(
        system: int, tools: int, preset: str | None, imported: bool, want: str | None) -> None:
    from pgha.postgres import driver

    assert driver.choice(system, tools, preset, imported) == want


def test_with_the_systems_libpq_the_agent_maps_no_second_openssl() -> None:
    """psycopg-binary's own libpq, OpenSSL, Kerberos and LDAP stay out of an agent that takes the system's
    libpq (about 4 MB of its RSS; docs/architecture.md)."""
    from pgha.postgres import driver

    if driver.system_version() == 0:
        pytest.skip("no system libpq (Debian package libpq5)")
    code = ("import sys, types; from pgha.postgres import driver\n"
            "driver.choose(types.SimpleNamespace(postgresql=types.SimpleNamespace(bin_dir='/nonexistent')))\n"
            "import psycopg; psycopg.pq.version(); maps = open('/proc/self/maps').read()\n"
            "print(psycopg.pq.__impl__, 'psycopg_binary' in maps, 'libcrypto' in maps)")
    env = {k: v for k, v in os.environ.items() if k != driver.IMPL_VARIABLE}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "False", "True"]
