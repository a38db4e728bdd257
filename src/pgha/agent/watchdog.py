"""The watchdog: a separate process that fences a primary whose agent died or froze.

The agent tells it "arm <postmaster pid> <deadline>" after every lease renewal
while it runs a primary, and "disarm" otherwise.  The watchdog kills that
PostgreSQL (postmaster stopped first, then every child, then the postmaster)
when either

* the deadline passes without a newer one: the agent froze (SIGSTOP, a hang)
  or cannot renew its lease, or
* its pipe from the agent closes while armed: the agent died.

When it fences, it also removes the VIP (``ip addr del``; it inherits the agent's
CAP_NET_ADMIN) if the agent told it the address at start: a dead or frozen agent
cannot drop it any more, and a fenced node holding it would answer ARP for the
address alongside the new leader.

Deadlines are CLOCK_MONOTONIC seconds, which every process on the host shares.
The agent arms with ``lease deadline - fence_margin / 2``, so the watchdog
fires after the agent's own fence would have, but before the lease can expire.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("pgha.watchdog")


def children_of(pid: int) -> list[int]:
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


def fence_postmaster(pid: int) -> None:
    """Stop the postmaster from restarting anything, kill its children, then it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    for child in children_of(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def drop_vip(vip: tuple[str, str] | None) -> None:
    """Remove the VIP (cidr, interface) after fencing; the address may already be gone."""
    if vip is None:
        return
    try:
        res = subprocess.run(["ip", "-4", "addr", "del", vip[0], "dev", vip[1]], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"pgha watchdog: could not remove the VIP {vip[0]}: {exc}", file=sys.stderr, flush=True)
        return
    if res.returncode == 0:
        print(f"pgha watchdog: removed the VIP {vip[0]} from {vip[1]}", file=sys.stderr, flush=True)


def fence(pid: int, vip: tuple[str, str] | None) -> None:
    fence_postmaster(pid)
    drop_vip(vip)


def serve(stream: int, vip: tuple[str, str] | None = None) -> None:
    """The watchdog process body: read commands from ``stream`` until EOF."""
    armed_pid: int | None = None
    deadline = 0.0
    buf = b""
    while True:
        timeout = None if armed_pid is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([stream], [], [], timeout)
        if not ready:
            if armed_pid is not None:
                print(f"pgha watchdog: deadline passed, fencing PostgreSQL (pid {armed_pid})",
                      file=sys.stderr, flush=True)
                fence(armed_pid, vip)
                armed_pid = None
            continue
        chunk = os.read(stream, 4096)
        if not chunk:
            if armed_pid is not None:
                print(f"pgha watchdog: agent gone while primary, fencing PostgreSQL (pid {armed_pid})",
                      file=sys.stderr, flush=True)
                fence(armed_pid, vip)
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            parts = line.decode().split()
            if parts[:1] == ["arm"] and len(parts) == 3:
                armed_pid, deadline = int(parts[1]), float(parts[2])
            elif parts[:1] == ["disarm"]:
                armed_pid = None


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
            [sys.executable, "-m", "pgha.agent.watchdog", *(self.vip or ())],
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
        self.armed_pid = postmaster_pid
        self._send(f"arm {postmaster_pid} {deadline:.3f}")

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


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.stdin.fileno(), (sys.argv[1], sys.argv[2]) if len(sys.argv) == 3 else None)
