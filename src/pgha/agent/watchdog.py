"""The watchdog: a separate process that fences a primary whose agent died or froze.

The agent tells it "arm <postmaster pid> <ms> <start ticks>" after every lease renewal while
it runs a primary, and "disarm" otherwise.  The start time (from /proc) makes the pid a
process identity: the watchdog fences nothing once that postmaster has exited, even if
another process got its pid.  The watchdog kills that PostgreSQL (postmaster stopped
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

from pgha.postgres.processes import start_ticks

log = logging.getLogger("pgha.watchdog")

SCRIPT = Path(__file__).with_name("watchdog.sh")
BASH = "/bin/bash"


class Watchdog:
    """The agent's side: starts the watchdog process and feeds it.

    Two threads feed it: the HA loop arms and disarms, the lease thread pushes the deadline
    on every renewal.  Each change of what is armed, and the line that says so, happen under
    one lock, so a renewal can never re-arm what the loop just disarmed (the process would
    then fence a postmaster the agent no longer watches, at a deadline nobody renews).
    """

    def __init__(self, vip: tuple[str, str] | None = None) -> None:
        # (cidr, interface) of the VIP the watchdog removes when it fences.
        self.vip = vip
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        # (pid, start ticks) of the postmaster armed for, or None.
        self._armed: tuple[int, int] | None = None
        # The deadline the process was last told: the HA loop arms every loop with the deadline the
        # lease thread already sent, and a line that changes nothing still wakes the process.
        self._told: float | None = None
        self.lines = 0  # lines sent (tests count them)

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

    @property
    def armed_pid(self) -> int | None:
        armed = self._armed
        return armed[0] if armed else None

    def _write(self, line: str) -> None:
        """Send one line (the caller holds the lock); a dead process is restarted and told again."""
        for attempt in (1, 2):
            if self._proc is None or self._proc.stdin is None:
                return
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
                self.lines += 1
                return
            except (BrokenPipeError, ValueError):
                if attempt == 2:
                    log.error("the watchdog process exits at once; nothing guards this primary")
                    return
                log.error("the watchdog process is gone; restarting it")
                self.start()

    def _arm_line(self, deadline: float) -> str:
        assert self._armed is not None
        pid, start = self._armed
        return f"arm {pid} {int((deadline - time.monotonic()) * 1000)} {start}"

    def arm(self, postmaster_pid: int, deadline: float) -> None:
        """Fence ``postmaster_pid`` at ``deadline`` (CLOCK_MONOTONIC) unless armed again before."""
        start = start_ticks(postmaster_pid)
        with self._lock:
            if start is None:  # it exited: nothing to fence, and its pid may be reused
                if self._armed is not None:
                    self._armed = self._told = None
                    self._write("disarm")
                return
            if self._armed == (postmaster_pid, start) and self._told == deadline:
                return  # armed for this postmaster at this deadline already
            self._armed, self._told = (postmaster_pid, start), deadline
            self._write(self._arm_line(deadline))

    def rearm(self, deadline: float) -> None:
        """The lease was renewed: move the deadline of what is armed; nothing when disarmed."""
        with self._lock:
            if self._armed is not None:
                self._told = deadline
                self._write(self._arm_line(deadline))

    def disarm(self) -> None:
        with self._lock:
            if self._armed is not None:
                self._armed = self._told = None
                self._write("disarm")

    def stop(self) -> None:
        """Clean shutdown: disarm first so closing the pipe does not fence."""
        with self._lock:
            self._armed = self._told = None
            self._write("disarm")
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
