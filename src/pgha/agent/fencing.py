"""Killing a PostgreSQL that must stop now: the agent's last resort when an immediate stop
fails (the watchdog process does the same in bash, see ``watchdog.sh``)."""

from __future__ import annotations

import contextlib
import os
import signal


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command may contain spaces and parentheses: the ppid follows the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (/proc/PID/stat field 22), or None if gone.

    A pid and its start time name one process for good: a pid alone may be reused once its
    process exited, and pid_max is often only 32768."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19]) if len(fields) > 19 else None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def fence_postmaster(pid: int) -> None:
    """Stop the postmaster from restarting anything, kill its children, then it."""
    _signal(pid, signal.SIGSTOP)
    for child in children_of(pid):
        _signal(child, signal.SIGKILL)
    _signal(pid, signal.SIGKILL)
    _signal(pid, signal.SIGCONT)
