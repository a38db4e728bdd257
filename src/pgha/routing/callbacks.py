"""User hooks: ``on_start``, ``on_stop``, ``on_role_change``, ``on_reload`` and ``pre_promote``.

A hook is a command line split with ``shlex`` (no shell) and called with three
arguments: ``EVENT ROLE CLUSTER``, e.g. ``/etc/pgha/hook.sh on_role_change primary main``.

``fire()`` never blocks: events go to a bounded queue served by one worker
thread, so hooks run one at a time in the order the events happened, and a
flood of events drops the newest with a warning instead of growing memory.
``pre_promote()`` runs synchronously (its caller is already a background task);
a non-zero exit, a timeout or a hook that cannot start vetoes the promotion.

Each run is bounded by ``callbacks.timeout``: the hook's whole process group is
killed when it expires.  Every run is logged with its exit code and duration.

Hooks run without the capabilities the agent holds for the VIP (CAP_NET_ADMIN,
CAP_NET_RAW): before the hook's exec, its ambient and inheritable sets are
emptied and, where the agent may (as root), those two leave its bounding set.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import queue
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from pgha.config import CallbacksConfig

EVENTS = ("on_start", "on_stop", "on_role_change", "on_reload", "pre_promote")
QUEUE_SIZE = 32


@dataclass(frozen=True)
class HookResult:
    event: str
    # Exit code; None when the hook could not start or was killed at the timeout.
    returncode: int | None
    duration: float
    reason: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CallbackRunner:
    def __init__(self, cfg: CallbacksConfig, cluster: str, logger: logging.Logger) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.log = logger
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(QUEUE_SIZE)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def command(self, event: str) -> str:
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}; use one of {', '.join(EVENTS)}")
        return str(getattr(self.cfg, event))

    def fire(self, event: str, role: str) -> None:
        """Queue ``event`` for the worker thread; returns at once."""
        if not self.command(event):
            return
        try:
            self._queue.put_nowait((event, role))
        except queue.Full:
            self.dropped += 1
            self.log.warning("hook %s %s dropped: %d hooks already waiting (a hook is slow or stuck)",
                             event, role, QUEUE_SIZE)
            return
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name="pgha-hooks", daemon=True)
                self._worker.start()

    def pre_promote(self, role: str = "primary") -> bool:
        """Run the pre_promote hook now; False (veto) on non-zero exit, timeout or failure to start."""
        if not self.cfg.pre_promote:
            return True
        result = self.run("pre_promote", role)
        if not result.ok:
            self.log.warning("pre_promote hook vetoed the promotion: %s", result.reason)
        return result.ok

    def run(self, event: str, role: str) -> HookResult:
        """Run the hook for ``event`` synchronously, bounded by the timeout; log the outcome."""
        argv = [*shlex.split(self.command(event)), event, role, self.cluster]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True,
                                    preexec_fn=drop_capabilities)
        except OSError as exc:
            result = HookResult(event, None, 0.0, f"cannot run {argv[0]}: {exc.strerror or exc}")
            self.log.warning("hook %s: %s", event, result.reason)
            return result
        try:
            _, err = proc.communicate(timeout=self.cfg.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            duration = time.monotonic() - start
            result = HookResult(event, None, duration, f"killed after the {self.cfg.timeout:g}s timeout")
            self.log.warning("hook %s %s: %s", event, role, result.reason)
            return result
        duration = time.monotonic() - start
        last = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
        reason = f"exit code {proc.returncode}" + (f": {last[0]}" if last else "")
        result = HookResult(event, proc.returncode, duration, reason)
        level = logging.INFO if proc.returncode == 0 else logging.WARNING
        self.log.log(level, "hook %s %s: exit code %d in %.2fs%s", event, role, proc.returncode, duration,
                     f" ({last[0]})" if last and proc.returncode else "")
        return result

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued hook has run (tests, shutdown); True if the queue drained."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _serve(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=5.0)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            try:
                if item is not None:
                    self.run(*item)
            except Exception:  # a broken hook must not kill the worker
                self.log.exception("hook %s failed", item)
            finally:
                self._queue.task_done()


# Linux prctl(2) and capget/capset(2) numbers; libc is loaded before any fork.
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_NET_ADMIN = 12
_CAP_NET_RAW = 13
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS_CAPGET, _SYS_CAPSET = {"x86_64": (125, 126), "aarch64": (90, 91)}.get(platform.machine(), (0, 0))
_LIBC = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """In a hook's child before exec: no ambient or inheritable capabilities, and no CAP_NET_ADMIN or
    CAP_NET_RAW in the bounding set where allowed (root).  Only async-signal-safe system calls."""
    _LIBC.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    if _SYS_CAPGET:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        if _LIBC.syscall(_SYS_CAPGET, ctypes.byref(header), data) == 0:
            data[0].inheritable = data[1].inheritable = 0
            _LIBC.syscall(_SYS_CAPSET, ctypes.byref(header), data)
    for cap in (_CAP_NET_ADMIN, _CAP_NET_RAW):
        _LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EPERM without CAP_SETPCAP: nothing to drop then


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
