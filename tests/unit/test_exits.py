"""The agent is woken by a process exiting (pidfds), not by polling for it."""

from __future__ import annotations

import subprocess
import sys
import threading

from pgha.agent.exits import ExitWatcher, walreceiver_pid


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_an_exit_wakes_the_agent_once() -> None:
    woke = threading.Event()
    watcher = ExitWatcher(woke.set)
    a, b = sleeper(), sleeper()
    try:
        watcher.watch({a.pid, b.pid})
        assert not woke.wait(0.3), "nothing exited yet"
        a.kill()
        a.wait()
        assert woke.wait(10), "the exit of a watched process must wake the agent"
        woke.clear()
        watcher.watch({b.pid})  # the same set again: no new wake-up
        assert not woke.wait(0.3)
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
        watcher.close()


def test_a_new_set_replaces_the_old_one() -> None:
    woke = threading.Event()
    watcher = ExitWatcher(woke.set)
    a, b = sleeper(), sleeper()
    try:
        watcher.watch({a.pid})
        watcher.watch({b.pid})
        a.kill()
        a.wait()
        assert not woke.wait(0.5), "a process no longer watched must not wake the agent"
        b.kill()
        b.wait()
        assert woke.wait(10)
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
        watcher.close()


def test_no_walreceiver_among_a_plain_process_children() -> None:
    p = sleeper()
    try:
        assert walreceiver_pid(p.pid) is None
        assert walreceiver_pid(999999999) is None
    finally:
        p.kill()
        p.wait()
