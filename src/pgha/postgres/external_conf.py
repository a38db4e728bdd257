"""Taking over a configuration that lives outside the data directory (Debian's /etc/postgresql/15/main,
Patroni's config_dir) when pgha adopts a running server.

Such a server was started with ``-c config_file=<config_dir>/postgresql.conf`` (pg_ctlcluster does that) and
keeps reading that file on every reload until it restarts.  So pgha:

* writes ``postgresql.base.conf`` in the data directory from that file, with every ``include``,
  ``include_if_exists`` and ``include_dir`` (Debian's ``conf.d``) read in place, relative paths resolved
  as PostgreSQL resolves them; the paths only the old start command needs (data_directory, hba_file,
  ident_file, config_file) are left out;
* copies the old ident file to the data directory when there is none, and keeps the old hba file there as
  ``pg_hba.conf.pre-pgha`` (pgha's own pg_hba.conf applies from the next start);
* sets Debian's ``start.conf`` to ``manual``, so that postgresql.service does not start the server pgha
  runs (the original kept as ``start.conf.pre-pgha``);
* replaces ``<config_dir>/postgresql.conf`` by a short file of pgha's that includes pgha's postgresql.conf
  and keeps the running server's data_directory, hba_file and ident_file (the original is kept next to it
  as ``postgresql.conf.pre-pgha``).  The running postmaster reloads pgha's settings through it; a
  restart under pgha (``pg_ctl -D``) reads the data directory's files only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pgha.postgres import conf
from pgha.postgres.binaries import RunAs

log = logging.getLogger(__name__)

PRE_PGHA = ".pre-pgha"
INCLUDE_RE = re.compile(r"^\s*(include_dir|include_if_exists|include)\s*=?\s*'((?:[^']|'')*)'", re.IGNORECASE)
SETTING_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=?\s*(.*)$")
# Where the old start command found things; the data directory's own files replace them.
START_PATHS = ("data_directory", "hba_file", "ident_file", "config_file")
MAX_DEPTH = 10


class ExternalConfError(Exception):
    """The old configuration cannot be read (one line naming the file and the fix)."""


def _value(line: str) -> str:
    """The unquoted value of a ``name = 'value'`` line ('' if it has none)."""
    m = SETTING_RE.match(line)
    if not m:
        return ""
    raw = m.group(2).strip()
    if raw.startswith("'"):
        end = re.match(r"'((?:[^']|'')*)'", raw)
        return end.group(1).replace("''", "'") if end else ""
    return raw.split("#", 1)[0].strip()


def settings_of(path: Path) -> dict[str, str]:
    """The start paths (data_directory, hba_file, ident_file) the file sets, last one winning."""
    found: dict[str, str] = {}
    for line in _read(path).splitlines():
        m = SETTING_RE.match(line)
        if m and m.group(1).lower() in START_PATHS:
            found[m.group(1).lower()] = _value(line)
    return found


def inline(path: Path, depth: int = 0) -> list[str]:
    """The lines of ``path`` with its includes read in place and the start paths left out."""
    if depth > MAX_DEPTH:
        raise ExternalConfError(f"{path}: includes nest deeper than {MAX_DEPTH}; check for an include loop")
    out = [f"# --- from {path}"]
    for line in _read(path).splitlines():
        inc = INCLUDE_RE.match(line)
        m = SETTING_RE.match(line)
        if inc:
            kind, target = inc.group(1).lower(), Path(inc.group(2).replace("''", "'"))
            target = target if target.is_absolute() else path.parent / target
            if kind == "include_dir":
                files = sorted(target.glob("*.conf")) if target.is_dir() else []
                for f in (f for f in files if not f.name.startswith(".")):
                    out += inline(f, depth + 1)
            elif target.exists() or kind == "include":
                out += inline(target, depth + 1)
            out.append(f"# --- back in {path}")
        elif m and not line.lstrip().startswith("#") and m.group(1).lower() in START_PATHS:
            out.append(f"# {line.strip()}   (set by pgha's pointer file while this server runs)")
        else:
            out.append(line)
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ExternalConfError(f"{path}: cannot read it ({exc}); check postgresql.config_dir") from None


def pointer(data: Path, starts: dict[str, str], config_dir: Path) -> str:
    lines = [
        f"{conf.MARKER}: the server was started with this file (-c config_file=...), so it now only points",
        f"# at pgha's files in {data}. The original is kept as postgresql.conf{PRE_PGHA}. After the next",
        "# restart under pgha the server reads the data directory's files only.",
        f"include {conf.quote(str(data / 'postgresql.conf'))}",
        f"data_directory = {conf.quote(starts.get('data_directory') or str(data))}",
        f"hba_file = {conf.quote(starts.get('hba_file') or str(config_dir / 'pg_hba.conf'))}",
        f"ident_file = {conf.quote(starts.get('ident_file') or str(config_dir / 'pg_ident.conf'))}",
    ]
    return "\n".join(lines) + "\n"


def take_over(data: Path, config_dir: Path, run_as: RunAs) -> bool:
    """Take the configuration in ``config_dir`` over into ``data`` (see the module); False if done already."""
    old = config_dir / "postgresql.conf"
    text = _read(old) if old.exists() else ""
    if not text or text.startswith(conf.MARKER):
        return False
    starts = settings_of(old)
    base = ["# The configuration this server ran with before pgha, read from its files (includes in place)."]
    base += inline(old)
    conf.write_atomic(data / "postgresql.base.conf", "\n".join(base) + "\n", run_as)
    hba = Path(starts.get("hba_file") or config_dir / "pg_hba.conf")
    if hba.exists() and not (data / f"pg_hba.conf{PRE_PGHA}").exists():
        conf.write_atomic(data / f"pg_hba.conf{PRE_PGHA}", _read(hba), run_as)
    ident = Path(starts.get("ident_file") or config_dir / "pg_ident.conf")
    if ident.exists() and not (data / "pg_ident.conf").exists():
        conf.write_atomic(data / "pg_ident.conf", _read(ident), run_as)
    conf.write_atomic(config_dir / f"postgresql.conf{PRE_PGHA}", text, run_as, mode=0o644)
    conf.write_atomic(old, pointer(data, starts, config_dir), run_as, mode=0o644)
    manual_start(config_dir, run_as)
    log.warning("took over %s (with its includes) into %s/postgresql.base.conf; %s now points at pgha's files "
                "(the original is kept as postgresql.conf%s)", old, data, old, PRE_PGHA)
    return True


def manual_start(config_dir: Path, run_as: RunAs) -> None:
    """Debian's start.conf from auto to manual: postgresql.service must not start a server pgha runs."""
    path = config_dir / "start.conf"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return
    words = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if words[:1] != ["auto"]:
        return
    conf.write_atomic(path.with_name(f"start.conf{PRE_PGHA}"), text, run_as, mode=0o644)
    conf.write_atomic(path, "# pgha runs this server: postgresql.service leaves it alone (the original is kept as "
                            f"start.conf{PRE_PGHA}).\nmanual\n", run_as, mode=0o644)
    log.warning("%s: auto became manual (pgha starts this server; the original is kept as start.conf%s)",
                path, PRE_PGHA)
