"""Who may become leader, and who should: candidate checks and ranking.

A candidate is a healthy streaming replica on the latest timeline, not tagged
``nofailover``, within ``maximum_lag_on_failover`` of the last known primary
position, and — in synchronous modes — one that was synchronous.  Among the
candidates the highest LSN wins, then ``failover_priority``, then the member
that led last, then the name (so every node computes the same winner).
"""

from __future__ import annotations

from dataclasses import dataclass

from pgha.core.facts import Facts


@dataclass(frozen=True)
class Contender:
    name: str
    lsn: int
    priority: int
    was_last_leader: bool

    def key(self) -> tuple[int, int, int, str]:
        # Name sorts descending through negation of its order in the final min(): see best().
        return (self.lsn, self.priority, int(self.was_last_leader), self.name)


def reference_lsn(f: Facts) -> int:
    """The last known primary position: the old leader's published LSN, else the best seen.

    A published position is at most ttl/3 old, or behind the real one by less than 1/16 of
    maximum_lag_on_failover (64 kB at most; ``pgha.core.publish.lsn_publish_due``): the polls of
    the live members give their positions as they are now."""
    old = f.view.members.get(f.view.last_leader or "") if f.view.last_leader else None
    positions = [m.lsn for m in f.view.members.values()]
    positions += [p.lsn for p in f.local.peers.values() if p.lsn is not None]
    if old is not None and old.wal_lsn:
        positions.append(old.wal_lsn)
    return max(positions, default=0)


def why_not_candidate(f: Facts) -> str | None:
    """None when this node may be promoted automatically; otherwise the reason."""
    if f.local.tags.nofailover:
        return "tagged nofailover"
    if f.local.promote_vetoed:
        # Fix: the vetoed member stayed the best candidate, took the key again and again, and the
        # others deferred to it forever, leaving the cluster without a primary.
        return "the pre_promote hook vetoed our last promotion"
    if not f.is_replica:
        return "PostgreSQL is not running as a replica"
    if f.standby:
        # The other site has every transaction: the winner catches up from there, nothing is lost.
        return None
    tl = f.local.pg.timeline or 0
    if tl < f.latest_timeline and f.config.check_timeline:
        return f"on timeline {tl}, behind the latest timeline {f.latest_timeline}"
    lag = reference_lsn(f) - f.my_lsn
    if lag > f.config.maximum_lag_on_failover:
        return f"lagging {lag} bytes, more than maximum_lag_on_failover ({f.config.maximum_lag_on_failover})"
    if f.config.synchronous_mode != "off":
        sync = f.view.sync
        if sync is None or f.me not in sync.standbys:
            return "not a synchronous standby, and synchronous_mode is on"
        if f.config.synchronous_mode == "quorum":
            seen = 1 + sum(1 for n in sync.standbys if n != f.me and n in f.local.peers
                           and f.local.peers[n].api == "ok")
            need = len(sync.standbys) - max(sync.quorum, 1) + 1
            if seen < need:
                return f"quorum: sees {seen} of the {need} synchronous standbys needed to be sure"
    return None


def contenders(f: Facts) -> list[Contender]:
    """Every member that could win, as far as this node can tell right now."""
    out = [Contender(f.me, f.my_lsn, f.local.tags.failover_priority, f.view.last_leader == f.me)]
    sync = f.view.sync if f.config.synchronous_mode != "off" else None
    for name, poll in f.local.peers.items():
        m = f.view.members.get(name)
        if name == f.me or m is None or poll.api != "ok" or poll.lsn is None:
            continue
        if m.tags.nofailover or m.promote_vetoed or poll.in_recovery is not True:
            continue
        if sync is not None and name not in sync.standbys:
            continue
        out.append(Contender(name, poll.lsn, m.tags.failover_priority, f.view.last_leader == name))
    return out


def best(cands: list[Contender]) -> Contender:
    """Highest LSN, then priority, then last leader, then the smallest name."""
    top = max(c.key()[:3] for c in cands)
    return min((c for c in cands if c.key()[:3] == top), key=lambda c: c.name)


def i_am_best(f: Facts) -> bool:
    return best(contenders(f)).name == f.me


