"""An in-process KV with etcd's semantics, for simulations and unit tests.

Revisions, create/mod revisions, leases and watches behave as in etcd v3:
every write that changes something gets the next store revision (a lease
expiry or revoke deletes all its keys at one revision), ``create``/``replace``
/``delete_if`` are compare-and-swap, and a watch from a compacted revision
raises ``Compacted``.  Time comes from ``clock`` so a simulation can run an
hour of leases in milliseconds: expiry is checked on every call and by
``expire_leases()``.  ``set_unreachable(True)`` makes every call fail with
DCSError, like an etcd outage.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pgha.dcs.base import Compacted, DCSError, KeyValue, LeaseNotFound, WatchEvent

# How often a watch waiting for changes checks ``stop`` and lease expiry (seconds).
WATCH_POLL = 0.05


@dataclass
class _Lease:
    ttl: int
    deadline: float


class MemoryKV:
    """Thread-safe; callbacks of ``watch_prefix`` run outside the lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._data: dict[str, KeyValue] = {}
        self._revision = 1
        self._compacted = 0
        self._events: list[WatchEvent] = []
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x7E57_0000_0001)
        self._unreachable = False

    # --- simulation controls ---------------------------------------------------------
    def set_unreachable(self, unreachable: bool) -> None:
        with self._cond:
            self._unreachable = unreachable
            self._cond.notify_all()

    def expire_leases(self) -> list[int]:
        """Revoke every lease whose deadline passed (by ``clock``); returns their ids."""
        with self._cond:
            return self._expire()

    def compact(self, revision: int) -> None:
        """Forget the change history before ``revision`` (watches from older revisions fail)."""
        with self._cond:
            self._check()
            if revision > self._revision:
                raise DCSError(f"cannot compact to revision {revision}: the store is at {self._revision}")
            if revision <= self._compacted:
                return
            self._compacted = revision
            cut = bisect.bisect_left(self._events, revision, key=lambda e: e.revision)
            del self._events[:cut]

    @property
    def revision(self) -> int:
        with self._cond:
            return self._revision

    def lease_ids(self) -> list[int]:
        """The live leases (after expiring the overdue ones)."""
        with self._cond:
            self._check()
            return sorted(self._leases)

    # --- KV ----------------------------------------------------------------------------
    def get_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        with self._cond:
            self._check()
            return self._revision, [kv for key, kv in sorted(self._data.items()) if key.startswith(prefix)]

    def get(self, key: str) -> KeyValue | None:
        with self._cond:
            self._check()
            return self._data.get(key)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        with self._cond:
            self._check()
            self._put(key, value, lease)
            return self._revision

    def create(self, key: str, value: bytes, lease: int = 0) -> bool:
        with self._cond:
            self._check()
            if key in self._data:
                return False
            self._put(key, value, lease)
            return True

    def replace(self, key: str, value: bytes, mod_revision: int, lease: int = 0) -> bool:
        with self._cond:
            self._check()
            old = self._data.get(key)
            if old is None or old.mod_revision != mod_revision:
                return False
            self._put(key, value, lease)
            return True

    def delete(self, key: str) -> None:
        with self._cond:
            self._check()
            self._delete([key])

    def delete_if(self, key: str, mod_revision: int) -> bool:
        with self._cond:
            self._check()
            old = self._data.get(key)
            if old is None or old.mod_revision != mod_revision:
                return False
            self._delete([key])
            return True

    def delete_prefix(self, prefix: str) -> None:
        with self._cond:
            self._check()
            self._delete([k for k in self._data if k.startswith(prefix)])

    def grant(self, ttl: int) -> int:
        with self._cond:
            self._check()
            if ttl <= 0:
                raise DCSError(f"cannot grant a lease of {ttl} s: the TTL must be positive")
            lease = next(self._lease_ids)
            self._leases[lease] = _Lease(ttl, self._clock() + ttl)
            return lease

    def keepalive(self, lease: int, timeout: float | None = None) -> int:
        with self._cond:
            self._check()
            entry = self._leases.get(lease)
            if entry is None:
                raise LeaseNotFound(f"lease {lease:x} not found: it expired or was revoked")
            entry.deadline = self._clock() + entry.ttl
            return entry.ttl

    def time_to_live(self, lease: int) -> int:
        """Whole seconds the lease has left without renewal; -1 when it is gone."""
        with self._cond:
            self._check()
            entry = self._leases.get(lease)
            return -1 if entry is None else max(0, math.ceil(entry.deadline - self._clock()))

    def revoke(self, lease: int) -> None:
        with self._cond:
            self._check()
            self._revoke(lease)

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int,
        on_event: Callable[[WatchEvent], None],
        stop: threading.Event,
        poll: float | None = None,
    ) -> int:
        with self._cond:
            self._check()
            next_rev = start_revision if start_revision > 0 else self._revision + 1
        while True:
            with self._cond:
                self._check()
                if next_rev < self._compacted:
                    raise Compacted(f"revision {next_rev} was compacted (oldest kept: {self._compacted})")
                first = bisect.bisect_left(self._events, next_rev, key=lambda e: e.revision)
                pending = [e for e in self._events[first:] if e.key.startswith(prefix)]
                if not pending:
                    # Nothing under the prefix up to now: later resumes start after it.
                    next_rev = max(next_rev, self._revision + 1)
                    if stop.is_set():
                        return next_rev
                    self._cond.wait(poll or WATCH_POLL)
                    continue
                next_rev = self._events[-1].revision + 1
            for event in pending:
                on_event(event)
            if stop.is_set():
                return next_rev

    def close(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- internals (called with the lock held) ---------------------------------------------
    def _check(self) -> None:
        if self._unreachable:
            raise DCSError("DCS unreachable: the in-memory store is switched off (simulated outage)")
        self._expire()

    def _expire(self) -> list[int]:
        now = self._clock()
        gone = [lease for lease, entry in self._leases.items() if entry.deadline <= now]
        for lease in gone:
            self._revoke(lease)
        return gone

    def _revoke(self, lease: int) -> None:
        if self._leases.pop(lease, None) is not None:
            self._delete([k for k, kv in self._data.items() if kv.lease == lease])

    def _put(self, key: str, value: bytes, lease: int) -> None:
        if lease and lease not in self._leases:
            raise LeaseNotFound(f"lease {lease:x} not found: it expired or was revoked")
        self._revision += 1
        old = self._data.get(key)
        created = old.create_revision if old is not None else self._revision
        self._data[key] = KeyValue(key, bytes(value), created, self._revision, lease)
        self._events.append(WatchEvent("put", key, self._revision))
        self._cond.notify_all()

    def _delete(self, keys: list[str]) -> None:
        keys = [k for k in keys if k in self._data]
        if not keys:
            return
        self._revision += 1
        for key in sorted(keys):
            del self._data[key]
            self._events.append(WatchEvent("delete", key, self._revision))
        self._cond.notify_all()
