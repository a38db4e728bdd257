"""A member's tags, from its node file, published in its member key (Patroni's names and meanings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Tags:
    """Per-node tags, published in the member key."""

    # Never promote this node automatically or by switchover.
    nofailover: bool = False
    # Tie-breaker between equally advanced candidates: higher wins.
    failover_priority: int = 1
    # Never choose this node as a synchronous standby.
    nosync: bool = False
    # Keep this node out of read load balancing: /replica, /read-only and /async answer 503 (Patroni's tag).
    noloadbalance: bool = False
    # New replicas clone from this member (a running replica) instead of the primary (Patroni's tag).
    clonefrom: bool = False
    # Preference for being chosen as a synchronous standby: higher first; 0 never (Patroni's tag).
    sync_priority: int = 1
    # Never stream: replay only what restore_command fetches from the archive (Patroni's tag); the
    # primary keeps no slot for it, it is never a synchronous standby and keeps no logical slots.
    nostream: bool = False
    # Stream from this member (a replica) instead of from the leader while it streams itself;
    # from the leader otherwise (Patroni's tag; core/upstream.py decides).  "": from the leader.
    replicatefrom: str = ""
    # Not used by pgha; shown in `list` and matched by /replica?tag_KEY=VALUE.
    extra: Mapping[str, str] = field(default_factory=dict)


# The built-in tags as Patroni names them, each defined once: shown in `list` and /patroni when they
# differ from their default, matched by ?tag_KEY=VALUE.
BOOL_TAGS = ("nofailover", "nosync", "noloadbalance", "clonefrom", "nostream")
INT_TAGS = ("failover_priority", "sync_priority")
STR_TAGS = ("replicatefrom",)
