"""The leader's side of a planned switchover: the candidate, whether to refuse, whether it caught up."""

from __future__ import annotations

from pgha.core import election
from pgha.core.facts import Facts


def switchover_target(f: Facts) -> tuple[str | None, str | None]:
    """(candidate, refusal): the member to hand over to, or why the request is refused."""
    sw = f.view.switchover
    assert sw is not None
    if sw.leader not in (None, f.me):
        return None, f"switchover names leader {sw.leader}, but {f.me} is the leader"
    if sw.candidate:
        # What the candidate answered just now comes first: a frozen agent's member key is stale.
        why = election.why_poll_refuses(f, sw.candidate) if sw.phase == "requested" else None
        return sw.candidate, why or election.why_not_switchover_target(f, sw.candidate)
    picked = election.pick_switchover_target(f)
    if picked is None and sw.phase != "requested":
        # Fix: once we shut down, no replica streams any more, so none passes the "healthy
        # streaming replica" test and sw_candidate() failed its assertion inside a guard,
        # crashing every loop.  After the shutdown, take the most advanced polled replica.
        picked = election.pick_polled_replica(f)
    return picked, None if picked else "no healthy replica can take over"


def sw_refused(f: Facts) -> bool:
    if f.view.switchover is None or not f.switchover_due or f.view.switchover.phase != "requested":
        return False
    return switchover_target(f)[1] is not None


def sw_polled(f: Facts) -> bool:
    """We asked the other members since the request was written (or there is nobody to ask):
    the candidate's live position, and a frozen candidate, are known before we judge it and
    shut down for it.  Fix: a poll from just before the request (another switchover refused a
    moment ago) showed the candidate as it was then, alive and lagging."""
    if not any(n != f.me for n in f.view.members):
        return True
    return bool(f.local.peers) and f.local.peers_revision >= f.view.switchover_revision


def sw_candidate(f: Facts) -> str:
    cand = switchover_target(f)[0]
    assert cand is not None
    return cand


def sw_caught_up(f: Facts) -> bool:
    cand = switchover_target(f)[0]
    if cand is None:
        return False  # nobody answered yet: sw-wait-catchup polls, sw-abort ends it
    poll = f.local.peers.get(cand)
    return poll is not None and poll.lsn is not None and poll.lsn >= f.my_lsn



def sw_in(f: Facts, phase: str) -> bool:
    sw = f.view.switchover
    return f.i_lead and sw is not None and f.switchover_due and sw.phase == phase and sw.leader in (None, f.me)


def sw_stale(f: Facts) -> bool:
    """A switchover that another leader started (and did not finish) is not ours to continue."""
    sw = f.view.switchover
    return f.i_lead and sw is not None and sw.phase != "requested" and sw.leader not in (None, f.me)


