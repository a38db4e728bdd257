"""The member lease, renewed on its own thread so no long action can starve it.

Every agent holds one etcd lease: its member key is bound to it, and so is the
leader key while it leads.  The deadline is measured conservatively from the
moment the keepalive was *sent*: etcd restarts its TTL countdown no earlier
than that, so ``deadline`` is never later than etcd's own expiry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pgha.dcs.base import KV, DCSError, LeaseNotFound

log = logging.getLogger("pgha.lease")

# Seconds between two attempts at most while renewals fail (a shorter renew_interval still wins).
RETRY_EVERY = 0.5


def next_renewal_in(interval: float, failing: bool) -> float:
    """Seconds from one renewal to the next: every ``interval``, and no slower than RETRY_EVERY
    while renewals fail.  The simulation's lease thread waits the same way."""
    return min(interval, RETRY_EVERY) if failing else interval


class LeaseKeeper:
    def __init__(self, kv: KV, ttl: float, on_renewed: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kv = kv
        self.clock = clock
        self.ttl = ttl
        self._lock = threading.Lock()
        self._lease = 0
        self._deadline: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_renewed = on_renewed
        self.last_error: str | None = None
        # The latest a renewal started after it was due (seconds, since start): time this
        # process was not scheduled, e.g. a starved interpreter.  bench/api_load and the
        # hostile-client tests read it as pgha_lease_renewal_late_max_seconds.
        self.worst_late = 0.0
        # Set when a lease was lost and replaced: the agent republishes its keys.
        self.replaced = threading.Event()

    @property
    def lease_id(self) -> int:
        with self._lock:
            return self._lease

    @property
    def deadline(self) -> float | None:
        with self._lock:
            return self._deadline

    def adopt_or_grant(self, existing: int = 0) -> int:
        """Keep ``existing`` alive if it still lives (agent restart while leading), else grant anew."""
        if existing:
            sent = self.clock()
            try:
                granted = self.kv.keepalive(existing)
                self._set(existing, sent + granted)
                log.info("adopted existing lease %x (%ss left)", existing, granted)
                return existing
            except LeaseNotFound:
                pass
        return self._grant()

    def _grant(self) -> int:
        sent = self.clock()
        lease = self.kv.grant(max(round(self.ttl), 2))
        self._set(lease, sent + self.ttl)
        return lease

    def _set(self, lease: int, deadline: float) -> None:
        with self._lock:
            self._lease = lease
            self._deadline = deadline
        if self._on_renewed is not None:
            self._on_renewed(deadline)

    def renew_once(self, timeout: float | None = None) -> None:
        """One renewal; ``timeout`` bounds each server's answer (None: the DCS request timeout)."""
        lease = self.lease_id
        sent = self.clock()
        try:
            if not lease:
                self._grant()
                self.replaced.set()
                return
            granted = self.kv.keepalive(lease, timeout)
            self._set(lease, sent + granted)
            self.last_error = None
            took = self.clock() - sent
            if took > max(0.5, self.ttl / 6):
                # Not an error, but what an operator needs when a watchdog fences or a leader
                # steps down "for no reason": etcd answers slowly (a slow disk, an overloaded host).
                log.warning("etcd took %.1f s to renew the lease (ttl %g s)", took, self.ttl)
        except LeaseNotFound:
            log.warning("lease %x is gone (expired or revoked); granting a new one", lease)
            with self._lock:
                self._deadline = None
                self._lease = 0
            try:
                self._grant()
                self.replaced.set()
            except DCSError as exc:
                self.last_error = str(exc)
        except DCSError as exc:
            if self.last_error != str(exc):
                log.warning("cannot renew the lease: %s", exc)
            self.last_error = str(exc)

    def start(self, interval: Callable[[], float], timeout: Callable[[], float]) -> None:
        """Renew on a thread of its own every ``interval()`` seconds, each server given ``timeout()``."""
        def run() -> None:
            due: float | None = None
            while not self._stop.is_set():
                started = self.clock()
                late = 0.0 if due is None else started - due
                self.worst_late = max(self.worst_late, late)
                if late > max(0.5, self.ttl / 6):
                    log.warning("the lease renewal ran %.1f s late: this process was not scheduled "
                                "(an overloaded or stalled host)", late)
                self.renew_once(timeout())
                period = next_renewal_in(interval(), failing=self.last_error is not None)
                wait = max(0.05, period - (self.clock() - started))
                due = self.clock() + wait
                self._stop.wait(wait)

        self._thread = threading.Thread(target=run, name="lease-keeper", daemon=True)
        self._thread.start()

    def stop(self, revoke: bool) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if revoke and self.lease_id:
            try:
                self.kv.revoke(self.lease_id)
            except DCSError as exc:
                log.warning("could not revoke the lease on shutdown: %s", exc)
