"""The agent's backup thread: runs ``backup.schedule`` slots and keeps the backup status current.

Every agent with a ``backup:`` section runs one ``BackupScheduler`` thread.  Each pass it:

- decides each scheduled kind with ``pgha.core.schedule.decide_slot`` (pure, ``now`` passed in)
  and carries the decision out: the claim of a slot is a compare-and-swap on
  ``backup/schedule/<kind>`` (the DCS lock: one agent wins each slot), the request goes to
  ``backup/request`` or ``backup/verify-request`` with an id derived from the slot, and the claim
  is then marked submitted.  The repository host carries the request out, so the agent that
  submitted it may die; one killed between claim and submit is taken over (TAKEOVER_AFTER);
- reads /backup/info, /backup/result and /backup/verify into ``BackupStatus``, which /metrics,
  the dashboard and ``pgha list`` read, and counts this node's WAL segments waiting to be archived.

It sleeps until the next slot starts (at most REFRESH_EVERY seconds), never in a tight loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pgha.backup import keys
from pgha.backup import verify as vkeys
from pgha.backup.info import BackupSummary
from pgha.core import schedule as S
from pgha.core.model import BackupRequest, ClusterConfig, ClusterView, Role
from pgha.dcs import codec
from pgha.dcs.base import DCSError
from pgha.dcs.store import ClusterStore

log = logging.getLogger("pgha.backup")

# Seconds between two reads of the backup status (and re-checks of an unsubmitted claim).
REFRESH_EVERY = 15.0
RETRY_SUBMIT = 3.0


def claim_key(kind: str) -> str:
    return f"backup/schedule/{kind}"


@dataclass
class BackupStatus:
    """What this agent last read about backups (written by the backup thread, read by /metrics)."""

    info: BackupSummary | None = None
    result: keys.BackupResult | None = None
    verify: vkeys.VerifyResult | None = None
    policy: S.BackupPolicy = field(default_factory=S.BackupPolicy)
    # This node's pg_wal/archive_status: segments PostgreSQL could not archive yet, and the
    # modification time of the oldest one (0: none).
    ready: int = 0
    oldest_ready_at: float = 0.0
    # The last decision per scheduled kind (rule id), for the log and `pgha backup schedule`.
    rules: dict[str, str] = field(default_factory=dict)
    # Whether the last archive gap check (pgha.backup.gapcheck) found a hole (None: none ran here).
    archive_gap: bool | None = None
    read_at: float = 0.0

    def last_backup_at(self) -> float:
        good = [b.stopped_at for b in (self.info.backups if self.info else ()) if not b.error]
        return max(good) if good else 0.0


def read_claim(store: ClusterStore, kind: str) -> tuple[S.Claim | None, int]:
    kv = store.kv.get(store.key(claim_key(kind)))
    if kv is None:
        return None, 0
    try:
        return codec.decode(S.Claim, kv.value), kv.mod_revision
    except ValueError as exc:
        log.warning("%s: %s; claiming it anew", claim_key(kind), exc)
        return None, kv.mod_revision


def _encode(claim: S.Claim) -> bytes:
    return json.dumps(asdict(claim), separators=(",", ":"), sort_keys=True).encode()


def write_claim(store: ClusterStore, kind: str, claim: S.Claim, mod_revision: int) -> bool:
    """Compare-and-swap: create the claim, or replace the one at ``mod_revision``."""
    key = store.key(claim_key(kind))
    if mod_revision == 0:
        return store.kv.create(key, _encode(claim))
    return store.kv.replace(key, _encode(claim), mod_revision)


def wal_ready(data_dir: str) -> tuple[int, float]:
    """(segments marked .ready in pg_wal/archive_status, mtime of the oldest one)."""
    status = Path(data_dir) / "pg_wal" / "archive_status"
    times: list[float] = []
    try:
        for p in status.iterdir():
            if p.name.endswith(".ready"):
                try:
                    times.append(p.stat().st_mtime)
                except FileNotFoundError:
                    continue
    except OSError:
        return 0, 0.0
    return len(times), min(times) if times else 0.0


class BackupScheduler:
    def __init__(self, store: ClusterStore, me: str, data_dir: str, cluster_config: Callable[[], ClusterConfig],
                 view: Callable[[], ClusterView | None], status: BackupStatus,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.me = me
        self.data_dir = data_dir
        self.cluster_config = cluster_config
        self.view = view
        self.status = status
        self.clock = clock
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="backup-schedule", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            wait = REFRESH_EVERY
            try:
                decisions = self.run_once(self.clock())
                if any(d.act in ("claim", "submit", "take-over", "retry") for d in decisions):
                    wait = RETRY_SUBMIT
                self.refresh()
            except DCSError as exc:
                log.warning("backup schedule: DCS: %s; retrying", exc)
            except Exception:  # the thread must outlive any one bad pass
                log.exception("backup schedule: pass failed; retrying")
            specs = self.cluster_config().backup.specs()
            self.stop.wait(min(wait, S.next_wake(specs, self.clock(), REFRESH_EVERY) + 0.05))

    # --- the schedule ---------------------------------------------------------------------------
    def run_once(self, now: float) -> list[S.SlotDecision]:
        policy = self.cluster_config().backup
        view = self.view()
        primary = view is not None and any(m.role == Role.PRIMARY and m.state == "running"
                                           for m in view.members.values())
        out = []
        specs = policy.specs()
        result = keys.read_result(self.store) if any(k in S.BACKUP_KINDS for k in specs) else None
        last = (result.id, result.ok) if result is not None else None
        for kind, spec in specs.items():
            claim, rev = read_claim(self.store, kind)
            d = S.decide_slot(S.facts(kind, spec, claim, self.me, primary, now, last))
            if self.status.rules.get(kind) != d.rule_id:
                log.info("backup schedule %s: %s (%s)", kind, d.rule_id, d.reason)
                self.status.rules[kind] = d.rule_id
            self._execute(d, claim, rev, now)
            out.append(d)
        return out

    def _execute(self, d: S.SlotDecision, claim: S.Claim | None, rev: int, now: float) -> None:
        rid = S.request_id(d.kind, d.slot)
        if d.act == "start":
            write_claim(self.store, d.kind, S.Claim(d.slot, self.me, rid, now, skipped=True), rev)
            return
        if d.act == "retry" and claim is not None:
            attempt = claim.attempt + 1
            rid = S.request_id(d.kind, d.slot, attempt)
            if not write_claim(self.store, d.kind, S.Claim(d.slot, self.me, rid, now, attempt=attempt), rev):
                return
            log.info("backup schedule %s: %s failed; attempt %d (%s)", d.kind, claim.request_id, attempt, rid)
            claim, rev = read_claim(self.store, d.kind)
        if d.act in ("claim", "take-over"):
            # A take-over keeps the slot's request (and attempt); a new slot starts at attempt 1.
            mine = replace(claim, member=self.me, claimed_at=now) if d.act == "take-over" and claim is not None \
                else S.Claim(d.slot, self.me, rid, now)
            if not write_claim(self.store, d.kind, mine, rev):
                log.info("backup schedule %s: slot %s claimed by another agent", d.kind, rid)
                return
            log.info("backup schedule %s: slot %s claimed", d.kind, rid)
            claim, rev = read_claim(self.store, d.kind)
        acting = d.act in ("claim", "take-over", "submit", "retry")
        if acting and claim is not None and claim.member == self.me and self._submit(d.kind, claim.request_id, now):
            write_claim(self.store, d.kind, replace(claim, submitted=True), rev)
            log.info("backup schedule %s: request %s submitted", d.kind, claim.request_id)

    def _submit(self, kind: str, rid: str, now: float) -> bool:
        """Record the slot's request; True when it is recorded (now or before)."""
        if kind == "verify":
            if vkeys.put_request(self.store, vkeys.VerifyRequest(rid, now, self.me)):
                return True
            pending_v = vkeys.read_request(self.store)
            return pending_v is not None and pending_v.id == rid
        assert kind in S.BACKUP_KINDS
        typed: dict[str, BackupRequest] = {k: BackupRequest(rid, k, now) for k in ("full", "diff", "incr")}
        if keys.put_request(self.store, typed[kind]):
            return True
        pending = keys.read_request(self.store)
        return pending is not None and pending.id == rid

    # --- the status -------------------------------------------------------------------------------
    def refresh(self) -> None:
        s = self.status
        s.info = keys.read_info(self.store)
        s.result = keys.read_result(self.store)
        s.verify = vkeys.read_result(self.store)
        s.policy = self.cluster_config().backup
        s.ready, s.oldest_ready_at = wal_ready(self.data_dir)
        s.read_at = self.clock()
