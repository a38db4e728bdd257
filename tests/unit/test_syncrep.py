"""Synchronous replication planning: convergence step by step, and safety after every action.

A small model of the leader's loop: PostgreSQL's synchronous_standby_names,
the pg_stat_replication rows it shows (observed at the start of each loop, so
a new standby is confirmed one loop after it was named) and /sync.  Each
loop asks ``syncrep.plan`` for actions and applies them one at a time; after
every single action the safety invariant must hold:

    any |S_pub| - Q_pub + 1 members of the published set intersect every
    N-subset of the set PostgreSQL waits for (ANY N).

FIRST k of k is ANY k, and in FIRST mode any single member of /sync may be
promoted (Q_pub = |S_pub|), so the invariant reads "/sync ⊆ PostgreSQL's set".
'*' waits for any one standby: ANY 1 of every standby there is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations, product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgha.core import syncrep
from pgha.core.actions import Action, PublishSync, SetSyncStandbys
from pgha.core.facts import Facts
from pgha.core.model import ClusterConfig, Replication, SyncMode, SyncState, Tags
from tests.unit.core_builders import NOW, config, local, pg_primary, primary, replica, view

ME = "a"
NAMES = ("b", "c", "d")


def parse(value: str) -> tuple[int, frozenset[str]]:
    """(N, S): PostgreSQL acknowledges a commit once any N members of S have it."""
    if not value:
        return 0, frozenset()
    if value == "*":
        return 1, frozenset(["*"])
    head, _, rest = value.partition(" (")
    names = frozenset(s.strip().strip('"') for s in rest.rstrip(")").split(","))
    kind, n = head.split()
    assert kind in ("FIRST", "ANY")
    return int(n), names


def violation(mode: SyncMode, pub: SyncState | None, ssn: str, universe: Iterable[str]) -> str | None:
    """Why (pub, PostgreSQL) could lose an acknowledged commit on failover; None when safe."""
    if mode == "off" or pub is None or not pub.standbys:
        return None
    s_pub = set(pub.standbys)
    q_pub = pub.quorum if mode == "quorum" else len(s_pub)
    n, s_pg = parse(ssn)
    if "*" in s_pg:
        s_pg = frozenset(universe)
    if n == 0:
        return f"/sync names {sorted(s_pub)} while PostgreSQL acknowledges commits alone"
    for seen in combinations(sorted(s_pub), len(s_pub) - max(q_pub, 1) + 1):
        for acked_by in combinations(sorted(s_pg), n):
            if not set(seen) & set(acked_by):
                return (
                    f"/sync {sorted(s_pub)} quorum {q_pub}: a candidate seeing {list(seen)} may miss a commit"
                    f" acknowledged by {list(acked_by)} (synchronous_standby_names = {ssn!r})"
                )
    return None


@dataclass
class Leader:
    """The leader's synchronous replication state, driven by syncrep.plan one loop at a time."""

    mode: SyncMode
    count: int = 1
    ssn: str = ""
    pub: SyncState | None = None
    streaming: set[str] = field(default_factory=set)
    nosync: set[str] = field(default_factory=set)
    lsn: dict[str, int] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)

    def cfg(self) -> ClusterConfig:
        return config(synchronous_mode=self.mode, synchronous_node_count=self.count)

    def rows(self) -> tuple[Replication, ...]:
        _n, names = parse(self.ssn)
        state = "quorum" if self.ssn.startswith("ANY") else "sync"
        return tuple(
            Replication(m, "streaming", state if (m in names or "*" in names) else "async", 1000, 1000)
            for m in sorted(self.streaming)
        )

    def loop(self) -> list[Action]:
        members = [
            replica(m, ME, self.lsn.get(m, 1000), tags=Tags(nosync=m in self.nosync))
            if m in self.streaming
            else replica(m, None, state="running")
            for m in NAMES
        ]
        cfg = self.cfg()
        v = view(primary(ME), *members, leader=ME, cfg=cfg, sync=self.pub)
        loc = local(ME, pg_primary(synchronous_standby_names=self.ssn, replication=self.rows()))
        acts = syncrep.plan(Facts(view=v, local=loc, config=cfg, now=NOW))
        for a in acts:
            self.apply(a)
        return acts

    def apply(self, a: Action) -> None:
        if isinstance(a, PublishSync):
            self.pub = SyncState(ME, a.standbys, a.quorum)
        elif isinstance(a, SetSyncStandbys):
            self.ssn = "*" if a.standbys == ("*",) else syncrep.render_names(a.standbys, a.quorum, a.mode)
        else:  # pragma: no cover - plan only emits these two
            raise AssertionError(a)
        self.trace.append(f"{a} -> ssn={self.ssn!r} sync={self.pub}")
        problem = violation(self.mode, self.pub, self.ssn, NAMES)
        assert problem is None, problem + "\n" + "\n".join(self.trace)

    def converge(self, max_loops: int = 6) -> int:
        for i in range(max_loops):
            if not self.loop():
                return i
        raise AssertionError("no fixed point:\n" + "\n".join(self.trace))

    def expected(self) -> tuple[str, tuple[str, ...], int]:
        """(synchronous_standby_names, /sync standbys, /sync quorum) once converged."""
        eligible = sorted(self.streaming - self.nosync, key=lambda m: (-self.lsn.get(m, 1000), m))
        if self.mode == "off":
            return "", (), 0
        if self.mode == "quorum":
            target = tuple(sorted(eligible))
            q = min(self.count, len(target))
            return syncrep.render_names(target, q, "any"), target, q
        # A published standby that still streams keeps its place (no swapping on LSN noise).
        mine = self.pub.standbys if self.pub is not None and self.pub.leader == ME else ()
        kept = [m for m in mine if m in eligible]
        target = tuple((kept + [m for m in eligible if m not in kept])[: self.count])
        if not target:
            return ("*" if self.mode == "strict" else ""), (), 0
        return syncrep.render_names(target, len(target), "first"), target, len(target)

    def assert_converged(self) -> None:
        ssn, standbys, quorum = self.expected()
        assert self.ssn == ssn, self.trace
        pub = self.pub or SyncState(ME)
        assert (pub.standbys, pub.quorum) == (standbys, quorum), self.trace


