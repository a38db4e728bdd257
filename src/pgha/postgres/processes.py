"""PostgreSQL's processes as /proc shows them: who its children are, which process a pid
names (start time), what a stuck shutdown waits on, and killing a PostgreSQL that must stop
now (the agent's last resort when an immediate stop fails; the watchdog process does the
same in bash, see ``pgha/agent/watchdog.sh``)."""

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


def describe_tree(pid: int) -> str:
    """``pid`` and its children as "process title (state)", e.g. for why a shutdown hangs: a
    process in D waits on the disk, one in T was stopped, S is asleep (waiting on a peer)."""
    parts = []
    for p in [pid, *children_of(pid)]:
        try:
            with open(f"/proc/{p}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{p}/cmdline", "rb") as fb:
                title = fb.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
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
