"""Wake the agent the moment its postmaster, or its WAL receiver, exits: no polling.

Linux pidfds (``os.pidfd_open``, Linux 5.3+) become readable when the process exits, for any
process we can see, child or not (pg_ctl starts the postmaster, so it is not our child).  One
thread waits on them with ``poll`` and calls ``on_exit``; the loop tells it, cheaply, which
PIDs matter now.  Where pidfds are not available the watcher does nothing and the periodic
reconcile notices the exit instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable

log = logging.getLogger("pgha.agent")


def walreceiver_pid(postmaster: int) -> int | None:
    """The WAL receiver among the postmaster's children (None when it has none)."""
    try:
        with open(f"/proc/{postmaster}/task/{postmaster}/children") as fh:
            children = fh.read().split()
    except OSError:
        return None
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as fh:
                if b"walreceiver" in fh.read(200):
                    return int(child)
        except OSError:
            continue
    return None


class ExitWatcher:
    def __init__(self, on_exit: Callable[[], None]) -> None:
        self.on_exit = on_exit
        self._wanted: frozenset[int] = frozenset()
        self._lock = threading.Lock()
        self._read, self._write = os.pipe()
        self._thread: threading.Thread | None = None
        self.available = hasattr(os, "pidfd_open")

    def watch(self, pids: set[int]) -> None:
        """Wake the agent when any of ``pids`` exits (replaces the previous set)."""
        wanted = frozenset(p for p in pids if p > 0)
        if not self.available or wanted == self._wanted:
            return
        with self._lock:
            self._wanted = wanted
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="exit-watch", daemon=True)
            self._thread.start()
        os.write(self._write, b"x")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._write)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._read, select.POLLIN)
        fds: dict[int, int] = {}  # pid -> pidfd
        while True:
            with self._lock:
                wanted = self._wanted
            for pid in set(fds) - wanted:
                poller.unregister(fds[pid])
                os.close(fds.pop(pid))
            for pid in wanted - set(fds):
                try:
                    fds[pid] = os.pidfd_open(pid)
                except OSError:
                    continue  # already gone: the loop that asked sees that itself
                poller.register(fds[pid], select.POLLIN)
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            woke = False
            for fd, _ in events:
                if fd == self._read:
                    try:
                        if not os.read(self._read, 64):
                            return  # closed: the agent shuts down
                    except OSError:
                        return
                    continue
                gone = next((p for p, f in fds.items() if f == fd), None)
                if gone is not None:
                    poller.unregister(fd)
                    os.close(fds.pop(gone))
                    with self._lock:
                        # The set may have been replaced while poll() slept: a process that
                        # is no longer watched exits silently.
                        woke = woke or gone in self._wanted
                        self._wanted = self._wanted - {gone}
            if woke:
                self.on_exit()