# --- step by step ---------------------------------------------------------------------------


def test_first_mode_names_in_postgresql_then_publishes_once_confirmed() -> None:
    ld = Leader("on", streaming={"b", "c"})
    assert ld.loop() == [SetSyncStandbys(("b",), 1, "first")]
    assert ld.pub is None, "/sync must wait for pg_stat_replication to confirm b"
    assert ld.loop() == [PublishSync(("b",), 1)]
    assert ld.loop() == []
    # b stops streaming: /sync drops it before PostgreSQL stops waiting for it.
    ld.streaming = {"c"}
    assert ld.loop() == [PublishSync((), 0), SetSyncStandbys(("c",), 1, "first")]
    assert ld.loop() == [PublishSync(("c",), 1)]
    assert ld.loop() == []


def test_first_mode_without_standbys_goes_asynchronous_after_emptying_sync() -> None:
    ld = Leader("on", streaming={"b"})
    ld.converge()
    ld.streaming = set()
    assert ld.loop() == [PublishSync((), 0), SetSyncStandbys((), 0, "first")]
    assert ld.ssn == ""
    assert ld.loop() == []


def test_strict_mode_blocks_writes_when_no_standby_is_left() -> None:
    ld = Leader("strict", streaming={"b"})
    ld.converge()
    ld.streaming = set()
    assert ld.loop() == [PublishSync((), 0), SetSyncStandbys(("*",), 0, "first")]
    assert ld.ssn == "*"
    assert ld.loop() == []
    ld.streaming = {"c"}
    ld.converge()
    ld.assert_converged()
    assert ld.pub is not None and ld.pub.standbys == ("c",)


def test_strict_mode_from_the_start_blocks() -> None:
    ld = Leader("strict")
    assert ld.loop() == [SetSyncStandbys(("*",), 0, "first")]
    assert ld.loop() == []


def test_first_mode_prefers_the_most_advanced_and_skips_nosync() -> None:
    ld = Leader("on", count=2, streaming={"b", "c", "d"}, nosync={"b"}, lsn={"c": 900, "d": 1000})
    ld.converge()
    assert ld.ssn == 'FIRST 2 ("d", "c")'
    assert ld.pub == SyncState(ME, ("d", "c"), 2)


def test_first_mode_keeps_its_standby_when_another_gets_ahead() -> None:
    """Swapping the standby on LSN noise empties /sync for a loop each time: a primary lost
    then had no candidate at all."""
    ld = Leader("on", streaming={"b", "c"}, lsn={"b": 1000, "c": 900})
    ld.converge()
    assert ld.pub == SyncState(ME, ("b",), 1)
    ld.lsn = {"b": 900, "c": 1000}
    assert ld.loop() == []
    assert ld.pub == SyncState(ME, ("b",), 1)


def test_quorum_mode_grows_sync_before_postgresql_counts_a_new_standby() -> None:
    ld = Leader("quorum", streaming={"b"})
    ld.converge()
    ld.assert_converged()
    ld.streaming = {"b", "c"}
    assert ld.loop() == [PublishSync(("b", "c"), 1)]
    assert ld.loop() == [SetSyncStandbys(("b", "c"), 1, "any")]
    assert ld.loop() == []


