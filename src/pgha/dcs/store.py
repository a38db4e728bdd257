"""The cluster's keys under /pgha/<cluster>/, built on any KV backend.

Layout (values are JSON unless noted):

    initialize            {"system_id": "...", "by": name}  or, while racing,
                          {"initializing": name} bound to the claimer's lease
    config                ClusterConfig
    leader                member name (plain text), bound to the leader's lease
    members/<name>        MemberInfo, bound to that member's lease
    sync                  {"leader", "standbys", "quorum"}
    switchover            Switchover
    intents/<name>        MemberIntent
    history/<revision>    HistoryEntry (one key per entry: appends never conflict)
    failsafe              {"leader", "members"} (informational)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from pgha.core.model import ClusterConfig, ClusterView, MemberInfo, MemberIntent, Switchover
from pgha.dcs.base import KV


@dataclass(frozen=True)
class HistoryEntry:
    # The timeline that ended and the LSN where it ended.
    timeline: int
    lsn: int
    # Wall-clock epoch seconds.
    at: float
    reason: str
    new_leader: str
    old_leader: str | None = None
    kind: str = "failover"  # failover, switchover, bootstrap


class ClusterStore:
    """Typed operations on one cluster's keys; every method may raise DCSError."""

    def __init__(self, kv: KV, cluster: str, prefix: str = "/pgha") -> None:
        self.kv = kv
        self.cluster = cluster
        self.root = f"{prefix.rstrip('/')}/{cluster}/"

    # --- reading ---------------------------------------------------------------
    def read(self) -> ClusterView:
        """One consistent snapshot of every key (a single range request)."""
        raise NotImplementedError

    def history(self) -> list[HistoryEntry]:
        raise NotImplementedError

    def get_config(self) -> tuple[ClusterConfig, int]:
        """The cluster configuration and its mod_revision (0 when absent: defaults)."""
        raise NotImplementedError

    # --- initialization ----------------------------------------------------------
    def claim_initialize(self, name: str, lease: int) -> bool:
        raise NotImplementedError

    def publish_initialized(self, system_id: str, name: str) -> None:
        """Replace the claim with the permanent system identifier (no lease)."""
        raise NotImplementedError

    def seed_config(self, config: ClusterConfig) -> bool:
        """Create /config from ``config`` if it does not exist yet."""
        raise NotImplementedError

    def set_config(self, config: ClusterConfig, mod_revision: int | None = None) -> bool:
        """Write /config; with ``mod_revision`` only if nobody changed it since."""
        raise NotImplementedError

    # --- leadership --------------------------------------------------------------
    def acquire_leader(self, name: str, lease: int) -> bool:
        raise NotImplementedError

    def release_leader(self, name: str) -> bool:
        """Delete /leader only while it still names ``name``."""
        raise NotImplementedError

    def handoff_leader(self, name: str, candidate: str, candidate_lease: int) -> bool:
        """Rewrite /leader from ``name`` to ``candidate``, bound to the candidate's lease."""
        raise NotImplementedError

    def delete_leader_if(self, name: str, mod_revision: int) -> bool:
        """Delete /leader only if it still names ``name`` at ``mod_revision``."""
        raise NotImplementedError

    # --- members -----------------------------------------------------------------
    def publish_member(self, info: MemberInfo, lease: int) -> None:
        raise NotImplementedError

    def delete_member(self, name: str) -> None:
        raise NotImplementedError

    # --- synchronous replication ---------------------------------------------------
    def publish_sync(self, leader: str, standbys: tuple[str, ...], quorum: int) -> bool:
        raise NotImplementedError

    # --- operator intents ----------------------------------------------------------
    def set_switchover(self, switchover: Switchover) -> bool:
        """Create /switchover; False if one is already pending."""
        raise NotImplementedError

    def update_switchover_phase(self, switchover_id: str, phase: str) -> bool:
        raise NotImplementedError

    def clear_switchover(self, switchover_id: str | None = None) -> None:
        """Delete /switchover (only the one with this id when given)."""
        raise NotImplementedError

    def set_intent(self, member: str, intent: MemberIntent) -> bool:
        raise NotImplementedError

    def clear_intent(self, member: str, intent_id: str) -> None:
        raise NotImplementedError

    def append_history(self, entry: HistoryEntry) -> None:
        raise NotImplementedError

    # --- change notification ----------------------------------------------------------
    def watch(self, start_revision: int, on_change: Callable[[], None], stop: threading.Event) -> int:
        """Call ``on_change`` for every change from ``start_revision`` until ``stop``.

        Returns the revision to resume from; after a compaction it calls
        ``on_change`` once and returns 0, so the caller re-reads everything.
        """
        raise NotImplementedError

    # --- whole clusters ---------------------------------------------------------------
    def remove_cluster(self) -> None:
        raise NotImplementedError

    @staticmethod
    def list_clusters(kv: KV, prefix: str = "/pgha") -> list[str]:
        raise NotImplementedError