def switchover_lsn(f: Facts, name: str) -> int:
    """How far ``name`` got: what it answered our poll just now, else what it last published
    (up to ttl/3 old, or 64 kB behind: on a busy primary the first alone can exceed
    maximum_lag_on_failover)."""
    p = f.local.peers.get(name)
    if p is not None and p.api == "ok" and p.lsn is not None:
        return p.lsn
    m = f.view.members.get(name)
    return m.lsn if m is not None else 0


def why_not_switchover_target(f: Facts, candidate: str) -> str | None:
    """None when ``candidate`` may take over by switchover; else the refusal.

    The leader judges the lag by the position the candidate answered its poll with; the CLI
    and the API (no polls) by what the members published, up to ttl/3 ago.
    """
    m = f.view.members.get(candidate)
    if m is None:
        return f"candidate {candidate} is not a member of the cluster"
    if candidate == f.me:
        return f"candidate {candidate} is already the leader"
    if m.tags.nofailover:
        return f"candidate {candidate} is tagged nofailover"
    if not f.member_is_healthy_replica(candidate):
        return f"candidate {candidate} is not a streaming replica (state: {m.state})"
    sync = f.view.sync if f.config.synchronous_mode in ("on", "strict") else None
    if sync is not None and candidate not in sync.standbys:
        return f"candidate {candidate} is not synchronous, and synchronous_mode is {f.config.synchronous_mode}"
    # A synchronous standby has flushed every acknowledged commit, and the leader's clean shutdown
    # hands it the rest before it promotes: its lag only lengthens the handover, so it is not
    # judged (the published positions it would be judged by may be ttl/3 old anyway).
    lag = f.my_lsn - switchover_lsn(f, candidate)
    if sync is None and lag > f.config.maximum_lag_on_failover:
        return f"candidate {candidate} lags {lag} bytes, more than maximum_lag_on_failover"
    return None


def why_poll_refuses(f: Facts, candidate: str) -> str | None:
    """None when our latest poll found ``candidate`` alive as a replica (or we have not
    polled it yet); else the refusal.  A member key outlives a frozen agent by up to ttl,
    so the leader asks the candidate itself before shutting down for it."""
    p = f.local.peers.get(candidate)
    if p is None:
        return None
    if p.api != "ok":
        return f"candidate {candidate} does not answer (its agent's API: {p.api})"
    if p.in_recovery is not True:
        return f"candidate {candidate} does not run PostgreSQL as a replica (its agent says so now)"
    return None


def pick_switchover_target(f: Facts) -> str | None:
    """The most advanced healthy replica eligible for switchover (and, once polled, alive), or None."""
    names = sorted(n for n in f.view.members
                   if why_not_switchover_target(f, n) is None and why_poll_refuses(f, n) is None)
    if not names:
        return None
    ranked = [Contender(n, switchover_lsn(f, n), f.view.members[n].tags.failover_priority, False) for n in names]
    return best(ranked).name


def pick_polled_replica(f: Facts) -> str | None:
    """The most advanced replica that answered our poll and may take over by switchover
    (used once the leader has shut down, when no replica is streaming any more)."""
    sync = f.view.sync if f.config.synchronous_mode in ("on", "strict") else None
    ranked = []
    for name, p in f.local.peers.items():
        m = f.view.members.get(name)
        if m is None or name == f.me or m.tags.nofailover or p.api != "ok" or p.lsn is None:
            continue
        if p.in_recovery is not True or (sync is not None and name not in sync.standbys):
            continue
        ranked.append(Contender(name, p.lsn, m.tags.failover_priority, False))
    return best(ranked).name if ranked else None


def ranking(f: Facts) -> str:
    """The contenders as this node sees them, best first: 'node3 lsn=0/5000060 prio=1, ...'."""
    def format_lsn(lsn: int) -> str:
        return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"

    ranked = sorted(contenders(f), key=lambda c: (c.key()[:3], [-ord(ch) for ch in c.name]), reverse=True)
    return "ranking: " + ", ".join(f"{c.name} lsn={format_lsn(c.lsn)} prio={c.priority}" for c in ranked)
