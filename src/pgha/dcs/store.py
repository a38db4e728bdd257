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
    history/<time-ns>-<r> HistoryEntry (one key per entry: appends never conflict);
                          ordered by the key's create_revision, not by clocks
    failsafe              {"leader", "members"} (informational)
    upgrade               a major-version upgrade's plan and phase (pgha.upgrade.record)
    upgrade-members/<n>   each member's report on it

Reading is defensive: a value another member wrote that cannot be decoded is
skipped (a member, intent, history entry, switchover, sync) or, for /config,
reduced to its valid settings.  Names, hosts, ports and parameters are checked
here (``pgha.core.names``): a member record whose name, host or API URL could
break a file pgha writes is skipped like an undecodable one.  Each such problem
is logged once (a few lines per read at most) and kept in ``ClusterStore.problems``
until the next read.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pgha.core import names
from pgha.core.model import (
    ClusterConfig,
    ClusterView,
    Leader,
    MemberInfo,
    MemberIntent,
    Switchover,
    SyncState,
)
from pgha.dcs import codec
from pgha.dcs.base import KV, Compacted, DCSError, KeyValue, LeaseNotFound, WatchEvent
from pgha.upgrade import record

log = logging.getLogger(__name__)

# Fresh problems logged per read; the rest are counted in one more line.
REPORT_LINES = 3


class NoLease(DCSError):
    """A key that must expire with its holder was about to be written bound to no lease (ours is
    being granted again after it expired): such a key would outlive a dead holder forever."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no lease to bind {key} to yet (ours expired and is being granted again)")


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


# History kinds that end no timeline.
NO_FORK = ("bootstrap", "upgrade")


def _upgrade_fields(raw: bytes | None, raw_reports: dict[str, bytes]) -> dict[str, Any]:
    """The upgrade's phase and the members it holds, for the core (rule upgrade-hold)."""
    up = record.decode_upgrade(raw)
    if up is None:
        return {}
    reports = {n: r for n, v in raw_reports.items() if (r := record.decode_report(v)) is not None}
    return {"upgrade_phase": up.phase, "upgrade_holding": record.holding(up, reports)}


class InitializeConflict(DCSError):
    """Another member owns /initialize: this member must not publish its system id."""


def _safe_key(rel: str) -> str:
    """A key as it may appear in a log line (a hostile writer may put a newline in it)."""
    return rel if names.CONTROL.search(rel) is None else names.shown(rel, 80)


def _text(kv: KeyValue) -> str:
    return kv.value.decode(errors="replace").strip()


