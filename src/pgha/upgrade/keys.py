"""Reading and writing the upgrade's keys (``pgha.upgrade.record`` describes them)."""

from __future__ import annotations

from pgha.dcs.store import ClusterStore
from pgha.upgrade.record import REPORTS_PREFIX, UPGRADE_KEY, Report, Upgrade, decode_report, decode_upgrade, dump


def read(store: ClusterStore) -> tuple[Upgrade | None, dict[str, Report]]:
    """The upgrade and the members' reports on it (only the reports with its id)."""
    _, kvs = store.kv.get_prefix(store.key(UPGRADE_KEY))
    up: Upgrade | None = None
    raw_reports: dict[str, bytes] = {}
    for kv in kvs:
        rel = kv.key[len(store.root):]
        if rel == UPGRADE_KEY:
            up = decode_upgrade(kv.value)
        elif rel.startswith(REPORTS_PREFIX):
            raw_reports[rel.removeprefix(REPORTS_PREFIX)] = kv.value
    reports: dict[str, Report] = {}
    for name, raw in raw_reports.items():
        rep = decode_report(raw)
        if rep is not None and up is not None and rep.id == up.id:
            reports[name] = rep
    return up, reports


def request(store: ClusterStore, up: Upgrade, previous: Upgrade | None) -> bool:
    """Record a new upgrade: only where none is, or over a finished one (False: someone else won)."""
    key = store.key(UPGRADE_KEY)
    if previous is None:
        return store.kv.create(key, dump(up))
    kv = store.kv.get(key)
    if kv is None:
        return store.kv.create(key, dump(up))
    old = decode_upgrade(kv.value)
    if old is not None and old.active:
        return False
    store.kv.delete_prefix(store.key(REPORTS_PREFIX))
    return store.kv.replace(key, dump(up), kv.mod_revision)


def put(store: ClusterStore, up: Upgrade) -> None:
    """The leader's update of the plan (it is the only writer once the upgrade is recorded)."""
    store.kv.put(store.key(UPGRADE_KEY), dump(up))


def report(store: ClusterStore, name: str, rep: Report) -> None:
    store.kv.put(store.key(REPORTS_PREFIX + name), dump(rep))
