"""The write probe's pure half: secrets in DSNs, statistics and the report (no clock, socket or thread)."""


from __future__ import annotations

import json
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_TABLE = "pgha_probe"
DEFAULT_TIMEOUT = 2.0
MAX_ERRORS = 5
MAX_ERROR_LEN = 200

# Client-side connection defaults; a value the DSN sets itself wins.
CONNECT_DEFAULTS: Mapping[str, str] = {
    "connect_timeout": "2",
    "keepalives": "1",
    "keepalives_idle": "2",
    "keepalives_interval": "1",
    "keepalives_count": "2",
    "application_name": "pgha-probe",
}


class ProbeError(Exception):
    """A probe that cannot start: malformed DSN, bad table name.  The message is safe to print."""



_URI_USERINFO = re.compile(r"(postgres(?:ql)?://[^:/@\s?#]*:)([^@\s/?#]*)(@)", re.IGNORECASE)
_URI_PARAM = re.compile(r"([?&]password=)([^&\s#]*)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"((?<![?&\w])password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s']*)", re.IGNORECASE)
_LOOSE_PASSWORD = re.compile(r"password\s*=?\s*('(?:[^'\\]|\\.)*'?|[^\s'&]+)", re.IGNORECASE)


def dsn_secrets(dsn: str) -> list[str]:
    """Every string in ``dsn`` that may be its password, parseable or not (longest first)."""
    found: set[str] = set()
    try:
        pw = conninfo_to_dict(dsn).get("password")
        if pw:
            found.add(str(pw))
    except psycopg.Error:
        pass
    for pattern, group in ((_URI_USERINFO, 2), (_URI_PARAM, 2), (_LOOSE_PASSWORD, 1)):
        for m in pattern.finditer(dsn):
            value = m.group(group)
            found.add(value)
            found.add(value.strip("'"))
    return sorted((s for s in found if len(s) >= 2), key=len, reverse=True)


def mask_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``****`` (key=value and URI forms)."""
    out = _URI_USERINFO.sub(r"\1****\3", dsn)
    out = _URI_PARAM.sub(r"\1****", out)
    return _KV_PASSWORD.sub(r"\1****", out)


def safe_dsn(dsn: str) -> str:
    """``dsn`` fit to print: passwords masked, even in a DSN that does not parse."""
    return scrub(mask_dsn(dsn), dsn_secrets(dsn))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every literal secret replaced by ``****``."""
    for s in secrets:
        text = text.replace(s, "****")
    return text


def error_line(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """One short line for ``exc``: its first non-empty line, secrets masked, length capped."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    text = scrub(mask_dsn(text), secrets)
    return text if len(text) <= MAX_ERROR_LEN else text[: MAX_ERROR_LEN - 1] + "…"


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ProbeReport:
    """What one probe run saw.  ``missing`` is None when the final read-back failed."""

    run_id: str
    acknowledged: int
    failed: int
    max_gap_ms: float
    max_gap_at: str | None  # wall-clock time (UTC, ISO 8601) the longest gap began
    mean_interval_ms: float | None  # mean time between consecutive acknowledged writes
    missing: int | None
    duration_s: float
    errors: tuple[tuple[str, int], ...] = ()  # (message, count), most frequent first
    missing_seqs: tuple[int, ...] = ()  # the first few missing sequence numbers
    connected: bool = True  # False: no connection succeeded during the whole run

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors"] = [{"message": m, "count": c} for m, c in self.errors]
        d["missing_seqs"] = list(self.missing_seqs)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_text(self) -> str:
        gap_at = f" (began {self.max_gap_at})" if self.max_gap_at else ""
        mean = "-" if self.mean_interval_ms is None else f"{self.mean_interval_ms:.1f} ms"
        if self.missing is None:
            missing = "unknown (could not read the probe table back)"
        elif self.missing_seqs:
            more = ", …" if self.missing > len(self.missing_seqs) else ""
            missing = f"{self.missing} (seq {', '.join(map(str, self.missing_seqs))}{more})"
        else:
            missing = str(self.missing)
        rows = [
            ("run id", self.run_id),
            ("acknowledged writes", str(self.acknowledged)),
            ("failed attempts", str(self.failed)),
            ("longest gap", f"{self.max_gap_ms:.1f} ms{gap_at}"),
            ("mean interval", mean),
            ("missing after run", missing),
            ("duration", f"{self.duration_s:.1f} s"),
        ]
        lines = [f"{k:<20} {v}" for k, v in rows]
        if self.errors:
            lines.append("errors:")
            lines += [f"  {c:>6}  {m}" for m, c in self.errors]
        return "\n".join(lines)


class ProbeStats:
    """Accumulates one run's outcomes; every method takes the time it refers to.

    ``start`` and every ack time are monotonic seconds; ``wall_start`` is the wall-clock
    time matching ``start``.  The run's start and end count as gap boundaries, so an
    outage at the beginning or the end of a run is not hidden.
    """

    def __init__(self, run_id: str, start: float, wall_start: float) -> None:
        self.run_id = run_id
        self.start = start
        self.wall_start = wall_start
        self.acked = array("q")
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.connected = False
        self._last = start
        self._first_ack: float | None = None
        self._max_gap = 0.0
        self._max_gap_from = start

    @property
    def acknowledged(self) -> int:
        return len(self.acked)

    def _gap(self, t: float) -> None:
        if t - self._last > self._max_gap:
            self._max_gap = t - self._last
            self._max_gap_from = self._last

    def ack(self, seq: int, t: float) -> None:
        self._gap(t)
        self._last = t
        if self._first_ack is None:
            self._first_ack = t
        self.acked.append(seq)

    def fail(self, message: str) -> None:
        self.failed += 1
        self.errors[message] += 1

    def report(self, end: float, present: Iterable[int] | None, max_errors: int = MAX_ERRORS) -> ProbeReport:
        """The report at monotonic time ``end``; ``present``: seqs found afterwards (None: unknown)."""
        self._gap(end)
        n = len(self.acked)
        mean = None
        if n >= 2 and self._first_ack is not None:
            mean = (self._last - self._first_ack) / (n - 1) * 1000.0
        missing: int | None = None
        missing_seqs: tuple[int, ...] = ()
        if present is not None:
            lost = sorted(set(self.acked) - set(present))
            missing, missing_seqs = len(lost), tuple(lost[:10])
        return ProbeReport(
            run_id=self.run_id,
            acknowledged=n,
            failed=self.failed,
            max_gap_ms=round(self._max_gap * 1000.0, 3),
            max_gap_at=_iso(self.wall_start + (self._max_gap_from - self.start)) if self._max_gap else None,
            mean_interval_ms=None if mean is None else round(mean, 3),
            missing=missing,
            duration_s=round(end - self.start, 3),
            errors=top_errors(self.errors, max_errors),
            missing_seqs=missing_seqs,
            connected=self.connected,
        )


def top_errors(errors: Mapping[str, int], limit: int = MAX_ERRORS) -> tuple[tuple[str, int], ...]:
    """The ``limit`` most frequent messages (ties by message); the rest summed as one line."""
    ranked = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[:limit]
    rest = sum(c for _, c in ranked[limit:])
    if rest:
        top.append((f"({len(ranked) - limit} other distinct errors)", rest))
    return tuple(top)


def table_identifier(name: str) -> sql.Identifier:
    """``name`` or ``schema.name`` as a quoted identifier; ProbeError when it is not one."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", p) for p in parts):
        raise ProbeError(f"invalid table name {name!r}: use NAME or SCHEMA.NAME (letters, digits, _)")
    return sql.Identifier(*parts)


def create_table_sql(table: sql.Identifier) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}(run_id text, seq bigint, at timestamptz DEFAULT now(),"
        " PRIMARY KEY (run_id, seq))"
    ).format(table)


def probe_conninfo(dsn: str) -> str:
    """``dsn`` plus the client-side timeout defaults; ProbeError (password masked) if malformed."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ProbeError(f"invalid DSN {safe_dsn(dsn)!r}: {error_line(exc, dsn_secrets(dsn))}") from None
    extra = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in params}
    return make_conninfo(dsn, **extra)


