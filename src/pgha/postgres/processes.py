"""PostgreSQL's processes as /proc shows them: who its children are, which process a pid
names (start time), what a stuck shutdown waits on, and killing a PostgreSQL that must stop
now (the agent's last resort when an immediate stop fails; the watchdog process does the
same in bash, see ``pgha/agent/watchdog.sh``)."""

from __future__ import annotations

import contextlib
import os
import signal


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command (state, ppid, ...), or [] if it is gone.
    The command may hold spaces and parentheses: the fields follow the last ')'."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and (f := _stat(e)) and len(f) > 1 and int(f[1]) == pid]


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (/proc/PID/stat field 22), or None if gone.

    A pid and its start time name one process for good: a pid alone may be reused once its
    process exited, and pid_max is often only 32768."""
    fields = _stat(pid)
    return int(fields[19]) if len(fields) > 19 else None


def describe_tree(pid: int) -> str:
    """``pid`` and its children as "process title (state)", e.g. for why a shutdown hangs: a
    process in D waits on the disk, one in T was stopped, S is asleep (waiting on a peer)."""
    parts = []
    for p in [pid, *children_of(pid)]:
        fields = _stat(p)
        try:
            with open(f"/proc/{p}/cmdline", "rb") as fb:
                title = fb.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if not fields:
            continue
        state = fields[0]
        parts.append(f"{title.removeprefix('postgres: ')[:80]} ({state})")
    return "; ".join(parts)


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
