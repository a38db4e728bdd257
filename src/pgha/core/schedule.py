"""The backup schedule: which slot is due, and whether this agent carries it out.  Pure.

``backup.schedule`` in the cluster configuration maps a kind (``full``, ``diff``, ``incr``,
``verify``) to when it runs, in UTC:

- ``every 20s`` / ``every 30m`` / ``every 6h`` / ``every 1d``: slots start at multiples of the
  interval since the Unix epoch;
- ``daily 01:30``: every day at that time;
- ``weekly sun 01:00``: every week on that day at that time.

Every agent evaluates the schedule; the slot is *claimed* in the DCS with a compare-and-swap on
``backup/schedule/<kind>`` (the lock), so exactly one agent submits each slot, and the claim
records whether the request was submitted.  The request itself is carried out by the repository
host (``pgha repository run``), so killing the agent that submitted it does not stop it; an
agent killed between claiming and submitting is taken over after TAKEOVER_AFTER seconds, and a
backup that failed (a failover under it) is claimed again as the slot's next attempt.

``decide_slot`` is one row of SCHEDULE_RULES per call (id and reason), with ``now`` passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

KINDS = ("full", "diff", "incr", "verify")
BACKUP_KINDS = ("full", "diff", "incr")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Seconds after which another agent takes over a slot claimed but never submitted.
TAKEOVER_AFTER = 15.0
# Attempts of one backup slot: a backup that failed (e.g. a failover under it) is submitted again.
MAX_ATTEMPTS = 3
# The shortest `every` interval accepted (a backup or verify takes longer than this anyway).
MIN_EVERY = 10.0

_EVERY = re.compile(r"^every\s+(\d{1,6})\s*([smhd])$")
_DAILY = re.compile(r"^daily\s+(\d{1,2}):(\d{2})$")
_WEEKLY = re.compile(r"^weekly\s+([a-z]{3})\s+(\d{1,2}):(\d{2})$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# 1970-01-01 was a Thursday: weekly slots are counted from the Monday before it.
_MONDAY_EPOCH = -3 * 86400.0
SYNTAX = "'every 20s|30m|6h|1d', 'daily HH:MM' or 'weekly mon..sun HH:MM' (UTC)"


@dataclass(frozen=True)
class Spec:
    """Slots start at ``offset + k * period`` (epoch seconds, UTC)."""

    period: float
    offset: float = 0.0

    def slot_start(self, now: float) -> float:
        """The start of the slot ``now`` falls in (the last slot start at or before ``now``)."""
        return self.offset + math.floor((now - self.offset) / self.period) * self.period

    def next_start(self, now: float) -> float:
        return self.slot_start(now) + self.period


def parse(text: str) -> Spec | str:
    """The Spec of ``text``, or one line naming the problem (a str)."""
    t = " ".join(str(text).lower().split())
    if m := _EVERY.match(t):
        period = int(m.group(1)) * _UNIT[m.group(2)]
        if period < MIN_EVERY:
            return f"{text!r}: every must be at least {MIN_EVERY:.0f}s"
        return Spec(float(period))
    if m := _DAILY.match(t):
        hh, mm = int(m.group(1)), int(m.group(2))
        if hh > 23 or mm > 59:
            return f"{text!r}: {hh:02d}:{mm:02d} is not a time of day; use 00:00-23:59"
        return Spec(86400.0, float(hh * 3600 + mm * 60))
    if m := _WEEKLY.match(t):
        day, hh, mm = m.group(1), int(m.group(2)), int(m.group(3))
        if day not in DAYS:
            return f"{text!r}: {day!r} is not a day; use mon, tue, wed, thu, fri, sat or sun"
        if hh > 23 or mm > 59:
            return f"{text!r}: {hh:02d}:{mm:02d} is not a time of day; use 00:00-23:59"
        return Spec(7 * 86400.0, _MONDAY_EPOCH + DAYS.index(day) * 86400 + hh * 3600 + mm * 60)
    return f"{text!r} is not a schedule; write {SYNTAX}"


@dataclass(frozen=True)
class BackupPolicy:
    """``backup:`` in the cluster configuration (edit-config): when backups and verifies run."""

    # Kind (full, diff, incr, verify) -> when, e.g. {full: "weekly sun 01:00", incr: "daily 01:00",
    # verify: "daily 03:00"}.  Empty: no scheduled backups (`pgha backup` still works).
    schedule: Mapping[str, str] = field(default_factory=dict)

    def specs(self) -> dict[str, Spec]:
        """The valid entries (``problem()`` rejects a configuration with an invalid one)."""
        out: dict[str, Spec] = {}
        for kind, text in sorted(self.schedule.items()):
            spec = parse(text)
            if kind in KINDS and isinstance(spec, Spec):
                out[kind] = spec
        return out

    def problem(self) -> str | None:
        for kind, text in sorted(self.schedule.items()):
            if kind not in KINDS:
                return f"backup.schedule: {kind!r} is not a kind; use full, diff, incr or verify"
            spec = parse(text)
            if isinstance(spec, str):
                return f"backup.schedule.{kind}: {spec}"
        return None

    def backup_interval(self) -> float:
        """The longest a cluster should go without a backup by this schedule (0: no backup scheduled)."""
        specs = self.specs()
        periods = [specs[k].period for k in BACKUP_KINDS if k in specs]
        return min(periods) if periods else 0.0


@dataclass(frozen=True)
class Claim:
    """``backup/schedule/<kind>``: the last slot of that kind an agent claimed."""

    slot: float
    member: str
    request_id: str
    claimed_at: float
    # The request was recorded (the repository host carries it out from there), or the slot was
    # skipped (the first slot after the schedule was set: the schedule starts at the next one).
    submitted: bool = False
    skipped: bool = False
    attempt: int = 1


def request_id(kind: str, slot: float, attempt: int = 1) -> str:
    """The id of the request for one slot (and attempt): the same whichever agent submits it."""
    return f"{kind}-{int(slot)}" + (f"-{attempt}" if attempt > 1 else "")


@dataclass(frozen=True)
class SlotFacts:
    kind: str
    slot: float
    claim: Claim | None
    me: str
    # A backup needs a running primary (a verify does not).
    primary_running: bool
    now: float
    # The last backup result the repository host recorded: (request id, ok).
    last_result: tuple[str, bool] | None = None


Act = Literal["none", "start", "claim", "submit", "take-over", "retry"]


@dataclass(frozen=True)
class ScheduleRule:
    id: str
    comment: str
    guard: Callable[[SlotFacts], bool]
    act: Act


def _this_slot(f: SlotFacts) -> bool:
    return f.claim is not None and f.claim.slot >= f.slot


def _failed_here(f: SlotFacts) -> bool:
    c = f.claim
    return (f.kind in BACKUP_KINDS and c is not None and c.slot >= f.slot and c.submitted and not c.skipped
            and f.last_result == (c.request_id, False))


SCHEDULE_RULES: tuple[ScheduleRule, ...] = (
    ScheduleRule("schedule-start", "No slot was ever claimed: the schedule starts at the next slot, the current "
                 "one is recorded as skipped (setting a schedule does not start a backup at once)",
                 lambda f: f.claim is None, "start"),
    ScheduleRule("schedule-retry-failed", f"This slot's backup failed (a failover under it, the repository "
                 f"unreachable) and a primary runs: claim attempt n+1 (up to {MAX_ATTEMPTS}) and submit it",
                 lambda f: _failed_here(f) and f.primary_running and f.claim is not None
                 and f.claim.attempt < MAX_ATTEMPTS, "retry"),
    ScheduleRule("schedule-done", "This slot's request was submitted (or the slot skipped); the repository host "
                 "carries it out, whoever submitted it", lambda f: _this_slot(f) and f.claim is not None
                 and (f.claim.submitted or f.claim.skipped), "none"),
    ScheduleRule("schedule-wait-primary", "A backup slot is due but no primary runs; wait (the slot stays due)",
                 lambda f: f.kind in BACKUP_KINDS and not f.primary_running, "none"),
    ScheduleRule("schedule-claim", "A new slot is due: claim it with a compare-and-swap (one agent wins), then "
                 "submit its request", lambda f: not _this_slot(f), "claim"),
    ScheduleRule("schedule-submit", "This agent claimed the slot but its request is not recorded yet (another "
                 "request was pending): submit it again", lambda f: f.claim is not None and f.claim.member == f.me,
                 "submit"),
    ScheduleRule("schedule-take-over", f"Another agent claimed the slot and did not submit it within "
                 f"{TAKEOVER_AFTER:.0f} s (it died or lost the DCS): take the claim over and submit",
                 lambda f: f.claim is not None and f.now - f.claim.claimed_at >= TAKEOVER_AFTER, "take-over"),
    ScheduleRule("schedule-claimed-elsewhere", "Another agent claimed the slot moments ago; leave it to it",
                 lambda f: True, "none"),
)


@dataclass(frozen=True)
class SlotDecision:
    kind: str
    slot: float
    act: Act
    rule_id: str
    reason: str


def decide_slot(f: SlotFacts) -> SlotDecision:
    for rule in SCHEDULE_RULES:
        if rule.guard(f):
            return SlotDecision(f.kind, f.slot, rule.act, rule.id, rule.comment)
    raise AssertionError("the last schedule rule always holds")


def facts(kind: str, spec: Spec, claim: Claim | None, me: str, primary_running: bool, now: float,
          last_result: tuple[str, bool] | None = None) -> SlotFacts:
    return SlotFacts(kind, spec.slot_start(now), claim, me, primary_running, now, last_result)


def next_wake(specs: Mapping[str, Spec], now: float, default: float) -> float:
    """Seconds until the next slot starts (at most ``default``)."""
    starts = [s.next_start(now) - now for s in specs.values()]
    return max(0.05, min([default, *starts]))
