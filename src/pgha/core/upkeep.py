"""The actions the steady rows share: routine upkeep of a healthy leader or replica (slots,
synchronous standbys, routing, hooks, intents), demotion and promotion sequences."""

from __future__ import annotations

from dataclasses import replace

from pgha.core import election, slots, syncrep, upstream
from pgha.core.actions import (
    Action,
    AppendHistory,
    ArmWatchdog,
    ClearSwitchover,
    CompleteIntent,
    DisarmWatchdog,
    Fence,
    ManageSlots,
    PausePgBouncer,
    PollPeers,
    PrePromote,
    Promote,
    ReloadPostgres,
    RepointPgBouncer,
    RestartPostgres,
    ResumePgBouncer,
    RunCallback,
    SetVip,
    SyncSlots,
)
from pgha.core.facts import Facts
from pgha.core.memory import POLL_FRESH
from pgha.core.model import Role


def announce(f: Facts, role: str) -> list[Action]:
    """on_start the first time, on_role_change whenever the role we serve changes."""
    if f.local.announced_role == role:
        return []
    event = "on_start" if f.local.announced_role is None else "on_role_change"
    return [RunCallback(event, role)]  # type: ignore[arg-type]


def leader_serves(f: Facts) -> bool:
    """The leader runs as primary.  Fix: when we lead, ask our own PostgreSQL; our member key says
    "promoting" until the end of the loop after the promotion, which kept our PgBouncer paused
    one loop longer than every other."""
    if f.i_lead:
        return f.is_primary
    return f.leader_member is not None and f.leader_member.role == Role.PRIMARY


def bouncer_resume(f: Facts) -> list[Action]:
    """Resume a PgBouncer paused for a switchover that is over, once the leader runs as primary
    (until then its clients keep waiting rather than fail)."""
    sw = f.view.switchover
    paused = f.local.pgbouncer_paused_for
    if paused and (sw is None or sw.id != paused) and leader_serves(f):
        return [ResumePgBouncer(f.leader_name)]
    return []


def bouncer_upkeep(f: Facts) -> list[Action]:
    """Resume a PgBouncer paused for a switchover that is over; else keep it pointed at the leader."""
    sw = f.view.switchover
    paused = f.local.pgbouncer_paused_for
    if paused and (sw is None or sw.id != paused):
        resume = bouncer_resume(f)
        if resume or sw is None:
            return resume
    if sw is not None and sw.phase in ("pausing", "demoting") and paused != sw.id:
        return [PausePgBouncer(sw.id)]
    if paused:
        return []
    return [RepointPgBouncer(f.leader_name)]


def intents(f: Facts) -> list[Action]:
    """Operator intents for this member: restart, reload (reinitialize is a rule of its own)."""
    intent = f.view.intents.get(f.me)
    if intent is None or intent.id in f.local.done_intents or intent.action == "reinitialize":
        return []
    if intent.scheduled_at is not None and intent.scheduled_at > f.local.wall_now:
        return []
    role = "primary" if f.is_primary else "replica"
    if intent.role is not None and intent.role != role:
        return [CompleteIntent(intent.id, f"skipped: role is {role}, not {intent.role}")]
    if intent.action == "reload":
        return [ReloadPostgres(), RunCallback("on_reload", role), CompleteIntent(intent.id, "reloaded")]
    if intent.only_if_pending and not f.local.pg.pending_restart:
        return [CompleteIntent(intent.id, "skipped: no restart pending")]
    return [RestartPostgres(), CompleteIntent(intent.id, "restarted")]


def slot_inputs(f: Facts, primary: bool) -> slots.SlotInputs:
    """A member that may never be promoted (nofailover) keeps no permanent slots, one tagged nostream
    no logical ones (as in Patroni)."""
    leader = f.leader_member
    pg = f.local.pg
    config = f.config
    if not primary and f.local.tags.nofailover:
        config = replace(config, slots={})
    elif not primary and f.local.tags.nostream:
        # No feedback reaches the primary: a logical copy here would not be safe to use (Patroni's rule).
        config = replace(config, slots={n: s for n, s in config.slots.items() if s.type == "physical"})
    return slots.SlotInputs(
        config=config, local=pg.slots, owned=pg.owned_slots, members=tuple(sorted(f.view.members)),
        primary=primary, targets=leader.slots if leader is not None and not primary else {},
        replay=pg.replayed_lsn, server_version=pg.server_version,
        restart_targets=leader.slot_restart if leader is not None and not primary else {},
        wal_floor=pg.wal_floor)


def slot_upkeep(f: Facts, primary: bool) -> list[Action]:
    """The permanent-slot plan (core/slots.py), when it has anything to do."""
    if not f.running:
        return []
    ops = slots.plan(slot_inputs(f, primary))
    if not primary and (not f.streaming_from_upstream or f.view.switchover is not None):
        # A copy restarts PostgreSQL: only on a replica streaming from a leader that stays.
        ops = tuple(o for o in ops if o.kind != "copy")
    return [ManageSlots(ops)] if ops else []


