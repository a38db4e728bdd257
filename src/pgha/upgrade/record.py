"""The upgrade in the DCS: ``/upgrade`` (the plan and its phase, written by the CLI/API, then by
the leader only) and ``/upgrade-members/<name>`` (each member's own report, written by that
member only, so no two writers share a key).

Phases of ``/upgrade``, in order::

    preflight   every member checks itself; the leader checks the cluster and pg_upgrade --check
    stopping    members hold (rule upgrade-hold), PgBouncers pause, the primary shuts down cleanly,
                the replicas stop and report their last checkpoint
    upgrading   pg_upgrade --link on the primary
    syncing     the new primary is not started yet: each replica takes the new cluster with pg_upgrade's
                rsync method (hard links to its own old files, only the catalog copied), or skips
    replicas    the new primary runs; a replica that could not rsync moves its old data aside and is
                cloned again
    rolling-back  a step failed before the new primary started: replicas that took the new cluster
                put their old one back; the old primary starts again
    done        every member is on the new major and streaming
    failed      the pre-flight failed: nothing was stopped
    rolled-back a step failed before the new primary accepted writes: the old version runs again

Decoding is defensive: a bad value reads as absent.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pgha.core import names

UPGRADE_KEY, REPORTS_PREFIX = "upgrade", "upgrade-members/"
# While the record is in one of these phases its members are held (until each reports "released").
HOLD_PHASES = ("stopping", "upgrading", "syncing", "replicas", "rolling-back")
FINAL_PHASES = ("done", "failed", "rolled-back")
PHASES = ("preflight", *HOLD_PHASES, *FINAL_PHASES)
# What a member reports of its part.
REPORT_PHASES = ("preflight-ok", "preflight-failed", "stopped", "synced", "sync-skipped", "released",
                 "restored", "paused", "failed")


@dataclass(frozen=True)
class Upgrade:
    id: str
    to_bin_dir: str
    leader: str
    phase: str = "preflight"
    requested_at: float = 0.0
    # The members taking part (fixed by the leader when the hold begins).
    members: tuple[str, ...] = ()
    # One line: what is happening, or what stopped the upgrade.
    message: str = ""
    from_major: int = 0
    to_major: int = 0
    old_system_id: str = ""
    new_system_id: str = ""
    # The primary's shutdown checkpoint (pg_controldata "Latest checkpoint location"), as text.
    primary_lsn: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    # Wall-clock seconds: the primary stopped, the new one started (the write gap is between them).
    stopped_at: float = 0.0
    new_primary_at: float = 0.0
    # For the replicas' rsync: the primary's host, its data directory, and the old one's new name.
    primary_host: str = ""
    primary_data_dir: str = ""
    kept_name: str = ""
    # A failure to inject (tests only: honoured when the agents run with PGHA_UPGRADE_FAULTS=1).
    inject: str = ""

    @property
    def active(self) -> bool:
        return self.phase not in FINAL_PHASES


@dataclass(frozen=True)
class Report:
    """One member's part: preflight-ok / preflight-failed / stopped / released / failed."""

    id: str
    phase: str
    message: str = ""
    # The stopped server's last checkpoint (pg_controldata), as text.
    lsn: str = ""
    at: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


def _obj(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _pick(cls: type[Any], data: dict[str, Any]) -> Any:
    try:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
    except TypeError:
        return None


# The directory name the old data directory is kept under (``data.15``): one path component.
KEPT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
# Request ids are uuid4 hex (pgha upgrade) or a test's name: they reach logs and the CLI.
ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def path_problem(path: str) -> str | None:
    """A directory path that may reach a command line or a file: absolute and plain."""
    if not path.startswith("/") or len(path) > 1024 or any(c in path for c in "\n\r\t\0'\"\\") \
            or any(part in (".", "..") for part in path.split("/")):
        return "must be an absolute, plain directory path"
    return None


def _valid(up: Upgrade) -> bool:
    """Every value that reaches a command line (pg_upgrade, rsync), a file, a log line or the CLI is
    well-formed: hosts and member names by the same rules as everywhere else (``core.names``)."""
    return (ID.fullmatch(up.id) is not None
            and path_problem(up.to_bin_dir) is None
            and (not up.primary_data_dir or path_problem(up.primary_data_dir) is None)
            and (not up.kept_name or (KEPT_NAME.fullmatch(up.kept_name) is not None
                                      and up.kept_name not in (".", "..")))
            and (not up.primary_host or names.problem("host", up.primary_host) is None)
            and names.problem("member name", up.leader) is None
            and all(names.problem("member name", m) is None for m in up.members)
            and names.text_problem(up.message, "message") is None
            and ID.fullmatch(up.inject or "x") is not None)


def decode_upgrade(raw: bytes | None) -> Upgrade | None:
    data = _obj(raw)
    if data is None:
        return None
    if isinstance(data.get("members"), list):
        data["members"] = tuple(str(m) for m in data["members"])
    up = _pick(Upgrade, data)
    ok = (isinstance(up, Upgrade) and isinstance(up.id, str) and up.id and isinstance(up.to_bin_dir, str)
          and isinstance(up.leader, str) and up.phase in PHASES
          and all(isinstance(getattr(up, f), str) for f in ("primary_host", "primary_data_dir", "kept_name")))
    return up if ok and _valid(up) else None


def decode_report(raw: bytes | None) -> Report | None:
    data = _obj(raw)
    rep = _pick(Report, data) if data is not None else None
    ok = (isinstance(rep, Report) and isinstance(rep.id, str) and ID.fullmatch(rep.id) is not None
          and rep.phase in REPORT_PHASES and isinstance(rep.message, str)
          and isinstance(rep.lsn, str) and names.text_problem(rep.lsn, "lsn") is None
          and names.text_problem(rep.message, "message") is None and isinstance(rep.extra, dict)
          and all(isinstance(k, str) and isinstance(v, str) and names.text_problem(k + v, "extra") is None
                  for k, v in rep.extra.items()))
    return rep if ok else None


def dump(obj: Upgrade | Report) -> bytes:
    return json.dumps(asdict(obj), separators=(",", ":"), sort_keys=True).encode()


def holding(up: Upgrade | None, reports: dict[str, Report]) -> frozenset[str]:
    """The members the upgrade holds now: they take no automatic action (rule upgrade-hold)."""
    if up is None or up.phase not in HOLD_PHASES:
        return frozenset()
    released = {n for n, r in reports.items() if r.id == up.id and r.phase == "released"}
    return frozenset(up.members) - released


def one_line(message: str) -> str:
    """A message (often an exception's text, with a program's stderr) as the one line a record holds."""
    return " ".join(names.CONTROL.sub(" ", message).split())[:2000]


def with_phase(up: Upgrade, phase: str, message: str = "", **kw: Any) -> Upgrade:
    return replace(up, phase=phase, message=one_line(message) or up.message, **kw)
