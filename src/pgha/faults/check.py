"""The checkers: pure functions over the history, the nemesis log and the monitors' intervals.

No clock, socket or file here: the runner reads the records and passes them in, so the unit
tests feed synthetic histories.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Op:
    client: int
    via: str
    value: int
    invoke: float
    complete: float
    type: str  # ok | fail | info
    node: str | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Op:
        return cls(client=d["client"], via=d["via"], value=d["value"], invoke=d["invoke"], complete=d["complete"],
                   type=d["type"], node=d.get("node"), error=d.get("error"))


@dataclass(frozen=True)
class Writable:
    """An interval during which a node accepted writes (see pgha.faults.monitor)."""

    node: str
    start: float
    end: float


@dataclass
class FaultRecord:
    """One fault as the runner carried it out, and what the checks found during it."""

    index: int
    kind: str
    target: str | None
    start: float
    healed: float
    recovered: float | None  # None: the cluster did not recover within the limit
    leader_before: str | None = None
    leader_after: str | None = None
    lost: list[int] = field(default_factory=list)
    fail_present: list[int] = field(default_factory=list)
    dual: list[tuple[str, str, float, float]] = field(default_factory=list)
    max_gap: float = 0.0
    note: str = ""

    @property
    def recovery(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.healed

    @property
    def end(self) -> float:
        return self.recovered if self.recovered is not None else self.healed

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "target": self.target, "start": self.start,
                "healed": self.healed, "recovered": self.recovered, "recovery_s": self.recovery,
                "leader_before": self.leader_before, "leader_after": self.leader_after, "lost": self.lost,
                "fail_present": self.fail_present, "dual": self.dual, "max_gap_s": self.max_gap,
                "note": self.note}


def lost_writes(ops: Iterable[Op], present: set[int], before: float) -> list[Op]:
    """Acknowledged writes (completed before ``before``) that the final leader does not have."""
    return [op for op in ops if op.type == "ok" and op.complete < before and op.value not in present]


def failed_but_present(ops: Iterable[Op], present: set[int]) -> list[Op]:
    """Writes reported as certainly not applied that are there all the same."""
    return [op for op in ops if op.type == "fail" and op.value in present]


def dual_writable(intervals: Sequence[Writable]) -> list[tuple[str, str, float, float]]:
    """Every overlap of two different nodes' acceptance intervals: (node, node, from, to)."""
    found = []
    ordered = sorted(intervals, key=lambda w: w.start)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.start > a.end:
                break
            if b.node != a.node:
                found.append((a.node, b.node, b.start, min(a.end, b.end)))
    return found


def longest_gap(ok_times: Sequence[float], start: float, end: float) -> float:
    """The longest time without an acknowledged write in [start, end] (its bounds count)."""
    times = [start, *sorted(t for t in ok_times if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(times)) if end > start else 0.0


def in_window(t: float, fault: FaultRecord, next_start: float | None) -> bool:
    """Whether ``t`` belongs to ``fault``: from its start to the next fault's (or its end)."""
    return fault.start <= t < (next_start if next_start is not None else fault.end + 1e9)


@dataclass
class KindSummary:
    kind: str
    count: int = 0
    max_gap: float = 0.0
    max_recovery: float = 0.0
    unrecovered: int = 0
    lost: int = 0
    fail_present: int = 0
    dual: int = 0

    def line(self) -> str:
        return (f"{self.kind:<24} n={self.count:<3} max write gap {self.max_gap:5.1f}s  "
                f"recovery max {self.max_recovery:5.1f}s  unrecovered {self.unrecovered}  "
                f"lost acked {self.lost}  fail-but-present {self.fail_present}  dual-writable {self.dual}")


def summarise(faults: Iterable[FaultRecord]) -> list[KindSummary]:
    by_kind: dict[str, KindSummary] = {}
    for f in faults:
        s = by_kind.setdefault(f.kind, KindSummary(f.kind))
        s.count += 1
        s.max_gap = max(s.max_gap, f.max_gap)
        if f.recovery is None:
            s.unrecovered += 1
        else:
            s.max_recovery = max(s.max_recovery, f.recovery)
        s.lost += len(f.lost)
        s.fail_present += len(f.fail_present)
        s.dual += len(f.dual)
    return sorted(by_kind.values(), key=lambda s: s.kind)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    problems: tuple[str, ...]


def verdict(faults: Sequence[FaultRecord], sync: bool, extra: Sequence[str] = ()) -> Verdict:
    """Pass or fail: every mode needs full recovery and no failed write present; synchronous mode
    also needs no lost acknowledged write and no instant with two nodes accepting writes."""
    problems = list(extra)
    for f in faults:
        what = f"fault #{f.index} {f.kind}" + (f" on {f.target}" if f.target else "")
        if f.recovery is None:
            problems.append(f"{what}: not recovered ({f.note})")
        if f.fail_present:
            problems.append(f"{what}: {len(f.fail_present)} writes reported failed are present")
        if sync and f.lost:
            problems.append(f"{what}: {len(f.lost)} acknowledged writes lost")
        if sync and f.dual:
            problems.append(f"{what}: two nodes accepted writes at once {f.dual[:3]}")
    return Verdict(not problems, tuple(problems))