def upkeep_leader(f: Facts) -> list[Action]:
    # A member tagged nostream never connects: a slot for it would keep WAL here for ever.  Nor does
    # one that cascades from a replica (replicatefrom): its slot is on that replica; a slot here
    # would never advance and keep WAL on the primary for ever.  It gets one here as soon as it
    # falls back to streaming from us (the same decision, core/upstream.py).
    others = tuple(sorted(n for n, m in f.view.members.items()
                          if n != f.me and not m.tags.nostream and upstream.streams_from_leader(f.view, n)))
    keep = slots.kept_by_plan(slot_inputs(f, True))
    acts: list[Action] = [ArmWatchdog(), SetVip(True), SyncSlots(others, keep), *slot_upkeep(f, True)]
    if f.config_stale:
        acts.append(ReloadPostgres())
    acts += syncrep.plan(f)
    acts += bouncer_upkeep(f)
    acts += announce(f, "primary")
    acts += intents(f)
    return acts


def replica_member_slots(f: Facts) -> list[Action]:
    """A replica keeps a slot for each member tagged replicatefrom it (kept while that member falls
    back to the leader, so that it finds its WAL when it returns), and drops the member slots it made
    that nobody needs any more (e.g. the tag was removed).  Nothing when there is neither."""
    downstream = upstream.downstream_of(f.view, f.me)
    keep = slots.kept_by_plan(slot_inputs(f, False))
    pg = f.local.pg
    stale = any(s.type == "physical" and s.name in pg.owned_slots and s.name not in keep for s in pg.slots)
    return [SyncSlots(downstream, keep)] if downstream or stale else []


def upkeep_replica(f: Facts, files_written: bool = False) -> list[Action]:
    """``files_written``: the row rewrites the managed files itself (Follow), so no reload here
    (one with this loop's observation would write the old upstream back)."""
    acts: list[Action] = [DisarmWatchdog(), SetVip(False), *replica_member_slots(f), *slot_upkeep(f, False)]
    if f.config_stale and not files_written:
        acts.append(ReloadPostgres())
    acts += bouncer_upkeep(f)
    acts += announce(f, "replica")
    acts += intents(f)
    return acts


def demote_now(f: Facts, reason: str) -> list[Action]:
    """Stop writes first, then give up everything that makes us look like the primary."""
    return [Fence(reason), SetVip(False), DisarmWatchdog()]


def promote(f: Facts, reason: str) -> list[Action]:
    """The pre_promote hook first, then history (it records the timeline that ends here), then the
    promotion itself.

    Fix: the hook used to run inside the promotion, after the history entry was written, so a
    vetoed promotion left a fork on record that never happened: every replica then looked
    "behind the latest timeline" and the cluster stayed without a primary.
    """
    if f.local.pre_promote_hook and not f.last_task_ok("pre_promote"):
        return [PrePromote()]
    sw = f.view.switchover
    if sw is not None and sw.phase == "demoting":
        reason = f"switchover from {sw.leader or f.view.last_leader}"
        return [AppendHistory(reason), Promote(), ClearSwitchover(f"done: {f.me} promoted")]
    if sw is not None and sw.kind == "failover" and sw.candidate == f.me:
        return [AppendHistory("manual failover"), Promote(), ClearSwitchover(f"done: {f.me} promoted")]
    return [AppendHistory(reason), Promote()]


def clone_source(f: Facts) -> str:
    """The member our replicatefrom tag names while it streams (so cloning takes no load off the
    primary either); else Patroni's clonefrom: a member so tagged that streams from the leader on its
    timeline (the first by name, so every retry picks the same), else the leader."""
    if f.upstream.cascades and f.upstream.name:
        return f.upstream.name
    leader = f.leader_member
    tagged = sorted(
        m.name for m in f.view.members.values()
        if m.tags.clonefrom and m.name not in (f.me, f.leader_name) and m.role == Role.REPLICA
        and m.state == "streaming" and m.following == f.leader_name
        and leader is not None and m.timeline == leader.timeline)
    return tagged[0] if tagged else f.leader_name or ""


def poll_if_quorum_unseen(f: Facts) -> list[Action]:
    """Fix: in quorum mode eligibility depends on which synchronous standbys answer polls, and
    this row comes before elect-poll; without polling here no candidate ever sees the others."""
    reason = election.why_not_candidate(f) or ""
    return [PollPeers()] if reason.startswith("quorum:") else []


def stale_poll_window(f: Facts) -> float:
    """Fix: how long another member may still act on a poll taken before our agent restarted.

    An agent restarted within ttl keeps its lease and leader key.  A replica that polled it
    while it was down (API and PostgreSQL refused) can still revoke that very key
    (replica-leader-dead) for as long as its poll is fresh (POLL_FRESH) plus one DCS round
    trip (retry_timeout).  Starting PostgreSQL as primary inside
    that window let another member be promoted while ours was writable.
    """
    return POLL_FRESH + f.config.retry_timeout


