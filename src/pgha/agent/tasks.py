"""One long action at a time, in the background, so the HA loop keeps running."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pgha.core.model import TaskKind, TaskState

log = logging.getLogger("pgha.tasks")


class TaskRunner:
    def __init__(self, on_done: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._state: TaskState | None = None
        self._on_done = on_done

    @property
    def state(self) -> TaskState | None:
        with self._lock:
            return self._state

    def busy(self) -> bool:
        s = self.state
        return s is not None and s.running

    def start(self, kind: TaskKind, fn: Callable[[], str | None]) -> bool:
        """Run ``fn`` in a thread; its return value (or exception text) becomes the detail."""
        with self._lock:
            if self._state is not None and self._state.running:
                return False
            self._state = TaskState(kind=kind, running=True)

        def run() -> None:
            try:
                detail = fn() or ""
                result = TaskState(kind=kind, running=False, ok=True, detail=detail)
                log.info("%s finished%s", kind.value, f": {detail}" if detail else "")
            except Exception as exc:  # a task failure is data for the next decision
                result = TaskState(kind=kind, running=False, ok=False, detail=str(exc))
                log.error("%s failed: %s", kind.value, exc)
            with self._lock:
                self._state = result
            self._on_done()

        threading.Thread(target=run, name=f"task-{kind.value}", daemon=True).start()
        return True

    def forget(self) -> None:
        """Drop a finished task's result once the core acted on it."""
        with self._lock:
            if self._state is not None and not self._state.running:
                self._state = None
