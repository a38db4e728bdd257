"""The watchdog: a separate process that fences a primary whose agent died or froze.

The agent tells it "arm <postmaster pid> <ms>" after every lease renewal while it runs a
primary, and "disarm" otherwise.  The watchdog kills that PostgreSQL (postmaster stopped
first, then every child, then the postmaster) when either

* <ms> milliseconds pass without a newer line: the agent froze (SIGSTOP, a hang) or cannot
  renew its lease, or
* its pipe from the agent closes while armed: the agent died.

When it fences, it also removes the VIP (``ip addr del``; it inherits the agent's
CAP_NET_ADMIN) if the agent told it the address at start: a dead or frozen agent
cannot drop it any more, and a fenced node holding it would answer ARP for the
address alongside the new leader.

The agent arms with what is left until ``lease deadline - fence_margin / 2``, so the watchdog
fires after the agent's own fence would have, but before the lease can expire.  The process is
``watchdog.sh``: bash and its builtins only, about 3 MB resident (a Python interpreter is 8).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger("pgha.watchdog")

SCRIPT = Path(__file__).with_name("watchdog.sh")
BASH = "/bin/bash"


class Watchdog:
    """The agent's side: starts the watchdog process and feeds it."""

    def __init__(self, vip: tuple[str, str] | None = None) -> None:
        # (cidr, interface) of the VIP the watchdog removes when it fences.
        self.vip = vip
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.armed_pid: int | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [BASH, str(SCRIPT), *(self.vip or ())],
            stdin=subprocess.PIPE,
            # Not in the agent's process group: a signal to the group must not reach it.
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _send(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        with self._lock:
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                log.error("the watchdog process is gone; restarting it")
                self.start()

    def arm(self, postmaster_pid: int, deadline: float) -> None:
        """Fence ``postmaster_pid`` at ``deadline`` (CLOCK_MONOTONIC) unless armed again before."""
        self.armed_pid = postmaster_pid
        self._send(f"arm {postmaster_pid} {int((deadline - time.monotonic()) * 1000)}")

    def disarm(self) -> None:
        if self.armed_pid is not None:
            self.armed_pid = None
            self._send("disarm")

    def stop(self) -> None:
        """Clean shutdown: disarm first so closing the pipe does not fence."""
        self._send("disarm")
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
