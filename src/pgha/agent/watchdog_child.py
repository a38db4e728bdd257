"""The watchdog process body (see ``pgha.agent.watchdog``), run as a plain script:
``python -I -S -c 'import watchdog_child; watchdog_child.main()' [cidr interface]`` with this
directory first on sys.path (``pgha.agent.watchdog.CHILD``).

It imports nothing from pgha and only a handful of standard modules (subprocess only when it
has a VIP to remove), so the process that must outlive a dead agent costs as little memory as
a Python interpreter can: every import is resident for as long as the node runs.
"""

import os
import select
import sys
import time

# The C module under ``signal``: the same functions and constants, without the enum module and
# the half of the standard library it pulls in (about 1 MB resident).
try:
    import _signal as signal  # type: ignore[import-not-found]  # (typeshed knows only ``signal``)
except ImportError:  # pragma: no cover - every CPython has it
    import signal


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


def _signal(pid: int, sig: int) -> None:
    try:  # noqa: SIM105 (contextlib would cost the watchdog memory for nothing)
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def fence_postmaster(pid: int) -> None:
    """Stop the postmaster from restarting anything, kill its children, then it."""
    _signal(pid, signal.SIGSTOP)
    for child in children_of(pid):
        _signal(child, signal.SIGKILL)
    _signal(pid, signal.SIGKILL)
    _signal(pid, signal.SIGCONT)


def drop_vip(vip: tuple[str, str] | None) -> None:
    """Remove the VIP (cidr, interface) after fencing; the address may already be gone."""
    if vip is None:
        return
    import subprocess

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


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(sys.stdin.fileno(), (sys.argv[1], sys.argv[2]) if len(sys.argv) == 3 else None)


if __name__ == "__main__":
    main()
