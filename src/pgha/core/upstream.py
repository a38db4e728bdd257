"""Where a replica streams from: the leader, or the member its ``replicatefrom`` tag names.

Patroni's cascading replication: a member tagged ``replicatefrom: B`` streams from replica B
instead of from the leader, which takes that replication load off the primary.  Pure: every
member computes every member's upstream from the same view, so the leader knows which members
stream from it (and keeps their slots) and an upstream replica knows which stream from it.

The member named is used while it is a healthy replica: its member key exists (keys are bound to
their agent's lease, so a dead agent's vanishes within ttl), it publishes itself as a replica
that is streaming, on the leader's timeline, and not from us.  Otherwise we stream from the
leader, and go back to it as soon as it streams again.  A chain of tags that comes back to us
(A replicatefrom B, B replicatefrom A) is a loop: every member on it streams from the leader.
The leader itself is always a valid upstream, so a replicatefrom member that got promoted is
simply followed.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgha.core.model import ClusterView, Role, Tags


@dataclass(frozen=True)
class UpstreamChoice:
    """``name``: the member to stream from (None: we lead, or nobody does); ``why``: the reason, for
    operators ("" when the member is not tagged replicatefrom and simply follows the leader);
    ``cascades``: ``name`` is a replica, not the leader."""

    name: str | None
    why: str = ""
    cascades: bool = False


def tags_of(view: ClusterView, member: str, own: Tags | None = None) -> Tags:
    """``own`` (this node's configured tags) wins over what its member key says."""
    if own is not None:
        return own
    m = view.members.get(member)
    return m.tags if m is not None else Tags()


def loop_through(view: ClusterView, member: str, own: Tags | None = None) -> tuple[str, ...]:
    """The replicatefrom chain from ``member`` back to itself, or () when it ends elsewhere."""
    chain = [member]
    current = tags_of(view, member, own).replicatefrom
    leader = view.leader.name if view.leader else None
    while current and current != leader:
        if current == member:
            return (*chain, member)
        if current in chain or current not in view.members:
            return ()  # a loop further up that does not pass through us, or a chain that ends
        chain.append(current)
        current = view.members[current].tags.replicatefrom
    return ()


def upstream_of(view: ClusterView, member: str, own: Tags | None = None) -> UpstreamChoice:
    """Whom ``member`` should stream from now (``own``: its tags, when it is this node)."""
    leader = view.leader.name if view.leader else None
    wanted = tags_of(view, member, own).replicatefrom
    if leader is None or leader == member:
        return UpstreamChoice(None)
    if not wanted or wanted == leader:
        return UpstreamChoice(leader, f"replicatefrom {wanted} is the leader" if wanted else "")
    why = unusable(view, member, wanted, leader, own)
    if why is not None:
        return UpstreamChoice(leader, f"replicatefrom {wanted} {why}: streaming from the leader")
    return UpstreamChoice(wanted, f"replicatefrom {wanted}: a streaming replica", cascades=True)


def unusable(view: ClusterView, member: str, wanted: str, leader: str, own: Tags | None = None) -> str | None:
    """Why replica ``wanted`` cannot be ``member``'s upstream right now, or None: the checks in order."""
    if wanted == member:
        return "names this member itself"
    loop = loop_through(view, member, own)
    if loop:
        return f"is on a loop ({' -> '.join(loop)})"
    m = view.members.get(wanted)
    if m is None:
        return "is not in the cluster (no member key)"
    if m.role != Role.REPLICA or m.state != "streaming":
        return f"is not a streaming replica ({m.role.value}, {m.state})"
    if m.following == member:
        return "streams from us"
    if not m.host:
        return "has not published its address"
    lm = view.members.get(leader)
    if lm is not None and lm.timeline and (m.timeline or 0) < lm.timeline:
        return f"is on timeline {m.timeline}, the leader on {lm.timeline}"
    return None


def downstream_of(view: ClusterView, member: str) -> tuple[str, ...]:
    """The members whose tag names ``member`` (not on a loop with it, not tagged nostream): a replica
    keeps a slot for each of them, whether or not they stream from it right now, so that one that
    returns after a fallback finds its WAL kept.  Sorted, for a stable SyncSlots."""
    return tuple(sorted(
        n for n, m in view.members.items()
        if n != member and m.tags.replicatefrom == member and not m.tags.nostream and not loop_through(view, n)))


def streams_from_leader(view: ClusterView, member: str) -> bool:
    """``member`` streams from the leader (so the leader keeps its slot), by the same decision
    that member makes for itself."""
    leader = view.leader.name if view.leader else None
    return leader is not None and upstream_of(view, member).name == leader
