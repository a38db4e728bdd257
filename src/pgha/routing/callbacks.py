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
"""

from __future__ import annotations

import contextlib
import logging
import os
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
                                    stderr=subprocess.PIPE, start_new_session=True)
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


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
