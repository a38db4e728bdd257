"""Turning a ClusterView into what the operator reads: rows, tables, YAML, trees.

Pure functions: no DCS, no clock (times are passed in), no printing.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from pgha.core.model import BOOL_TAGS, INT_TAGS, ClusterConfig, ClusterView, MemberInfo, Tags
from pgha.dcs.codec import to_jsonable

MIB = 1024 * 1024


@dataclass(frozen=True)
class MemberRow:
    """One member as `list` shows it."""

    member: str
    host: str
    port: int
    # leader, replica or sync_standby
    role: str
    state: str
    timeline: int | None
    # Bytes behind the leader's WAL position; None for the leader or when unknown.
    lag: int | None
    pending_restart: bool
    tags: Tags
    rule_id: str
    following: str | None
    version: str

    @property
    def role_title(self) -> str:
        return {"leader": "Leader", "standby leader": "Standby Leader", "sync_standby": "Sync Standby"}.get(
            self.role, "Replica")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.host else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "host": self.host,
            "port": self.port,
            "role": self.role,
            "state": self.state,
            "timeline": self.timeline,
            "lag": self.lag,
            "pending_restart": self.pending_restart,
            "tags": to_jsonable(self.tags),
            "rule_id": self.rule_id,
            "following": self.following,
            "version": self.version,
        }


def role_of(view: ClusterView, name: str) -> str:
    if view.leader is not None and view.leader.name == name:
        m = view.members.get(name)
        # Patroni's name for the leader of a standby cluster, which runs as a replica of another site.
        sc = view.config.standby_cluster
        sb = sc is not None and sc.active and m is not None and m.role.value == "replica"
        return "standby leader" if sb else "leader"
    if view.sync is not None and name in view.sync.standbys:
        return "sync_standby"
    return "replica"


def lag_of(view: ClusterView, m: MemberInfo) -> int | None:
    """Bytes ``m`` is behind the leader's published WAL position (None: leader or unknown)."""
    if view.leader is None or view.leader.name == m.name:
        return None
    leader = view.members.get(view.leader.name)
    if leader is None or leader.wal_lsn is None or m.lsn == 0:
        return None
    return max(0, leader.wal_lsn - m.lsn)


def member_rows(view: ClusterView) -> list[MemberRow]:
    """Every published member, the leader first, then by name."""
    names = sorted(view.members, key=lambda n: (not role_of(view, n).endswith("leader"), n))
    return [
        MemberRow(
            member=m.name, host=m.host, port=m.port, role=role_of(view, m.name), state=m.state,
            timeline=m.timeline, lag=lag_of(view, m), pending_restart=m.pending_restart, tags=m.tags,
            rule_id=m.rule_id, following=m.following, version=m.version,
        )
        for m in (view.members[n] for n in names)
    ]


def lag_mb(lag: int | None) -> str:
    return "" if lag is None else f"{lag / MIB:.1f}"


def tags_text(tags: Tags) -> str:
    """The tags that differ from the defaults, e.g. ``nofailover, failover_priority=0, dc=east``."""
    parts = [k for k in BOOL_TAGS if getattr(tags, k)]
    parts += [f"{k}={getattr(tags, k)}" for k in INT_TAGS if getattr(tags, k) != getattr(Tags(), k)]
    parts += [f"{k}={v}" for k, v in sorted(tags.extra.items())]
    return ", ".join(parts)


LIST_HEADERS = ("Member", "Host", "Role", "State", "TL", "Lag in MB", "Pending restart", "Tags")
LIST_ALIGN = "<<<<>><<"


def list_cells(row: MemberRow, indent: int = 0) -> list[str]:
    name = ("  " * (indent - 1) + "+ " if indent else "") + row.member
    return [name, row.address, row.role_title, row.state, "" if row.timeline is None else str(row.timeline),
            lag_mb(row.lag), "*" if row.pending_restart else "", tags_text(row.tags)]


def header_line(view: ClusterView) -> str:
    ident = f"system identifier: {view.system_id}" if view.system_id else "not initialized yet"
    return f"Cluster: {view.name} ({ident})"


def topology(view: ClusterView) -> list[tuple[int, MemberRow]]:
    """Members as a tree: the leader, then each replica indented under the member it follows.

    Members whose upstream is unknown (or not a published member) stand at the top level.
    """
    rows = member_rows(view)
    by_name = {r.member: r for r in rows}
    children: dict[str | None, list[MemberRow]] = {}
    for r in rows:
        parent = r.following if r.following in by_name and r.following != r.member else None
        children.setdefault(parent, []).append(r)
    out: list[tuple[int, MemberRow]] = []
    seen: set[str] = set()

    def walk(r: MemberRow, depth: int) -> None:
        if r.member in seen:
            return
        seen.add(r.member)
        out.append((depth, r))
        for c in children.get(r.member, []):
            walk(c, depth + 1)

    for r in children.get(None, []):
        walk(r, 0)
    for r in rows:  # cycles of "following": show them flat rather than lose them
        walk(r, 0)
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A boxed text table; ``align`` has one '<' or '>' per column (default '<')."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str], header: bool = False) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
            right = not header and i < len(align) and align[i] == ">"
            out.append(f" {c:>{w}} " if right else f" {c:<{w}} ")
        return "|" + "|".join(out) + "|"

    return "\n".join([rule, line(headers, True), rule, *(line(r) for r in rows), rule])


def format_lsn(value: int) -> str:
    """50331744 -> ``0/3000060``, as PostgreSQL prints a pg_lsn."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def iso(epoch: float | None) -> str:
    """Epoch seconds as local ISO 8601 with the offset (seconds precision); '' for None."""
    if epoch is None:
        return ""
    return datetime.datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def config_yaml(config: ClusterConfig) -> str:
    """The cluster configuration as YAML, in the order the fields are declared."""
    data = to_jsonable(config)
    data["parameters"] = dict(sorted(data["parameters"].items()))
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
