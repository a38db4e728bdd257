"""What the dashboard remembers between two HA loops: lag samples, events and transition durations.

``ClusterRecorder.observe`` is fed every loop's NodeSnapshot (by AgentMetrics) and compares
it with the previous one.  Nothing here does I/O; the wall clock is passed in.

* Lag samples: per member, at most one every ``sample_every`` seconds, kept ``window`` seconds.
* Events: role and state changes, leader changes, fencing, switchover phases, members that
  appear or whose lease expired, DCS reachability and pause, derived from successive views.
* Durations this agent saw itself become the leading primary in: from the switchover request
  (or from the moment the leader key was gone) to the first loop it ran as the leading primary.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

from pgha.api import views
from pgha.api.handle import NodeSnapshot
from pgha.core.model import ClusterView, MemberInfo

EventKind = Literal["leader", "role", "state", "fence", "member", "switchover", "dcs", "pause", "timeline",
                    "backup"]
# Member states that mean "not serving": the dashboard shows them in red.
DOWN_STATES = ("stopped", "crashed", "fenced", "stopping", "start failed")


@dataclass(frozen=True)
class Event:
    at: float
    kind: EventKind
    member: str
    text: str


@dataclass(frozen=True)
class Transition:
    """This agent became the leading primary: how long it took, from what it first saw."""

    kind: Literal["failover", "switchover"]
    seconds: float


def is_fence_rule(rule_id: str) -> bool:
    return rule_id.startswith("fence")


class ClusterRecorder:
    def __init__(self, window: float = 600.0, sample_every: float = 2.0, max_events: int = 200) -> None:
        self.window = window
        self.sample_every = sample_every
        self._lock = threading.Lock()
        self.lag: dict[str, deque[tuple[float, int | None]]] = {}
        self.leader_lsn: deque[tuple[float, int]] = deque()
        self.events: deque[Event] = deque(maxlen=max_events)
        # Every member seen, with the last thing it published, and since when it is gone.
        self.seen: dict[str, MemberInfo] = {}
        self.gone_since: dict[str, float] = {}
        self._prev: NodeSnapshot | None = None
        self._leading = False
        # Wall time this agent first saw the pending switchover (by id), or the leader key gone.
        self._switchover_seen: dict[str, tuple[float, str]] = {}
        self._leaderless_since: float | None = None
        self._had_leader = False

    # --- feeding ------------------------------------------------------------------------
    def observe(self, s: NodeSnapshot, now: float) -> list[Transition]:
        with self._lock:
            prev = self._prev
            self._prev = s
            if s.view is not None:
                if prev is not None:
                    self._diff(prev, s, now)
                self._sample(s.view, now)
            return self._transitions(s, now)

    def note(self, now: float, kind: EventKind, member: str, text: str) -> None:
        """An event this agent's threads saw themselves (the archive gap check)."""
        with self._lock:
            self._add(now, kind, member, text)

    def _add(self, now: float, kind: EventKind, member: str, text: str) -> None:
        self.events.append(Event(now, kind, member, text))

    def _diff(self, prev: NodeSnapshot, s: NodeSnapshot, now: float) -> None:
        old, new = prev.view, s.view
        assert new is not None
        if (old is None or old.dcs_error is None) and new.dcs_error is not None:
            self._add(now, "dcs", views.me(s), f"{views.me(s)} cannot reach the DCS: {new.dcs_error}")
        elif old is not None and old.dcs_error is not None and new.dcs_error is None:
            self._add(now, "dcs", views.me(s), f"{views.me(s)} reaches the DCS again")
        if old is None or new.dcs_error is not None:
            return
        self._diff_leader(old, new, now)
        self._diff_members(old, new, now)
        self._diff_switchover(old, new, now)
        if old.config.pause != new.config.pause:
            self._add(now, "pause", "", "maintenance mode on: no automatic action" if new.config.pause
                      else "maintenance mode off")

    def _diff_leader(self, old: ClusterView, new: ClusterView, now: float) -> None:
        was = old.leader.name if old.leader else None
        is_ = new.leader.name if new.leader else None
        if was != is_:
            if is_ is None:
                self._add(now, "leader", was or "", f"leader key released or expired ({was} no longer leads)")
            else:
                self._add(now, "leader", is_, f"{is_} is the leader" + (f" (was {was})" if was else ""))
        if is_ is not None and is_ in new.members and is_ in old.members:
            tl_old, tl_new = old.members[is_].timeline, new.members[is_].timeline
            if tl_old is not None and tl_new is not None and tl_new != tl_old:
                self._add(now, "timeline", is_, f"{is_}: timeline {tl_old} -> {tl_new}")

    def _diff_members(self, old: ClusterView, new: ClusterView, now: float) -> None:
        for name in sorted(set(old.members) | set(new.members)):
            a, b = old.members.get(name), new.members.get(name)
            if a is None and b is not None:
                self._add(now, "member", name, f"{name} joined ({b.role.value}, {b.state})")
            elif a is not None and b is None:
                self._add(now, "member", name, f"{name} is gone: its member key expired with its lease")
            elif a is not None and b is not None:
                if a.role != b.role:
                    self._add(now, "role", name, f"{name}: {a.role.value} -> {b.role.value}")
                if a.state != b.state and not (a.state.startswith("creating replica")
                                               and b.state.startswith("creating replica")):
                    kind: EventKind = "fence" if "fenc" in b.state else "state"
                    self._add(now, kind, name, f"{name}: {a.state} -> {b.state}")
                if is_fence_rule(b.rule_id) and b.rule_id != a.rule_id:
                    self._add(now, "fence", name, f"{name} fenced [{b.rule_id}] {b.reason}")
                if b.last_switchover_outcome and b.last_switchover_id != a.last_switchover_id:
                    self._add(now, "switchover", name, f"switchover {b.last_switchover_id}: "
                                                       f"{b.last_switchover_outcome}")

    def _diff_switchover(self, old: ClusterView, new: ClusterView, now: float) -> None:
        a, b = old.switchover, new.switchover
        if b is not None and (a is None or a.id != b.id):
            target = f" to {b.candidate}" if b.candidate else ""
            self._add(now, "switchover", b.candidate or "", f"{b.kind} {b.id} requested{target}")
        elif a is not None and b is not None and a.phase != b.phase:
            self._add(now, "switchover", b.leader or "", f"{b.kind} {b.id}: phase {b.phase}")
        elif a is not None and b is None:
            self._add(now, "switchover", "", f"{a.kind} {a.id} ended")

    def _sample(self, view: ClusterView, now: float) -> None:
        if view.dcs_error is not None:
            return
        for name, m in view.members.items():
            self.seen[name] = m
            self.gone_since.pop(name, None)
        for name in self.seen:
            if name not in view.members:
                self.gone_since.setdefault(name, now)
        leader = view.members.get(view.leader.name) if view.leader else None
        if leader is not None and leader.wal_lsn is not None and (
                not self.leader_lsn or self.leader_lsn[-1][1] != leader.wal_lsn):
            self.leader_lsn.append((now, leader.wal_lsn))
        while self.leader_lsn and self.leader_lsn[0][0] < now - self.window and len(self.leader_lsn) > 1:
            self.leader_lsn.popleft()
        for name, m in view.members.items():
            series = self.lag.setdefault(name, deque())
            if series and now - series[-1][0] < self.sample_every:
                continue
            series.append((now, lag_of(view, m)))
        for series in self.lag.values():
            while series and series[0][0] < now - self.window:
                series.popleft()

    def _transitions(self, s: NodeSnapshot, now: float) -> list[Transition]:
        view = s.view
        leading = views.is_leader_primary(s)
        out: list[Transition] = []
        if view is not None and view.dcs_error is None:
            if view.switchover is not None:
                self._switchover_seen.setdefault(view.switchover.id, (now, view.switchover.kind))
            if view.leader is None:
                if self._had_leader and self._leaderless_since is None:
                    self._leaderless_since = now
            elif view.leader.name != views.me(s):
                self._had_leader = True
        if leading and not self._leading:
            if self._switchover_seen:
                at, kind = min(self._switchover_seen.values())
                out.append(Transition("failover" if kind == "failover" else "switchover", now - at))
            elif self._leaderless_since is not None:
                out.append(Transition("failover", now - self._leaderless_since))
        other_leads = view is not None and view.leader is not None and view.leader.name != views.me(s)
        if leading or (other_leads and view is not None and view.switchover is None):
            # Done, or it ended without us: forget what we were timing.
            self._switchover_seen.clear()
            self._leaderless_since = None
        self._leading = leading
        if leading:
            self._had_leader = True
        return out

    # --- reading ------------------------------------------------------------------------
    def lag_seconds(self, lsn: int, now: float) -> float | None:
        """How long ago the leader's published WAL position passed ``lsn`` (0 when it has not)."""
        with self._lock:
            samples = list(self.leader_lsn)
        if not samples:
            return None
        if samples[-1][1] <= lsn:
            return 0.0
        for at, leader_lsn in samples:
            if leader_lsn > lsn:
                return max(0.0, now - at)
        return None

    def state(self) -> tuple[dict[str, list[tuple[float, int | None]]], list[Event], dict[str, MemberInfo],
                             dict[str, float]]:
        with self._lock:
            return ({k: list(v) for k, v in self.lag.items()}, list(self.events), dict(self.seen),
                    dict(self.gone_since))


def lag_of(view: ClusterView, m: MemberInfo) -> int | None:
    """Bytes ``m`` is behind the leader's published WAL position (0 for the leader)."""
    if view.leader is None:
        return None
    if m.name == view.leader.name:
        return 0
    leader = view.members.get(view.leader.name)
    if leader is None or leader.wal_lsn is None or m.lsn == 0:
        return None
    return max(0, leader.wal_lsn - m.lsn)
