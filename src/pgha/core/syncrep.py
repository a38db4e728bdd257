"""Synchronous replication on the leader: which standbys, and in which order to say so.

The invariant: every member named in /sync has been synchronous for every
write PostgreSQL acknowledged since /sync named it.  So PostgreSQL is told
about a new standby before /sync names it (and /sync only names it once
pg_stat_replication shows it synchronous), and /sync drops a standby before
PostgreSQL stops waiting for it.
"""

from __future__ import annotations

from pgha.core import names
from pgha.core.actions import Action, PublishSync, SetSyncStandbys
from pgha.core.facts import Facts
from pgha.core.model import ClusterConfig, ClusterView, Role


def eligible_standbys(f: Facts) -> list[str]:
    """Streaming replicas of ours, not tagged nosync (nor sync_priority 0), within
    maximum_lag_on_syncnode; highest sync_priority first, then most advanced."""
    names = [
        m.name
        for m in f.view.members.values()
        if m.name != f.me
        and m.role == Role.REPLICA
        and m.state == "streaming"
        and m.following == f.me
        and not m.tags.nosync
        and m.tags.sync_priority > 0
    ]
    lagging = sync_lagging(f)
    names = [n for n in names if n not in lagging]
    names.sort(key=lambda n: (-f.view.members[n].tags.sync_priority, -f.view.members[n].lsn,
                              -f.view.members[n].tags.failover_priority, n))
    return names


def sync_lagging(f: Facts) -> set[str]:
    """Standbys further than maximum_lag_on_syncnode behind the most advanced one (behind our own
    position when only one streams), by pg_stat_replication's flush position (as Patroni measures)."""
    limit = f.config.maximum_lag_on_syncnode
    flushed = {r.application_name: r.flush_lsn for r in f.local.pg.replication if r.flush_lsn is not None}
    if limit <= 0 or not flushed:
        return set()
    top = max(flushed.values()) if len(flushed) > 1 else (f.local.pg.wal_lsn or 0)
    return {name for name, lsn in flushed.items() if top - (lsn or 0) > limit}


def confirmed_sync(f: Facts) -> set[str]:
    return {r.application_name for r in f.local.pg.replication if r.sync_state in ("sync", "quorum")}


def plan(f: Facts) -> list[Action]:
    """Actions that move synchronous replication one safe step towards the target."""
    mode = f.config.synchronous_mode
    published = tuple(f.view.sync.standbys) if f.view.sync and f.view.sync.leader == f.me else ()
    if mode == "off":
        out: list[Action] = []
        if f.local.pg.synchronous_standby_names:
            out.append(SetSyncStandbys((), 0))
        if f.view.sync is not None and (published or f.view.sync.leader != f.me):
            out.append(PublishSync((), 0))
        return out

    eligible = eligible_standbys(f)
    n = f.config.synchronous_node_count
    if mode == "quorum":
        target = tuple(sorted(eligible))
        return _plan_quorum(f, published, target, min(n, len(target)))
    return _plan_first(f, published, first_target(published, eligible, n), mode == "strict")


def first_target(published: tuple[str, ...], eligible: list[str], n: int) -> tuple[str, ...]:
    """The ``n`` standbys FIRST mode waits for: the published ones that still stream, then
    the most advanced others.

    Fix: picking the ``n`` most advanced each loop swapped the standby whenever another
    replica's published LSN was a little higher; every swap empties /sync for a moment,
    and a primary lost in that moment had no candidate to fail over to.
    """
    kept = [s for s in published if s in eligible]
    return tuple((kept + [s for s in eligible if s not in kept])[:n])


def _plan_first(f: Facts, published: tuple[str, ...], target: tuple[str, ...], strict: bool) -> list[Action]:
    """FIRST k: every listed standby acknowledges, so any one of them is safe to promote.

    Adding: PostgreSQL first, /sync once pg_stat_replication confirms.  Removing: /sync first.
    """
    out: list[Action] = []
    kept = tuple(s for s in published if s in target)
    if kept != published or (f.view.sync is not None and f.view.sync.leader != f.me):
        out.append(PublishSync(kept, len(kept)))
    pg_value = "*" if strict and not target else render_names(target, len(target), "first")
    if f.local.pg.synchronous_standby_names != pg_value:
        out.append(SetSyncStandbys(("*",) if pg_value == "*" else target, len(target), "first"))
        return out
    confirmed = confirmed_sync(f)
    new = tuple(s for s in target if s in confirmed)
    if new and new != kept:
        out.append(PublishSync(new, len(new)))
    return out


def _plan_quorum(f: Facts, published: tuple[str, ...], target: tuple[str, ...], quorum: int) -> list[Action]:
    """ANY N of S: a candidate must see |S| - N + 1 members of S and be the most advanced.

    Safe while /sync covers every standby PostgreSQL counts, with a quorum no
    larger than PostgreSQL's N, and names nobody while PostgreSQL counts nobody.
    So /sync grows (and its quorum drops) before PostgreSQL counts a new standby
    or lowers N, and shrinks only after PostgreSQL stopped counting it.  From an
    empty /sync the order is that of FIRST (PostgreSQL first); going
    asynchronous empties /sync first.
    """
    out: list[Action] = []
    mine = f.view.sync is not None and f.view.sync.leader == f.me
    pub_q = f.view.sync.quorum if f.view.sync is not None and mine else 0
    pg_value = render_names(target, quorum, "any")
    if f.view.sync is not None and not mine:
        # Fix: the previous leader's /sync says nothing about our PostgreSQL; empty it first.
        return [PublishSync((), 0)]
    if not published or not target:
        # Fix: publishing before PostgreSQL waits for anyone (or after it stopped waiting) named
        # standbys that might lack commits PostgreSQL acknowledged alone.
        if published:
            out.append(PublishSync((), 0))
        if f.local.pg.synchronous_standby_names != pg_value:
            out.append(SetSyncStandbys(target, quorum, "any"))
            return out
        if target:
            out.append(PublishSync(target, quorum))
        return out
    union = tuple(sorted(set(published) | set(target)))
    if union != published or pub_q > quorum:
        # Fix: also when only the quorum drops, so that PostgreSQL never accepts fewer
        # acknowledgements than /sync promises candidates.
        out.append(PublishSync(union, max(min(quorum, pub_q), 1)))
        return out
    if f.local.pg.synchronous_standby_names != pg_value:
        out.append(SetSyncStandbys(target, quorum, "any"))
        return out
    if (published, pub_q) != (target, quorum):
        out.append(PublishSync(target, quorum))
    return out


def render_names(standbys: tuple[str, ...], quorum: int, kind: str) -> str:
    """synchronous_standby_names for these members ('' when none); ValueError for an invalid name."""
    if not standbys:
        return ""
    for name in standbys:
        names.check("member name", name)  # read from the DCS: refused there already
    quoted = ", ".join(f'"{s}"' for s in standbys)
    if kind == "any":
        return f"ANY {quorum} ({quoted})"
    return f"FIRST {len(standbys)} ({quoted})"


def names_for_primary(view: ClusterView, config: ClusterConfig, me: str) -> str:
    """synchronous_standby_names a primary starts with: the published synchronous set, or '*' to
    block commits until one is published ('' when synchronous replication is off)."""
    mode = config.synchronous_mode
    if mode == "off":
        return ""
    sync = view.sync
    if sync is not None and sync.leader == me and sync.standbys:
        return render_names(sync.standbys, sync.quorum, "any" if mode == "quorum" else "first")
    return "*"