class ClusterStore:
    """Typed operations on one cluster's keys; every method may raise DCSError."""

    def __init__(self, kv: KV, cluster: str, prefix: str = "/pgha") -> None:
        self.kv = kv
        self.cluster = cluster
        self.root = f"{prefix.rstrip('/')}/{cluster}/"
        # One line per value the last read() could not use (see the module docstring).
        self.problems: list[str] = []
        self._logged: frozenset[str] = frozenset()

    def key(self, name: str) -> str:
        """The full key of ``name`` (e.g. "leader", "members/n1") in this cluster."""
        return self.root + name

    # --- reading ---------------------------------------------------------------
    def read(self) -> ClusterView:
        """One consistent snapshot of every key (a single range request)."""
        revision, kvs = self.kv.get_prefix(self.root)
        problems: list[str] = []
        view = ClusterView(name=self.cluster, revision=revision)
        members: dict[str, MemberInfo] = {}
        intents: dict[str, MemberIntent] = {}
        history: list[tuple[int, str, HistoryEntry]] = []
        initialized_by: str | None = None
        upgrade: tuple[bytes | None, dict[str, bytes]] = (None, {})
        for kv in kvs:
            rel = kv.key[len(self.root):]
            try:
                if rel == "initialize":
                    obj = codec.loads_object(kv.value)
                    system_id = obj.get("system_id")
                    if system_id:
                        view = replace(view, system_id=str(system_id))
                        initialized_by = str(obj["by"]) if obj.get("by") else None
                    elif obj.get("initializing"):
                        view = replace(view, initializing=str(obj["initializing"]))
                elif rel == "config":
                    config, bad = codec.decode_config_lenient(kv.value)
                    view = replace(view, config=config, config_revision=kv.mod_revision)
                    problems.extend(bad)
                elif rel == "leader":
                    if _text(kv):
                        view = replace(view, leader=Leader(_text(kv), kv.lease, kv.mod_revision))
                elif rel.startswith("members/"):
                    name = rel.removeprefix("members/")
                    members[name] = codec.decode_member(kv.value, name=name, lease=kv.lease)
                elif rel == "sync":
                    view = replace(view, sync=codec.decode_sync(kv.value, kv.mod_revision))
                elif rel == "switchover":
                    view = replace(view, switchover=codec.decode_switchover(kv.value),
                                   switchover_revision=kv.mod_revision)
                elif rel.startswith("intents/"):
                    member = names.check("member name", rel.removeprefix("intents/"))
                    intents[member] = codec.decode_intent(kv.value)
                elif rel.startswith("history/"):
                    history.append((kv.create_revision, rel, codec.decode(HistoryEntry, kv.value)))
                elif rel == record.UPGRADE_KEY:
                    upgrade = (kv.value, upgrade[1])
                elif rel.startswith(record.REPORTS_PREFIX):
                    upgrade[1][rel.removeprefix(record.REPORTS_PREFIX)] = kv.value
            except ValueError as exc:
                problems.append(f"{_safe_key(rel)}: {exc}; ignored")
        entries = [entry for _, _, entry in sorted(history, key=lambda h: (h[0], h[1]))]
        last_leader = entries[-1].new_leader if entries else initialized_by
        view = replace(
            view, members=members, intents=intents, last_leader=last_leader,
            forks={e.timeline: e.lsn for e in entries if e.kind not in NO_FORK},
            **_upgrade_fields(*upgrade),
        )
        self._report(problems)
        return view

    def _report(self, problems: list[str]) -> None:
        """Log each problem once while it lasts, at most REPORT_LINES lines per read."""
        self.problems = problems
        fresh = [p for p in problems if p not in self._logged]
        for p in fresh[:REPORT_LINES]:
            log.warning("cluster %s: %s", self.cluster, p)
        if len(fresh) > REPORT_LINES:
            log.warning("cluster %s: %d more values could not be used and were ignored", self.cluster,
                        len(fresh) - REPORT_LINES)
        self._logged = frozenset(problems)

    def history(self) -> list[HistoryEntry]:
        """Every history entry, oldest first; undecodable entries are skipped."""
        _, kvs = self.kv.get_prefix(self.key("history/"))
        entries: list[tuple[int, str, HistoryEntry]] = []
        for kv in kvs:
            try:
                entries.append((kv.create_revision, kv.key, codec.decode(HistoryEntry, kv.value)))
            except ValueError as exc:
                log.warning("cluster %s: %s: %s; ignored", self.cluster, kv.key, exc)
        return [entry for _, _, entry in sorted(entries, key=lambda h: (h[0], h[1]))]

    def get_config(self) -> tuple[ClusterConfig, int]:
        """The cluster configuration and its mod_revision (0 when absent: defaults).

        Raises ValueError (one line) when the stored config is invalid;
        ``read()`` instead keeps its valid settings.
        """
        kv = self.kv.get(self.key("config"))
        if kv is None:
            return ClusterConfig(), 0
        return codec.decode_config(kv.value), kv.mod_revision

    # --- initialization ----------------------------------------------------------
    def claim_initialize(self, name: str, lease: int) -> bool:
        if lease <= 0:
            raise NoLease("/initialize")
        value = json.dumps({"initializing": name}).encode()
        return self.kv.create(self.key("initialize"), value, lease)

    def publish_initialized(self, system_id: str, name: str) -> None:
        """Replace the claim with the permanent system identifier (no lease).

        Raises DCSError if another member claimed or initialized the cluster meanwhile.
        """
        key = self.key("initialize")
        value = json.dumps({"system_id": system_id, "by": name}).encode()
        current = self.kv.get(key)
        if current is None:
            if self.kv.create(key, value):
                return
        else:
            try:
                obj = codec.loads_object(current.value)
            except ValueError:
                obj = {}
            ours = obj.get("initializing") == name or obj.get("system_id") == system_id
            if ours and self.kv.replace(key, value, current.mod_revision):
                return
        raise InitializeConflict(
            f"cluster {self.cluster}: /initialize changed while {name} was initializing; "
            f"system id {system_id} was not published (another member owns the cluster)")

    def seed_config(self, config: ClusterConfig) -> bool:
        """Create /config from ``config`` if it does not exist yet."""
        return self.kv.create(self.key("config"), codec.encode_config(config))

    def set_config(self, config: ClusterConfig, mod_revision: int | None = None) -> bool:
        """Write /config; with ``mod_revision`` only if nobody changed it since.

        ``mod_revision`` 0 (what ``get_config`` returns for an absent config) means
        "only if there is still no config".
        """
        key, value = self.key("config"), codec.encode_config(config)
        if mod_revision is None:
            self.kv.put(key, value)
            return True
        if mod_revision == 0:
            return self.kv.create(key, value)
        return self.kv.replace(key, value, mod_revision)

    # --- leadership --------------------------------------------------------------
    def acquire_leader(self, name: str, lease: int) -> bool:
        """Create /leader naming ``name`` bound to ``lease``; True too if it already is exactly that."""
        if lease <= 0:
            raise NoLease("/leader")
        key = self.key("leader")
        if self.kv.create(key, name.encode(), lease):
            return True
        current = self.kv.get(key)
        return current is not None and _text(current) == name and current.lease == lease

    def release_leader(self, name: str) -> bool:
        """Delete /leader only while it still names ``name``."""
        current = self.kv.get(self.key("leader"))
        if current is None or _text(current) != name:
            return False
        return self.kv.delete_if(current.key, current.mod_revision)

    def handoff_leader(self, name: str, candidate: str, candidate_lease: int) -> bool:
        """Rewrite /leader from ``name`` to ``candidate``, bound to the candidate's lease.

        False when /leader no longer names ``name`` (compared with its
        mod_revision in the same transaction) or the candidate's lease is gone.
        """
        if candidate_lease <= 0:
            return False  # a leader key without a lease would never expire
        current = self.kv.get(self.key("leader"))
        if current is None or _text(current) != name:
            return False
        try:
            return self.kv.replace(current.key, candidate.encode(), current.mod_revision, candidate_lease)
        except LeaseNotFound:
            return False

    def delete_leader_if(self, name: str, mod_revision: int) -> bool:
        """Delete /leader only if it still names ``name`` at ``mod_revision``."""
        current = self.kv.get(self.key("leader"))
        if current is None or _text(current) != name or current.mod_revision != mod_revision:
            return False
        return self.kv.delete_if(current.key, mod_revision)

    # --- members -----------------------------------------------------------------
    def publish_member(self, info: MemberInfo, lease: int) -> None:
        """Write members/<name> bound to ``lease`` (LeaseNotFound if that lease is gone)."""
        if lease <= 0:
            raise NoLease(f"members/{info.name}")
        value = codec.encode_member(replace(info, lease_id=lease))
        self.kv.put(self.key(f"members/{info.name}"), value, lease)

    def delete_member(self, name: str) -> None:
        self.kv.delete(self.key(f"members/{name}"))

    # --- synchronous replication ---------------------------------------------------
    def publish_sync(self, leader: str, standbys: tuple[str, ...], quorum: int) -> bool:
        """Write /sync; False unless /leader currently names ``leader``.

        The leader check and the write are two requests: a leader that loses
        its key in between fences itself before anyone else can promote.
        """
        current = self.kv.get(self.key("leader"))
        if current is None or _text(current) != leader:
            return False
        self.kv.put(self.key("sync"), codec.encode_sync(SyncState(leader, tuple(standbys), quorum)))
        return True

    # --- operator intents ----------------------------------------------------------
    def set_switchover(self, switchover: Switchover) -> bool:
        """Create /switchover; False if one is already pending."""
        return self.kv.create(self.key("switchover"), codec.encode_switchover(switchover))

    def update_switchover_phase(self, switchover_id: str, phase: str, leader: str | None = None,
                                at: float | None = None) -> bool:
        """Set the phase (and phase_at: ``at``, default now, wall clock) of the pending switchover with this id.

        ``leader`` records which leader is carrying it out, so that another member
        that becomes leader later knows the request is not its own.
        """
        current = self.kv.get(self.key("switchover"))
        if current is None:
            return False
        try:
            switchover = codec.decode_switchover(current.value)
        except ValueError:
            return False
        if switchover.id != switchover_id:
            return False
        updated = replace(switchover, phase=phase, phase_at=time.time() if at is None else at,
                          leader=leader or switchover.leader)
        return self.kv.replace(current.key, codec.encode_switchover(updated), current.mod_revision)

    def clear_switchover(self, switchover_id: str | None = None) -> None:
        """Delete /switchover (only the one with this id when given)."""
        self._delete_with_id(self.key("switchover"), switchover_id)

    def set_intent(self, member: str, intent: MemberIntent) -> bool:
        """Create intents/<member>; False if an intent for that member is already pending."""
        return self.kv.create(self.key(f"intents/{member}"), codec.encode_intent(intent))

    def clear_intent(self, member: str, intent_id: str) -> None:
        """Delete intents/<member> if it is still the intent with this id."""
        self._delete_with_id(self.key(f"intents/{member}"), intent_id)

    def _delete_with_id(self, key: str, wanted: str | None) -> None:
        if wanted is None:
            self.kv.delete(key)
            return
        current = self.kv.get(key)
        if current is None:
            return
        try:
            found = codec.loads_object(current.value).get("id")
        except ValueError:
            found = None
        if found == wanted or found is None:  # an undecodable value is cleared too
            self.kv.delete_if(key, current.mod_revision)

    def retract_history(self, timeline: int, new_leader: str) -> bool:
        """Delete the latest history entry if it records ``new_leader`` ending ``timeline``
        (compare-and-delete: an entry appended meanwhile is kept); True if one was deleted."""
        _, kvs = self.kv.get_prefix(self.key("history/"))
        if not kvs:
            return False
        latest = max(kvs, key=lambda kv: (kv.create_revision, kv.key))
        try:
            entry = codec.decode(HistoryEntry, latest.value)
        except ValueError:
            return False
        if entry.timeline != timeline or entry.new_leader != new_leader or entry.kind in NO_FORK:
            return False
        return self.kv.delete_if(latest.key, latest.mod_revision)

    def append_history(self, entry: HistoryEntry) -> None:
        """Add one history entry under a fresh key (never conflicts with a concurrent append)."""
        value = codec.encode(entry)
        while not self.kv.create(self.key(f"history/{time.time_ns():020d}-{os.urandom(3).hex()}"), value):
            pass  # the same nanosecond and random suffix: try another key

    # --- change notification ----------------------------------------------------------
    def watch(self, start_revision: int, on_change: Callable[[], None], stop: threading.Event,
              ignore: tuple[str, ...] = ("backup/",), poll: float | None = None) -> int:
        """Call ``on_change`` for every change from ``start_revision`` until ``stop``.

        Returns the revision to resume from; after a compaction it calls
        ``on_change`` once and returns 0, so the caller re-reads everything.
        Several events of one transaction cause one call.  Keys under ``ignore`` (relative to
        the cluster) wake nobody: by default the backup keys, which no agent decision reads.
        """
        last = [0]
        skip = tuple(self.root + prefix for prefix in ignore)

        def on_event(event: WatchEvent) -> None:
            if skip and event.key.startswith(skip):
                return
            if event.revision != last[0]:
                last[0] = event.revision
                on_change()

        try:
            return self.kv.watch_prefix(self.root, start_revision, on_event, stop, poll)
        except Compacted:
            on_change()
            return 0

    # --- whole clusters ---------------------------------------------------------------
    def remove_cluster(self) -> None:
        """Delete every key of this cluster (and nothing of any other cluster)."""
        self.kv.delete_prefix(self.root)

    @staticmethod
    def list_clusters(kv: KV, prefix: str = "/pgha") -> list[str]:
        """Names of the clusters under ``prefix``: those with an /initialize or /config key."""
        root = f"{prefix.rstrip('/')}/"
        _, kvs = kv.get_prefix(root)
        names = set()
        for item in kvs:
            parts = item.key[len(root):].split("/")
            if len(parts) == 2 and parts[0] and parts[1] in ("initialize", "config"):
                names.add(parts[0])
        return sorted(names)