def test_quorum_mode_shrinks_sync_only_after_postgresql_stopped_counting() -> None:
    ld = Leader("quorum", streaming={"b", "c"})
    ld.converge()
    ld.streaming = {"b"}
    assert ld.loop() == [SetSyncStandbys(("b",), 1, "any")]
    assert ld.pub is not None and ld.pub.standbys == ("b", "c")
    assert ld.loop() == [PublishSync(("b",), 1)]


def test_quorum_mode_lowering_the_quorum_publishes_the_lower_quorum_first() -> None:
    """ANY 2 -> ANY 1 of (b, c, d): /sync must ask candidates to see more members before
    PostgreSQL accepts a single acknowledgement."""
    ld = Leader("quorum", count=2, streaming={"b", "c", "d"})
    ld.converge()
    assert ld.pub == SyncState(ME, ("b", "c", "d"), 2)
    ld.count = 1
    ld.converge()
    ld.assert_converged()


def test_quorum_mode_without_standbys_empties_sync_before_going_asynchronous() -> None:
    ld = Leader("quorum", streaming={"b", "c"})
    ld.converge()
    ld.streaming = set()
    ld.converge()
    ld.assert_converged()
    assert ld.ssn == ""


def test_off_mode_clears_everything() -> None:
    ld = Leader("on", streaming={"b"})
    ld.converge()
    ld.mode = "off"
    assert ld.loop() == [SetSyncStandbys((), 0), PublishSync((), 0)]
    assert ld.loop() == []


def test_new_leader_replaces_the_old_leaders_sync_first() -> None:
    """Just promoted: /sync still names the old leader's standbys; ours are published afresh."""
    for mode in ("on", "quorum"):
        ld = Leader(mode, streaming={"b", "c"})  # type: ignore[arg-type]
        ld.pub = SyncState("z", ("b", "c"), 1)
        first = ld.loop()
        assert first[0] == PublishSync((), 0), (mode, first)
        ld.converge()
        ld.assert_converged()


# --- exhaustive over small clusters ---------------------------------------------------------


def subsets(names: Sequence[str]) -> list[set[str]]:
    return [set(c) for r in range(len(names) + 1) for c in combinations(names, r)]


@pytest.mark.parametrize("mode", ["on", "strict", "quorum"])
def test_every_membership_change_converges_safely(mode: SyncMode) -> None:
    for count, before, after in product((1, 2, 3), subsets(NAMES), subsets(NAMES)):
        ld = Leader(mode, count=count, streaming=before)
        ld.converge()
        ld.assert_converged()
        ld.streaming = after
        ld.converge()
        ld.assert_converged()


@pytest.mark.parametrize("mode", ["on", "strict", "quorum"])
def test_every_node_count_change_converges_safely(mode: SyncMode) -> None:
    for before, after, members in product((1, 2, 3), (1, 2, 3), subsets(NAMES)):
        ld = Leader(mode, count=before, streaming=members)
        ld.converge()
        ld.count = after
        ld.converge()
        ld.assert_converged()


@settings(max_examples=150, deadline=None)
@given(
    mode=st.sampled_from(["on", "strict", "quorum"]),
    steps=st.lists(
        st.tuples(st.frozensets(st.sampled_from(NAMES)), st.integers(1, 3), st.integers(0, 2)),
        min_size=1,
        max_size=8,
    ),
)
def test_random_changes_mid_convergence_stay_safe(mode: SyncMode, steps: list[tuple[frozenset[str], int, int]]) -> None:
    """Membership and node count change while the leader is still between steps."""
    ld = Leader(mode)
    for members, count, loops in steps:
        ld.streaming, ld.count = set(members), count
        for _ in range(loops):
            ld.loop()
    ld.converge()
    ld.assert_converged()


def test_the_invariant_checker_rejects_unsafe_states() -> None:
    assert violation("on", SyncState(ME, ("b",), 1), 'FIRST 1 ("c")', NAMES)
    assert violation("on", SyncState(ME, ("b",), 1), "", NAMES)
    assert violation("on", SyncState(ME, ("b",), 1), "*", NAMES)
    assert violation("on", SyncState(ME, ("b",), 1), 'FIRST 2 ("b", "c")', NAMES) is None
    assert violation("quorum", SyncState(ME, ("b", "c", "d"), 2), 'ANY 1 ("b", "c", "d")', NAMES)
    assert violation("quorum", SyncState(ME, ("b", "c", "d"), 1), 'ANY 2 ("b", "c", "d")', NAMES) is None
    assert violation("quorum", SyncState(ME, ("b", "c"), 1), 'ANY 1 ("b", "c", "d")', NAMES)
    assert violation("quorum", SyncState(ME, ("b", "c"), 1), 'ANY 1 ("b")', NAMES) is None
